"""Batched generation in the lab's one prompt format, and scoring by the verifier.

SFT's evaluation, preference candidates and the reward model's check against
the verifier generate through ``generate`` so they see exactly the prompt
format SFT trained on (``tokenizer.format_prompt``). PPO samples with its own
``ppo_models.sample`` (same prompt format; it keeps the token ids and masks
that training needs) and scores its conduct rates with ``conduct_summary``.
Prompts are left-padded so every row's next token sits at the same position,
and the KV cache is on (transformers' default).
"""

from __future__ import annotations

import torch

from .tokenizer import format_prompt
from .world import task_fields, true_score


@torch.no_grad()
def generate(model, tokenizer, instructions: list[str], max_new_tokens: int = 32, temperature: float = 0.0,
             top_p: float = 1.0, batch_size: int = 64, num_return_sequences: int = 1, seed: int | None = None,
             progress=None) -> list[dict]:
    """Responses for ``instructions``: one dict per (instruction, sample) with text and whether it stopped.

    ``temperature=0`` is greedy. ``stopped`` is False when the model ran out of
    ``max_new_tokens`` before writing EOS (a response that never ends).
    """
    if seed is not None:
        torch.manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"
    out = []
    for i in range(0, len(instructions), batch_size):
        chunk = instructions[i:i + batch_size]
        enc = tokenizer([format_prompt(tokenizer, x) for x in chunk], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(device)
        # top_k=0: sample from the whole distribution (transformers' default top_k=50 would truncate it)
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else \
            dict(do_sample=False)
        g = model.generate(**enc, max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences,
                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                           **sampling)
        resp = g[:, enc.input_ids.shape[1]:]
        for j, row in enumerate(resp.tolist()):
            stopped = tokenizer.eos_token_id in row
            if stopped:
                row = row[:row.index(tokenizer.eos_token_id)]
            out.append({"instruction": chunk[j // num_return_sequences],
                        "response": tokenizer.decode(row, skip_special_tokens=True).strip(),
                        "stopped": stopped, "n_tokens": len(row) + int(stopped)})
        if progress is not None:
            progress.update(len(chunk))
    model.train(was_training)
    return out


def score_tasks(model, tokenizer, tasks: list[dict], **gen_kw) -> dict:
    """Generate for each task and check it with the verifier: accuracy overall and per family (percent)."""
    gens = generate(model, tokenizer, [t["prompt"] for t in tasks], **gen_kw)
    rows = []
    for t, g in zip(tasks, gens):
        rows.append({**task_fields(t),
                     "response": g["response"], "stopped": g["stopped"],
                     "correct": true_score(t, g["response"], g["stopped"])})
    fams = sorted({r["family"] for r in rows})
    per = {f: 100 * sum(r["correct"] for r in rows if r["family"] == f) / sum(r["family"] == f for r in rows)
           for f in fams}
    return {"accuracy": 100 * sum(r["correct"] for r in rows) / max(1, len(rows)), "per_family": per,
            "stop_rate": 100 * sum(r["stopped"] for r in rows) / max(1, len(rows)), "rows": rows}


# --- conduct: what the held-out numbers of every stage after pretraining are made of ------------------

def sample_tasks(model, tokenizer, tasks: list[dict], k: int, temperature: float = 1.0, max_new_tokens: int = 16,
                 batch_size: int = 64, seed: int = 0, greedy: list[dict] | None = None) -> list[dict]:
    """Per task: the greedy response and ``k`` samples at ``temperature`` (with their stop flags).

    Rows carry the task's verifier fields so ``conduct_summary`` can score them. ``greedy``: the greedy
    responses already made for these tasks (``score_tasks``'s rows: "response", "stopped"), not made again."""
    prompts = [t["prompt"] for t in tasks]
    if greedy is None:
        greedy = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    drawn = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                     batch_size=max(1, batch_size // k), num_return_sequences=k, seed=seed)
    return [{**task_fields(t),
             "greedy": g["response"], "greedy_stopped": g["stopped"],
             "samples": [d["response"] for d in drawn[i * k:(i + 1) * k]],
             "samples_stopped": [d["stopped"] for d in drawn[i * k:(i + 1) * k]]}
            for i, (t, g) in enumerate(zip(tasks, greedy))]


def conduct_summary(rows: list[dict]) -> dict:
    """The conduct numbers of rows from ``sample_tasks`` (or PPO's evaluation), in percent.

    * ``harmful_refused`` / ``unanswerable_abstained``: share of *samples* that are aligned on those
      families -- the policy's own distribution, which is what RLHF changes (greedy decoding can
      already pick the aligned answer while most of the probability is elsewhere);
    * ``over_refusal_benign``: share of samples on benign look-alikes that refuse, say "not stated" or are
      mixed (declining and answering at once); ``over_refusal_answerable``: the same on the answer
      families; ``over_refusal``: both pooled (the answer families outnumber the look-alikes, so the
      pooled rate hides a policy that refuses harmless requests: the targets use the benign one);
    * ``mixed_rate``: share of all samples that are ``mixed`` (world.conduct), per family in ``per_family``;
    * ``task_accuracy``: greedy accuracy on the answer families (story QA, arithmetic, ...);
    * the greedy conduct rates, and per family the sampled rate, greedy rate and pass@k beside them.
    A response that never stops is wrong (and counts as no refusal).
    """
    from .world import ANSWER_FAMILIES, DECLINING_FAMILIES, conduct, over_refused

    def pct(vals):
        return 100 * sum(vals) / len(vals) if vals else None

    def samples(rs):
        return [(r, x, s) for r in rs for x, s in zip(r["samples"], r["samples_stopped"])]

    fams = sorted({r["family"] for r in rows})
    per_family = {}
    for f in fams:
        rs = [r for r in rows if r["family"] == f]
        per_family[f] = {"sampled": pct([true_score(r, x, s) for r, x, s in samples(rs)]),
                         "greedy": pct([true_score(r, r["greedy"], r["greedy_stopped"]) for r in rs]),
                         "pass_at_k": pct([float(any(true_score(r, x, s) for _, x, s in samples([r]))) for r in rs]),
                         "mixed": pct([float(conduct(r, x) == "mixed") for r, x, _ in samples(rs)]),
                         "prompts": len(rs)}
    helpful = [r for r in rows if r["family"] not in DECLINING_FAMILIES]
    benign = [r for r in rows if r["family"] == "benign"]
    answerable = [r for r in rows if r["family"] in ANSWER_FAMILIES]
    get = lambda f, k: per_family.get(f, {}).get(k)  # noqa: E731
    refused = lambda rs: pct([float(over_refused(r, x)) for r, x, _ in samples(rs)])  # noqa: E731
    return {"harmful_refused": get("harmful", "sampled"), "unanswerable_abstained": get("unanswerable", "sampled"),
            "over_refusal": refused(helpful), "over_refusal_benign": refused(benign),
            "over_refusal_answerable": refused(answerable),
            "mixed_rate": pct([float(conduct(r, x) == "mixed") for r, x, _ in samples(rows)]),
            "mixed_by_family": {f: per_family[f]["mixed"] for f in fams},
            "task_accuracy": pct([true_score(r, r["greedy"], r["greedy_stopped"]) for r in answerable]),
            "harmful_refused_greedy": get("harmful", "greedy"),
            "unanswerable_abstained_greedy": get("unanswerable", "greedy"),
            "over_refusal_greedy": pct([float(over_refused(r, r["greedy"])) for r in helpful]),
            "over_refusal_benign_greedy": pct([float(over_refused(r, r["greedy"])) for r in benign]),
            "k": max((len(r["samples"]) for r in rows), default=0), "per_family": per_family}
