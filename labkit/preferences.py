"""Stage 3: preference collection -- candidates, labels from a person or an AI judge, pairs.

Samples K responses per prompt from the SFT model (``candidates.jsonl``), collects labels in the
crash-safe SQLite store (``labels.sqlite``) from a person in the ranking widget (``labkit.widget``)
or an AI judge (``labkit.judges``), and exports ``pairs.jsonl`` (``prompt``/``chosen``/``rejected``):
a ranking of K gives K(K-1)/2 pairs; ties and "both bad" are counted, not exported. Batch runs use
``annotator="ai"``; ``annotator="human"`` uses the people's labels already in the store. Why:
docs/how-it-works.md, "Stage 3: preferences".

    from labkit import preferences
    result = preferences.run(preferences.config("smoke"), run="demo")   # needs stage 2

eval.json: ``preferences/pairs``, ``preferences/ties``, ``preferences/both_bad``,
``preferences/chosen_correct`` / ``rejected_correct`` (the verifier on each side), per principle of
the constitution (``by_principle``) and per family (``pairs_by_family``).
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from dataclasses import dataclass, field

from . import verifier as V
from . import world as W
from .config import (ConfigError, device_field, make_config, require_fraction, require_one_of, seed_field,
                     set_threads, threads_field)
from .data import load_prompts
from .generate import generate
from .judges import Constitution, ModelJudge, constitution, label_all, stopped_flags
from .live import Timer, progress
from .models import load_model, pick_device
from .runs import Run, atomic_write_json, read_json, read_jsonl, write_jsonl_atomic, writes_run
from .store import LabelStore


@dataclass
class PreferencesConfig:
    # prompts and candidates
    prompts: str = field(default="world", metadata={"help": "'world' (embedded tasks, with a verifier) or a prompts file: {\"prompt\": ...} lines, JSON strings, .txt lines, Alpaca/Dolly/chat (data.load_prompts, as stages 5 and 6)"})
    # 2000 x 6 candidates give more distinct pairs than the reward model's max_pairs reads at the cpu
    # preset (stage 3's eval.json counts them)
    n_prompts: int = field(default=2000, metadata={"help": "prompts to collect preferences on"})
    families: str = field(default=",".join(W.DEFAULT_FAMILIES), metadata={"help": "comma list of world task families (" + ", ".join(W.FAMILIES) + ")"})
    rollout_templates: str = field(default="rl", metadata={"help": "world prompts: the question templates the candidates (the SFT model's rollouts) answer, 'rl' (the RLHF stages' own) or 'rl+train' (and SFT's); never evaluation's"})
    samples_per_prompt: int = field(default=6, metadata={"help": "candidates per prompt (2-8); more candidates, more pairs per prompt"})
    temperature: float = field(default=1.2, metadata={"help": "sampling temperature for candidates (above 1: more varied answers, more right-vs-wrong pairs)"})
    # SFT almost never refuses a benign request, so sampled candidates alone rarely show a refusal losing
    # there: the reward model then has no reason to score one low, and PPO found that gap ("The text does
    # not say." outscored the right answer to answerable questions, and task accuracy fell). Probes put
    # that comparison in front of the judge.
    probe_share: float = field(default=0.25, metadata={"help": "share of answerable questions (story QA, arithmetic, word lists) whose last candidate is replaced by a refusal or 'not stated' (an over-refusal probe the judge can rank last); 0: sampled candidates only"})
    # Every harmful request and unanswerable question shows declining winning, but only a quarter of their
    # look-alikes show it losing. Probing every look-alike (1.0) made the reward model better on conduct
    # pairs at three development seeds (under the earlier verifier) but not the policy, which still
    # declined answerable extraction questions the reward model now scored right: so 0.25 stays.
    lookalike_probe_share: float = field(default=0.25, metadata={"help": "the same for benign requests and answerable extraction questions, the look-alikes of harmful requests and unanswerable questions (world.LOOKALIKE_FAMILIES)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling threshold for candidates"})
    max_new_tokens: int = field(default=24, metadata={"help": "generation budget per candidate"})
    gen_batch_size: int = field(default=64, metadata={"help": "prompts per generation batch"})
    init_from: str = field(default="sft", metadata={"help": "'sft' (this run's stage 2 model) or a checkpoint folder / hub name"})
    # labels
    annotator: str = field(default="ai", metadata={"help": "ai: label everything with the judge | human: use people's labels already in the store"})
    annotator_name: str = field(default="me", metadata={"help": "your name in the ranking widget (labels record who gave them)"})
    judge: str = field(default="constitution", metadata={"help": "AI judge: constitution (rule-based checks) | model (ask a causal LM)"})
    judge_model: str = field(default="sft", metadata={"help": "model judge: 'sft' or a checkpoint folder / hub name"})
    mode: str = field(default="rank", metadata={"help": "widget mode for people: rank (order all K) | pair (better of two); the AI judge always compares pairs"})
    min_pairs: int = field(default=20, metadata={"help": "fail when fewer preference pairs come out (too few labels)"})
    seed: int = seed_field("prompt sampling and generation")
    device: str = device_field()
    threads: int | None = threads_field()


PRESETS = {
    "smoke": dict(n_prompts=24, samples_per_prompt=3, max_new_tokens=8, min_pairs=1),
    "cpu": dict(),
    "gpu": dict(n_prompts=4000, samples_per_prompt=4, max_new_tokens=64, gen_batch_size=256),
    "hub": dict(prompts="world", n_prompts=500, max_new_tokens=128, judge="constitution"),
}

CHART = None  # nothing trains here; the notebook shows label counts instead


def config(preset: str = "cpu", **overrides) -> PreferencesConfig:
    return make_config(PreferencesConfig, PRESETS, preset, overrides)


def _check(cfg: PreferencesConfig) -> None:
    if not 2 <= cfg.samples_per_prompt <= 8:
        raise ConfigError(f"samples_per_prompt must be between 2 and 8, got {cfg.samples_per_prompt}")
    require_fraction(cfg, ("probe_share", "lookalike_probe_share"))
    require_one_of(cfg, {"annotator": ("ai", "human"), "judge": ("constitution", "model"), "mode": ("rank", "pair"),
                         "rollout_templates": W.RL_TEMPLATES})


def _model(path_or_stage: str, run: Run):
    from transformers import AutoTokenizer
    from .tokenizer import ensure_chat_ready
    path = run.require("sft", "model") if path_or_stage == "sft" else path_or_stage
    return load_model(path, "causal"), ensure_chat_ready(AutoTokenizer.from_pretrained(str(path)))


def prompts_for(cfg: PreferencesConfig, run: Run) -> list[dict]:
    """Prompts as tasks. World prompts come from ``world.rl_tasks``: the shifted distribution SFT was
    evaluated on (where it is weakest), never an evaluation prompt itself."""
    if cfg.prompts == "world":
        fams = W.parse_families(cfg.families)
        return W.rl_tasks(run.world(), cfg.n_prompts, seed=1000 + cfg.seed, families=fams,
                          templates=cfg.rollout_templates)
    tasks, _ = load_prompts(cfg.prompts, max_records=cfg.n_prompts)  # as stages 5 and 6 read them
    return tasks


def make_candidates(cfg: PreferencesConfig, run: str = "demo", runs_dir: str = "runs") -> list[dict]:
    """Sample K responses per prompt, or reuse ``candidates.jsonl`` made with the same settings.

    Reuse matters: a person's labels refer to these exact responses.
    """
    _check(cfg)
    set_threads(cfg.threads)
    r = Run(run, runs_dir)
    path = r.stage_dir("preferences") / "candidates.jsonl"
    gen = {k: getattr(cfg, k) for k in ("temperature", "top_p", "max_new_tokens", "samples_per_prompt", "seed",
                                        "n_prompts", "prompts", "families", "init_from", "probe_share",
                                        "lookalike_probe_share")}
    existing = read_jsonl(path)
    if existing and existing[0].get("gen") == gen and len(existing) == cfg.n_prompts:
        return existing
    t0 = time.perf_counter()
    model, tokenizer = _model(cfg.init_from, r)
    model.to(pick_device(cfg.device))
    tasks = prompts_for(cfg, r)
    bar = progress(len(tasks), "candidates")
    outs = generate(model, tokenizer, [t["prompt"] for t in tasks], max_new_tokens=cfg.max_new_tokens,
                    temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.gen_batch_size,
                    num_return_sequences=cfg.samples_per_prompt, seed=cfg.seed, progress=bar)
    bar.close()
    k = cfg.samples_per_prompt
    rng = random.Random(f"probes-{cfg.seed}")
    cands = []
    for i, t in enumerate(tasks):
        group = outs[i * k:(i + 1) * k]
        task = V.task_fields(t) if "answer" in t else None
        cand = {"id": t["id"], "prompt": t["prompt"], "task": task,
                "responses": [g["response"] for g in group], "stopped": [g["stopped"] for g in group], "gen": gen}
        share = cfg.lookalike_probe_share if t.get("family") in W.LOOKALIKE_FAMILIES else cfg.probe_share
        if V.answer_due(task) and rng.random() < share:
            cand["responses"][-1], cand["stopped"][-1], cand["probe"] = W.declining(t, rng), True, k - 1
        cands.append(cand)
    write_jsonl_atomic(path, cands)
    # Notebook 03 makes the candidates in a cell of their own, to show them, so `run` finds them made: it reads
    # what generating took from here when this same process made them (not when they are a reused file).
    atomic_write_json(path.with_name("candidates_time.json"), {"seconds": time.perf_counter() - t0, "pid": os.getpid()})
    return cands


def make_judge(cfg: PreferencesConfig, run: Run):
    if cfg.judge == "constitution":
        return constitution()
    model, tokenizer = _model(cfg.judge_model, run)
    return ModelJudge(model, tokenizer)


def widget(cfg: PreferencesConfig, run: str = "demo", runs_dir: str = "runs", mode=None):
    """The ranking widget over this run's candidates, writing to its label store (for people)."""
    from .widget import RankingWidget
    cands = make_candidates(cfg, run, runs_dir)
    r = Run(run, runs_dir)
    store = LabelStore(r.stage_dir("preferences") / "labels.sqlite")
    return RankingWidget(cands, store, cfg.annotator_name, mode=mode or cfg.mode,
                         judge=constitution())


