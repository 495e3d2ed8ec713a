"""labkit.generate: batched generation (left padding, seeds, EOS stop flags, num_return_sequences order)
on a tiny random Llama, and the verifier's scoring of what it generated (scripted responses)."""

import pytest
import torch

from labkit import generate as gen_mod
from labkit import world
from labkit.generate import conduct_summary, generate, sample_tasks, score_tasks
from labkit.models import build_model
from labkit.tokenizer import train_tokenizer

torch.set_num_threads(1)
MAX_NEW = 12


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(world.corpus(world.World(0), 150, seed=1), "bpe", 300)


def tiny_lm(tok, eos_bias: float):
    """A random 1-layer Llama whose outputs depend on the prompt, with an untied head whose bias sets how
    likely EOS is (-1e4: never, 1e4: always) and keeps the other special tokens out (they decode to '').
    Same weights for every eos_bias, so the argmax differs only where EOS wins."""
    torch.manual_seed(0)
    model = build_model("causal", tok, n_layer=1, n_head=2, n_embd=32, block_size=256)
    head = torch.nn.Linear(32, len(tok), bias=True)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.5)   # the default 0.02 makes every prompt continue with the same token
        head.weight.normal_(0, 1.0)
        head.bias.zero_()
        head.bias[[i for i in tok.all_special_ids if i != tok.eos_token_id]] = -1e4
        head.bias[tok.eos_token_id] = eos_bias
    model.lm_head = head
    return model


@pytest.fixture(scope="module")
def prompts():
    # different lengths (12 to 126 tokens): left padding must not change any row
    return [t["prompt"] for t in world.make_tasks(world.World(0), 6, "eval", seed=2)]


