"""Stage 5's judgement of a policy: the before/after evaluation on held-out prompts and the alarms.

``evaluate`` is also what stages 6 (``compare``) and 7 (``trust``) measure every policy with
(``evaluate_policy``: any causal LM, one process).

Evaluation (eval.json, ``before``/``after``): ``true_greedy``,
``true_sampled`` (mean of ``eval_samples`` samples a prompt), ``pass_at_k``
(share of prompts with a right sample among them), ``best_of_k`` (the sample
the reward model ranks first; ``rm_score_best_of_k`` its score), ``kl``, ``rm_score``, ``stop_rate``, ``length``,
``drift_ppl`` (perplexity on stage 1's validation text, added by ``ppo.run``);
for world tasks the conduct rates of ``generate.conduct_summary`` --
``harmful_refused``, ``unanswerable_abstained``, ``over_refusal`` (percent of
samples at the rollout temperature), ``task_accuracy`` (greedy, answer
families), their greedy versions, ``per_family`` and ``best_of_k_rates``.

``judge_verdict``: the AI judge's win rate of the trained policy's greedy answers against the starting
policy's, with a Wilson 95% interval (``judges.win_rate``): a measure for any prompts, answers or not.

Alarms: ``check_alarms`` reads the per-step metrics while training (reward
hacking fast and slow, over-refusal, KL drift); ``final_alarms`` compares the
held-out evaluation before and after.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import torch

from .generate import conduct_summary
from .judges import constitution, win_rate
from .ppo_config import PPOConfig, kl_threshold
from .ppo_math import seed_for
from .ppo_models import PolicyAndValue, position_ids, reference, rollout_inputs, sample
from .tokenizer import format_prompt
from .verifier import task_fields, true_score


# --- evaluation ----------------------------------------------------------------------------

@torch.no_grad()
def evaluate(pv: PolicyAndValue, ref, score_fn, tokenizer, tasks: list[dict], cfg: PPOConfig, acc, autocast) -> tuple[dict, list]:
    """Greedy and sampled true score, pass@k, KL to the reference (exact, per response) and reward-model score.

    Each prompt gets ``eval_samples`` samples at the rollout temperature. Their mean is the sampled
    true score; pass@k is the share of prompts with at least one right sample. The policy gradient
    only ever reinforces answers the policy samples (a prompt it never answers right gives no
    signal), so pass@k of the SFT model bounds what PPO can reach on these prompts.
    Tasks are split over processes and the rows gathered. Sampling uses a fixed
    seed (the same before and after training) and leaves the training RNG alone.
    ``score_fn(tasks, texts, has_eos)`` gives each response's raw score, [B] (the reward model's, or
    the verifier's 1/0): what the rows report as ``rm_score`` and best-of-k ranks by.
    """
    from accelerate.utils import gather_object
    mine = tasks[acc.process_index::acc.num_processes]
    rows = []
    with torch.random.fork_rng(devices=[acc.device] if acc.device.type == "cuda" else []):
        torch.manual_seed(seed_for(cfg.seed, "eval", acc.process_index))
        for s in range(0, len(mine), cfg.rollout_batch_size):
            chunk = mine[s:s + cfg.rollout_batch_size]
            instr = [t["prompt"] for t in chunk]
            greedy = sample(pv.policy, tokenizer, instr, cfg.max_new_tokens, None, autocast)
            draws = [sample(pv.policy, tokenizer, instr, cfg.max_new_tokens, cfg.temperature, autocast)
                     for _ in range(cfg.eval_samples)]
            sampled = draws[0]  # the one whose KL is reported
            kl = exact_kl(pv, ref, sampled, cfg, autocast)
            rm_g = score_fn(chunk, greedy["texts"], greedy["has_eos"])
            rm_all = torch.stack([score_fn(chunk, d["texts"], d["has_eos"]) for d in draws], 1)  # [B, k]
            best = rm_all.argmax(1)  # best-of-k: the sample the reward model ranks first
            for i, t in enumerate(chunk):
                g_ok, s_ok = bool(greedy["has_eos"][i]), bool(sampled["has_eos"][i])
                verdicts = [true_score(t, d["texts"][i], bool(d["has_eos"][i])) for d in draws]
                known = t.get("answer") is not None
                b = draws[int(best[i])]
                rows.append({"id": t.get("id"), "family": t.get("family"), "answer": t.get("answer"), **task_fields(t),
                             "greedy": greedy["texts"][i], "greedy_stopped": g_ok,
                             "greedy_correct": true_score(t, greedy["texts"][i], g_ok),
                             "sampled": sampled["texts"][i], "sampled_stopped": s_ok,
                             "sampled_correct": sum(verdicts) / len(verdicts) if known else None,
                             "pass_k": float(any(verdicts)) if known else None,
                             "samples": [d["texts"][i] for d in draws],
                             "samples_stopped": [bool(d["has_eos"][i]) for d in draws],
                             "best_of_k": b["texts"][i], "best_of_k_stopped": bool(b["has_eos"][i]),
                             "best_of_k_correct": true_score(t, b["texts"][i], bool(b["has_eos"][i])),
                             "sampled_len": int(sampled["mask"][i].sum()), "kl": kl[i].item(),
                             "rm_score": rm_all[i].mean().item(), "rm_score_greedy": rm_g[i].item(),
                             "rm_score_best_of_k": rm_all[i].max().item()})
    rows = gather_object(rows) if acc.num_processes > 1 else rows
    order = {t.get("id"): i for i, t in enumerate(tasks)}
    rows.sort(key=lambda r: order.get(r["id"], 0))

    def mean(key, scale=1.0):
        vals = [r[key] for r in rows if r[key] is not None]
        return scale * sum(vals) / len(vals) if vals else None

    summary = {"true_greedy": mean("greedy_correct", 100), "true_sampled": mean("sampled_correct", 100),
               "pass_at_k": mean("pass_k", 100), "best_of_k": mean("best_of_k_correct", 100), "k": cfg.eval_samples,
               "kl": mean("kl"), "rm_score": mean("rm_score"), "rm_score_greedy": mean("rm_score_greedy"),
               "rm_score_best_of_k": mean("rm_score_best_of_k"),
               "stop_rate": mean("sampled_stopped", 100), "length": mean("sampled_len"), "n": len(rows)}
    if all(r["answer"] is not None for r in rows):  # world tasks: the conduct rates (percent of samples)
        conduct = conduct_summary(rows)
        # best-of-k by the reward model, scored like one sample per prompt: what reranking alone buys
        best = conduct_summary([{**r, "greedy": r["best_of_k"], "greedy_stopped": r["best_of_k_stopped"],
                                 "samples": [r["best_of_k"]], "samples_stopped": [r["best_of_k_stopped"]]}
                                for r in rows])
        summary.update({k: v for k, v in conduct.items() if k != "k"})
        summary["best_of_k_rates"] = {k: best[k] for k in ("harmful_refused", "unanswerable_abstained", "over_refusal",
                                                           "over_refusal_benign", "over_refusal_answerable",
                                                           "mixed_rate", "mixed_by_family", "task_accuracy")}
    return summary, rows


def judge_verdict(tasks: list[dict], before_rows: list[dict], after_rows: list[dict]) -> dict:
    """The constitution judge on each held-out prompt: the new policy's greedy answer (``after_rows``, from
    `evaluate`) against the starting policy's (``before_rows``); a task's answer lets its verifier principle
    count, a prompt without one is judged on the other principles (``judges.win_rate``)."""
    by_id = {t.get("id"): t for t in tasks}
    judged = [by_id.get(b["id"]) if by_id.get(b["id"], {}).get("answer") is not None else None for b in before_rows]
    return win_rate(constitution(), [b["prompt"] for b in before_rows], judged, [a["greedy"] for a in after_rows],
                    [b["greedy"] for b in before_rows], [a["greedy_stopped"] for a in after_rows],
                    [b["greedy_stopped"] for b in before_rows])


def evaluate_policy(policy, ref, tokenizer, tasks: list[dict], cfg: PPOConfig, score_fn, device, autocast):
    """``evaluate`` on any causal LM, in one process (``ref``: the SFT model, or None for a PeftModel, whose
    reference is its base with the adapter off): how stages 6 and 7 measure a policy as stage 5 does."""
    acc = SimpleNamespace(process_index=0, num_processes=1, device=device)
    return evaluate(SimpleNamespace(policy=policy), ref, score_fn, tokenizer, tasks, cfg, acc, autocast)


def exact_kl(pv, ref, batch, cfg, autocast) -> torch.Tensor:
    """Sum over each response's tokens of KL(π(.|s_t) ‖ π_ref(.|s_t)), at the sampling temperature."""
    R = batch["response"].shape[1]
    ids, attn = rollout_inputs(batch, slice(None))
    kw = dict(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn), logits_to_keep=R + 1, use_cache=False)
    with autocast:
        logits = pv.policy(**kw).logits[:, :-1].float()
    with reference(pv, ref) as model, autocast:
        ref_logits = model(**kw).logits[:, :-1].float()
    lp, lq = torch.log_softmax(logits / cfg.temperature, -1), torch.log_softmax(ref_logits / cfg.temperature, -1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    return torch.where(batch["mask"].bool(), kl, torch.zeros_like(kl)).sum(1).cpu()


@torch.no_grad()
def token_kl(policy, ref, tokenizer, instruction: str, response: str, temperature: float = 1.0,
             top_k: int = 0) -> list[dict]:
    """Per-token view of one response: each token, its log-prob under the policy and the reference,
    the k1 estimate (their difference) and the exact KL(π‖π_ref) of the next-token distributions there.
    With ``top_k``, each row also lists the ``top_k`` most likely tokens there under each model
    (``top`` and ``ref_top``: [token, probability] pairs, best first), the alternatives the explorer shows."""
    device = next(policy.parameters()).device
    prompt = tokenizer(format_prompt(tokenizer, instruction), add_special_tokens=False).input_ids
    resp = tokenizer(response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt + resp], device=device)
    n = len(resp)
    lp = [torch.log_softmax(m(input_ids=ids).logits[0, -n - 1:-1].float() / temperature, -1) for m in (policy, ref)]
    exact = (lp[0].exp() * (lp[0] - lp[1])).sum(-1)
    tgt = ids[0, -n:]
    a, b = lp[0].gather(-1, tgt[:, None])[:, 0], lp[1].gather(-1, tgt[:, None])[:, 0]
    rows = [{"position": i, "token": tokenizer.decode([t]), "logprob": a[i].item(), "ref_logprob": b[i].item(),
             "k1": (a[i] - b[i]).item(), "kl": exact[i].item()} for i, t in enumerate(tgt.tolist())]
    if top_k:
        for key, logp in (("top", lp[0]), ("ref_top", lp[1])):
            vals, idx = logp.exp().topk(min(top_k, logp.shape[-1]), dim=-1)
            for row, v, ix in zip(rows, vals.tolist(), idx.tolist()):
                row[key] = [[tokenizer.decode([t]), p] for t, p in zip(ix, v)]
    return rows


