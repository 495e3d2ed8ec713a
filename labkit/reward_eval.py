"""The reward model's report card: pairwise accuracy, calibration, and agreement with the verifier.

Pure statistics over scored pairs and scored samples (``evaluate_pairs``, ``verifier_samples`` score them),
kept apart from stage 4 (``reward.py``) as ``ppo_eval`` is from stage 5, so the stage reads top to
bottom and stage 7 (trust) measures its reward models with the same functions.
"""

from __future__ import annotations

import math

from .generate import generate
from .reward_model import score
from .tokenizer import ensure_chat_ready
from .verifier import true_score


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def calibration(diffs: list[float], n_bins: int = 10) -> dict:
    """Reliability of P(chosen ≻ rejected) = σ(r_chosen − r_rejected), and its expected calibration error.

    Every pair is counted both ways round — (σ(Δ), won) and (σ(−Δ), lost) — so
    the predictions cover [0, 1] and "observed" is a real frequency (a model
    that is always sure and right has observed 1 where it predicts ~1 and 0
    where it predicts ~0). ECE = Σ_bins (n_bin / N) · |observed − mean prediction|
    (Guo et al. 2017, sec. 2).
    """
    preds = [(sigmoid(d), 1.0) for d in diffs] + [(sigmoid(-d), 0.0) for d in diffs]
    bins = []
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = [(p, y) for p, y in preds if lo <= p < hi or (b == n_bins - 1 and p >= hi)]
        if inside:
            bins.append({"bin": f"{lo:.2f}-{hi:.2f}", "count": len(inside),
                         "predicted": sum(p for p, _ in inside) / len(inside),
                         "observed": sum(y for _, y in inside) / len(inside)})
    n = len(preds)
    ece = sum(b["count"] / n * abs(b["observed"] - b["predicted"]) for b in bins) if n else float("nan")
    return {"bins": bins, "ece": ece}


def pair_family(row: dict) -> str:
    """The world family of a scored pair (``evaluate_pairs`` row): "-" for pairs without a world task."""
    return (row.get("task") or {}).get("family", "-")


def pairwise_accuracy(rows: list[dict], families=None) -> float | None:
    """Percent of scored pairs whose chosen response outscores the rejected one (ties count half), as
    ``evaluate_pairs`` counts it; only pairs whose task family is in ``families`` (None: every pair).
    None when no pair counts."""
    wins = [1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in
            (p["score_chosen"] - p["score_rejected"] for p in rows if families is None or pair_family(p) in families)]
    return 100 * sum(wins) / len(wins) if wins else None


def spearman(rows: list[dict], families=None) -> float | None:
    """Spearman's ρ between ``rm_score`` and ``true_score``, pooled over every sample (not within prompts);
    only samples whose ``family`` is in ``families`` (None: all). None when either side is constant."""
    from scipy.stats import spearmanr
    rows = [r for r in rows if families is None or r["family"] in families]
    rm, true = [r["rm_score"] for r in rows], [r["true_score"] for r in rows]
    return float(spearmanr(rm, true).statistic) if len(set(true)) > 1 and len(set(rm)) > 1 else None