@writes_run
def run(cfg: PreferencesConfig, run: str = "demo", runs_dir: str = "runs", preset: str | None = None,
        live: bool | None = None, progress_bar: bool = True) -> dict:
    """Candidates -> labels (AI judge, or the people's labels in the store) -> pairs.jsonl."""
    _check(cfg)
    t0, timer = time.perf_counter(), Timer()
    r = Run(run, runs_dir)
    r.require("sft", "model")
    with timer("generate candidates"):
        cands = make_candidates(cfg, run, runs_dir)
    made = read_json(r.stage_dir("preferences") / "candidates_time.json", {})
    if made.get("pid") == os.getpid():
        timer.seconds["generate candidates"] = max(timer.seconds["generate candidates"], made["seconds"])
    stage = r.start("preferences", dataclasses.asdict(cfg))
    store = LabelStore(stage / "labels.sqlite")
    try:
        if cfg.annotator == "ai":
            judge = make_judge(cfg, r)
            # The judge compares pairs, whatever the widget's mode: a ranking would put equally good
            # answers in some order, and that order would be exported as a preference. Pairwise, a
            # tie is explicit and is counted instead of exported.
            with timer("label"):
                label_all(cands, store, judge, mode="pair")
            who = [f"ai:{judge.name}"]
        else:
            who = [a for a in store.annotators() if not a.startswith("ai:")]
        stats = store.export_pairs(cands, stage / "pairs.jsonl", annotators=who) if who else {"pairs": 0}
        if stats["pairs"] < cfg.min_pairs:
            raise ConfigError(
                f"only {stats['pairs']} preference pairs from {'people' if cfg.annotator == 'human' else 'the judge'} "
                f"(min_pairs={cfg.min_pairs}); label more in the widget (notebook 03) or run with annotator='ai'")
        agreement = store.agreement()
    finally:
        store.close()

    # How good are the labels? The verifier knows: chosen should be right more often than rejected.
    # And per written principle: chosen responses should follow it more often than rejected ones.
    tasks = tasks_by_prompt(cands)
    pairs = read_jsonl(stage / "pairs.jsonl")
    by_principle = principle_rates(pairs, cands)
    by_family = pairs_by_family(pairs, cands)
    chosen_ok = rejected_ok = n_task = 0
    for p in pairs:
        task = tasks.get(p["prompt"])
        if task:
            n_task += 1
            chosen_ok += V.verify(task, p["chosen"])
            rejected_ok += V.verify(task, p["rejected"])
    sampled_correct = [V.verify(c["task"], resp) * s for c in cands if c["task"]
                       for resp, s in zip(c["responses"], c["stopped"])]
    result = {"preferences/pairs": stats["pairs"], "preferences/labels": stats.get("labels", 0),
              "preferences/ties": stats.get("ties", 0), "preferences/both_bad": stats.get("both_bad", 0),
              "preferences/identical": stats.get("identical", 0),
              # None, not 0, without a verifier (a person's own prompts have no answers): not measured
              "preferences/chosen_correct": 100 * chosen_ok / n_task if n_task else None,
              "preferences/rejected_correct": 100 * rejected_ok / n_task if n_task else None,
              "preferences/candidates_correct": 100 * sum(sampled_correct) / len(sampled_correct) if sampled_correct else None,
              **{f"preferences/pairs_{fam}": n for fam, n in by_family.items()},
              # "correct" keeps the verifier's keys above (every pair with a task, conduct included: the
              # verifier scores conduct too); its principle's row, answer tasks only, is in by_principle.
              **{f"preferences/{side}_{row['principle']}": row[side] for row in by_principle
                 if row["pairs"] and row["principle"] != "correct" for side in ("chosen", "rejected")},
              "preferences/probes": sum("probe" in c for c in cands),
              "preferences/prompts": len(cands), "preferences/annotators": who,
              "preferences/seconds": time.perf_counter() - t0}
    atomic_write_json(stage / "eval.json", {**result, "timings": timer.rounded(), "agreement": agreement, "by_principle": by_principle,
                                            "pairs_by_family": by_family,
                                            "by_annotator": stats.get("by_annotator", {}),
                                            "examples": pairs[:10]})
    r.complete("preferences", result["preferences/seconds"], {k: (round(v, 2) if isinstance(v, float) else v)
                                                            for k, v in result.items()
                                                            if k != "preferences/annotators" and v is not None})
    return result


