"""Stage 7: how far a reward model can be trusted -- over-optimization against the verifier, and what feedback costs.

Optimise a reward model hard enough and the true score turns down while the proxy keeps rising (Gao, Schulman &
Hilton 2022, "Scaling Laws for Reward Model Overoptimization", who needed a 6B "gold" reward model to see it).
Here the world's verifier is the gold, so the curves are measured, on stage 5's held-out prompts, against
d = sqrt(KL(π ‖ π_SFT)), gold and proxy relative to the SFT model (gold(d) − gold(0)), as Gao et al. plot them:

* **best-of-n**: n_max samples per prompt from the SFT model, reranked by the reward model for every n (the
  expectation over n-subsets, Gao et al. appendix); KL = log n − (n−1)/n (``ppo_math.best_of_n_kl``);
* **RL**: stage 5's snapshots (``snapshot_interval``) and its ``kl_coef=0`` twin when notebook 05 made one, or
  both trained here for longer (``train_rl``), each evaluated by ``ppo_eval.evaluate_policy``;
* Gao et al.'s forms by least squares: best-of-n d(α − βd), peak d* = α/2β; RL d(α − β ln d), d* = e^(α/β − 1);
* **data size** (part ``data_size``): reward models on 250 / 1,000 / 4,000 of stage 4's pairs, stage 4's recipe
  (``reward_model.reward_trainer``), beside stage 4's own: conduct accuracy and best-of-n curve of each;
* **feedback cost** (part ``feedback``): conduct accuracy against labels for the judge, annotators flipping
  10% / 25% of its labels, active selection (the lowest-margin pairs next); labels and person-hours to
  ``target_accuracy``; and at every point of the curves the share of ``mixed`` samples (``world.conduct``).

    from labkit import trust
    result = trust.run(trust.config("smoke"), run="demo")   # needs stages sft..ppo in runs/demo
    # labkit run --stages trust   (not part of the default `labkit run`)

Writes ``runs/<run>/07_trust/``: ``config.json``, ``eval.json`` (``best_of_n``, ``rl``, ``data_size``, ``feedback``:
points, fits, settings; ``seconds`` per part), ``best_of_n.jsonl.gz`` (every sample: its verdict, whether it is
mixed, each reward model's score) and, with ``train_rl``, ``rl/leash`` and ``rl/nokl`` (run folders of the PPO runs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from . import verifier as V
from . import world as W
from .config import (ConfigError, device_field, make_config, parse_choices, require_at_least, seed_field, set_threads,
                     threads_field)
from .live import progress
from .models import pick_device
from .ppo_config import heldout_tasks, model_paths, snapshots, stage5_config
from .ppo_eval import evaluate_policy
from .ppo_math import best_of_n_kl, seed_for
from .ppo_models import load_policy, sample
from .reward_eval import evaluate_pairs, pairwise_accuracy
from .reward_model import load_reward_model, preference_pairs, reward_trainer, score
from .runs import STAGE_DIRS, Run, atomic_write_json, atomic_write_text, read_json, write_jsonl_atomic, writes_run
from .store import LabelStore
from .tokenizer import ensure_chat_ready
from .training import quiet_libraries, quiet_peft

PARTS = ("best_of_n", "rl", "data_size", "feedback")
CHART = None  # nothing trains a curve worth watching live; the notebook draws the results


@dataclass
class TrustConfig:
    parts: str = field(default="best_of_n,rl,data_size", metadata={"help": "comma list of what to measure: " + ", ".join(PARTS) + " (feedback trains a reward model per label count and annotator: opt-in)"})
    n_prompts: int | None = field(default=None, metadata={"help": "stage 5's held-out prompts to measure on, balanced over families (None: all of them)"})
    n_max: int = field(default=64, metadata={"help": "best-of-n: samples per prompt from the SFT model; n = 1, 2, 4, ... up to n_max"})
    gen_batch_size: int = field(default=256, metadata={"help": "best-of-n: responses generated per batch"})
    rl_samples: int = field(default=4, metadata={"help": "RL: samples per held-out prompt at each point (gold and proxy: their mean; KL: exact, on the first)"})
    train_rl: bool = field(default=False, metadata={"help": "RL: run PPO here with stage 5's settings for rl_max_steps, with snapshots, once with stage 5's kl_coef and once with kl_coef=0 (two PPO runs of time); False: read stage 5's snapshots, and its kl_coef=0 twin when notebook 05 made one"})
    rl_max_steps: int | None = field(default=None, metadata={"help": "train_rl: PPO steps of both runs (None: twice stage 5's max_steps)"})
    data_sizes: str = field(default="250,1000,4000", metadata={"help": "data size: preference pairs each extra reward model trains on, from stage 4's training pairs (stage 4's own model is the 'all' point)"})
    label_counts: str = field(default="100,250,500,1000,2000,4000", metadata={"help": "feedback: label counts of the accuracy-against-labels curves ('all' is added)"})
    flip_rates: str = field(default="0.1,0.25", metadata={"help": "feedback: shares of the judge's labels a simulated annotator flips at random"})
    active_start: int = field(default=250, metadata={"help": "feedback: random labels before active selection; each round then doubles the labels with the pairs the current reward model is least sure of"})
    active_rounds: int = field(default=3, metadata={"help": "feedback: rounds of active selection"})
    target_accuracy: float = field(default=90.0, metadata={"help": "feedback: held-out conduct accuracy (%) the labels and person-hours are counted to"})
    seconds_per_label: float = field(default=20.0, metadata={"help": "feedback: an ASSUMED time for one pairwise label, used only when the label store holds no person's labels to time"})
    score_batch_size: int = field(default=64, metadata={"help": "sequences per reward-model forward pass"})
    seed: int = seed_field("the best-of-n samples, which pairs each smaller reward model gets, and the annotators' flips")
    device: str = device_field()
    threads: int | None = threads_field()


PRESETS = {
    "smoke": dict(parts=",".join(PARTS), n_max=4, gen_batch_size=32, rl_samples=2, data_sizes="8", label_counts="4,8",
                  active_start=2, active_rounds=3, threads=1),
    # The dataclass defaults are the cpu preset, on one thread as stages 5 and 6 (models too small for more).
    "cpu": dict(threads=1),
    "gpu": dict(gen_batch_size=1024, score_batch_size=256, data_sizes="1000,4000,16000",
                label_counts="100,300,1000,3000,10000,30000", active_start=1000),
    "hub": dict(n_max=16, gen_batch_size=64, score_batch_size=32),
}


def config(preset: str = "cpu", **overrides) -> TrustConfig:
    return make_config(TrustConfig, PRESETS, preset, overrides)


def numbers(text: str, kind=int) -> list:
    """The distinct numbers of a comma list, ascending."""
    return sorted({kind(x) for x in text.split(",") if x.strip()})


def _check(cfg: TrustConfig) -> list[str]:
    require_at_least(cfg, ("n_prompts", "gen_batch_size", "rl_samples", "rl_max_steps", "active_start",
                           "active_rounds", "score_batch_size"))
    require_at_least(cfg, ("n_max",), 2)
    if not all(0 < p < 0.5 for p in numbers(cfg.flip_rates, float)):
        raise ConfigError(f"flip_rates must lie between 0 and 0.5 (a flip share of 0.5 is a coin), got {cfg.flip_rates}")
    if cfg.seconds_per_label <= 0 or not 50 < cfg.target_accuracy <= 100:
        raise ConfigError("seconds_per_label must be > 0 and target_accuracy in (50, 100]")
    return parse_choices(cfg.parts, PARTS, "part")


# --- the maths: best-of-n's expectation, Gao et al.'s fits, annotators, active selection ----------

def best_of_n_weights(N: int, n: int) -> np.ndarray:
    """P(the j-th lowest-scored of N samples is the highest-scored of a random n of them), j = 1..N:
    C(j−1, n−1) / C(N, n). Averaging over every n-subset of N draws is the unbiased, low-variance estimate of
    best-of-n that Gao et al. use (their appendix; Nakano et al. 2021, WebGPT)."""
    return np.array([math.comb(j - 1, n - 1) for j in range(1, N + 1)], dtype=float) / math.comb(N, n)


def expected_best(scores, values, n: int) -> float:
    """E[value of the highest-scored of n samples drawn without replacement from these], ties by position."""
    order = np.argsort(np.asarray(scores, dtype=float), kind="stable")
    return float(best_of_n_weights(len(order), n) @ np.asarray(values, dtype=float)[order])


def fit_gao(d, gain, form: str) -> dict:
    """Least squares of the gold gain on d = sqrt(KL), no intercept (the curves start at 0): best-of-n
    d(α − βd), RL d(α − β ln d) (Gao et al. 2022, eq. 1-2). R² against the mean; the predicted peak d*
    (None where β <= 0: no turn predicted) and whether it lies within the measured d."""
    d, y = np.asarray(d, dtype=float), np.asarray(gain, dtype=float)
    if (d > 0).sum() < 2:
        return {"alpha": None, "beta": None, "r2": None, "d_star": None, "peak_in_range": False, "points": len(d)}
    curve = d ** 2 if form == "best_of_n" else d * np.log(np.where(d > 0, d, 1.0))
    X = np.stack([d, -curve], 1)
    (alpha, beta), *_ = np.linalg.lstsq(X, y, rcond=None)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(((y - X @ np.array([alpha, beta])) ** 2).sum()) / ss_tot if ss_tot > 0 else None
    d_star = None if beta <= 0 else alpha / (2 * beta) if form == "best_of_n" else math.exp(min(alpha / beta - 1, 50))
    return {"alpha": float(alpha), "beta": float(beta), "r2": r2, "d_star": d_star,
            "peak_in_range": d_star is not None and d_star <= float(d.max()), "points": len(d)}


def flip_labels(pairs: list[dict], rate: float, seed: int) -> tuple[list[dict], set[int]]:
    """A simulated annotator who disagrees with the judge on exactly round(rate · n) pairs, drawn at random
    (fixed seed): chosen and rejected swap there. Returns the labelled pairs and the flipped indices."""
    flipped = set(random.Random(f"flip-{seed}-{rate}").sample(range(len(pairs)), round(rate * len(pairs))))
    return [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} if i in flipped else p
            for i, p in enumerate(pairs)], flipped


def least_sure(margins, k: int, labelled=()) -> list[int]:
    """Active selection: the ``k`` unlabelled pairs whose reward-model margin |r(a) − r(b)| is smallest (ties by
    index) -- the labels the current model would learn most from (uncertainty sampling)."""
    done = set(labelled)
    return sorted((i for i in range(len(margins)) if i not in done), key=lambda i: (abs(margins[i]), i))[:k]


def labels_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """Labels needed for accuracy >= ``target`` on a measured curve [(labels, accuracy)]: where it first
    crosses, linear in log(labels) between the points either side; its first count when it starts above;
    None when it never gets there."""
    pts = sorted((c, a) for c, a in curve if a is not None)
    for i, (c, a) in enumerate(pts):
        if a >= target:
            if i == 0:
                return float(c)
            (c0, a0) = pts[i - 1]
            return float(math.exp(math.log(c0) + (target - a0) / (a - a0) * (math.log(c) - math.log(c0))))
    return None


def person_seconds(store_path: Path, max_gap: float = 300.0) -> dict | None:
    """Median seconds between a person's consecutive labels in the label store (annotators not ``ai:``), gaps
    over ``max_gap`` left out as breaks; None when no person labelled two in a row."""
    if not Path(store_path).exists():
        return None
    with LabelStore(store_path) as store:
        labels = [lab for lab in store.labels() if not lab.annotator.startswith("ai:")]
    gaps, who = [], sorted({lab.annotator for lab in labels})
    for name in who:
        times = [datetime.fromisoformat(lab.created_at) for lab in labels if lab.annotator == name]
        gaps += [g for g in ((b - a).total_seconds() for a, b in zip(times, times[1:])) if 0 < g <= max_gap]
    return {"seconds": statistics.median(gaps), "gaps": len(gaps), "annotators": who} if gaps else None


# --- best-of-n: one set of samples, reranked for every n and every reward model -------------------

def pick_tasks(tasks: list[dict], n: int | None) -> list[dict]:
    """``n`` of the tasks, taken round-robin over families in their order (all of them for None)."""
    if n is None or n >= len(tasks):
        return tasks
    by: dict = {}
    for t in tasks:
        by.setdefault(t.get("family"), []).append(t)
    rank = {id(t): (i, f) for f, group in enumerate(by.values()) for i, t in enumerate(group)}
    return sorted(tasks, key=lambda t: rank[id(t)])[:n]


def draw_samples(policy, tokenizer, tasks: list[dict], n: int, pcfg, batch: int, bar) -> list[dict]:
    """``n`` samples per prompt at stage 5's temperature and length (a seed of their own), with each one's
    verdict (``world.true_score``) and whether it is mixed (``world.conduct``)."""
    flat = [t for t in tasks for _ in range(n)]
    texts, stopped = [], []
    with torch.random.fork_rng():
        torch.manual_seed(seed_for(pcfg.seed, "trust-best-of-n", 0))
        for s in range(0, len(flat), batch):
            out = sample(policy, tokenizer, [t["prompt"] for t in flat[s:s + batch]], pcfg.max_new_tokens,
                         pcfg.temperature)
            texts += out["texts"]
            stopped += out["has_eos"].tolist()
            bar.update(len(out["texts"]))
    rows = []
    for i, t in enumerate(tasks):
        xs, ok = texts[i * n:(i + 1) * n], stopped[i * n:(i + 1) * n]
        rows.append({**V.task_fields(t), "family": t.get("family"), "samples": xs, "stopped": ok,
                     "gold": [float(V.true_score(t, x, s) or 0.0) for x, s in zip(xs, ok)],
                     "mixed": [float(V.conduct(t, x) == "mixed") for x in xs], "scores": {}})
    return rows


def add_scores(rows: list[dict], key: str, model, tokenizer, batch: int) -> None:
    """Each sample's score by one reward model, under ``rows[i]["scores"][key]``."""
    s = score(model, tokenizer, [r["prompt"] for r in rows for _ in r["samples"]],
              [x for r in rows for x in r["samples"]], batch).tolist()
    n = len(rows[0]["samples"])
    for i, r in enumerate(rows):
        r["scores"][key] = s[i * n:(i + 1) * n]