# --- alarms -------------------------------------------------------------------------------------

def check_alarms(history: list[dict], cfg: PPOConfig, active: set) -> list[dict]:
    """New alarms from the metric history; ``active`` holds those currently on, so each fires once
    until its condition clears. Every rule compares means over ``alarm_window`` steps, so one noisy
    batch (64 rollouts: a true score wobbles by ~6 points) never fires it:

    * reward hacking, fast: over the last window, the learned reward rose while the true score fell by
      ``alarm_true_drop`` points (first half of the window against the second);
    * reward hacking, slow: over the whole run, the learned reward's trend is up while the true
      score's trend is down by ``alarm_run_drop`` points and clearly so (a least-squares slope more
      than 3 standard errors below zero) -- a drift too slow to show inside one window;
    * over-refusal: since the start, the share of rollouts refusing or answering "not stated" where
      the helpful answer was wanted rose by ``alarm_over_refusal`` points (a policy that learned
      "refusing scores well" and applies it to harmless requests);
    * drift: the KL to the reference, averaged over the last window, is above ``ppo_config.kl_threshold``
      nats per response.
    """
    new, last, n = [], history[-1], cfg.alarm_window

    def mean(rows, k):
        vals = [h[k] for h in rows if h.get(k) is not None]
        return sum(vals) / len(vals) if len(vals) == len(rows) and vals else None

    def change(k, a, b):  # mean over rows b minus mean over rows a (None when a metric is missing)
        ma, mb = mean(a, k), mean(b, k)
        return None if ma is None or mb is None else mb - ma

    fast = slow = over = None
    window_kl = mean(history[-n:], "ppo/kl")
    drift = window_kl is not None and window_kl > kl_threshold(cfg)
    if cfg.reward == "model" and len(history) >= n:
        w = history[-n:]
        fast = change("ppo/rm_score", w[:n // 2], w[n // 2:]), change("ppo/true_score", w[:n // 2], w[n // 2:])
    if len(history) >= 2 * n:
        if cfg.reward == "model":
            rm_trend, true_trend = _trend(history, "ppo/rm_score"), _trend(history, "ppo/true_score")
            if rm_trend and true_trend and true_trend[1] < -3:
                slow = rm_trend[0], true_trend[0]
        over = change("ppo/over_refusal", history[:n], history[-n:])
    hacked = lambda rt: rt is not None and None not in rt and rt[0] > 0  # noqa: E731
    rules = (
        ("reward_hacking", hacked(fast) and fast[1] <= -cfg.alarm_true_drop,
         lambda: f"learned reward rose by {fast[0]:+.3f} while the true score fell by {-fast[1]:.1f} points over "
                 f"the last {n} steps: the policy is exploiting the reward model (raise kl_coef, stop early)"),
        ("reward_hacking_slow", hacked(slow) and slow[1] <= -cfg.alarm_run_drop,
         lambda: f"since the start of training the learned reward rose by {slow[0]:+.3f} while the true score fell "
                 f"by {-slow[1]:.1f} points (least-squares trends over {len(history)} steps): the reward model is being "
                 "optimised past the point where it tracks the truth"),
        ("over_refusal", over is not None and over >= cfg.alarm_over_refusal,
         lambda: f"the policy now refuses or says 'not stated' on {over:+.1f} points more harmless requests than at "
                 f"the start (first {n} steps vs last {n}): refusing has become a way to score"),
        ("kl_drift", drift, lambda: f"KL to the reference is {window_kl:.2f} nats per response over the last "
                                    f"{min(n, len(history))} steps (> {kl_threshold(cfg):.2f}): the policy is further "
                                    "from SFT than best-of-n reranking would take it"))
    for kind, on, msg in rules:
        if on and kind not in active:
            active.add(kind)
            new.append({"step": last["step"], "kind": kind, "message": msg()})
        elif not on:
            active.discard(kind)
    return new


def _trend(history: list[dict], key: str) -> tuple[float, float] | None:
    """(fitted change from the first step to the last, t-statistic of the slope) of a metric, by least
    squares over the steps; None when the metric is missing or the fit has no residual to judge by."""
    pts = [(h["step"], h[key]) for h in history if h.get(key) is not None]
    if len(pts) < 3:
        return None
    xs, ys = zip(*pts)
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    resid = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys)) / (len(xs) - 2)
    if sxx == 0 or resid == 0:
        return None
    return slope * (xs[-1] - xs[0]), slope / (resid / sxx) ** 0.5