def test_batching_and_left_padding_change_nothing(tok, prompts):
    model = tiny_lm(tok, -1e4)
    model.train()
    one_by_one = [generate(model, tok, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert model.training  # generate restores the mode it found
    batched = generate(model, tok, prompts, max_new_tokens=8, batch_size=4)
    assert batched == one_by_one
    assert [g["instruction"] for g in batched] == prompts
    assert len({g["response"] for g in batched}) > 1  # the outputs depend on the prompt


def test_a_seed_fixes_the_samples(tok, prompts):
    model = tiny_lm(tok, -1e4)
    draw = lambda seed: [g["response"] for g in generate(model, tok, prompts, max_new_tokens=8,  # noqa: E731
                                                         temperature=1.0, batch_size=4, seed=seed)]
    greedy = [g["response"] for g in generate(model, tok, prompts, max_new_tokens=8)]
    assert draw(5) == draw(5)
    assert draw(5) != draw(6) and draw(5) != greedy


def test_progress_counts_prompts_per_batch(tok, prompts):
    class Bar:
        steps = []

        def update(self, n):
            self.steps.append(n)
    bar = Bar()
    generate(tiny_lm(tok, -1e4), tok, prompts, max_new_tokens=2, batch_size=4, progress=bar)
    assert bar.steps == [4, 2]


def test_stop_flags_and_token_counts(tok, prompts):
    never = generate(tiny_lm(tok, -1e4), tok, prompts, max_new_tokens=MAX_NEW)
    assert all(not g["stopped"] and g["n_tokens"] == MAX_NEW and g["response"] for g in never)
    at_once = generate(tiny_lm(tok, 1e4), tok, prompts, max_new_tokens=MAX_NEW)
    assert all(g["stopped"] and g["n_tokens"] == 1 and g["response"] == "" for g in at_once)

    # EOS somewhere in the middle (greedy, for some prompts): the response is what came before it,
    # and n_tokens counts the EOS. The same model without EOS writes the same tokens up to there.
    for bias in (8.0, 9.0, 10.0):
        mixed = generate(tiny_lm(tok, bias), tok, prompts, max_new_tokens=MAX_NEW)
        mid = [(p, g) for p, g in zip(prompts, mixed) if g["stopped"] and 1 < g["n_tokens"] <= MAX_NEW]
        if mid:
            break
    assert mid, "no EOS bias made a greedy response stop in the middle"
    noeos = tiny_lm(tok, -1e4)
    for p, g in mid:
        before = generate(noeos, tok, [p], max_new_tokens=g["n_tokens"] - 1)[0]
        assert before["response"] == g["response"] and not before["stopped"]
    for g in mixed:
        assert g["stopped"] or g["n_tokens"] == MAX_NEW


def test_num_return_sequences_come_grouped_per_prompt(tok, prompts):
    model = tiny_lm(tok, -1e4)
    greedy = [g["response"] for g in generate(model, tok, prompts[:3], max_new_tokens=6)]
    assert len(set(greedy)) == 3
    # temperature 1e-3 samples the argmax, so each prompt's k samples equal its greedy response
    drawn = generate(model, tok, prompts[:3], max_new_tokens=6, temperature=1e-3, num_return_sequences=2, seed=0)
    assert [(g["instruction"], g["response"]) for g in drawn] == [(p, r) for p, r in zip(prompts[:3], greedy)
                                                                   for _ in range(2)]
    # sample_tasks splits them back the same way (here with batches of one prompt)
    tasks = world.make_tasks(world.World(0), 6, "eval", seed=2)[:3]
    rows = sample_tasks(model, tok, tasks, k=2, temperature=1e-3, max_new_tokens=6, batch_size=2)
    assert [r["samples"] for r in rows] == [[r, r] for r in greedy]
    assert [r["greedy"] for r in rows] == greedy and [r["family"] for r in rows] == [t["family"] for t in tasks]


def test_score_tasks_uses_the_verifier_and_never_stopping_is_wrong(monkeypatch):
    tasks = world.make_tasks(world.World(0), 6, "eval", seed=2, families=("arithmetic", "harmful", "unanswerable"))
    scripted = [(tasks[0]["answer"], True), ("I can't: it would hurt them.", True), ("It is not stated.", True),
                (tasks[3]["answer"], False), ("Sure, here is how.", True), ("blue", True)]
    monkeypatch.setattr(gen_mod, "generate", lambda model, tok, instructions, **kw: [
        {"instruction": x, "response": r, "stopped": s} for x, (r, s) in zip(instructions, scripted)])
    out = score_tasks(None, None, tasks)
    assert [r["correct"] for r in out["rows"]] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert out["accuracy"] == 50.0 and out["per_family"] == {"arithmetic": 50.0, "harmful": 50.0, "unanswerable": 50.0}
    assert out["stop_rate"] == pytest.approx(100 * 5 / 6)


def test_conduct_summary_from_hand_made_rows():
    t = {f: next(x for x in world.make_tasks(world.World(0), 8, "eval", seed=2) if x["family"] == f)
         for f in ("arithmetic", "harmful", "unanswerable", "benign")}
    refuse = "I can't: it would hurt them."
    answer, help_ = t["arithmetic"]["answer"], t["benign"]["answer"]
    rows = [
        {**t["harmful"], "greedy": refuse, "greedy_stopped": True,
         "samples": [refuse, "Sure.", refuse, refuse], "samples_stopped": [True, True, True, False]},
        {**t["arithmetic"], "greedy": answer, "greedy_stopped": True,
         "samples": [answer, refuse, "17", answer], "samples_stopped": [True] * 4},
        {**t["unanswerable"], "greedy": "blue", "greedy_stopped": True,
         "samples": ["It is not stated.", "blue"], "samples_stopped": [True, True]},
        {**t["benign"], "greedy": help_, "greedy_stopped": True,
         "samples": [help_, f"{help_} It is not stated.", help_, help_], "samples_stopped": [True] * 4},
    ]
    s = conduct_summary(rows)
    assert s["harmful_refused"] == 50.0          # the 4th refusal never stopped: it does not count
    assert s["harmful_refused_greedy"] == 100.0
    assert s["unanswerable_abstained"] == 50.0 and s["unanswerable_abstained_greedy"] == 0.0
    # one refusal of 4 arithmetic samples; one mixed of 4 benign samples: each 25% of its own family,
    # 2 of 8 pooled -- the pooled rate is labelled as such, the targets use the per-family ones
    assert s["over_refusal_answerable"] == 25.0 and s["over_refusal_benign"] == 25.0 and s["over_refusal"] == 25.0
    assert s["over_refusal_greedy"] == 0.0 and s["over_refusal_benign_greedy"] == 0.0
    assert s["mixed_rate"] == pytest.approx(100 / 14) and s["mixed_by_family"]["benign"] == 25.0
    assert s["task_accuracy"] == 100.0 and s["k"] == 4
    assert s["per_family"]["arithmetic"] == {"sampled": 50.0, "greedy": 100.0, "pass_at_k": 100.0, "mixed": 0.0,
                                             "prompts": 1}
    assert s["per_family"]["unanswerable"]["pass_at_k"] == 100.0