def best_of_n_curve(rows: list[dict], key: str) -> dict:
    """Gold (% of chosen samples right), proxy (reward-model score) and mixed share (%) of best-of-n by the
    reward model ``key``, n = 1, 2, 4, ... n_max; gains relative to n = 1, and the fit."""
    N = len(rows[0]["samples"])
    ns = sorted({2 ** i for i in range(int(math.log2(N)) + 1)} | {N})
    fams = sorted({r["family"] for r in rows})
    points = []
    for n in ns:
        best = [{k: expected_best(r["scores"][key], r[k], n) for k in ("gold", "mixed")}
                | {"proxy": expected_best(r["scores"][key], r["scores"][key], n), "family": r["family"]} for r in rows]
        mean = lambda k, bs=best: sum(b[k] for b in bs) / len(bs)  # noqa: E731
        kl = best_of_n_kl(n)
        points.append({"n": n, "kl": kl, "d": math.sqrt(kl), "gold": 100 * mean("gold"), "proxy": mean("proxy"),
                       "mixed": 100 * mean("mixed"),
                       "gold_by_family": {f: 100 * mean("gold", [b for b in best if b["family"] == f]) for f in fams}})
    return with_gains(points, "best_of_n")


def with_gains(points: list[dict], form: str) -> dict:
    """Gold and proxy relative to the first point (the SFT model), the measured peak and Gao et al.'s fit."""
    for p in points:
        p["gold_gain"], p["proxy_gain"] = p["gold"] - points[0]["gold"], p["proxy"] - points[0]["proxy"]
    peak = max(points, key=lambda p: p["gold_gain"])
    return {"points": points, "fit": fit_gao([p["d"] for p in points], [p["gold_gain"] for p in points], form),
            "d_peak": peak["d"], "gold_gain_max": peak["gold_gain"], "gold_turned": points[-1]["gold_gain"] < peak["gold_gain"]}