def principles_table(judge: Constitution | None = None) -> list[dict]:
    """The constitution as rows (principle, weight, what it asks) for the notebook."""
    judge = judge or constitution()
    return [{"principle": p.name, "weight": p.weight, "asks": p.text} for p in judge.principles]


def tasks_by_prompt(candidates: list[dict]) -> dict:
    """{prompt: its candidate's task (None for a prompt without one)}: how an exported pair finds its task."""
    return {c["prompt"]: c.get("task") for c in candidates}


def principle_rates(pairs: list[dict], candidates: list[dict], judge: Constitution | None = None) -> list[dict]:
    """Per principle of `judge`'s constitution: how often chosen and rejected responses follow it.

    For the pairs whose task the principle applies to (a pair's task is its prompt's candidate's),
    `chosen` / `rejected` are the percent of chosen / rejected responses it accepts (score >= 0.5),
    `pairs` how many pairs that is; both rates are None when it applies to none. A labeller that
    follows the principle has chosen well above rejected; equal rates mean it ignored the principle.
    """
    judge = judge or constitution()
    tasks = tasks_by_prompt(candidates)
    stopped = {(c["prompt"], r): s for c in candidates for r, s in zip(c["responses"], stopped_flags(c))}
    counts = {p.name: [0, 0, 0] for p in judge.principles}  # pairs, chosen accepted, rejected accepted
    for pair in pairs:
        prompt = pair["prompt"]
        task = tasks.get(prompt)
        for p in judge.principles:
            scores = [p.check(prompt, task, pair[side], stopped.get((prompt, pair[side]), True))
                      for side in ("chosen", "rejected")]
            if None in scores:  # applicability depends on the task alone: both apply or neither
                continue
            row = counts[p.name]
            row[0] += 1
            row[1] += scores[0] >= 0.5
            row[2] += scores[1] >= 0.5
    return [{"principle": name, "pairs": n, "chosen": 100 * c / n if n else None,
             "rejected": 100 * r / n if n else None} for name, (n, c, r) in counts.items()]


def pairs_by_family(pairs: list[dict], candidates: list[dict]) -> dict:
    """{task family: exported pairs}, world families in the world's order; prompts without a task count as "no_task"."""
    tasks = tasks_by_prompt(candidates)
    counts: dict[str, int] = {}
    for pair in pairs:
        fam = (tasks.get(pair["prompt"]) or {}).get("family") or "no_task"
        counts[fam] = counts.get(fam, 0) + 1
    order = {f: i for i, f in enumerate(W.FAMILIES)}
    return dict(sorted(counts.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