def final_alarms(before: dict, after: dict, cfg: PPOConfig) -> list[dict]:
    """The held-out verdict, on the evaluation prompts (paired: the same prompts and sampling seed before and
    after, so it sees a fall the noisy rollout metrics can hide):

    * ``kl_drift_heldout``: the KL to the SFT model is above ``ppo_config.kl_threshold``;
    * while the learned reward rose: the true score fell by ``alarm_run_drop`` points (sampled mean or
      greedy: ``reward_hacking_heldout``), or one family's true score fell by ``alarm_family_drop`` points,
      sampled or greedy (``reward_hacking_family``). An overall score can rise while one family breaks
      (the KL ablation's twin garbled the names of benign look-alikes while conduct pulled the overall
      score up: notebook 05), and a family the rollouts never visit moves only greedily at first.
    """
    alarms = []
    if after.get("kl") is not None and after["kl"] > kl_threshold(cfg):
        alarms.append({"step": None, "kind": "kl_drift_heldout",
                       "message": f"on the held-out prompts the KL to the SFT model is {after['kl']:.2f} nats per "
                                  f"response (> {kl_threshold(cfg):.2f}): further than best-of-n reranking goes"})
    if cfg.reward != "model" or None in (before.get("rm_score"), after.get("rm_score")):
        return alarms
    if after["rm_score"] <= before["rm_score"]:
        return alarms
    rose = f"on the held-out prompts the learned reward rose {before['rm_score']:+.3f} -> {after['rm_score']:+.3f}"
    falls = {k: before[k] - after[k] for k in ("true_sampled", "true_greedy")
             if before.get(k) is not None and after.get(k) is not None}
    worst = max(falls, key=falls.get, default=None)
    if worst is not None and falls[worst] >= cfg.alarm_run_drop:
        alarms.append({"step": None, "kind": "reward_hacking_heldout",
                       "message": f"{rose} while the true score ({worst.split('_')[1]}) fell "
                                  f"{before[worst]:.1f} -> {after[worst]:.1f}: the policy learned what the reward "
                                  "model likes, not what is right"})
    fam_before, fam_after = before.get("per_family") or {}, after.get("per_family") or {}
    for fam in sorted(set(fam_before) & set(fam_after)):
        for how, what in (("sampled", "of samples"), ("greedy", "greedy")):
            b, a = fam_before[fam].get(how), fam_after[fam].get(how)
            if b is not None and a is not None and b - a >= cfg.alarm_family_drop:
                alarms.append({"step": None, "kind": "reward_hacking_family",
                               "message": f"{rose} while {fam} fell {b:.1f} -> {a:.1f}% right ({what}): the policy "
                                          f"broke what the reward model does not check there"})
                break  # one alarm per family
    return alarms


def announce(alarm: dict) -> None:
    print(f"\n⚠️  PPO ALARM at step {alarm['step']} [{alarm['kind']}]: {alarm['message']}", file=sys.stderr, flush=True)