# --- RL: the policy along a PPO run, evaluated as stage 5 evaluates ----------------------------------

def load_snapshot(sft_path, folder: Path):
    """(policy, reference) of a saved policy: a LoRA adapter on the SFT model (its reference: the adapter off)
    or a whole model (its reference: the SFT model)."""
    if (folder / "adapter_config.json").exists():
        from peft import PeftModel
        with quiet_peft():
            return PeftModel.from_pretrained(load_policy(sft_path), str(folder)), None
    return load_policy(folder), load_policy(sft_path)


def rl_curve(ppo_dir: Path, sft_path, tokenizer, start: dict, tasks, ecfg, score_fn, device, autocast, bar) -> dict:
    """Step 0 (``start``: the SFT model, from the best-of-n samples), every snapshot and the final policy of one
    PPO run, evaluated on the held-out prompts with ``ecfg`` (stage 5's settings, ``rl_samples`` samples)."""
    cfg = read_json(ppo_dir / "config.json")
    final = ppo_dir / ("adapter" if (ppo_dir / "adapter").exists() else "model")
    steps = read_json(ppo_dir / "eval.json", {}).get("ppo/steps", cfg["max_steps"])
    points = [dict(start, step=0)]
    for step, folder in snapshots(ppo_dir) + [(steps, final)]:
        policy, ref = load_snapshot(sft_path, folder)
        ev, _ = evaluate_policy(policy.to(device).eval(), ref and ref.to(device).eval(), tokenizer, tasks, ecfg,
                                score_fn, device, autocast)
        points.append({"step": step, "kl": ev["kl"], "d": math.sqrt(max(ev["kl"], 0.0)), "gold": ev["true_sampled"],
                       "proxy": ev["rm_score"], "mixed": ev["mixed_rate"], "task_accuracy": ev["task_accuracy"],
                       **{k: ev[k] for k in ("harmful_refused", "unanswerable_abstained", "over_refusal_benign")},
                       "gold_by_family": {f: v["sampled"] for f, v in ev["per_family"].items()}})
        bar.update(1)
    return {"source": str(ppo_dir), "kl_coef": cfg["kl_coef"], "max_steps": steps, **with_gains(points, "rl")}