def by_family(pair_rows: list[dict], sample_rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per family: held-out pairwise accuracy (``pair_rows``, from ``evaluate_pairs``) and pooled Spearman on
    fresh samples (``sample_rows``, from ``verifier_samples``, with the share the verifier scores right)."""
    fams = sorted({pair_family(p) for p in pair_rows})
    acc = [{"family": f, "pairs": sum(pair_family(p) == f for p in pair_rows),
            "accuracy": pairwise_accuracy(pair_rows, (f,))} for f in fams]
    rho = []
    for f in sorted({v["family"] for v in sample_rows}):
        vs = [v for v in sample_rows if v["family"] == f]
        rho.append({"family": f, "samples": len(vs), "right_rate": 100 * sum(v["true_score"] for v in vs) / len(vs),
                    "spearman": spearman(vs)})
    return acc, rho


def verifier_agreement(rows: list[dict], worst_k: int = 10) -> dict:
    """How well reward-model scores rank fresh samples the way the verifier does.

    ``rows``: {"task_id", "family", "rm_score", "true_score", ...}. Returns Spearman's ρ
    pooled over all samples (``spearman``), pairwise accuracy on (right, wrong) samples
    of the same task (both None when every sample is right, or every one wrong), and the
    ``worst_k`` samples where the two disagree most: wrong answers the reward
    model ranks high, right answers it ranks low.
    """
    rm = [r["rm_score"] for r in rows]
    true = [r["true_score"] for r in rows]
    rho = spearman(rows)
    by_task: dict = {}
    for r in rows:
        by_task.setdefault(r["task_id"], []).append(r)
    wins = total = 0
    for group in by_task.values():
        for a in group:
            for b in group:
                if a["true_score"] > b["true_score"]:
                    total += 1
                    wins += 1.0 if a["rm_score"] > b["rm_score"] else 0.5 if a["rm_score"] == b["rm_score"] else 0.0
    order = sorted(range(len(rows)), key=lambda i: rm[i])
    pct = [0.0] * len(rows)
    for rank, i in enumerate(order):
        pct[i] = rank / max(1, len(rows) - 1)  # 0 = the lowest score, 1 = the highest
    disagreement = [p if t < 0.5 else 1 - p for p, t in zip(pct, true)]
    worst, seen = [], set()
    for i in sorted(range(len(rows)), key=lambda i: -disagreement[i]):
        key = (rows[i].get("prompt"), rows[i].get("response"), rows[i]["rm_score"])
        if key not in seen and len(worst) < worst_k:  # one line per distinct sample, not per repeat
            seen.add(key)
            worst.append({**rows[i], "rm_percentile": round(100 * pct[i])})
    return {"spearman": rho, "pair_accuracy": 100 * wins / total if total else None, "n_pairs": total,
            "worst": worst}


def evaluate_pairs(model, tokenizer, pairs: list[dict], n_bins: int = 10, batch_size: int = 64) -> dict:
    """Pairwise accuracy (%, ties count half), mean scores, calibration bins and ECE, and per-pair rows."""
    s = score(model, tokenizer, [p["prompt"] for p in pairs] * 2,
              [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs], batch_size).tolist()
    sc, sr = s[:len(pairs)], s[len(pairs):]
    diffs = [c - j for c, j in zip(sc, sr)]
    rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"], "score_chosen": c,
             "score_rejected": j, "task": p.get("task")} for p, c, j in zip(pairs, sc, sr)]
    return {"accuracy": 100 * sum(1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in diffs) / len(diffs),
            "chosen_mean": sum(sc) / len(sc), "rejected_mean": sum(sr) / len(sr), "rows": rows,
            **calibration(diffs, n_bins)}


def verifier_samples(model, tokenizer, policy_path, tasks: list[dict], device, samples_per_prompt: int = 4,
                     max_new_tokens: int = 32, temperature: float = 1.0, seed: int = 0,
                     batch_size: int = 64) -> list[dict]:
    """``samples_per_prompt`` fresh samples from the policy at ``policy_path`` for each of ``tasks``, each scored
    by the reward model and the verifier (``verifier.true_score``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    policy = AutoModelForCausalLM.from_pretrained(str(policy_path)).to(device)
    ptok = ensure_chat_ready(AutoTokenizer.from_pretrained(str(policy_path)))
    k = samples_per_prompt
    gens = generate(policy, ptok, [t["prompt"] for t in tasks], max_new_tokens=max_new_tokens,
                    temperature=temperature, num_return_sequences=k, seed=seed, batch_size=max(1, batch_size // k))
    rm = score(model, tokenizer, [g["instruction"] for g in gens], [g["response"] for g in gens], batch_size).tolist()
    rows = []
    for i, (g, s) in enumerate(zip(gens, rm)):
        t = tasks[i // k]
        rows.append({"task_id": t["id"], "family": t["family"], "prompt": t["prompt"], "answer": t["answer"],
                     "response": g["response"], "stopped": g["stopped"], "rm_score": s,
                     "true_score": true_score(t, g["response"], g["stopped"])})
    return rows