def twin_dir(r: Run) -> Path | None:
    """Stage 5's kl_coef=0 twin (``ppo.kl_ablation``, notebook 05's ``kl_ablation``): its stage-5 folder."""
    twin = Run.at(r.path.parent / f"{r.name}-nokl") if (r.path.parent / f"{r.name}-nokl" / "run.json").exists() else None
    if twin is None or not twin.is_complete("ppo"):
        return None
    return twin.path / STAGE_DIRS["ppo"]


def train_rl_runs(r: Run, stage: Path, steps: int, preset: str) -> dict[str, Path]:
    """PPO with stage 5's settings for ``steps`` steps (about 10 snapshots), once with its kl_coef and once with
    kl_coef=0, in the run folders ``07_trust/rl/leash`` and ``rl/nokl`` that name this run's models by path, as
    ``ppo.kl_ablation`` does. A run already complete with these settings is read, not re-run."""
    from .runner import train_stage
    saved = read_json(r.require("ppo", "config.json"))
    policy_path, reward_path = model_paths(stage5_config(r), r)
    out = {}
    for name, kl in (("leash", saved["kl_coef"]), ("nokl", 0.0)):
        params = {**saved, "init_from": str(policy_path), "reward_from": str(reward_path or saved["reward_from"]),
                  "max_steps": steps, "kl_coef": kl, "adaptive_kl": saved["adaptive_kl"] and kl > 0,
                  "snapshot_interval": max(1, steps // 10), "kl_ablation": False}
        sub = Run(name, stage / "rl")
        done = read_json(sub.path / STAGE_DIRS["ppo"] / "config.json", {})
        if not (sub.is_complete("ppo") and all(done.get(k) == v for k, v in params.items())):
            with sub.lock():  # run.json is written only under its run's lock
                sub.update_manifest(world_seed=r.manifest().get("world_seed", 0))
            for src in (STAGE_DIRS["pretrain"] + "/config.json", STAGE_DIRS["ppo"] + "/eval_before.json"):
                if (r.path / src).exists():  # drift is measured on stage 1's text; "before" is stage 5's
                    atomic_write_text(sub.path / src, (r.path / src).read_text())
            train_stage("ppo", name, stage / "rl", preset, params)
        out[name] = sub.path / STAGE_DIRS["ppo"]
    return out


# --- reward models of stage 4's recipe on fewer or other labels --------------------------------------

def train_reward_model(pairs: list[dict], sft_path, tokenizer, settings: dict, stage: Path, device):
    """A reward model trained on ``pairs`` exactly as stage 4 trains one (its settings), merged, in eval mode."""
    torch.manual_seed(settings["seed"])  # the score head's init, as stage 4
    model = load_reward_model(sft_path, tokenizer)
    with tempfile.TemporaryDirectory(dir=stage, prefix=".trainer.") as out_dir, quiet_peft():
        trainer = reward_trainer(model, tokenizer, pairs, [], {**settings, "report_to": "none"}, out_dir, device,
                                 False)
        trainer.train()
        model = trainer.model.merge_and_unload() if settings["use_lora"] else trainer.model
    return model.to(device).eval()


def accuracy(model, tokenizer, held: list[dict], batch: int) -> dict:
    """Held-out pairwise accuracy (%) over every pair and over the conduct pairs alone (stage 4's measures)."""
    rows = evaluate_pairs(model, tokenizer, held, batch_size=batch)["rows"]
    return {"accuracy": pairwise_accuracy(rows), "conduct_accuracy": pairwise_accuracy(rows, W.CONDUCT_FAMILIES)}


def feedback_curves(cfg: TrustConfig, pool: list[dict], measure, stage4: dict, labels_per_pair: float,
                    store: Path) -> dict:
    """Conduct accuracy against labels for the judge (the first k of ``pool``, a random order), for annotators
    flipping ``flip_rates`` of its labels, and for active selection; labels and person-hours to the target.
    ``measure(key, pairs, keep)`` trains (or recalls) a reward model and returns its accuracies (and the model)."""
    n = len(pool)
    active = [c for c in (cfg.active_start * 2 ** i for i in range(cfg.active_rounds + 1)) if c < n]
    counts = sorted({c for c in numbers(cfg.label_counts) if c < n} | set(active))
    curves = {"judge": [(c, measure(("judge", c), pool[:c])["conduct_accuracy"]) for c in counts]
              + [(n, stage4["conduct_accuracy"])]}
    agreement = {}
    for rate in numbers(cfg.flip_rates, float):
        noisy, flipped = flip_labels(pool, rate, cfg.seed)
        _, other = flip_labels(pool, rate, cfg.seed + 1)  # a second annotator, flipping on its own
        agreement[f"{rate:g}"] = {"with_judge": 100 * (1 - len(flipped) / n),
                                  "two_annotators": 100 * (1 - len(flipped ^ other) / n)}
        curves[f"flip {rate:.0%}"] = [(c, measure((rate, c), noisy[:c])["conduct_accuracy"]) for c in counts + [n]]
    if active:  # uncertainty sampling: start from the judge's first labels, double them with the least-sure pairs
        labelled = list(range(active[0]))
        m = measure(("judge", active[0]), pool[:active[0]], keep=True)
        curves["active"] = [(active[0], m["conduct_accuracy"])]
        for c in active[1:]:
            s = score(m["model"], m["tokenizer"], [p["prompt"] for p in pool] * 2,
                      [p["chosen"] for p in pool] + [p["rejected"] for p in pool], cfg.score_batch_size).tolist()
            labelled += least_sure([a - b for a, b in zip(s[:n], s[n:])], c - len(labelled), labelled)
            m = measure(("active", c), [pool[i] for i in labelled], keep=True)
            curves["active"].append((c, m["conduct_accuracy"]))
    timed = person_seconds(store)
    per_label = timed["seconds"] if timed else cfg.seconds_per_label
    to_target = {}
    for name, curve in curves.items():
        k = labels_to_reach(curve, cfg.target_accuracy)
        judgments = None if k is None else k * labels_per_pair
        to_target[name] = {"pairs": k, "labels": judgments,
                           "person_hours": None if judgments is None else judgments * per_label / 3600}
    return {"curves": {k: [{"labels": c, "conduct_accuracy": a} for c, a in v] for k, v in curves.items()},
            "agreement": agreement, "to_target": to_target, "target_accuracy": cfg.target_accuracy,
            "labels_per_pair": labels_per_pair,
            "seconds_per_label": {"seconds": per_label, "source": "measured" if timed else "assumed", **(timed or {})}}


# --- the stage ----------------------------------------------------------------------------------

@writes_run
def run(cfg: TrustConfig, run: str = "demo", runs_dir: str = "runs", preset: str | None = None,
        live: bool | None = None, progress_bar: bool = True) -> dict:
    """Measure how far stage 4's reward model can be pushed before the verifier disagrees; write ``07_trust/``."""
    with quiet_libraries():
        return _run(cfg, run, runs_dir, preset, progress_bar)


def _run(cfg: TrustConfig, run: str, runs_dir: str, preset: str | None, progress_bar: bool) -> dict:
    from transformers import AutoTokenizer

    parts = _check(cfg)
    t_start = time.perf_counter()
    load = os.getloadavg()[0]  # the seconds below mean little on a busy machine: say how busy it was
    threads = set_threads(cfg.threads)
    device = pick_device(cfg.device)
    autocast = contextlib.nullcontext()

    # Inputs first: anything missing fails in one line before anything is written.
    r = Run(run, runs_dir)
    sft_path, rm_path = r.require("sft", "model"), r.require("reward", "model")
    pcfg = stage5_config(r)
    tasks = pick_tasks(heldout_tasks(r), cfg.n_prompts)
    tok = ensure_chat_ready(AutoTokenizer.from_pretrained(str(sft_path)))
    rm_tok = ensure_chat_ready(AutoTokenizer.from_pretrained(str(rm_path)))
    rm = load_reward_model(rm_path, rm_tok).to(device).eval()
    pool, held = [], []
    if {"data_size", "feedback"} & set(parts):
        limit = getattr(rm.config, "max_position_embeddings", None) or 10 ** 9
        pool, held = preference_pairs(r, rm_tok, limit, tasks, "stage 7's reward models")
        if not held:
            raise ConfigError("stage 4 held out no preference pairs (eval_fraction=0), and data_size and feedback "
                              "measure reward models on them: re-run stage 4 with eval_fraction > 0 or leave them out of parts")
        pool = random.Random(cfg.seed).sample(pool, len(pool))  # the first k of this order: k random labels
    settings = {**read_json(rm_path.parent / "config.json"), "threads": threads}  # stage 4's recipe, as it ran

    r.update_manifest(preset=preset or r.manifest().get("preset"))
    stage = r.start("trust", dataclasses.asdict(cfg))
    result = {"settings": {"prompts": len(tasks), "n_max": cfg.n_max, "rl_samples": cfg.rl_samples,
                           "evaluation": {k: getattr(pcfg, k) for k in ("temperature", "max_new_tokens", "seed")},
                           "reward_model": str(rm_path), "gold": "world.true_score, % of samples right",
                           "gains": "relative to the SFT model: gold(d) - gold(0), proxy(d) - proxy(0)"},
              "seconds": {}}

    def proxy(chunk, texts, has_eos):  # the reward model's raw score, what stage 5 reports as rm_score
        return score(rm, rm_tok, [t["prompt"] for t in chunk], texts, cfg.score_batch_size, autocast)

    rows, start = [], None
    if {"best_of_n", "rl", "data_size"} & set(parts):  # the SFT model's samples: best-of-n, and RL's step 0
        t0 = time.perf_counter()
        n = cfg.n_max if {"best_of_n", "data_size"} & set(parts) else cfg.rl_samples  # RL alone needs step 0 only
        bar = progress(len(tasks) * n, "best-of-n samples", disable=not progress_bar)
        rows = draw_samples(load_policy(sft_path).to(device).eval(), tok, tasks, n, pcfg, cfg.gen_batch_size, bar)
        bar.close()
        add_scores(rows, "stage4", rm, rm_tok, cfg.score_batch_size)
        curve = best_of_n_curve(rows, "stage4")
        start = {k: curve["points"][0][k] for k in ("gold", "proxy", "mixed", "gold_by_family")} | {"kl": 0.0, "d": 0.0}
        if "best_of_n" in parts:
            result["best_of_n"] = curve
        result["seconds"]["best_of_n"] = time.perf_counter() - t0

    if "rl" in parts:
        t0 = time.perf_counter()
        steps = cfg.rl_max_steps or 2 * pcfg.max_steps
        runs = train_rl_runs(r, stage, steps, preset or r.manifest().get("preset") or "cpu") if cfg.train_rl else \
            {"leash": r.require("ppo", "config.json").parent, "nokl": twin_dir(r)}
        ecfg = dataclasses.replace(pcfg, eval_samples=cfg.rl_samples)
        bar = progress(sum(len(snapshots(d)) + 1 for d in runs.values() if d), "RL points", disable=not progress_bar)
        result["rl"] = {name: rl_curve(d, sft_path, tok, start, tasks, ecfg, proxy, device, autocast, bar) if d else
                        {"missing": "no kl_coef=0 twin: run notebook 05 with kl_ablation=true, or set train_rl=true"}
                        for name, d in runs.items()}
        bar.close()
        result["seconds"]["rl"] = time.perf_counter() - t0

    trained: dict = {}

    def measure(key, pairs, keep=False):
        """A reward model of stage 4's recipe on ``pairs``: its held-out accuracies (the model too if ``keep``)."""
        if key not in trained or (keep and "model" not in trained[key]):
            model = train_reward_model(pairs, sft_path, rm_tok, settings, stage, device)
            trained[key] = {**accuracy(model, rm_tok, held, cfg.score_batch_size), "pairs": len(pairs)}
            if keep:
                trained[key].update(model=model, tokenizer=rm_tok)
            if key[0] == "judge" and rows and key[1] in numbers(cfg.data_sizes) and str(key[1]) not in rows[0]["scores"]:
                add_scores(rows, str(key[1]), model, rm_tok, cfg.score_batch_size)
        return trained[key]

    stage4 = accuracy(rm, rm_tok, held, cfg.score_batch_size) if held else {}
    if "data_size" in parts:
        t0 = time.perf_counter()
        sizes = [c for c in numbers(cfg.data_sizes) if c < len(pool)]
        models = []
        for c in sizes:
            acc = measure(("judge", c), pool[:c])
            models.append({"pairs": c, **{k: acc[k] for k in ("accuracy", "conduct_accuracy")},
                           **best_of_n_curve(rows, str(c))})
        models.append({"pairs": len(pool), "stage4": True, **stage4, **best_of_n_curve(rows, "stage4")})
        peaks = [m["d_peak"] for m in models]
        result["data_size"] = {"models": models, "weakest_peaks_earlier": peaks[0] < peaks[-1],
                               "stage4_conduct_accuracy": read_json(rm_path.parent / "eval.json", {}).get(
                                   "reward/conduct_accuracy")}
        result["seconds"]["data_size"] = time.perf_counter() - t0

    if "feedback" in parts:
        t0 = time.perf_counter()
        ev3 = read_json(r.stage_dir("preferences") / "eval.json", {})
        per_pair = (ev3.get("preferences/labels") or 1) / max(1, ev3.get("preferences/pairs") or 1)
        result["feedback"] = {"labelled_by": ev3.get("preferences/annotators"),  # stage 3's: the judge, by default
                              **feedback_curves(cfg, pool, measure, stage4, max(1.0, per_pair),
                                                r.stage_dir("preferences") / "labels.sqlite")}
        result["seconds"]["feedback"] = time.perf_counter() - t0
    result["reward_models_trained"] = len(trained)

    if rows:
        write_jsonl_atomic(stage / "best_of_n.jsonl.gz", rows)
    result.update({"trust/seconds": time.perf_counter() - t_start, "threads": threads, "device": str(device),
                   "load_average_at_start": load})
    atomic_write_json(stage / "eval.json", result)
    r.complete("trust", result["trust/seconds"], headline(result))
    return result


# --- what the notebook and README draw -------------------------------------------------------------

def curves(result: dict) -> dict:
    """The over-optimization curves of a result by name: "best-of-n", "RL (kl_coef=...)", "RL (kl_coef=0)"."""
    out = {"best-of-n": result.get("best_of_n")}
    for c in (result.get("rl") or {}).values():
        if "points" in c:
            out[f"RL (kl_coef={c['kl_coef']:g})"] = c
    return {k: v for k, v in out.items() if v}


def fits_table(result: dict) -> list[dict]:
    """One row per curve: Gao et al.'s fit, the measured peak and how far the curve went."""
    return [{"curve": name, **{k: c["fit"][k] for k in ("alpha", "beta", "r2", "d_star", "peak_in_range")},
             "d_peak_measured": c["d_peak"], "d_max": c["points"][-1]["d"], "gold_gain_max": c["gold_gain_max"],
             "gold_gain_last": c["points"][-1]["gold_gain"], "proxy_gain_last": c["points"][-1]["proxy_gain"]}
            for name, c in curves(result).items()]


def overoptimization_figure(result: dict, title: str = "Gold (verifier) and proxy (reward model) against d = √KL"):
    """Gold gain (points of % right, left axis, solid; the fit dotted) and proxy gain (reward-model score, right
    axis, dashed) against d, best-of-n on the left and the RL runs on the right."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    cs = curves(result)
    panels = [["best-of-n"], [k for k in cs if k.startswith("RL")]]
    fig = make_subplots(rows=1, cols=2, specs=[[{"secondary_y": True}] * 2],
                        subplot_titles=["best-of-n (n = 1 ... n_max)", "RL (PPO checkpoints)"])
    colors = dict(zip(cs, ("#1f77b4", "#2ca02c", "#d62728")))  # best-of-n, RL with the leash, RL without
    for col, names in enumerate(panels, start=1):
        for name in [n for n in names if n in cs]:
            color = colors[name]
            c, fit = cs[name], cs[name]["fit"]
            d = [p["d"] for p in c["points"]]
            fig.add_trace(go.Scatter(x=d, y=[p["gold_gain"] for p in c["points"]], mode="lines+markers",
                                     name=f"{name}: gold", line=dict(color=color)), row=1, col=col, secondary_y=False)
            fig.add_trace(go.Scatter(x=d, y=[p["proxy_gain"] for p in c["points"]], mode="lines+markers",
                                     name=f"{name}: proxy", line=dict(color=color, dash="dash"), marker_symbol="x"),
                          row=1, col=col, secondary_y=True)
            if fit["alpha"] is not None:
                xs = np.linspace(0, max(d), 50)
                ys = xs * (fit["alpha"] - fit["beta"] * (xs if col == 1 else np.log(np.where(xs > 0, xs, 1.0))))
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{name}: fit", line=dict(color=color, dash="dot")),
                              row=1, col=col, secondary_y=False)
        fig.update_xaxes(title_text="d = √KL(π ‖ π_SFT)", row=1, col=col)
        fig.update_yaxes(title_text="gold gain (points of % right)", row=1, col=col, secondary_y=False)
        fig.update_yaxes(title_text="proxy gain (reward-model score)", row=1, col=col, secondary_y=True)
    fig.update_layout(title=title, height=450, legend=dict(orientation="h", y=-0.25))
    return fig


def data_size_figure(result: dict):
    """Best-of-n gold gain against d for each reward model of the data-size curve."""
    import plotly.graph_objects as go
    fig = go.Figure()
    for m in result["data_size"]["models"]:
        fig.add_trace(go.Scatter(x=[p["d"] for p in m["points"]], y=[p["gold_gain"] for p in m["points"]],
                                 mode="lines+markers", name=f"{m['pairs']} pairs (conduct accuracy {m['conduct_accuracy']:.1f}%)"))
    fig.update_layout(title="Best-of-n by reward models trained on more or fewer pairs", xaxis_title="d = √KL",
                      yaxis_title="gold gain (points of % right)", height=420)
    return fig


def feedback_figure(result: dict):
    """Held-out conduct accuracy against the number of labels, per annotator and for active selection."""
    import plotly.graph_objects as go
    fb = result["feedback"]
    fig = go.Figure()
    for name, pts in fb["curves"].items():
        fig.add_trace(go.Scatter(x=[p["labels"] for p in pts], y=[p["conduct_accuracy"] for p in pts],
                                 mode="lines+markers", name=name))
    fig.add_hline(y=fb["target_accuracy"], line_dash="dot", annotation_text="target")
    fig.update_layout(title="What feedback buys: conduct accuracy against labels (pairs the reward model trains on)",
                      xaxis_title="labels", xaxis_type="log", yaxis_title="held-out conduct accuracy (%)", height=420)
    return fig


def headline(result: dict) -> dict:
    """run.json's numbers for the scorecard and the report: the fits, the peaks, the mixed shares, the cost."""
    out = {}
    curves = {"bon": result.get("best_of_n"), "rl": (result.get("rl") or {}).get("leash"),
              "nokl": (result.get("rl") or {}).get("nokl")}
    for name, c in curves.items():
        if c and "points" in c:
            fit, last = c["fit"], c["points"][-1]
            out.update({f"trust/{name}_alpha": fit["alpha"], f"trust/{name}_beta": fit["beta"],
                        f"trust/{name}_r2": fit["r2"], f"trust/{name}_d_star": fit["d_star"],
                        f"trust/{name}_d_peak": c["d_peak"], f"trust/{name}_d_max": last["d"],
                        f"trust/{name}_gold_gain_max": c["gold_gain_max"], f"trust/{name}_gold_gain_last": last["gold_gain"],
                        f"trust/{name}_proxy_gain_last": last["proxy_gain"], f"trust/{name}_mixed_last": last["mixed"]})
    if result.get("best_of_n"):
        out["trust/mixed_first"] = result["best_of_n"]["points"][0]["mixed"]
    for name, t in (result.get("feedback") or {}).get("to_target", {}).items():
        if name in ("judge", "active"):
            out.update({f"trust/{name}_labels_to_target": t["labels"], f"trust/{name}_person_hours": t["person_hours"]})
    return {k: None if v is None else round(v, 4) for k, v in out.items()}
