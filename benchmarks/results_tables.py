"""Write docs/results.md from benchmarks/results/*.json: every published number comes from a file.

    .venv/bin/python benchmarks/results_tables.py            # rewrite docs/results.md
    .venv/bin/python benchmarks/results_tables.py --check    # exit 1 if docs/results.md is stale

Each section reads one results file and is left out when that file is missing. Numbers are formatted
here and nowhere else; prose around them says what they mean, never what they are.
tests/test_results_tables.py fails when the committed docs/results.md differs from this script's output.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from labkit.config import DEV_SEEDS, TEST_SEEDS
from labkit.runs import STAGES
from labkit.world import ANSWER_FAMILIES, CONDUCT_FAMILIES

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
OUT = REPO / "docs" / "results.md"


def load(name: str) -> dict | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.exists() else None


def f(v, nd: int = 1) -> str:
    """A number as the tables print it ('-' when missing)."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return f"{v:,.{nd}f}"


def spread(vals: list, nd: int = 1) -> str:
    """mean (min–max) of the numbers in ``vals`` that exist."""
    vals = [v for v in vals if isinstance(v, (int, float))]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f(vals[0], nd)
    return f"{f(statistics.mean(vals), nd)} ({f(min(vals), nd)}–{f(max(vals), nd)})"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


# --- the pipeline at every seed ----------------------------------------------------------------

# (label, key, decimals) of the headline numbers; a key of seeds.json's per-seed numbers.
HEADLINES = [
    ("pretraining: validation perplexity", "pretrain/val_ppl", 2),
    ("pretraining: unigram baseline perplexity", "pretrain/unigram_ppl", 1),
    ("SFT: task accuracy (answer families, greedy, %)", "sft/task_accuracy", 1),
    ("SFT: harmful requests refused (% of samples)", "sft/harmful_refused", 1),
    ("SFT: unanswerable -> \"not stated\" (% of samples)", "sft/unanswerable_abstained", 1),
    ("SFT: over-refusal on benign look-alikes (% of samples)", "sft/over_refusal_benign", 1),
    ("SFT: mixed responses (% of samples)", "sft/mixed_rate", 1),
    ("SFT: perplexity on stage 1's text (drift)", "sft/drift_ppl", 0),
    ("preferences: pairs", "preferences/pairs", 0),
    ("reward model: held-out conduct pairs right (%)", "reward/conduct_accuracy", 1),
    ("reward model: Spearman with the verifier, conduct samples", "reward/conduct_spearman", 2),
    ("reward model: held-out pairs right, every family (%)", "reward/eval_accuracy", 1),
    ("reward model: Spearman with the verifier, every family", "reward/spearman", 2),
    ("reward model: calibration error (ECE)", "reward/ece", 3),
    ("PPO: KL to the SFT model after (nats per response)", "ppo/kl_after", 2),
]
# stage 5's targets: (label, key after, rule) -- the report's TARGETS, per seed
PPO_TARGETS = [
    ("harmful refused >= 85 and +40", "harmful_refused", lambda b, a: a >= 85 and a >= b + 40),
    ("\"not stated\" >= 80 and +30", "unanswerable_abstained", lambda b, a: a >= 80 and a >= b + 30),
    ("over-refusal on benign <= 5", "over_refusal_benign", lambda b, a: a <= 5),
    ("task accuracy within 2 points", "task_accuracy", lambda b, a: a >= b - 2),
    ("mixed responses <= before + 2", "mixed_rate", lambda b, a: a <= b + 2),
]
# Stage 2's and stage 4's targets, each on one number of a seed (label, key, rule).
STAGE_TARGETS = [
    ("SFT task accuracy >= 66", "sft/task_accuracy", lambda v: v >= 66),
    ("reward model: conduct pairs right >= 90", "reward/conduct_accuracy", lambda v: v >= 90),
    ("reward model: Spearman on conduct >= 0.6", "reward/conduct_spearman", lambda v: v >= 0.6),
]
RM_TARGETS = [t for t in STAGE_TARGETS if t[1].startswith("reward/")]  # stage 4's alone
SFT_TARGETS = [t for t in STAGE_TARGETS if t[1].startswith("sft/")]  # stage 2's alone


def ppo_cell(d: dict, k: str, rule) -> str:
    """A seed's number after PPO and whether it meets the target (``-`` without a before and an after)."""
    b, a = d.get(f"ppo/{k}_before"), d.get(f"ppo/{k}_after")
    return "-" if None in (a, b) else f"{f(a)} {'met' if rule(b, a) else '**not met**'}"


def ppo_met(d: dict, k: str, rule) -> bool:
    """Whether a seed's run met a stage-5 target (False when it has no before and after)."""
    b, a = d.get(f"ppo/{k}_before"), d.get(f"ppo/{k}_after")
    return None not in (a, b) and rule(b, a)


def ppo_targets_met(d: dict) -> int:
    """How many of stage 5's targets a seed's run met."""
    return sum(ppo_met(d, k, rule) for _, k, rule in PPO_TARGETS)


def stage_cell(d: dict, k: str, rule) -> str:
    """A seed's number for a stage-2 or stage-4 target and whether it meets it (``-`` when missing)."""
    v = d.get(k)
    return "-" if v is None else f"{f(v, 2 if 'spearman' in k else 1)} {'met' if rule(v) else '**not met**'}"


def stage_met(d: dict, k: str, rule) -> bool:
    """Whether a seed's run met a stage-2 or stage-4 target (False when it has no number)."""
    return d.get(k) is not None and rule(d[k])


CONDUCT = ["harmful_refused", "unanswerable_abstained", "over_refusal_benign", "over_refusal_answerable",
           "mixed_rate", "task_accuracy"]
CONDUCT_LABELS = {"harmful_refused": "harmful refused", "unanswerable_abstained": "\"not stated\"",
                  "over_refusal_benign": "over-refusal, benign", "over_refusal_answerable": "over-refusal, answerable",
                  "mixed_rate": "mixed", "task_accuracy": "task accuracy", "over_refusal": "over-refusal, pooled"}


def n_threads(n: int) -> str:
    return f"{n} thread{'' if n == 1 else 's'}"


def trust_threads(doc: dict) -> str:
    """The threads stage 7 ran on, per seed where they differ (seeds run by separate invocations)."""
    per = {sd: r.get("threads", doc.get("threads")) for sd, r in doc["seeds"].items()}
    if len(set(per.values())) == 1:
        return n_threads(next(iter(per.values())))
    return "threads " + ", ".join(f"{t} (seed {sd})" for sd, t in per.items())


def peak_inside(fit: dict) -> bool | None:
    """Whether a fit's peak d* lies inside the d its run reached (None: the fit never turns). A peak beyond it is
    an extrapolation, not a turn the run showed."""
    if fit.get("d_star") is None:
        return None
    return fit["d_star"] <= fit["d_max"]


def section_trust(doc: dict) -> list[str]:
    seeds = doc["seeds"]
    lines = ["", "## How far a reward model can be trusted", "",
             f"`benchmarks/trust_seeds.py` (stage 7), `{doc['preset']}` preset, {doc['date']}, {trust_threads(doc)}, "
             f"seeds {', '.join(seeds)} (of development seeds {', '.join(map(str, DEV_SEEDS))}; no test seed). Gold is the "
             "verifier's score on samples (points of % right, gain over SFT), proxy the reward model's; d = sqrt(KL to "
             "SFT). Gao et al.'s forms: best-of-n gold = d(alpha - beta d), RL gold = d(alpha - beta ln d); d* is the "
             "fitted peak (none where the fit never turns).", "",
             "![gold and proxy against d, best-of-n and RL](trust/overoptimization.png)", ""]
    rows = []
    for sd, r in seeds.items():
        for curve, fit in r["fits"].items():
            rows.append([sd, curve, f(fit["alpha"], 2), f(fit["beta"], 2), f(fit["r2"], 3),
                         f(fit.get("d_star"), 2) + (" (beyond the d reached)" if peak_inside(fit) is False else ""),
                         f(fit.get("d_peak_measured"), 2), f(fit.get("d_max"), 2), f(fit.get("gold_gain_max")),
                         f(fit.get("gold_gain_last")), f(fit.get("proxy_gain_last"), 3)])
    lines += table(["seed", "curve", "alpha", "beta", "R²", "d* (fit)", "d at the measured peak", "d reached",
                    "gold gain at the peak", "gold gain at the end", "proxy gain at the end"], rows)
    missing = [[sd, k, v] for sd, r in seeds.items() for k, v in (r.get("missing") or {}).items()]
    if missing:
        lines += ["", "Curves a seed lacks, and why:", ""] + table(["seed", "curve", "why"], missing)
    lines += trust_points(seeds)
    sized = [(sd, x) for sd, r in seeds.items() for x in (r.get("data_size") or [])]
    if sized:
        lines += ["", "Reward models of stage 4's recipe on fewer of stage 3's pairs, each with its own best-of-n curve:", ""]
        lines += table(["seed", "pairs", "held-out conduct pairs right (%)", "d at the gold peak", "gold gain at the peak",
                        "d* (fit)"],
                       [[sd, f(x["pairs"]), f(x["conduct_accuracy"]), f(x.get("d_peak"), 2), f(x.get("gold_gain_max")),
                         f((x.get("fit") or {}).get("d_star"), 2)] for sd, x in sized])
        earlier = {sd: r.get("weakest_peaks_earlier") for sd, r in seeds.items() if r.get("data_size")}
        def fit_earliest(models):  # the same question asked of the fitted peaks, which n's coarse grid does not limit
            peaks = [((m.get("fit") or {}).get("d_star"), m["pairs"]) for m in models]
            if any(d is None for d, _ in peaks):
                return None
            return min(peaks)[1] == min(m["pairs"] for m in models)
        lines += ["", "Does the reward model on the fewest pairs peak earliest? By the measured peak (the d of the n "
                  "where its gold was highest): " + "; ".join(f"seed {sd}: {f(v)}" for sd, v in earlier.items())
                  + ". By the fitted peak d*: " + "; ".join(f"seed {sd}: {f(fit_earliest(seeds[sd]['data_size']))}"
                                                          for sd in earlier) + "."]
    feedback = trust_feedback(seeds)
    if feedback:
        lines += ["", "### What feedback costs"] + feedback
    lines += trust_time(seeds)
    return lines


def rl_curves(r: dict) -> int:
    """How many RL runs a seed's rl part evaluated: stage 5's, and its kl_coef=0 twin where one was trained."""
    return sum(c.startswith("RL") for c in r.get("fits") or {})


def trust_time(seeds: dict) -> list[str]:
    """Stage 7's wall seconds per part and the load the machine was under."""
    timed = {sd: r for sd, r in seeds.items() if r.get("trust/seconds") is not None}
    if not timed:
        return []
    parts = list(dict.fromkeys(p for r in timed.values() for p in r.get("seconds") or {}))
    lines = ["", "### Stage 7's time", "",
             "Wall seconds per part (the budget is 12 minutes for the default parts at the `cpu` preset on 2 cores), "
             "with the machine's 1-minute load average when the stage started: a load above the threads the stage ran "
             "on means another job shared the cores (a job started in the same minute does not show in it yet). "
             "*RL runs*: the rl part evaluates stage 5's snapshots, and the kl_coef=0 twin's where one was trained "
             "(not in the main command: notebook 05's `kl_ablation`).", ""]
    return lines + table(["seed", "threads", "load at start", "RL runs"] + [f"{p} s" for p in parts] + ["total s"],
                         [[sd, f(r.get("threads")), f(r.get("load_average_at_start"), 2), str(rl_curves(r))]
                          + [f((r.get("seconds") or {}).get(p), 0) for p in parts] + [f(r["trust/seconds"], 0)]
                          for sd, r in timed.items()])


def trust_points(seeds: dict) -> list[str]:
    """Every point of every curve: where it is (d), what gold and proxy gained, and the share of samples the
    strict verifier calls mixed (a refusal that also complies is the exploit a reward model can reward)."""
    rows = []
    for sd, r in seeds.items():
        for curve, points in (r.get("curves") or {}).items():
            for p in points:
                at = f"n = {p['n']}" if "n" in p else f"step {p['step']}" if "step" in p else "-"
                rows.append([sd, curve, at, f(p["d"], 2), f(p.get("gold_gain")), f(p.get("proxy_gain"), 3),
                             f(p.get("mixed"), 2)])  # already % of samples
    if not rows:
        return []
    return ["", "### Each point of the curves", "",
            "Gold and proxy gains over the SFT model, and mixed samples (% of samples the strict verifier calls "
            "`mixed`), at each n of best-of-n and each snapshot of the RL runs:", ""] + table(
        ["seed", "curve", "point", "d", "gold gain", "proxy gain", "mixed (% of samples)"], rows)


def section_trust_feedback(doc: dict) -> list[str]:
    """Stage 7's feedback part where it ran on its own (a copy of the seed's run folder, ``-p parts=feedback``)."""
    seeds = doc["seeds"]
    lines = ["", "## What feedback costs", "",
             f"`benchmarks/trust_seeds.py -p parts=feedback` (stage 7's feedback part), `{doc['preset']}` preset, "
             f"{doc['date']}, {trust_threads(doc)}, seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)} (development; no test "
             "seed), on a copy of the seed's run folder so that its other parts stay as they ran."]
    body = trust_feedback(seeds)
    return lines + body + trust_time(seeds) if body else []


def trust_feedback(seeds: dict) -> list[str]:
    """What feedback buys: conduct accuracy against labels per annotator, and the labels and person-hours to the
    target, where stage 7's ``feedback`` part ran (no heading: the caller's section names it)."""
    ran = {sd: r["feedback"] for sd, r in seeds.items() if r.get("feedback")}
    if not ran:
        return []
    lines = ["", "Reward models of stage 4's recipe on the first k labelled pairs: labelled by the constitution judge, by "
             "simulated annotators who flip a share of the judge's labels at random, and by active selection (start "
             "from the judge's first labels, then each round double them with the pairs the current reward model is "
             "least sure of). Held-out conduct pairs right (%):", ""]
    for sd, fb in ran.items():
        names = list(fb["curves"])
        counts = sorted({c["labels"] for v in fb["curves"].values() for c in v})
        at = {n: {c["labels"]: c["conduct_accuracy"] for c in v} for n, v in fb["curves"].items()}
        by = fb.get("labelled_by") or "the judge"
        lines += [f"Seed {sd} (labelled by {', '.join(by) if isinstance(by, list) else by}; target "
                      f"{f(fb['target_accuracy'])}%):", ""]
        lines += table(["pairs"] + names, [[f(c)] + [f(at[n].get(c)) for n in names] for c in counts])
        if at.get("active") and at.get("judge"):  # active selection against the same number of random labels
            both = [c for c in at["active"] if c in at["judge"]]
            lines += ["", "Active selection against the judge's labels in random order, at the same number of pairs: "
                      + "; ".join(f"{f(c)} pairs: {f(at['active'][c])} against {f(at['judge'][c])}" for c in both) + "."]
        agree = fb.get("agreement") or {}
        if agree:
            lines += ["", "Agreement of the simulated annotators (% of pairs): "
                      + "; ".join(f"flipping {float(k):.0%}: {f(v['with_judge'])} with the judge, "
                                  f"{f(v['two_annotators'])} between two such annotators" for k, v in agree.items()) + "."]
        spl = fb["seconds_per_label"]
        how = ("measured: the median gap between a person's consecutive labels in the label store"
               if spl["source"] == "measured" else
               "an **assumed** time: no person's labels are stored to time; set `seconds_per_label`")
        lines += ["", f"Labels to reach {f(fb['target_accuracy'])}% conduct accuracy, at {f(spl['seconds'])} s per "
                      f"label ({how}), and {f(fb['labels_per_pair'], 2)} labels per pair (ties are judgments too):", ""]
        most = {n: max(c["labels"] for c in v) for n, v in fb["curves"].items()}
        lines += table(["annotator", "pairs", "labels", "person-hours", "most pairs tried"],
                       [([n, f(t["pairs"], 0), f(t["labels"], 0), f(t["person_hours"], 2)] if t["pairs"] is not None
                         else [n, "not reached", "-", "-"]) + [f(most.get(n))] for n, t in fb["to_target"].items()])
    return lines


def seed_groups(doc: dict) -> tuple[list[str], list[str]]:
    seeds = list(doc["seeds"])
    dev = [s for s in seeds if int(s) in doc.get("dev_seeds", [])]
    test = [s for s in seeds if int(s) in doc.get("test_seeds", [])]
    return dev, test


def section_seeds(doc: dict) -> list[str]:
    dev, test = seed_groups(doc)
    seeds = doc["seeds"]
    m = doc["machine"]
    lines = ["## Every stage at every seed", "",
             f"`{doc['preset']}` preset, {doc['date']}, on {m['cpu']} ({m['cores']} cores, torch {m['torch']}, "
             f"{m['aten_cpu_capability']} kernels), {doc['threads']} thread(s) per stage: "
             f"`benchmarks/seeds.py` ({'; '.join(doc['params']) or 'default settings'}). Development seeds (settings "
             f"may be chosen on them) run here: {', '.join(dev) or 'none'} of {', '.join(map(str, DEV_SEEDS))}; test "
             f"seeds (never): {', '.join(test) or 'none'} of {', '.join(map(str, TEST_SEEDS))}. A seed changes every "
             "stage's initialisation, data order and held-out draw; the world (its residents and facts) is the same."
             + ("" if doc == load(PRESET_RUNS) else " These are the preset's defaults of that date, with 1,000 SFT "
                "steps; the preset's runs now, at 2,000 SFT steps from these runs' stage 1 models, are README's "
                "table and the section on sft.max_steps=2000 below."),
             ""]
    head = ["number"] + [f"seed {s}" + (" (test)" if s in test else "") for s in seeds] + \
        ["development seeds", "test seeds", "all seeds"]
    rows = []
    for label, key, nd in HEADLINES:
        vals = {s: seeds[s].get(key) for s in seeds}
        rows.append([label] + [f(vals[s], nd) for s in seeds] + [spread([vals[s] for s in dev], nd),
                                                                 spread([vals[s] for s in test], nd),
                                                                 spread(list(vals.values()), nd)])
    for k in CONDUCT:
        for when in ("before", "after"):
            key = f"ppo/{k}_{when}"
            vals = {s: seeds[s].get(key) for s in seeds}
            rows.append([f"PPO {when}: {CONDUCT_LABELS[k]} (%)"] + [f(vals[s]) for s in seeds] +
                        [spread([vals[s] for s in dev]), spread([vals[s] for s in test]), spread(list(vals.values()))])
    lines += table(head, rows)
    lines += ["", "### The targets at each seed", "",
              "Each cell is the seed's number (for stage 5, after PPO) and whether it meets the target (the rule in "
              "the first column; conduct rates are shares of samples at temperature 1 on held-out prompts, task "
              "accuracy greedy).", ""]
    trows = []
    for label, k, rule in STAGE_TARGETS:
        trows.append([label] + [stage_cell(seeds[s], k, rule) for s in seeds])
    for label, k, rule in PPO_TARGETS:
        trows.append([label] + [ppo_cell(seeds[s], k, rule) for s in seeds])
    lines += table(["target"] + [f"seed {s}" + (" (test)" if s in test else "") for s in seeds], trows)
    return lines


def beside_seeds(doc: dict):
    """For a seeds.py run at another setting: seeds.json's runs, the development and test seeds, the seeds both
    ran, and the setting's name; None without seeds.json."""
    base = load("seeds.json")
    if base is None:
        return None
    dev, test = seed_groups(doc)
    return base, dev, test, [s for s in doc["seeds"] if s in base["seeds"]], "; ".join(doc["params"])


ROUNDING_POINTS = 5  # how far the same seed's SFT task accuracy may move with float rounding alone (#24)
SPREAD_POINTS = 10  # how far apart the seeds' SFT task accuracies may be, max - min (#24)


def within_rounding(diff: float) -> bool:
    """Whether a change of SFT task accuracy is no more than float rounding alone may move it."""
    return abs(diff) <= ROUNDING_POINTS


def sft_moved(a: dict, b: dict) -> float | None:
    """How far SFT's task accuracy moved from run ``a`` to run ``b`` (one seed's numbers each), None where either lacks it."""
    if None in (a.get("sft/task_accuracy"), b.get("sft/task_accuracy")):
        return None
    return b["sft/task_accuracy"] - a["sft/task_accuracy"]


def rounding_cell(diff: float | None) -> str:
    """A change of SFT task accuracy in points, and whether it is within the rounding bound."""
    return "-" if diff is None else f"{diff:+.1f} {'within' if within_rounding(diff) else '**over**'}"


def forced_kernels(m: dict) -> str:
    """The environment setting that forced a machine's ATen kernels (seeds.py records it), or "" where none did."""
    return f"ATEN_CPU_CAPABILITY={m['ATEN_CPU_CAPABILITY']}" if m.get("ATEN_CPU_CAPABILITY") else ""


def seeds_command(doc: dict, seeds=None, last: str = "ppo", *, kernels: bool = False, start: str | None = None,
                  beside: str | None = None) -> str:
    """The ``benchmarks/seeds.py`` command a results file's runs came from, in backticks, as the sections quote it:
    ``kernels`` puts the forced-kernels setting the machine ran under in front, ``start`` is ``--from``."""
    words = [forced_kernels(doc["machine"]) if kernels else "", "benchmarks/seeds.py",
             f"--seeds {','.join(seeds)}" if seeds else "", f"--to {last}", f"--from {start}" if start else "",
             *(f"-p {p}" for p in doc["params"]), f"--beside {beside}" if beside else "",
             f"--threads {doc['threads']}" if doc.get("threads", 1) != 1 else ""]
    return "`" + " ".join(w for w in words if w) + "`"


def copies_note(copies: list[str]) -> list[str]:
    """The lines that say a section's seed folders were started as copies of other runs (``copies``: each
    "`folder` at seed N"), so the stages they held were not trained by the command quoted; none without copies."""
    if not copies:
        return []
    return [f"Not every stage here was trained by that command: these seed folders were started as copies of "
            f"other runs ({'; '.join(copies)}), and seeds.py trains only the stages a folder does not have "
            "complete.", ""]


def machine_name(m: dict) -> str:
    """A machine as seeds.py records it: the CPU and the kernels torch ran, the best it has unless forced."""
    how = f"forced by {forced_kernels(m)}" if forced_kernels(m) else "the best it supports"
    # one CPU name covers several generations, told apart by family/model/stepping where seeds.py recorded it
    cpu_id = f"family/model/stepping {m['cpu_id']}; " if m.get("cpu_id") else ""
    return f"{m['cpu']} ({cpu_id}{m['aten_cpu_capability']} kernels, {how})"


def recorded_machine(doc: dict) -> str:
    """A results file's machine as ``machine_name`` names it; older files recorded the CPU's name alone."""
    return machine_name(doc["machine"]) if doc.get("machine") else doc["cpu"]


def stages_reached(doc: dict, seeds: list[str] | None = None) -> list[str]:
    """The stages, in pipeline order, a seeds.py file has numbers for at ``seeds`` (all by default). seeds.py is
    restartable per stage, so a run stopped after some stage (or run ``--to`` it) has none past it."""
    runs = [doc["seeds"][s] for s in (seeds or doc["seeds"])]
    return [st for st in STAGES if any(k.startswith(st + "/") and isinstance(v, (int, float))
                                       for run in runs for k, v in run.items())]


def section_other_machine(doc: dict) -> list[str]:
    """The same seeds, settings and thread count as seeds.json (or, at SFT's candidate settings, as
    sft_candidate.json), on another machine: how far rounding alone moves stage 1 and SFT (stages the other
    machine ran; the bound is the one SFT's stability target allows)."""
    if (beside := beside_seeds(doc)) is None:
        return []
    base, _, test, seeds, _ = beside
    ran = stages_reached(doc)  # a setting of a stage these runs did not reach changed nothing here
    params = [p for p in doc["params"] if "." not in p.split("=")[0] or p.split(".")[0] in ran]
    first = "the seeds table's runs ran"
    if params and (cand := load("sft_candidate.json")) and cand["params"] == params:
        base, first = cand, f"the runs of \"Stages 2-5 at {'; '.join(params)}\" ran"
        seeds = [sd for sd in doc["seeds"] if sd in cand["seeds"]]
    if not seeds:
        return []
    only_test = all(sd in test for sd in seeds)  # its own heading beside the same settings' development seeds
    lines = ["", f"### The same seeds on another machine: {machine_name(doc['machine'])}"
                 f"{', ' + '; '.join(params) if params else ''}{', through stage 5' if 'ppo' in ran else ''}"
                 f"{', the test seeds' if only_test else ''}", "",
             f"{seeds_command({**doc, 'params': params}, seeds, ran[-1], kernels=True)}, {doc['date']}, on "
             f"{machine_name(doc['machine'])}, "
             f"{doc['threads']} thread(s) per stage, the `cpu` preset{' with ' + '; '.join(params) if params else ''}; "
             f"{first} on {machine_name(base['machine'])}. The settings, seeds and thread count are the "
             "same; the machine differs, and so does the commit (these runs are newer), though no change since was "
             "meant to change what these stages compute.", ""]
    # a seed folder started as a copy of another run's first stages: those were not trained by the command
    lines += copies_note([f"`{c}` at seed {sd}" for sd in seeds if (c := doc["seeds"][sd].get("copied_from"))])
    if only_test:
        lines += ["Reported as they came out: no setting is chosen on the test seeds.", ""]
    lines += stage1_and_sft_beside(base, doc, seeds, test, ("first machine", "this machine"))
    if "ppo" not in ran:
        return lines
    targets, flips = targets_beside(base, doc, seeds, test, ("first machine", "this machine"), " on both machines")
    return lines + ["", "Stages 4 and 5 at the same seeds:", ""] + targets + [
        "", f"{flips}. With the same settings and seeds, a verdict that differs is one the recipe did not decide: "
            "another CPU's rounding, or where the first runs' models came from (docs/architecture.md: forced to the "
            "same kernels, two CPUs give the same numbers)."]


def stage1_and_sft_beside(base: dict, doc: dict, seeds: list[str], test: list[str],
                          where: tuple[str, str]) -> list[str]:
    """Per seed, stage 1's validation perplexity and SFT's task accuracy in two sets of runs (``where`` names them),
    and whether SFT moved by no more than float rounding may move it."""
    rows = []
    for s in seeds:
        a, b = base["seeds"][s], doc["seeds"][s]
        rows.append([s + (" (test)" if s in test else ""), f(a.get("pretrain/val_ppl"), 3), f(b.get("pretrain/val_ppl"), 3),
                     f(a.get("sft/task_accuracy")), f(b.get("sft/task_accuracy")),
                     rounding_cell(sft_moved(a, b))])
    return table(["seed", f"stage 1 validation perplexity, {where[0]}", where[1], f"SFT task accuracy, {where[0]}",
                  where[1], f"difference (within {ROUNDING_POINTS} points?)"], rows)


def targets_beside(base: dict, doc: dict, seeds: list[str], test: list[str], where: tuple[str, str], both: str):
    """The stage-4 and stage-5 targets per seed in two sets of runs (``where`` names them): the table, and a clause
    saying how many verdicts are the same (``both``: where) and which differ (how much of a verdict rounding alone
    decides)."""
    targets = [(label, stage_cell, stage_met, k, rule) for label, k, rule in RM_TARGETS] + \
              [(f"PPO: {label}", ppo_cell, ppo_met, k, rule) for label, k, rule in PPO_TARGETS]
    trows = [[label] + [cell(src["seeds"][s], k, rule) for s in seeds for src in (base, doc)]
             for label, cell, _, k, rule in targets]
    trows += [["targets met"] + [f"{sum(met(src['seeds'][s], k, rule) for _, _, met, k, rule in targets)} of {len(targets)}"
                                 for s in seeds for src in (base, doc)]]
    flips = [f"seed {s}: {label}" for s in seeds for label, _, met, k, rule in targets
             if met(base["seeds"][s], k, rule) != met(doc["seeds"][s], k, rule)]
    n = len(targets) * len(seeds)
    said = (f"Of the {n} verdicts ({len(targets)} targets at {len(seeds)} seed{'s' * (len(seeds) > 1)}), "
            f"{n - len(flips)} are the same{both} and {len(flips)} differ"
            + (f" ({'; '.join(flips)})" if flips else ""))
    return table(["target"] + [f"seed {s}{' (test)' if s in test else ''}, {w}" for s in seeds for w in where],
                 trows), said


def section_other_kernels(doc: dict, base_name: str) -> list[str]:
    """The same seeds and settings on one machine under two sets of ATen kernels (one forced by ATEN_CPU_CAPABILITY):
    how far float rounding alone moves SFT and the stage-4 and stage-5 verdicts, the machine held fixed."""
    base = load(base_name)
    seeds = [sd for sd in doc["seeds"] if base and sd in base["seeds"]]
    if not seeds or base["params"] != doc["params"] or not doc["machine"].get("cpu_id") or \
            base["machine"].get("cpu_id") != doc["machine"].get("cpu_id"):
        return []
    _, test = seed_groups(doc)
    where = tuple(f"{m['aten_cpu_capability']} kernels" for m in (base["machine"], doc["machine"]))
    ran = [st for st in stages_reached(doc) if st in stages_reached(base)]
    lines = ["", f"### One machine, two sets of kernels: {where[1]} beside {where[0]}, {'; '.join(doc['params'])}", "",
             f"{seeds_command(doc, seeds, ran[-1], kernels=True)} ({doc['date']}) beside "
             f"{seeds_command(base, seeds, ran[-1], kernels=True)} (`{base_name}`, {base['date']}), both on "
             f"{doc['machine']['cpu']} (family/model/stepping {doc['machine']['cpu_id']}), {doc['threads']} thread(s) "
             f"per stage, at {base.get('commit') or 'an unrecorded commit'} and "
             f"{doc.get('commit') or 'an unrecorded commit'}: the machine, settings and seeds the same, only the "
             "kernels torch ran differ.", ""]
    lines += stage1_and_sft_beside(base, doc, seeds, test, where)
    if "ppo" not in ran:
        return lines
    targets, flips = targets_beside(base, doc, seeds, test, where, " under both sets of kernels")
    return lines + ["", "Stages 4 and 5 at the same seeds:", ""] + targets + [
        "", f"{flips}: what float rounding alone decides, on one machine."]


def flat_numbers(run: dict, prefix: str = "") -> dict:
    """Every number a seeds.py run recorded, nested dicts and lists flattened to 'a/b/0' keys; times and thread
    counts left out (they are the machine's, not the computation's)."""
    out = {}
    for k, v in (run.items() if isinstance(run, dict) else enumerate(run)):
        key = f"{prefix}{k}"
        if isinstance(v, (dict, list)):
            out.update(flat_numbers(v, key + "/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and not re.search(r"seconds|threads", key):
            out[key] = v
    return out


def numbers_beside(a: dict, b: dict) -> tuple[list[str], list[str]]:
    """Two runs' numbers as ``flat_numbers`` gives them: the keys both have, in order, and those of them that
    differ in any digit."""
    keys = sorted(set(a) & set(b))
    return keys, [k for k in keys if a[k] != b[k]]


def section_same_kernels(doc: dict, other_name: str) -> list[str]:
    """The same seeds and settings run twice with the same kernels: on two CPUs (the best kernels each supports, or
    one side's forced by ATEN_CPU_CAPABILITY), or on one machine at two thread counts (which changes how torch
    splits its sums). Is every number the same, to the last digit, stage by stage, and does SFT stay within the
    bound rounding is allowed?"""
    other = load(other_name)
    seeds = [sd for sd in doc["seeds"] if other and sd in other["seeds"]]
    if not seeds or other["params"] != doc["params"] or \
            other["machine"]["aten_cpu_capability"] != doc["machine"]["aten_cpu_capability"]:
        return []
    one_cpu = doc["machine"].get("cpu_id") and other["machine"].get("cpu_id") == doc["machine"]["cpu_id"]
    if one_cpu and other["threads"] == doc["threads"]:
        return []  # nothing differs but the date: a rerun, not a comparison
    if one_cpu:
        heading = (f"The same numbers at {doc['threads']} threads as at {other['threads']}: "
                   f"{machine_name(doc['machine'])}")
        where = (f"{other['threads']} thread(s)", f"{doc['threads']} thread(s)")
        minus = f"at {doc['threads']} thread(s) minus at {other['threads']}"
    else:
        heading = (f"The same numbers on two CPUs with the same kernels: {machine_name(doc['machine'])} beside "
                   f"{machine_name(other['machine'])}")
        where = ("other file", "these runs")
        minus = f"these runs minus `{other_name}`'s"
    lines = ["", f"### {heading}", "",
             f"{seeds_command(doc, seeds, stages_reached(doc)[-1], kernels=True)}, {doc['date']}, "
             f"{doc['threads']} thread(s) per stage, beside `{other_name}` ({other['date']}"
             f"{', ' + str(other['threads']) + ' thread(s) per stage' if other['threads'] != doc['threads'] else ''}). "
             "Every number both recorded, compared to the last digit (times and thread counts left out), per stage "
             "in pipeline order:", ""]
    rows = []
    for sd in seeds:
        a, b = flat_numbers(other["seeds"][sd]), flat_numbers(doc["seeds"][sd])
        common, differ = numbers_beside(a, b)
        for st in STAGES:
            keys = [k for k in common if k.startswith(st + "/")]
            if not keys:
                continue
            moved = [k for k in differ if k.startswith(st + "/")]
            first = (f"`{moved[0]}`: {a[moved[0]]!r} -> {b[moved[0]]!r}" if moved else "")
            rows.append([sd, st, f(len(keys)), f(len(keys) - len(moved)), first])
    lines += table(["seed", "stage", "numbers both recorded", "the same to the last digit",
                    f"first that differs ({where[0]} -> {where[1]})"], rows)
    return lines + ["", f"SFT task accuracy, {minus} (within the {ROUNDING_POINTS} points float rounding may move "
                        "it?): " + "; ".join(f"seed {sd} {rounding_cell(sft_moved(other['seeds'][sd], doc['seeds'][sd]))}"
                                             for sd in seeds) + "."]


def section_ppo_epochs(doc: dict) -> list[str]:
    """Stage 5 at another setting beside seeds.json's runs, on the same stage 1-4 models of each seed."""
    if (beside := beside_seeds(doc)) is None:
        return []
    base, dev, test, seeds, setting = beside

    on_dev = {name: sum(ppo_targets_met(src["seeds"][s]) for s in seeds if s in dev)
              for name, src in (("above", base), ("new", doc))}
    n_dev = len(PPO_TARGETS) * sum(1 for s in seeds if s in dev)
    lines = ["", f"### Stage 5 at {setting} beside the runs above", "",
             f"{seeds_command(doc)}, {doc['date']}, "
             f"{doc['threads']} thread(s) per stage: stage 5 trained again on each seed's stage 1-4 models of the "
             "table above, with this one setting changed; the other rows are that table's runs. At the development "
             f"seeds it met {on_dev['new']} of {n_dev} stage-5 targets, the runs above {on_dev['above']}. The rule: "
             "the cheaper setting becomes the `cpu` preset's when it meets at least as many; the test seeds ran after "
             "the choice. Stages 6 and 7 read the runs above.", ""]
    rows = ppo_rows(seeds, (("above", base), (setting, doc)))
    return lines + table(["target", "runs"] + [f"seed {s}" + (" (test)" if s in test else "") for s in seeds], rows)


def seeds_files() -> list[tuple[str, dict]]:
    """Every benchmarks/seeds.py results file (the ones that record the ``last`` stage they trained), by name."""
    docs = ((p.name, json.loads(p.read_text())) for p in sorted(RESULTS.glob("*.json")))
    return [(name, d) for name, d in docs if isinstance(d, dict) and "last" in d]


def copied_from(doc: dict) -> dict | None:
    """The results file of the runs a ``seeds.py --from WORK:STAGE`` file started from (the one whose ``work`` is
    WORK), or None."""
    work = (doc.get("from") or "").rpartition(":")[0]
    return next(({**other, "file": name} for name, other in seeds_files() if work and other.get("work") == work), None)


def section_stage5_again(doc: dict) -> list[str]:
    """Stage 5 again at another setting on the very stage 1-4 models of another seeds.py file's runs
    (``--from WORK:reward``). With the verifier as its reward: a target the verifier's run meets and the reward
    model's misses is the reward model's miss; one both miss is not."""
    if (base := copied_from(doc)) is None:
        return []
    _, test = seed_groups(doc)
    seeds = [s for s in doc["seeds"] if s in base["seeds"]]
    through = doc["from"].rpartition(":")[2]
    others = "; ".join(p for p in doc["params"] if p not in base["params"])
    # The same models and settings on other ATen kernels: the float rounding of stage 5 alone differs
    kernels = doc["machine"].get("ATEN_CPU_CAPABILITY")
    kernels = kernels if kernels != base["machine"].get("ATEN_CPU_CAPABILITY") else None
    others = "; ".join(filter(None, [others, kernels and forced_kernels(doc["machine"])]))
    verifier = "ppo.reward=verifier" in doc["params"]
    names = ("reward model", "verifier") if verifier else ("as they ran", others)
    sources = ((names[0], base), (names[1], doc))
    first = STAGES.index(through) + 2  # the first stage trained again
    again = f"stages {first}-5" if first < 5 else "stage 5"
    command = (f"{seeds_command(doc, seeds, kernels=True, start=doc['from'])}, {doc['date']}, on "  # as they started
               f"{machine_name(doc['machine'])}, "
               f"{n_threads(doc['threads'])} per stage: {again} trained again on the very stage "
               f"{'1' if first == 2 else f'1-{first - 1}'} models of `{base['file']}`'s runs (the rows \"{names[0]}\", the `cpu` "
               f"preset with {'; '.join(base['params']) or 'its settings'})")
    if verifier:
        lines = ["", f"### Is a stage-5 miss the reward model's? Stage 5 with {others}", "",
                 command + ", rewarded by the world's verifier (1 for a right response, 0 for a wrong one) instead of "
                 "stage 4's model, and so with a critic started from the SFT model (there is no reward model to start "
                 "it from); every other setting is the same. What the verifier's run reaches, PPO can reach with a "
                 "perfect reward; a target it meets where the reward model's run misses is a miss of the reward "
                 "model's, one both miss is PPO's (its steps, its KL leash or its start).", ""]
    elif doc.get("candidate"):
        lines = ["", f"### A candidate for {again}: {others}", "",
                 command + f", with {others}; every other setting is the same. A candidate for the preset, kept or "
                 "dropped on the development seeds by a rule written before the runs (below).", ""]
    else:
        lines = ["", f"### Stage 5 again on the same models with {others}", "",
                 command + f", with {others}; every other setting is the same. A diagnosis: nothing is chosen by it."
                 + (f" ATen's {kernels.upper()} kernels round sums otherwise than the "
                    f"{base['machine'].get('aten_cpu_capability')} kernels the first runs used, so a target met in "
                    "one run and missed in the other was decided by float rounding inside stage 5 alone."
                    if kernels else ""), ""]
    # a seed folder started by hand as a copy of some other run: the stages it held were not trained by the command
    work = doc["from"].rpartition(":")[0]
    elsewhere = [f"`{c}` at seed {s}" for s in seeds
                 if (c := doc["seeds"][s].get("copied_from")) and Path(c) != Path(work) / f"seed-{s}"]
    lines += copies_note(elsewhere)
    if test:
        lines += [f"Test seeds ({', '.join(test)}) ran to say why a target missed there; no setting is chosen on them.",
                  ""]
    retrained = STAGES.index(through) < STAGES.index("reward")  # a reward model of its own: both sides' rows
    sft_again = STAGES.index(through) < STAGES.index("sft")  # an SFT model of its own: its own "before" too
    rows = stage_rows(seeds, sources, (SFT_TARGETS if sft_again else []) + RM_TARGETS) if retrained else []
    rows += pair_rows(seeds, sources) if STAGES.index(through) < STAGES.index("preferences") else []
    rows += ppo_rows(seeds, sources)
    rows += verb_rows(seeds, base, sources, own_before=sft_again)
    rows += spearman_rows(seeds, sources if retrained else (("", base),))
    lines += table(["target", "runs" if retrained else "stage 5"]
                   + [f"seed {s}" + (" (test)" if s in test else "") for s in seeds], rows)
    verdict = []
    for s in seeds:
        new_only, both, base_only = target_changes(base["seeds"][s], doc["seeds"][s])
        if verifier:
            verdict.append(f"Seed {s}: the reward model's misses: {', '.join(new_only) or 'none'}; missed with "
                           f"either reward: {', '.join(both) or 'none'}; missed with the verifier only: "
                           f"{', '.join(base_only) or 'none'}.")
        else:
            verdict.append(f"Seed {s}: met only with {others}: {', '.join(new_only) or 'none'}; missed by both: "
                           f"{', '.join(both) or 'none'}; missed only with {others}: {', '.join(base_only) or 'none'}.")
    if doc.get("candidate"):
        dev = seed_groups(doc)[0]
        on_dev, sft_dev, kept = kept_by_rule(base, doc, seeds, dev)  # sft_dev: None where SFT is the same models
        sft_clause = (f", and SFT's target at no fewer development seeds (met at {sft_dev['after']} with {others}, "
                      f"{sft_dev['before']} as they ran)" if sft_dev else "")
        verdict.insert(0, f"At the development seeds the runs with {others} met {on_dev['after']} of "
                       f"{len(PPO_TARGETS) * sum(s in dev for s in seeds)} stage-5 targets, as they ran "
                       f"{on_dev['before']}. The rule, written before the runs: a candidate is kept when it meets at "
                       f"least as many stage-5 targets at every development seed and more in all{sft_clause}; so it "
                       f"is **{'kept' if kept else 'not kept'}**.")
        if said := larger_draw_verdict(doc, base, dev, others, retrained):
            verdict.insert(1, said)
    if kernels:  # did the rounding change reach what PPO ended at, or stay in the last digits of its sums?
        same = [s for s in seeds if same_after(base["seeds"][s], doc["seeds"][s])]
        verdict.append("Every held-out rate a stage-5 target reads is the same after PPO (to 2 decimals) as in the "
                       f"first runs at {len(same)} of {len(seeds)} seeds ({', '.join(same) or 'none'}).")
    return lines + ["", " ".join(verdict)]


def larger_draw_verdict(doc: dict, base: dict, dev: list[str], others: str, retrained: bool) -> str:
    """Where target_noise.py drew both a candidate's runs and the runs it started from again, what the larger draw
    counts at the development seeds both have it for: a count on stage 5's forty prompts per family can be the
    draw's (docs/how-it-works.md, point 22), so the rules written after that measure read this one too."""
    groups = {g["work"]: g["seeds"] for g in (load("target_noise.json") or {}).get("groups", {}).values()}
    mine, theirs = groups.get(doc["work"], {}), groups.get(base["work"], {})
    both = [s for s in dev if "large" in mine.get(s, {}) and "large" in theirs.get(s, {})]
    if not both:
        return ""

    def met(entries: dict, part: str, keys) -> int:
        return sum(entries[s][part][k]["point"] == "met" for s in both for k in keys)
    said = (f"A count on stage 5's draw can be the draw's; on target_noise.py's larger one (\"How far the held-out "
            f"draw moves a stage-4 or stage-5 verdict\"), at development seed{'s' if len(both) > 1 else ''} "
            f"{', '.join(both)}, the three conduct targets are met by value {met(mine, 'large', CONDUCT_FAMILIES)} "
            f"of {3 * len(both)} times with {others}, {met(theirs, 'large', CONDUCT_FAMILIES)} as they ran")
    if retrained and all("large_reward" in e[s] for e in (mine, theirs) for s in both):  # else one reward model
        said += (f"; the reward model's Spearman target, on its larger draw, at "
                 f"{met(mine, 'large_reward', ['conduct_spearman'])} of {len(both)} seeds with {others}, "
                 f"{met(theirs, 'large_reward', ['conduct_spearman'])} as they ran")
    return said + "."


PHRASINGS = (("train", "SFT's"), ("rl", "the RLHF stages'"), ("eval", "held-out"))
PHRASED = (("harmful", "harmful refused"), ("unanswerable", '"not stated"'), ("benign", "over-refusal on benign"))


def rollouts(doc: dict) -> str:
    """Which phrasings stages 3 and 5 sampled in, from phrasing.py's file (files before it recorded them: both in the
    RLHF stages' own, the default every run then had)."""
    said = {"rl": "the RLHF stages' phrasings only", "rl+train": "SFT's phrasings and the RLHF stages'"}
    used = {stage: {e.get("rollout_templates", {}).get(stage, "rl") for e in doc["seeds"].values()}
            for stage in ("preferences", "ppo")}
    name = {stage: " / ".join(said[t] for t in sorted(ts)) for stage, ts in used.items()}
    if name["preferences"] == name["ppo"]:
        return f"Stage 3 samples and PPO rolls out in {name['ppo']}"
    return f"Stage 3 samples in {name['preferences']}, and PPO rolls out in {name['ppo']}"


def section_test_seeds(doc: dict, candidate: str) -> list[str]:
    """A candidate's settings (``candidate``: its seeds.py file at the development seeds) through the whole pipeline
    at the test seeds: every target as it came out, nothing chosen on it."""
    seeds = [s for s in doc["seeds"] if s in seed_groups(doc)[1]]
    cand = load(candidate)
    if not seeds or cand is None or (base := copied_from(cand)) is None or cand["params"] != doc["params"]:
        return []
    shared = [s for s in cand["seeds"] if s in base["seeds"]]
    kept = kept_by_rule(base, cand, shared, seed_groups(cand)[0])[2]
    settings = "; ".join(doc["params"])
    command = seeds_command(doc, seeds, doc["last"], kernels=True)
    lines = ["", f"### The candidate at the test seeds: {settings}", "",
             f"{command}, {doc['date']}, on {machine_name(doc['machine'])}, {n_threads(doc['threads'])} per stage: "
             f"stages 1-5 at the test seeds with the settings of `{candidate}`, "
             f"{'kept' if kept else 'not kept'} by the rule at the development seeds. Reported as they came out: no "
             "setting is chosen on the test seeds.", ""]
    sources = ((settings, doc),)
    rows = (stage_rows(seeds, sources, SFT_TARGETS + RM_TARGETS) + pair_rows(seeds, sources)
            + ppo_rows(seeds, sources) + spearman_rows(seeds, sources))
    lines += table(["target", "runs"] + [f"seed {s} (test)" for s in seeds], rows)
    missed = {s: [label for label, k, rule in PPO_TARGETS if not ppo_met(doc["seeds"][s], k, rule)] for s in seeds}
    return lines + ["", " ".join(f"Seed {s}: stage-5 targets missed: {', '.join(m) or 'none'}." for s, m in
                                 missed.items())]


def section_phrasing(doc: dict, title: str = "Is a stage-5 miss the phrasing's? The same requests in every phrasing"
                     ) -> list[str]:
    """The held-out conduct requests of stage 5 asked in each role's templates (benchmarks/phrasing.py): is a
    low held-out rate after PPO the held-out phrasing's, or low in every phrasing?"""
    seeds = sorted(doc["seeds"], key=int)
    first = doc["seeds"][seeds[0]]
    n = {fam: first["ppo"][fam]["eval"]["requests"] for fam, _ in PHRASED}
    lines = ["", f"### {title}", "",
             f"`{doc['command']}`, {doc['date']}, on {machine_name(doc['machine'])}, at {doc['commit']}: the held-out "
             f"conduct requests of each seed's stage-5 evaluation (at seed {seeds[0]}: {n['harmful']} harmful, "
             f"{n['unanswerable']} unanswerable, {n['benign']} benign) asked in every template of SFT's phrasings, the "
             "RLHF stages' and the held-out one (the same verb, person, object or sentence; only the question's words "
             f"differ), sampled {first['samples']} times each at temperature {first['temperature']:g} from the seed's "
             f"SFT model and its model after PPO (`{doc['work']}`'s runs). % of samples. {rollouts(doc)}; SFT "
             "trained in its own; no stage trains in the held-out one. The held-out "
             "column is a fresh draw of the very prompts stage 5 evaluated; stage 5's own number is beside it. A "
             "diagnosis: nothing is chosen on it.", ""]
    rows = []
    for s in seeds:
        e = doc["seeds"][s]
        for fam, label in PHRASED:
            rows.append([s + ("" if e["development"] else " (test)"), label]
                        + [f(e[stage][fam][role]["rate"]) for stage in ("sft", "ppo") for role, _ in PHRASINGS]
                        + [f(e["stage5"][fam]["after"])])
    lines += table(["seed", "rate"] + [f"{who}: {name}" for who in ("SFT", "PPO") for _, name in PHRASINGS]
                   + ["stage 5's held-out number after PPO"], rows)
    # after PPO, per family and seed: the worse of the two trained phrasings (over-refusal is worse higher, the
    # other two lower), and the held-out one
    trained = {fam: {s: (max if fam == "benign" else min)(doc["seeds"][s]["ppo"][fam][r]["rate"] for r in ("train", "rl"))
                     for s in seeds} for fam, _ in PHRASED}
    held = {fam: {s: doc["seeds"][s]["ppo"][fam]["eval"]["rate"] for s in seeds} for fam, _ in PHRASED}
    said = [f"{label} {f(min(trained[fam].values()))}–{f(max(trained[fam].values()))} against "
            f"{f(min(held[fam].values()))}–{f(max(held[fam].values()))}" for fam, label in PHRASED]
    # A gap large beside the sampling noise of ~40 requests x 8 samples (a few points).
    gaps = [f"seed {s}, {label}" for s in seeds for fam, label in PHRASED
            if fam != "benign" and held[fam][s] < trained[fam][s] - 10]
    return lines + ["", f"After PPO, over the {len(seeds)} seeds, in the worse of the two trained phrasings at each "
                        f"seed (SFT's, the RLHF stages') against the held-out one: {'; '.join(said)}. More than 10 "
                        "points lower in the held-out phrasing than in both trained ones: "
                        f"{', '.join(gaps) or 'nowhere'}."]


# target_noise.py's names for the targets, with the labels every table gives them
REWARD_NOISE = tuple((k.split("/")[1], label) for label, k, _ in RM_TARGETS)
NOISE_TARGETS = tuple(zip(("harmful", "unanswerable", "benign", "task"), (label for label, _, _ in PPO_TARGETS)))
BENIGN_MET = next(rule for _, k, rule in PPO_TARGETS if k == "over_refusal_benign")


def noise_cell(t: dict | None, nd: int = 1) -> str:
    """A target of target_noise.py: each part's value and interval, then the call (a close one with its value's)."""
    if t is None:
        return "-"
    parts = [f"{'+' if p['what'] == 'gain' else ''}{f(p['value'], nd)} ({f(p['low'], nd)} to {f(p['high'], nd)})"
             for p in t["parts"]]
    said = f"**{t['call']}**" if t["call"] != "close" else f"**close** (the value: {t['point']})"
    return ", ".join(parts) + " " + said


def noise_entries(doc: dict) -> list[tuple[str, str, dict]]:
    """(set of runs, seed, entry) of a target_noise.py file, seeds in order within each set."""
    return [(label, s, e) for label, g in doc["groups"].items()
            for s, e in sorted(g["seeds"].items(), key=lambda kv: int(kv[0]))]


def conduct_counts(doc: dict) -> list[list[str]]:
    """Per set of runs, the three conduct targets at its development seeds met by value on stage 5's draw and on
    the larger one (with how many are close)."""
    counts = []
    for label, g in doc["groups"].items():
        dev = [e for e in g["seeds"].values() if e["development"] and "large" in e]
        if not dev:
            continue
        own = [(e["stage5"][k]["point"], e["stage5"][k]["call"]) if k != "benign" else
               ("met" if BENIGN_MET(None, e["stage5"]["over_refusal_benign"]) else "not met", None)
               for e in dev for k in CONDUCT_FAMILIES]
        big = [(e["large"][k]["point"], e["large"][k]["call"]) for e in dev for k in CONDUCT_FAMILIES]
        counts.append([label, ", ".join(s for s, e in g["seeds"].items() if e in dev)]
                      + [f"{sum(p == 'met' for p, _ in v)} of {len(v)} ({sum(c == 'close' for _, c in v)} close)"
                         for v in (own, big)])
    return counts


def where_taxed(entries: list[tuple[str, str, dict]]) -> list[str]:
    """Where a missed task target lost its accuracy: per such seed, the answer family that lost most."""
    taxed = []
    for label, s, e in entries:
        by = e["stage5"].get("task_by_family")
        if by and e["stage5"]["task"]["point"] == "not met":
            fam, v = min(by.items(), key=lambda kv: kv[1]["after"] - kv[1]["before"])
            taxed.append(f"{label}, seed {s}{'' if e['development'] else ' (test)'}: {fam.replace('_', ' ')} "
                         f"{f(v['before'])} to {f(v['after'])}, its greedy answers declining the question "
                         f"{v['declined_before']} to {v['declined_after']} of {v['prompts']}")
    return taxed


def reward_noise_lines(doc: dict, entries: list[tuple[str, str, dict]]) -> list[str]:
    """Stage 4's two conduct targets with their intervals (and the Spearman on a larger draw), each reward model
    counted once in the summary: runs that trained stage 5 again on another run's stage 4 share its model."""
    entries = [(label, s, e) for label, s, e in entries if e.get("reward")]
    if not entries:
        return []
    larger = any(e.get("large_reward") for _, _, e in entries)

    def counted(t: dict | None, nd: int) -> str:
        return noise_cell(t, nd) + (f" ({t['prompts']} prompts)" if t else "")
    lines = ["", "The reward model's two conduct targets on stage 4's own held-out draw: its held-out pairs and its "
                 "fresh SFT samples of the conduct families come several to a prompt, so a prompt's rows are drawn "
                 f"again together, within each family ({doc['draws']:,} draws, {round(100 * doc['level'])}% "
                 "intervals).", ""]
    rows = [[label, s + ("" if e["development"] else " (test)")]
            + [counted(e["reward"].get(k), 2 if k.endswith("spearman") else 1) for k, _ in REWARD_NOISE]
            + ([counted((e.get("large_reward") or {}).get("conduct_spearman"), 2)] if larger else [])
            for label, s, e in entries]
    lines += table(["runs", "seed"] + [name for _, name in REWARD_NOISE]
                   + (["Spearman on a larger fresh draw of SFT samples"] if larger else []), rows)
    models = {e["reward"].get("eval_hash", f"{label}/{s}"): e for label, s, e in entries if e["development"]}
    said = []
    for k, name in REWARD_NOISE:
        dev = [e["reward"][k] for e in models.values() if e["reward"].get(k)]
        missed = [t for t in dev if t["point"] == "not met"]
        said.append(f"{name}: missed by value by {len(missed)} of {len(dev)} models, "
                    f"{sum(t['call'] == 'close' for t in missed)} of them close")
    big = [t for e in models.values() if (t := (e.get("large_reward") or {}).get("conduct_spearman"))]
    if big:
        said.append("on the larger draw, the Spearman target: " + ", ".join(
            f"{sum(t['point'] == p for t in big)} of {len(big)} models {p} by value" for p in ("met", "not met"))
            + f", {sum(t['call'] == 'close' for t in big)} close")
    return lines + ["", "At the development seeds, each reward model counted once (runs that trained stage 5 again on "
                        "another run's stage 4 share its model): " + "; ".join(said) + "."]


def section_target_noise(doc: dict) -> list[str]:
    """Each stage-5 target with its interval over the held-out prompts (benchmarks/target_noise.py), on stage 5's own
    draw and on a larger one, and the reward model's conduct targets on stage 4's: which verdicts the draw decides."""
    entries = noise_entries(doc)
    first = entries[0][2]
    per_family = max(first["stage5"]["prompts"].values())
    large = first.get("large", {})
    lines = ["", "### How far the held-out draw moves a stage-4 or stage-5 verdict", "",
             f"`{doc['command']}`, {doc['date']}, on {machine_name(doc['machine'])}, at {doc['commit']}. Stage 5 judges "
             f"a seed on {per_family} held-out prompts per family. *Stage 5's draw*: each target's value with its "
             f"{round(100 * doc['level'])}% interval, the seed's prompts drawn again with replacement within each "
             f"family {doc['draws']:,} times (before and after paired on the same prompt); harmful and \"not stated\" "
             "give the rate after PPO and its gain over SFT, the task target the change in greedy task accuracy. "
             "Over-refusal has no per-prompt record in stage 5's files, so there it is stage 5's number alone. "
             + (f"*Larger draw*: the seed's SFT model and its model after PPO sampled as stage 5 samples "
                f"({large['samples']} samples at temperature {large['temperature']:g}) on {large['prompts']} fresh "
                "held-out prompts per conduct family, drawn with another seed; the task families have too few "
                "distinct held-out arithmetic prompts for a larger draw. " if large else "")
             + "A target is *met* or *missed* when its whole interval is on one side of the threshold, and *close* "
             "when the interval holds it: a draw of as many prompts could have given either verdict. A diagnosis: "
             "nothing is chosen on it.", ""]
    rows, calls, turned = [], [], []
    for label, s, e in entries:
        own_draw, big_draw = e["stage5"], e.get("large", {})
        for key, name in NOISE_TARGETS:
            own, big = own_draw.get(key), big_draw.get(key)
            rows.append([label, s + ("" if e["development"] else " (test)"), name,
                         noise_cell(own) if own else f"{f(own_draw['over_refusal_benign'])} (no per-prompt record)",
                         noise_cell(big)])
            if own:
                calls.append((e["development"], own, big))
                if big is not None and big["point"] != own["point"]:
                    turned.append(f"{label}, seed {s}, {name} ({own['point']} on stage 5's draw, {big['point']} "
                                  "on the larger)")
    lines += table(["runs", "seed", "target", "stage 5's draw: value (interval), verdict",
                    "larger draw: value (interval), verdict"], rows)
    dev = [(own, big) for d, own, big in calls if d]
    missed = [(own, big) for own, big in dev if own["point"] == "not met"]
    met = [(own, big) for own, big in dev if own["point"] == "met"]
    say = [f"At the development seeds stage 5's draw missed {len(missed)} of these {len(dev)} targets: "
           f"{sum(own['call'] == 'close' for own, _ in missed)} of them close, "
           f"{sum(own['call'] == 'missed' for own, _ in missed)} clearly missed; of the {len(met)} it met, "
           f"{sum(own['call'] == 'close' for own, _ in met)} are close."]
    for name, subset in (("missed", missed), ("met", met)):
        big = [b for _, b in subset if b is not None]
        if big:
            say.append(f"On the larger draw, of the conduct targets stage 5 {name} there: "
                       + ", ".join(f"{sum(b['call'] == c for b in big)} {c}" for c in ("met", "close", "missed")) + ".")
    if any("large" in e for _, _, e in entries):
        lines += ["", "The three conduct targets at the development seeds, per set of runs: met by value on stage 5's "
                      "draw and on the larger one (in brackets: how many of them, met or not, are close).", ""]
        lines += table(["runs", "development seeds", "stage 5's draw", "larger draw"], conduct_counts(doc))
        say.append("Targets whose value falls on the other side of the threshold on the larger draw: "
                   + ("; ".join(turned) if turned else "none") + ".")
    if taxed := where_taxed(entries):
        say.append("Where the task target is missed on stage 5's draw, the answer family that lost most, % right "
                   "greedily before and after PPO, and how many of its answers decline a question that has an "
                   "answer (a refusal or \"not stated\"): " + "; ".join(taxed) + ".")
    return lines + ["", " ".join(say)] + abstention_lines(entries) + reward_noise_lines(doc, entries)


def abstention_lines(entries: list[tuple[str, str, dict]]) -> list[str]:
    """"Not stated" on the unanswerable questions beside the declines of their answerable look-alikes (extraction
    questions), per run: whether PPO's abstention tells the two apart (docs/how-it-works.md, point 23)."""
    rows = [[label, s + ("" if e["development"] else " (test)"), f(e["stage5"]["unanswerable"]["parts"][0]["value"]),
             f(e["large"]["unanswerable"]["parts"][0]["value"]) if "large" in e else "-",
             f"{ex['declined_before']} to {ex['declined_after']} of {ex['prompts']}"]
            for label, s, e in entries if (ex := (e["stage5"].get("task_by_family") or {}).get("extract"))]
    if not rows:
        return []
    return ["", "Abstention on the unanswerable questions and on their answerable look-alikes, per run: \"not stated\" "
                "after PPO (% of samples, stage 5's draw and the larger one), and how many greedy answers to the "
                "extraction questions of stage 5's draw, whose text does hold the answer, decline them (a refusal "
                "or \"not stated\"), before and after PPO.", ""] + table(
        ["runs", "seed", "\"not stated\" after PPO, stage 5's draw", "larger draw",
         "extraction answers declining, before to after"], rows)


STORY_CELLS = (("train", "train", "training names, SFT's phrasings"), ("train", "eval", "training names, held-out phrasing"),
               ("eval", "train", "held-out names, SFT's phrasings"), ("eval", "rl", "held-out names, the RLHF stages' phrasing"),
               ("eval", "eval", "held-out names, held-out phrasing"))
STORY_KEYS = ("place", "object", "color", "receiver")


def section_story_qa(doc: dict, title: str = "Story questions: the held-out names, the held-out phrasing, or the question"
                     ) -> list[str]:
    """SFT models' story questions asked with either half of the story names and in every role's templates
    (benchmarks/story_qa.py): is a low held-out story-QA number the held-out names', the held-out phrasing's, or
    one question's? ``title``: the heading, where another set of models is read the same way."""
    runs = doc["runs"]
    cell = lambda r, names, role: runs[r]["cells"][f"{names} names, {role} templates"]  # noqa: E731
    name = lambda r: f"seed {runs[r]['seed']}, " + (", ".join(runs[r]["settings"]) or "the preset")  # noqa: E731
    lines = ["", f"### {title}", "",
             f"`{doc['command']}`, {doc['date']}, on {machine_name(doc['machine'])}, at {doc['commit']}: "
             f"{doc['stories']} stories told twice, once with names from the half of the story names SFT trains on "
             "and once with the same draws' names from the held-out half (nothing else differs), each asked every "
             "question (where the finder went, what they found, its colour, who got it) in every template of SFT's "
             "phrasings, the RLHF stages' and the held-out one, greedily, as SFT's evaluation asks. % right. The first "
             "two columns are the model's own eval.json (its story QA: held-out names in the held-out phrasing, on its "
             "seed's draw). A diagnosis: nothing is chosen on it.", ""]
    lines += table(["SFT model", "task accuracy in eval.json", "story QA in eval.json"] + [label for _, _, label in STORY_CELLS],
                   [[name(r), f(runs[r]["sft/task_accuracy"]), f(runs[r]["sft/accuracy_story_qa"])]
                    + [f(cell(r, n, ro)["all"]["accuracy"]) for n, ro, _ in STORY_CELLS] for r in runs])
    lines += ["", "Per question, held-out names in the held-out phrasing: % right, and in brackets the % that "
                  "answered with another of the story's own facts (the giver for the receiver, the object's colour "
                  "for its place).", ""]
    lines += table(["SFT model"] + list(STORY_KEYS),
                   [[name(r)] + [f"{f(c['accuracy'])} ({f(c['wrong_story'])})"
                                 for c in (cell(r, "eval", "eval")[k] for k in STORY_KEYS)] for r in runs])
    own = lambda r: cell(r, "train", "train")  # noqa: E731  (SFT's own distribution: its names, its phrasings)
    lines += ["", "Per question, each answer's loss (mean cross-entropy over its tokens, as SFT trains) on SFT's own "
                  "distribution: new stories with training names, in SFT's phrasings, the validation loss of SFT's own "
                  "distribution split by question. No held-out question enters it.", ""]
    lines += table(["SFT model"] + list(STORY_KEYS), [[name(r)] + [f(own(r)[k]["loss"], 3) for k in STORY_KEYS] for r in runs])
    first = next(iter(runs))
    shares = runs[first]["answer_tokens"]
    lines += ["", f"What SFT's loss weighs (the training examples of seed {runs[first]['seed']}'s SFT; the other seeds "
                  "draw alike): per family "
                  "and story question, its share of the examples and of the answer tokens TRL's loss averages over.", ""]
    lines += table(["family / question", "% of examples", "% of answer tokens"],
                   [[g, f(v["examples"]), f(v["tokens"])] for g, v in shares.items()])
    # Does SFT's own validation loss point at the question the held-out evaluation finds weakest?
    worst_loss = {r: max(STORY_KEYS, key=lambda k: own(r)[k]["loss"]) for r in runs}
    held_acc = {r: {k: cell(r, "eval", "eval")[k]["accuracy"] for k in STORY_KEYS} for r in runs}
    agree = [r for r in runs if held_acc[r][worst_loss[r]] == min(held_acc[r].values())]  # a tie for worst counts
    task = [g for g in shares if g.split("/")[0] in ANSWER_FAMILIES]
    lines += ["", f"The task families hold {f(sum(shares[g]['examples'] for g in task))}% of the examples and "
                  f"{f(sum(shares[g]['tokens'] for g in task))}% of the answer tokens. At {len(agree)} of {len(runs)} "
                  "models the question with the highest loss on SFT's own distribution is the one answered worst "
                  "held-out" + (f" ({'; '.join(f'{name(r)}: {worst_loss[r]}' for r in agree)})" if agree else "") + "."]
    # What each difference costs, averaged over the models: the names (same phrasing), the phrasing (same names).
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    acc = {(n, ro): mean([cell(r, n, ro)["all"]["accuracy"] for r in runs]) for n, ro, _ in STORY_CELLS}
    names_cost = acc["train", "train"] - acc["eval", "train"]
    phrasing_cost = acc["eval", "train"] - acc["eval", "eval"]
    low = {k: mean([cell(r, "eval", "eval")[k]["accuracy"] for r in runs]) for k in STORY_KEYS}
    worst = min(low, key=low.get)
    return lines + ["", f"Averaged over the {len(runs)} models: held-out names instead of training ones, in SFT's "
                        f"phrasings, cost {f(names_cost)} points; the held-out phrasing instead of SFT's, with held-out "
                        f"names, {f(phrasing_cost)} points. In the held-out phrasing with held-out names the question "
                        f"answered worst is {worst} ({f(low[worst])}% right; "
                        + ", ".join(f"{k} {f(low[k])}" for k in STORY_KEYS if k != worst) + ")."]


def same_after(a: dict, b: dict) -> bool:
    """Whether two runs' held-out rates after PPO, the numbers stage 5's targets read, agree to 2 decimals (a loss
    or a perplexity moves in its last digits with any rounding; a rate moves only when a sampled answer does)."""
    keys = [f"ppo/{k}_after" for _, k, _ in PPO_TARGETS]
    return all(isinstance(x.get(k), (int, float)) for x in (a, b) for k in keys) and \
        all(round(a[k], 2) == round(b[k], 2) for k in keys)


def stage_rows(seeds: list[str], sources, targets) -> list[list[str]]:
    """Stage 2's or stage 4's ``targets`` at each seed, a row per target and source ((name, results file) pairs)."""
    return [[label, name] + [stage_cell(src["seeds"][s], k, rule) for s in seeds]
            for label, k, rule in targets for name, src in sources]


def ppo_rows(seeds: list[str], sources, prefix: str = "") -> list[list[str]]:
    """Stage 5's targets at each seed for each of ``sources`` ((name, results file) pairs), then per source how
    many it met and its KL to the SFT model after PPO."""
    rows = [[prefix + label, name] + [ppo_cell(src["seeds"][s], k, rule) for s in seeds]
            for label, k, rule in PPO_TARGETS for name, src in sources]
    for name, src in sources:
        rows.append([prefix + "targets met", name] + [f"{ppo_targets_met(src['seeds'][s])} of {len(PPO_TARGETS)}"
                                                       for s in seeds])
        rows.append([prefix + "KL to the SFT model after (nats)", name] + [f(src["seeds"][s].get("ppo/kl_after"), 2)
                                                                           for s in seeds])
    return rows


def verb_rows(seeds: list[str], start: dict, sources, own_before: bool = False) -> list[list[str]]:
    """Held-out harmful refusals by verb: before PPO (``start``'s runs; with ``own_before``, each source's own SFT
    model, where the sources trained SFT apart), then after PPO in each of ``sources`` ((name, results file) pairs).
    A family's rate is a mean over the verbs a seed's draw holds; in brackets, how many of its prompts."""
    rows = []
    verbs = sorted({v for s in seeds for _, src in sources for v in (src["seeds"][s].get("ppo/harmful_by_verb") or {})})
    befores = (tuple((f"before (SFT), {n}", d, "before") for n, d in sources) if own_before
               else (("before (SFT)", start, "before"),))
    for verb in verbs:
        for name, src, when in befores + tuple((n, d, "after") for n, d in sources):
            cells = []
            for s in seeds:
                v = (src["seeds"][s].get("ppo/harmful_by_verb") or {}).get(verb)
                cells.append("-" if v is None else f"{f(v[when])} ({v['prompts']})")
            rows.append([f"harmful refused, \"{verb}\" (prompts)", name] + cells)
    return rows


def spearman_rows(seeds: list[str], sources) -> list[list[str]]:
    """The reward model's Spearman with the verifier on conduct samples, pooled and per family, of each source."""
    rows = []
    for name, src in sources:
        rows.append(["reward model: Spearman on conduct", name] + [f(src["seeds"][s].get("reward/conduct_spearman"), 2)
                                                                  for s in seeds])
        for fam in ("harmful", "unanswerable", "benign"):
            rho = [{r["family"]: r["spearman"] for r in src["seeds"][s].get("reward/spearman_by_family") or []}.get(fam)
                   for s in seeds]
            rows.append([f"reward model: Spearman, {fam}", name] + [f(r, 2) for r in rho])
    return rows


def pair_rows(seeds: list[str], sources) -> list[list[str]]:
    """Stage 3's preference pairs in the conduct families stage 5's targets read, of each source: the reward model
    learns a family's conduct from the pairs where one sampled response has it and another has not."""
    return [[f"preference pairs, {fam}", name] + [f(src["seeds"][s].get(f"preferences/pairs_{fam}")) for s in seeds]
            for fam in ("harmful", "unanswerable") for name, src in sources]


def target_changes(before: dict, after: dict) -> tuple[list[str], list[str], list[str]]:
    """Stage 5's targets of one seed's two runs: (met by ``after`` only, missed by both, met by ``before`` only)."""
    met = {label: (ppo_met(before, k, rule), ppo_met(after, k, rule)) for label, k, rule in PPO_TARGETS}
    return ([label for label, m in met.items() if m == (False, True)],
            [label for label, m in met.items() if m == (False, False)],
            [label for label, m in met.items() if m == (True, False)])


def met_on_dev(base: dict, doc: dict, seeds: list[str], dev: list[str], targets) -> dict:
    """How many of stage 2's or stage 4's ``targets`` each run met at the development seeds:
    {"before": n, "after": n}."""
    return {name: sum(stage_met(src["seeds"][s], k, rule) for s in seeds if s in dev for _, k, rule in targets)
            for name, src in (("before", base), ("after", doc))}


def kept_by_rule(base: dict, doc: dict, seeds: list[str], dev: list[str]) -> tuple[dict, dict | None, bool]:
    """The rule a change or a candidate setting is kept by, written before its runs: at least as many stage-5
    targets met at every development seed as ``base``'s runs, and more in all; and where it re-trained SFT, SFT's
    target met at no fewer development seeds, so stage 5's targets are not bought with SFT's. (Stage-5 targets met
    at the development seeds, {"before": n, "after": n}; the same for SFT's target, None where SFT's numbers are
    ``base``'s; whether it is kept.)"""
    on_dev = {name: sum(ppo_targets_met(src["seeds"][s]) for s in seeds if s in dev)
              for name, src in (("before", base), ("after", doc))}
    kept = on_dev["after"] > on_dev["before"] and all(
        ppo_targets_met(doc["seeds"][s]) >= ppo_targets_met(base["seeds"][s]) for s in seeds if s in dev)
    sft_trained = any(doc["seeds"][s].get("sft/task_accuracy") != base["seeds"][s].get("sft/task_accuracy")
                      for s in seeds)
    sft_dev = met_on_dev(base, doc, seeds, dev, SFT_TARGETS) if sft_trained else None
    return on_dev, sft_dev, kept and (sft_dev is None or sft_dev["after"] >= sft_dev["before"])


def section_code_change(doc: dict) -> list[str]:
    """The same seeds and settings as an older results file (``seeds.py --beside FILE --change TEXT``), after a
    change to the code: every stage's targets, old runs beside new, with a verdict per seed."""
    if not doc.get("beside") or (base := load(doc["beside"])) is None:
        return []
    dev, test = seed_groups(doc)
    seeds = [s for s in doc["seeds"] if s in base["seeds"]]
    ran = stages_reached(doc)
    checks = (("settings", base["params"] == doc["params"]),
              ("kernels", base["machine"]["aten_cpu_capability"] == doc["machine"]["aten_cpu_capability"]),
              ("threads per stage", base["threads"] == doc["threads"]))
    same, differ = [what for what, ok in checks if ok], [what for what, ok in checks if not ok]
    sources = (("before the change", base), ("after the change", doc))
    lines = ["", f"### A change to the code at the same seeds: {doc['change']}", "",
             f"{seeds_command(doc, seeds, ran[-1], start=doc.get('from'), beside=doc['beside'])}, {doc['date']}, on "
             f"{machine_name(doc['machine'])}, {n_threads(doc['threads'])} per stage, at "
             f"{doc.get('commit') or 'an unrecorded commit'}. The rows \"before the change\" are `{doc['beside']}`'s runs "
             f"({base['date']}, {machine_name(base['machine'])}). The same: {', '.join(same) or 'nothing'}"
             + (f"; **different: {', '.join(differ)}**, so a difference is not the change's alone." if differ else
                ", so what differs is the change to the code.")
             + " A stage the change does not touch must give the same numbers in both (the first rows).", ""]
    if test:
        lines += [f"Test seeds ({', '.join(test)}) ran beside the development seeds; the change was kept or "
                  "dropped on the development seeds alone.", ""]
    rows = []
    for label, key, nd in [h for h in HEADLINES if h[1] in ("pretrain/val_ppl", "sft/task_accuracy")]:
        for name, src in sources:
            rows.append([label, name] + [f(src["seeds"][s].get(key), nd + 1) for s in seeds])
    rows += stage_rows(seeds, sources, RM_TARGETS)
    rows += ppo_rows(seeds, sources, prefix="PPO: ")
    rows += verb_rows(seeds, base, sources) + spearman_rows(seeds, sources)
    lines += table(["number", "runs"] + [f"seed {s}" + (" (test)" if s in test else "") for s in seeds], rows)
    on_dev, sft_dev, kept = kept_by_rule(base, doc, seeds, dev)
    rm_dev = met_on_dev(base, doc, seeds, dev, RM_TARGETS)
    n_dev = sum(s in dev for s in seeds)
    verdict = [f"At the development seeds the runs after the change met {on_dev['after']} of "
               f"{len(PPO_TARGETS) * n_dev} stage-5 targets, before it {on_dev['before']}"
               + (f", and SFT's task-accuracy target at {sft_dev['after']} of {n_dev} seeds, before it "
                  f"{sft_dev['before']}" if sft_dev is not None else "")
               + ". The rule, written before the runs: the change stays when it meets at least as many stage-5 "
               "targets at every development seed and more in all"
               + (", and SFT's target at no fewer development seeds (the change re-trained SFT)"
                  if sft_dev is not None else "")
               + f"; so it **{'stays' if kept else 'does not stay'}**. Stage 4's targets, which the rule "
               f"does not count: {rm_dev['after']} of {len(RM_TARGETS) * n_dev} met after the change, {rm_dev['before']} "
               "before it."]
    for s in seeds:
        new_only, both, base_only = target_changes(base["seeds"][s], doc["seeds"][s])
        verdict.append(f"Seed {s}: met only after: {', '.join(new_only) or 'none'}; missed by both: "
                       f"{', '.join(both) or 'none'}; met only before: {', '.join(base_only) or 'none'}.")
    return lines + ["", " ".join(verdict)]


SFT_CONDUCT = [("SFT: harmful refused, sampled (%)", "sft/harmful_refused", 1),
               ('SFT: "not stated", sampled (%)', "sft/unanswerable_abstained", 1),
               ("SFT: over-refusal on benign, sampled (%)", "sft/over_refusal_benign", 1),
               ("SFT: stage 1 text perplexity after (drift)", "sft/drift_ppl", 0)]


def sft_rows(doc: dict, base: dict, seeds: list[str], conduct: bool = False) -> list[list[str]]:
    """Stage 1's perplexity and SFT's held-out numbers of two seeds.py files, "without" (``base``) above "with";
    ``conduct``: also how often SFT samples the aligned conduct (the headroom stage 5 starts from) and its drift."""
    keys = [("stage 1 validation perplexity", "pretrain/val_ppl", 3), ("SFT task accuracy (%)", "sft/task_accuracy", 1)] + \
           [(f"SFT: {fam} (%)", f"sft/accuracy_{fam}", 1) for fam in ANSWER_FAMILIES + ("benign",)
            if any(f"sft/accuracy_{fam}" in doc["seeds"][s] for s in seeds)] + (SFT_CONDUCT if conduct else [])
    return [[name, which] + [f(src["seeds"][s].get(k), nd) for s in seeds]
            for name, k, nd in keys for which, src in (("without", base), ("with", doc))]


def section_sft_pilot(doc: dict) -> list[str]:
    """A candidate SFT setting tried at SFT alone, beside runs from the same stage 1 without it: a pilot that says
    whether the setting is worth the stage 2-5 runs the keep rule needs, never a keep by itself."""
    if not doc.get("beside") or (base := load(doc["beside"])) is None:
        return []
    seeds = [s for s in doc["seeds"] if s in base["seeds"]]
    _, test = seed_groups(doc)
    added = [p for p in doc["params"] if p not in base["params"]]
    label = lambda s: f"seed {s}" + (" (test)" if s in test else "")  # noqa: E731
    (target, key, rule), = SFT_TARGETS  # stage 2's one target, as every other table reads it
    met = {which: [s for s in seeds if rule(src["seeds"][s][key])] for which, src in (("without", base), ("with", doc))}
    return ["", f"### A pilot at SFT alone: {doc['change']}", "",
            f"{seeds_command(doc, seeds, 'sft', kernels=True, start=doc['from'], beside=doc['beside'])}, {doc['date']}, at "
            f"{doc['commit']}, on "
            f"{machine_name(doc['machine'])}, {n_threads(doc['threads'])} per stage. The rows \"without\" are "
            f"`{doc['beside']}`'s runs ({base['date']}, {machine_name(base['machine'])}), from the same stage 1 models; "
            f"the only difference is `{' '.join(added)}`.", ""] + \
        table(["number", "runs"] + [label(s) for s in seeds], sft_rows(doc, base, seeds, conduct=True)) + \
        ["", f"The target \"{target}\" is met at {len(met['with'])} of {len(seeds)} seeds with it "
             f"({', '.join(met['with']) or 'none'}) and {len(met['without'])} without ({', '.join(met['without']) or 'none'}). "
             "A pilot: stages 3-5 did not run, so the rule that keeps a setting (stage-5 targets at every development "
             "seed, and SFT's) has not been applied to it, and nothing here changes the preset."] + \
        order_spread(doc, base, seeds) + kernels_spread(doc, base, seeds)


def kernels_spread(doc: dict, base: dict, seeds: list[str]) -> list[str]:
    """For a pilot on its machine's own kernels beside runs of the same machine and kernels: how far the same seeds'
    SFT moves on that machine's forced other kernels (a stand-in for another CPU, docs/architecture.md "CPU notes"),
    with the setting and without it, read from whichever seeds.py files ran those. Said once, under the pilot on the
    machine's own kernels."""
    mine = doc["machine"]
    if forced_kernels(mine) or base["machine"].get("cpu_id") != mine.get("cpu_id") or forced_kernels(base["machine"]):
        return []

    def twin(params: list[str]) -> tuple[str, dict] | None:  # the same settings and CPU, other (forced) kernels
        found = [(name, d) for name, d in seeds_files() if d.get("params") == params
                 and forced_kernels(d.get("machine", {})) and d["machine"].get("cpu_id") == mine.get("cpu_id")]
        covered = lambda d: sum(d["seeds"].get(sd, {}).get("sft/task_accuracy") is not None for sd in seeds)  # noqa: E731
        return max(found, key=lambda nd: covered(nd[1]), default=None)
    with_it, without = twin(doc["params"]), twin(base["params"])
    if not (with_it and without):
        return []
    moved = {sd: (sft_moved(doc["seeds"][sd], with_it[1]["seeds"].get(sd, {})),
                  sft_moved(base["seeds"][sd], without[1]["seeds"].get(sd, {}))) for sd in seeds}
    cells = [f"seed {sd}: {abs(w):.1f} with it, {abs(wo):.1f} without" for sd, (w, wo) in moved.items()
             if None not in (w, wo)]
    if not cells:
        return []
    return ["", f"How far this machine's other kernels ({machine_name(with_it[1]['machine'])}: `{with_it[0]}` with it, "
                f"`{without[0]}` without; each seed's stage 1 and SFT both on them) move SFT's task accuracy: "
                f"{'; '.join(cells)} (the bound for rounding alone: {ROUNDING_POINTS} points)."]


def order_spread(doc: dict, base: dict, seeds: list[str]) -> list[str]:
    """For a pilot in another order (an added ``sft.data_seed``) beside that order's runs without the setting: how far
    the order moves SFT with the setting (against the same pilot in the preset's order, found by its settings) and
    without it (``base`` against the file it was itself set beside)."""
    order = [p for p in doc["params"] if p.startswith("sft.data_seed=")]
    if not order or not base.get("beside") or (base0 := load(base["beside"])) is None:
        return []
    rest = [p for p in doc["params"] if p not in order]
    pilots = [name for name, sections in SECTIONS if section_sft_pilot in sections]  # only a pilot can be its twin
    same = next((d for name in pilots if (d := load(name)) and d.get("params") == rest
                 and d.get("beside") == base["beside"]), None)
    both = [sd for sd in seeds if same and sd in same["seeds"] and sd in base0["seeds"]]
    if not both:
        return []
    acc = lambda src, sd: src["seeds"][sd]["sft/task_accuracy"]  # noqa: E731
    cells = [f"seed {sd}: {abs(acc(doc, sd) - acc(same, sd)):.1f} with it, {abs(acc(base, sd) - acc(base0, sd)):.1f} without"
             for sd in both]
    return ["", f"How far the order alone (`{order[0]}` against the preset's) moves SFT's task accuracy: {'; '.join(cells)} "
                f"(the bound for rounding alone: {ROUNDING_POINTS} points)."]


def section_setting_beside(doc: dict, order: bool = False) -> list[str]:
    """A setting meant to change only the speed (``seeds.py --beside FILE --change TEXT`` with one more ``-p``), run
    from the same stage 1 as FILE's runs: does SFT's task accuracy stay within the rounding bound at every seed?
    ``order``: the added setting is ``sft.data_seed``, the same examples in another order; then the section says how
    far order alone moves SFT, beside the bounds the lab sets for rounding and for the seeds' spread."""
    if not doc.get("beside") or (base := load(doc["beside"])) is None:
        return []
    _, test = seed_groups(doc)
    seeds = [s for s in doc["seeds"] if s in base["seeds"]]
    added = [p for p in doc["params"] if p not in base["params"]]
    label = lambda s: f"seed {s}" + (" (test)" if s in test else "")  # noqa: E731
    lines = ["", f"### {doc['change']}", "",
             f"{seeds_command(doc, seeds, stages_reached(doc)[-1], start=doc.get('from'), beside=doc['beside'])}, "
             f"{doc['date']}, on {machine_name(doc['machine'])}, {n_threads(doc['threads'])} "
             f"per stage. The rows \"without\" are `{doc['beside']}`'s runs ({base['date']}, "
             f"{machine_name(base['machine'])}, {n_threads(base['threads'])} per stage), whose stage 1 these runs start "
             f"from; the only difference is `{' '.join(added)}`.", ""]
    rows = sft_rows(doc, base, seeds)
    moved = {s: doc["seeds"][s]["sft/task_accuracy"] - base["seeds"][s]["sft/task_accuracy"] for s in seeds}
    rows.append(["SFT task accuracy, with - without", f"within {ROUNDING_POINTS} points?"]
                + [rounding_cell(moved[s]) for s in seeds])
    held = all(within_rounding(v) for v in moved.values())
    if order:
        most = max(seeds, key=lambda s: abs(moved[s]))
        return lines + table(["number", "runs"] + [label(s) for s in seeds], rows) + [
            "", f"The same tasks, initialisation and stage 1; only the order SFT sees its examples in differs. Across "
                f"{', '.join(label(s) for s in seeds)}, order alone moved SFT's task accuracy by as much as "
                f"{moved[most]:+.1f} points (at {label(most)}), "
                f"where the lab allows float rounding {ROUNDING_POINTS} points and the seeds' spread (max - min) "
                f"{SPREAD_POINTS}: order alone is **{'within' if held else 'beyond'} the rounding bound**"
                + ("." if held else f" (at {', '.join(label(s) for s in seeds if not within_rounding(moved[s]))}).")]
    verdict = (f"The bar for a setting meant to change only the speed: it may join the preset when "
               f"SFT task accuracy moves by at most {ROUNDING_POINTS} points at every seed, the bound the lab allows "
               f"float rounding alone. Here it **{'holds' if held else 'does not hold'}**"
               + ("." if held else f" (over at {', '.join(label(s) for s in seeds if not within_rounding(moved[s]))})."))
    return lines + table(["number", "runs"] + [label(s) for s in seeds], rows) + ["", verdict]


def section_sft_candidate(doc: dict) -> list[str]:
    """Stages 2-5 again at a candidate SFT setting, from each seed's stage 1 of seeds.json's runs, beside those runs."""
    if (beside := beside_seeds(doc)) is None:
        return []
    base, _, test, seeds, setting = beside
    again = load("ppo_epochs.json")  # stage 5 at the preset's current setting, which the candidate's runs use
    if again:
        base = {"seeds": {s: {**v, **{k: x for k, x in again["seeds"].get(s, {}).items() if k.startswith("ppo/")}}
                          for s, v in base["seeds"].items()}}
    above = f"above{' (stage 5 at ' + '; '.join(again['params']) + ')' if again else ''}"
    sources = ((above, base), (setting, doc))

    # A run stopped after SFT is shown as far as it went: a stage none of its seeds reached has no rows and is not
    # counted, for any of the rows compared.
    reached = stages_reached(doc, seeds)
    stage_targets = [t for t in STAGE_TARGETS if t[1].split("/")[0] in reached]
    ppo_targets = PPO_TARGETS if "ppo" in reached else []

    def met(d: dict) -> int:  # every target of stages 2, 4 and 5 a seed's run met
        return (sum(stage_met(d, k, rule) for _, k, rule in stage_targets)
                + sum(ppo_met(d, k, rule) for _, k, rule in ppo_targets))

    lines = ["", f"### Stages 2-5 at {setting} beside the runs above", "",
             f"{seeds_command(doc)}, {doc['date']}, "
             f"{doc['threads']} thread(s) per stage: stages 2-5 trained again from each seed's stage 1 of the table "
             f"above, with {'these SFT settings' if len(doc['params']) > 1 else 'this one SFT setting'} changed; the "
             "other rows are that table's runs, with stage 5 at the "
             "setting the `cpu` preset now has where it ran again (the candidate's runs use it too). A candidate for "
             "the `cpu` preset, chosen on development seeds by SFT's validation loss (\"Why SFT moves from seed to "
             "seed\"). The rule that decides whether it becomes the preset's was written before the test seeds ran "
             "(docs/how-it-works.md, the end of \"Why SFT's accuracy moves from seed to seed\"): the test seeds are "
             "reported and decide nothing."
             + (" By that rule it became the `cpu` preset's, and these runs are README's table."
                if doc == load(PRESET_RUNS) else ""), ""]
    if len(stage_targets) + len(ppo_targets) < len(STAGE_TARGETS) + len(PPO_TARGETS):
        lines += ["This setting's runs have not reached every stage yet: only the targets of the stages they reached "
                  "are shown and counted, for every row.", ""]
    rows = stage_rows(seeds, sources, stage_targets)
    for label, k, rule in ppo_targets:
        for name, src in sources:
            rows.append([f"PPO: {label}", name] + [ppo_cell(src["seeds"][s], k, rule) for s in seeds])
    n = len(stage_targets) + len(ppo_targets)
    for name, src in sources:
        rows.append(["targets met", name] + [f"{met(src['seeds'][s])} of {n}" for s in seeds])
    lines += table(["target", "runs"] + [f"seed {s}" + (" (test)" if s in test else "") for s in seeds], rows)
    summary = []
    for group, which in (("development", [s for s in seeds if s not in test]), ("test", [s for s in seeds if s in test])):
        if which:
            counts = {name: sum(met(src["seeds"][s]) for s in which) for name, src in sources}
            summary.append(f"At the {group} seeds ({', '.join(which)}) {setting} met {counts[setting]} of "
                           f"{n * len(which)} targets, the runs above {counts[sources[0][0]]}.")
    for name, src in sources:
        acc = [src["seeds"][s].get("sft/task_accuracy") for s in seeds]
        if all(a is not None for a in acc):
            summary.append(f"SFT task accuracy, {name}: {f(min(acc))}-{f(max(acc))} over seeds {', '.join(seeds)} "
                           f"(spread {f(max(acc) - min(acc))} points).")
    return lines + [""] + [" ".join(summary)] if summary else lines


def section_families(doc: dict) -> list[str]:
    seeds = doc["seeds"]
    fams = sorted({fam for s in seeds.values() for fam in (s.get("ppo/per_family_after") or {})})
    lines = ["", "### Per family, before and after PPO (greedy / sampled, %, mean over the seeds)", ""]
    rows = []
    for fam in fams:
        row = [fam]
        for when in ("before", "after"):
            for how in ("greedy", "sampled", "mixed"):
                row.append(spread([(s.get(f"ppo/per_family_{when}") or {}).get(fam, {}).get(how) for s in seeds.values()]))
        rows.append(row)
    lines += table(["family", "SFT greedy", "SFT sampled", "SFT mixed", "PPO greedy", "PPO sampled", "PPO mixed"], rows)
    rm = [s.get("reward/spearman_by_family") or [] for s in seeds.values()]
    rfams = sorted({r["family"] for rows_ in rm for r in rows_})
    if rfams:
        lines += ["", "### The reward model per family (mean over the seeds, min–max)", ""]
        acc = [s.get("reward/accuracy_by_family") or [] for s in seeds.values()]
        rows = []
        for fam in rfams:
            a = [next((r["accuracy"] for r in rs if r["family"] == fam), None) for rs in acc]
            rho = [next((r["spearman"] for r in rs if r["family"] == fam), None) for rs in rm]
            rows.append([fam, spread(a), spread(rho, 2)])
        lines += table(["family", "held-out pairs right (%)", "Spearman with the verifier"], rows)
    return lines


def section_compare(doc: dict) -> list[str]:
    seeds = {s: v for s, v in doc["seeds"].items() if v.get("compare")}
    if not seeds:
        return []
    methods = [m for m in ("sft", "best_of_n", "dpo", "rloo", "rloo_verifier", "ppo") if any(m in v["compare"] for v in seeds.values())]
    keys = CONDUCT + ["kl"]  # no seconds: these seeds share the machine two at a time, so a time says little
    lines = ["", "## Stage 6: what people use instead of PPO", "",
             f"The same held-out prompts and evaluation for every method, at seed{'s' * (len(seeds) > 1)} {', '.join(seeds)} (of "
             f"{', '.join(doc['seeds'])} run through stage 5), mean (min–max). KL is to the SFT model per response "
             "(best-of-n: the analytic bound). Times are left out: the seeds ran two at a time on a shared machine.", ""]
    dev, test = seed_groups(doc)
    groups = [(name, [s for s in group if s in seeds]) for name, group in (("development", dev), ("test", test))]
    rows = [[m, f"{name} ({', '.join(group)})"]
            + [spread([seeds[s]["compare"].get(m, {}).get(k) for s in group], 2 if k == "kl" else 1) for k in keys]
            for m in methods for name, group in groups if group]
    lines += table(["method", "seeds"] + [CONDUCT_LABELS.get(k, k) for k in keys], rows)
    return lines


def section_alarms(doc: dict) -> list[str]:
    seeds = {s: v for s, v in doc["seeds"].items() if v.get("twin")}
    if not seeds:
        return []
    kinds = ["reward_hacking", "reward_hacking_slow", "over_refusal", "kl_drift", "reward_hacking_heldout",
             "reward_hacking_family", "kl_drift_heldout"]
    lines = ["", "## The alarms, on runs they were not fitted to", "",
             "Each seed's default PPO run (it should not fire) and its twin that differs only in `kl_coef=0` "
             "(`ppo.kl_ablation`; it should). The thresholds were fixed before these runs and are not changed "
             "after them.", ""]
    rows = []
    for s, v in seeds.items():
        for name, fired, kl in (("default", v.get("ppo/alarms") or [], v.get("ppo/kl_after")),
                                ("kl_coef=0", v["twin"]["alarms"], v["twin"].get("kl_after"))):
            rows.append([f"seed {s}", name, f(kl, 2)] + ["**fired**" if k in fired else "-" for k in kinds])
    lines += table(["seed", "run", "KL after"] + kinds, rows)
    return lines


def section_explore_latency(doc: dict) -> list[str]:
    t = doc["targets"]
    lines = ["", "## How live the explorers are", "",
             f"`benchmarks/explore_latency.py` on {doc['cpus']} CPUs (load average {doc['load_average_1m']['before']} "
             f"before, {doc['load_average_1m']['after']} after), {doc['date']}, commit {doc['commit']}: the median "
             f"click of the playground ({doc['playground']}; target {t['playground_s']:g} s) and of the token view "
             f"(target {t['token_view_s']:g} s), through the widget's own path. Models: {doc['weights']}. The "
             "explorers run their models on one thread; two are shown for comparison.", ""]
    rows = [[str(r["threads"]), f(r["playground_s"], 2), f(r["token_view_s"], 3), f(r["matmul_gflops"])]
            for r in doc["results"]]
    return lines + table(["threads", "playground (s)", "token view (s)", "1024² float32 matmul (GFLOP/s)"], rows)


def hh_rows(doc: dict) -> list[list[str]]:
    """Per preset (and the cpu tokenizer at longer contexts): how many hh-rlhf pairs stage 4 keeps."""
    def pct(row, k):
        return f(100 * row[k] / row["pairs"])
    presets = [(name, row, row["tokenizer"], f(row["tokens_per_word"], 2)) for name, row in doc["presets"].items()]
    longer = [(f"cpu, block_size={row['max_length']}", row, "as cpu", "") for row in doc.get("cpu_other_block_sizes", [])]
    return [[name, f(row["max_length"]), tok, per_word, pct(row, "whole"), pct(row, "truncated"), pct(row, "dropped"),
             f"**{f(row['kept_percent'])}**"] for name, row, tok, per_word in presets + longer]


HH_HEADER = ["preset", "positions", "tokenizer (stage 1's)", "tokens per word", "kept whole %",
             "kept, earliest turns cut %", "dropped %", "kept %"]


def section_hh_lengths(doc: dict) -> list[str]:
    lines = ["", "## Real multi-turn preference data at each preset", "",
             f"{doc['data']} ({f(doc['pairs'])} pairs, `benchmarks/hh_rlhf_lengths.py`): what stage 4 keeps when it "
             f"fits the pairs into the model's positions. Policy: {doc['policy']}.", ""]
    lines += table(HH_HEADER, hh_rows(doc))
    plans = (doc["presets"].get("gpu") or {}).get("planner") or {}
    if plans:
        lines += ["", f"Stage 4 at the gpu preset's model, for its longest kept pair "
                      f"({f(doc['presets']['gpu']['longest_kept_tokens'])} tokens), on paper (`labkit.planner`, no GPU run):", ""]
        lines += [f"* {budget}: {summary}" for budget, summary in plans.items()]
    return lines


# --- why SFT moves from seed to seed ----------------------------------------------------------

SFT_FAMILIES = ["story_qa", "arithmetic", "word_list", "extract"]


def sft_label(run: dict) -> str:
    """What one SFT run of sft_stability.json changed: its stage 1, its seed, data order, threads, kernels."""
    parts = [f"stage 1 of seed {run['pretrain']}", f"SFT seed {run['seed']}"]
    if run.get("data_seed") is not None:
        parts.append(f"data order {run['data_seed']}")
    parts.append(f"{run.get('threads', 1)} thread" + ("s" if run.get("threads", 1) != 1 else ""))
    if run.get("aten") not in (None, "native"):
        parts.append(f"{run['aten']} kernels")
    parts += run.get("params") or []
    parts += [f"stage 1 with {p}" for p in run.get("pretrain_params") or []]
    return ", ".join(parts)


def _key(r: dict) -> tuple:
    return (r["pretrain"], r["seed"], r.get("data_seed"), r.get("threads", 1), r.get("aten") or "native",
            tuple(r.get("params") or ()) + tuple(f"stage 1 with {p}" for p in r.get("pretrain_params") or ()))


PROBE_COLUMNS = [("sums_trained", "sums SFT trains on"), ("sums_held_out", "held-out sums"),
                 ("differences_trained", "differences SFT trains on"), ("differences_held_out", "held-out differences")]


def section_arithmetic_probe(doc: dict) -> list[str]:
    """Whether each model knows the single-digit facts in the sentence form pretraining states them."""
    rows = [[", ".join([f"stage 1 of seed {v['seed']}", *v.get("params", [])]) + " (before SFT)"]
            + [f(v["arithmetic_probe"][c]["right"]) for c, _ in PROBE_COLUMNS] + ["-"]
            for _, v in sorted((doc.get("stage1") or {}).items())]
    rows += [[sft_label(r)] + [f(r["arithmetic_probe"][c]["right"]) for c, _ in PROBE_COLUMNS] +
             [f((r.get("per_family") or {}).get("arithmetic"))] for r in doc["runs"].values() if r.get("arithmetic_probe")]
    if not rows:
        return []
    n = next(iter((doc.get("stage1") or doc["runs"]).values()))["arithmetic_probe"]
    return ["", "### What the models know of arithmetic", "",
            "Greedy completions of every single-digit sum and difference in the two sentence forms pretraining "
            "states them in (\"3 plus 5 is\", \"3 + 5 =\"), % right, split as evaluation splits the facts: "
            f"those SFT trains on ({n['sums_trained']['statements']} sum and {n['differences_trained']['statements']} "
            f"difference statements) and the held-out ones ({n['sums_held_out']['statements']} and "
            f"{n['differences_held_out']['statements']}), which no stage that trains ever asks. Pretraining text is "
            "the only place a model can learn a held-out fact. Last column: SFT's held-out arithmetic *questions* "
            "(its own draw, greedy).", ""] + table(
        ["model"] + [h for _, h in PROBE_COLUMNS] + ["held-out arithmetic questions (SFT)"], rows)


def sft_differences(runs: dict, draws: list[str]) -> list[tuple[str, dict, dict]]:
    """Pairs of sft_stability runs that differ in exactly one thing (stage 1 alone, data order alone, threads,
    kernels), as (what differs, first, second); the first is the run with the defaults."""
    by_key = {_key(r): r for r in runs.values() if all(d in r["on_seed_draws"] for d in draws)}
    out = []
    for k, a in by_key.items():
        pt, seed, data, threads, aten, params = k
        if (data, threads, aten) != (None, 1, "native"):
            continue
        # Order, threads and kernels are compared under any settings: a candidate's stability is measured too.
        for what, k2 in [("data order alone", (pt, seed, 1, threads, aten, params)),
                         ("threads (float summation order)", (pt, seed, data, 2, aten, params)),
                         ("CPU kernels (ATEN_CPU_CAPABILITY=default)", (pt, seed, data, threads, "default", params))]:
            if k2 in by_key and k2 != k:
                out.append((what, a, by_key[k2]))
        for k2, b in by_key.items():  # one more setting on top of a candidate's (the candidate, changed once)
            if params and k2[:5] == k[:5] and len(k2[5]) == len(params) + 1 and set(params) <= set(k2[5]):
                out.append(("setting " + ", ".join(p for p in k2[5] if p not in params) + " on top", a, b))
        if params:
            continue
        for k2, b in by_key.items():  # initialisation alone: the seed's own SFT on another seed's stage 1
            if pt == seed and k2[0] != pt and k2[1:] == k[1:]:
                out.append(("initialisation alone (another stage 1)", a, b))
        for k2, b in by_key.items():  # SFT's seed alone: its training tasks, aligned demonstrations and order
            if k2[0] == pt and k2[1] > seed and k2[2:] == k[2:]:
                out.append(("SFT's seed alone (its training draw and order; same stage 1)", a, b))
        for k2, b in by_key.items():  # one SFT setting changed (-p name=value), all else the same
            if k2[:5] == k[:5] and k2[5]:
                out.append(("setting " + ", ".join(k2[5]), a, b))
    return out


def model_or_draw(runs: dict) -> dict:
    """For two seeds whose default runs (stage 1 and SFT of the same seed) were both evaluated on both draws:
    the whole difference on their own draws, and the model's and the draw's share of it (points)."""
    own = {r["seed"]: r for r in runs.values() if r["pretrain"] == r["seed"] and _key(r)[2:] == (None, 1, "native", ())}
    out = {}
    for x in sorted(own):
        for y in sorted(own):
            if x < y and all(str(s) in own[t]["on_seed_draws"] for s in (x, y) for t in (x, y)):
                acc = lambda m, d: own[m]["on_seed_draws"][str(d)]["task_accuracy"]  # noqa: E731
                out[(x, y)] = {"whole": acc(y, y) - acc(x, x),
                               "model": (acc(y, x) - acc(x, x) + acc(y, y) - acc(x, y)) / 2,
                               "draw": (acc(x, y) - acc(x, x) + acc(y, y) - acc(y, x)) / 2}
    return out


def section_sft_stability(doc: dict) -> list[str]:
    runs = doc["runs"]
    draws = sorted({d for r in runs.values() for d in r["on_seed_draws"]}, key=int)
    m = doc["machine"]
    lines = ["", "## Why SFT moves from seed to seed", "",
             f"`benchmarks/sft_stability.py`, `{doc['preset']}` preset, {doc['date']}, on {m['cpu']} (torch {m['torch']}, "
             f"{m['aten_cpu_capability']} kernels). Each SFT run differs from another in one thing; every model is "
             "evaluated (greedy, answer families) on each seed's held-out draw, so a row that is low on every draw "
             "is a weak model, and a column that is low for every model a hard draw.", ""]
    head = ["run"] + [f"on seed {d}'s draw (%)" for d in draws] + [f"{fam} (own draw)" for fam in SFT_FAMILIES] + \
        ["final training loss", "pretraining text perplexity after SFT"]
    rows = [[sft_label(r)] + [f(r["on_seed_draws"][d]["task_accuracy"]) for d in draws] +
            [f((r.get("per_family") or {}).get(fam)) for fam in SFT_FAMILIES] + [f(r.get("final_loss"), 3),
                                                                                 f(r.get("drift_ppl"))]
            for r in runs.values()]
    lines += table(head, rows)
    diffs = sft_differences(runs, draws)
    if diffs:
        lines += ["", "### One difference at a time", "",
                  "Pairs of runs that differ in one thing, and how far apart their task accuracy is on each draw "
                  "(the second run minus the first, points). *Model* and *draw* split a seed's whole difference: "
                  "the model's share is the gap between the two seeds' models averaged over both draws, the draw's "
                  "is the gap between the two draws averaged over both models.", ""]
        lines += table(["what differs", "first run", "second run"] + [f"on seed {d}'s draw" for d in draws],
                       [[what, sft_label(a), sft_label(b)] + [f(b["on_seed_draws"][d]["task_accuracy"]
                                                                - a["on_seed_draws"][d]["task_accuracy"]) for d in draws]
                        for what, a, b in diffs])
        split = model_or_draw(runs)
        if split:
            lines += [""] + table(["seeds", "whole difference (own draws)", "model's share", "draw's share"],
                                  [[f"{x} vs {y}", f(v["whole"]), f(v["model"]), f(v["draw"])]
                                   for (x, y), v in split.items()])
    lines += section_arithmetic_probe(doc)
    lines += section_sft_batches(doc)
    curves = {n: r for n, r in runs.items() if r.get("curve")}
    if curves:
        steps = sorted({c["step"] for r in curves.values() for c in r["curve"]})
        lines += ["", "### When accuracy comes and goes", "",
                  "Held-out task accuracy (its own draw, greedy) during training. *At lowest validation loss*: the "
                  "step where the loss on other draws of SFT's own training distribution was lowest, and the held-out "
                  "accuracy there -- what keeping that checkpoint (`select_best`) would have given, chosen without "
                  "looking at a held-out task. *Lowest validation loss*: its value, what the rule compares settings by "
                  "(every run's validation tasks are the same draw for its SFT seed).", ""]
        rows = []
        for r in curves.values():
            at = {c["step"]: c for c in r["curve"]}
            with_val = [c for c in r["curve"] if c.get("val_loss") is not None]
            best = min(with_val, key=lambda c: c["val_loss"]) if with_val else None
            last = max(r["curve"], key=lambda c: c["step"])
            rows.append([sft_label(r)] + [f(at[s]["task_accuracy"]) if s in at else "-" for s in steps] +
                        [f"step {best['step']}: {f(best['task_accuracy'])}" if best else "-",
                         f(best["val_loss"], 3) if best else "-",
                         ("yes" if best["step"] == last["step"] else "no") if best else "-"])
        lines += table(["run"] + [f"step {s}" for s in steps] + ["at lowest validation loss", "lowest validation loss",
                                                               "validation loss lowest at the last step"], rows)
    return lines


# An own-distribution answer loss under which a story question counts as learned: at the preset's 2,000 steps the
# questions a model answers sit at about 0.13 or below, one it never learned near 1 (story_qa.json).
LEARNED_LOSS = 0.2


def section_sft_longer(doc: dict) -> list[str]:
    """SFT trained longer than the preset, each story question's answer loss on SFT's own distribution along the way
    (``sft_stability.py sft --story-loss``): does a question a model never learned at the preset's steps come with
    more steps, and when?"""
    runs = {n: r for n, r in doc["runs"].items() if any("own_story_loss" in c for c in r.get("curve") or [])}
    lines = ["", "### Does a longer SFT learn the story question it missed?", "",
             f"`{doc['command']}`, {doc['date']}, on {machine_name(doc['machine'])}, at {doc['commit']}, over runs "
             "made by `benchmarks/sft_stability.py sft --story-loss N` (each run's settings in its label; the preset "
             "trains 2,000 steps). Along each run: the loss on SFT's own validation draw, and each story question's "
             "answer loss on SFT's own distribution (new stories with training names, in SFT's phrasings; no held-out "
             "question enters it, so a rule may read it); then, as a diagnosis only, held-out task accuracy and story "
             f"QA on the run's own draw. A question counts as learned below a loss of {LEARNED_LOSS}.", ""]
    summary = []
    for r in runs.values():
        curve = sorted((c for c in r["curve"] if "own_story_loss" in c), key=lambda c: c["step"])
        keys = list(curve[0]["own_story_loss"])
        lines += [f"{sft_label(r)}:", ""]
        lines += table(["step", "validation loss"] + [f"{k}: own loss" for k in keys]
                       + ["held-out task accuracy", "held-out story QA"],
                       [[f(c["step"]), f(c.get("val_loss"), 3)] + [f(c["own_story_loss"][k], 3) for k in keys]
                        + [f(c["task_accuracy"]), f(c.get("story_qa"))] for c in curve])
        said = []
        for k in keys:
            below = [c["step"] for c in curve if c["own_story_loss"][k] < LEARNED_LOSS]
            if below:
                said.append(f"{k} below {LEARNED_LOSS} from step {below[0]:,}"
                            + ("" if curve[-1]["own_story_loss"][k] < LEARNED_LOSS else ", not at the last step"))
            else:
                low = min(curve, key=lambda c: c["own_story_loss"][k])
                said.append(f"{k} never below {LEARNED_LOSS} (lowest {f(low['own_story_loss'][k], 3)} "
                            f"at step {low['step']:,})")
        lines += ["", "; ".join(said) + ".", ""]
        every = [c["step"] for c in curve if max(c["own_story_loss"].values()) < LEARNED_LOSS]
        summary.append([sft_label(r), f(r.get("task_accuracy")), f"step {every[0]:,}" if every else "never",
                        f(bool(every) and every[-1] == curve[-1]["step"])])
    lines += ["Each run in one line: its SFT task accuracy (eval.json: held-out, greedy; a diagnosis here), the first "
              f"step where every story question's own loss was below {LEARNED_LOSS}, and whether all were at the "
              "last step.", ""]
    lines += table(["run", "SFT task accuracy", "every story question learned from", "all learned at the last step"],
                   summary)
    return lines


def section_sft_kernels(doc: dict) -> list[str]:
    """The same SFT run on ATen's native kernels and on ATEN_CPU_CAPABILITY=default (other float rounding, the same
    machine), at the preset's steps and at more: does a setting leave rounding less to decide?"""
    runs = doc["runs"]
    draws = sorted({d for r in runs.values() for d in r["on_seed_draws"]}, key=int)
    pairs = [(a, b) for what, a, b in sft_differences(runs, draws) if what.startswith("CPU kernels")]
    if not pairs:
        return []
    (sft_met,) = [rule for _, _, rule in SFT_TARGETS]
    copies = sorted({a["copied_from"] for a, _ in pairs if a.get("copied_from")})
    lines = ["", "### The same SFT on other CPU kernels, at the preset's steps and at twice as many", "",
             f"`{doc['command']}`, {doc['date']}, on {machine_name(doc['machine'])}, at {doc['commit']}. Each pair is "
             "the same stage 1, SFT seed and settings, trained once with ATen's native kernels and once with "
             "`ATEN_CPU_CAPABILITY=default` (`benchmarks/sft_stability.py sft --aten default`), which round sums "
             "otherwise on the same machine. SFT task accuracy is held-out and greedy, on the run's own draw: a "
             f"diagnosis, nothing is chosen by it. Rounding alone may move it {ROUNDING_POINTS} points."
             + (f" Native runs copied in from seeds.py (the same settings, trained by `labkit train`): "
                f"{', '.join(f'`{c}`' for c in copies)}." if copies else ""), ""]
    rows, said = [], []
    for a, b in pairs:
        moved = b["task_accuracy"] - a["task_accuracy"]
        settings = ", ".join(a.get("params") or []) or "the preset's settings"
        rows.append([settings, f"seed {a['seed']}", f(a["task_accuracy"]), f(b["task_accuracy"]), f(moved),
                     "yes" if within_rounding(moved) else "**no**",
                     f"{sum(sft_met(r['task_accuracy']) for r in (a, b))} of 2"]
                    + [f"{f((a.get('per_family') or {}).get(fam))} / {f((b.get('per_family') or {}).get(fam))}"
                       for fam in SFT_FAMILIES[:3]])
        said.append((settings, a["seed"], moved))
    lines += table(["settings", "seed", "native kernels", "default kernels", "moved (points)",
                    f"within {ROUNDING_POINTS}", "SFT task accuracy >= 66"]
                   + [f"{fam.replace('_', ' ')}: native / default" for fam in SFT_FAMILIES[:3]], rows)
    verdict = []
    for settings in dict.fromkeys(x for x, _, _ in said):
        moves = [(seed, m) for x, seed, m in said if x == settings]
        verdict.append(f"With {settings}, rounding moved SFT task accuracy by "
                       f"{', '.join(f'{f(m)} (seed {seed})' for seed, m in moves)}: within {ROUNDING_POINTS} points at "
                       f"{sum(within_rounding(m) for _, m in moves)} of {len(moves)} seeds.")
    return lines + ["", " ".join(verdict)]


def section_sft_batches(doc: dict) -> list[str]:
    """What a batch of SFT holds in random order and grouped by length (``batch_composition``)."""
    seeds = doc.get("batches") or {}
    if not seeds:
        return []
    any_seed = next(iter(seeds.values()))
    lines = ["", "### What a batch holds: random order or grouped by length", "",
             f"The first {any_seed['batches']} batches of {any_seed['batch_size']} of each SFT seed's training examples "
             "(its own tokenizer; no model run). *Real tokens*: the share of the positions a step computes that are "
             "not padding (a batch is padded to its longest example). *Commonest family*: the share of a batch's "
             f"examples in its most frequent family, of {any_seed['families']}. `group_by_length` orders the examples "
             "as `training.length_grouped_order` does.", ""]
    rows = [[f"seed {s}", order.replace("_", " "), f(100 * b[order]["real_token_share"]),
             f(100 * b[order]["commonest_family_share"]), f(b[order]["families_per_batch"], 2)]
            for s, b in seeds.items() for order in ("random", "group_by_length")]
    return lines + table(["SFT seed", "order", "real tokens (%)", "commonest family (%)", "families per batch"], rows)


def section_sft_step(doc: dict) -> list[str]:
    names = {"random": "TRL, random batches, padded (the preset)", "plain_loop": "the same batches, plain PyTorch loop",
             "padding_free": "TRL, `padding_free`", "group_by_length": "TRL, `group_by_length`"}
    lines = ["", "## Speed: one SFT step", "",
             f"`benchmarks/sft_step.py`, {doc['date']}, on {doc['cpu']} ({doc['threads']} thread(s); load average "
             f"{f(doc['load_average_1m'], 2)}; matmul rate {f(doc['matmul_gflops_before'])} GFLOP/s before, "
             f"{f(doc['matmul_gflops_after'])} after): stage 2's trainer at the cpu preset's shape, batch "
             f"{doc['batch_size']}, {doc['rounds']} rounds of {doc['steps_per_round']} steps alternating between the "
             "ways to run it. Median seconds per step, and its ratio to the preset's.", ""]
    rows = [[names.get(v, v), f(x["seconds_per_step"], 3), f(x["over_random"], 2)] for v, x in doc["variants"].items()]
    lines += table(["step", "seconds per step", "/ the preset's"], rows)
    if "padding_free" in doc["variants"]:  # what SFT's candidate (twice the preset's steps) would cost without padding
        lines += ["", f"At these ratios twice the preset's steps cost {f(2 * doc['variants']['padding_free']['over_random'], 2)}x "
                  "the preset's SFT training time with `padding_free`, against 2x with padding."]
    return lines


def section_freed_memory(doc: dict) -> list[str]:
    lines = ["", "## Speed: freed memory kept for reuse", "",
             f"`benchmarks/freed_memory.py`, {doc['date']}, on {doc['cpu']} ({doc['aten_cpu_capability']} kernels, "
             f"{doc['threads']} thread(s); matmul rate {f(doc['matmul_gflops_before'])} GFLOP/s before, "
             f"{f(doc['matmul_gflops_after'])} after), {doc['model']}: {doc['rounds']} rounds, each two fresh processes "
             "in alternating order, one with glibc's own thresholds and one after `config.keep_freed_memory`. Each "
             f"trains {doc['steps_timed']} timed steps of pretraining (`pretrain.train_step`, the cpu preset's windows) "
             f"and of SFT (batch 32), then generates {doc['generated_sequences']} candidates as stage 3 does (64 "
             "prompts a batch, 6 samples each, 24 new tokens). Median seconds over the rounds.", ""]
    names = [("one pretraining step", "pretrain_step_s"), ("one SFT step", "sft_step_s"),
             ("generating the candidates", "generate_s")]
    rows = [[name, f(doc["median"]["plain"][k], 3), f(doc["median"]["kept"][k], 3), f(doc["kept_over_plain"][k], 2)]
            for name, k in names if k in doc["median"]["plain"]]
    lines += table(["", "glibc's thresholds", "freed memory kept", "kept / glibc's"], rows)
    lines += ["", "The two settings generated the same texts and trained to the same losses in every process: "
              + ("**yes**." if doc["same_results"] else "**no**.")]
    return lines


# --- speed: the main command, old and new, and where the time goes ------------------------------

def matmul_rate(run: dict, threads: str) -> float:
    """A timed run's float32 matmul rate at ``threads`` (GFLOP/s), the mean of before and after it."""
    return statistics.mean([run["matmul_gflops_before"][threads], run["matmul_gflops_after"][threads]])


MAIN_COMMAND_MINUTES = 25  # the main command's budget on 2 cores (README's promise of "minutes on a laptop")


def run_label(run: dict) -> str:
    """A timed run's name in a table: its commit, and the settings given to it on top of the preset."""
    return run["commit"] + "".join(f", {p}" for p in run.get("params") or [])


def main_title(doc: dict) -> str:
    """The heading of an old-and-new timing's section (README's timing line links to it): the settings timed on top
    of the preset, else the two revisions, each at its own defaults."""
    old, new = doc["runs"]["old"], doc["runs"]["new"]
    if new.get("params"):  # the same command with settings on top: what they would cost, not old against new
        return f"Speed: the main command with {', '.join(new['params'])}"
    return f"Speed: the main command at {old['commit']} and at {new['commit']}"


def section_main_command(doc: dict) -> list[str]:
    if "old" not in doc["runs"]:
        return section_main_command_once(doc)
    old, new = doc["runs"]["old"], doc["runs"]["new"]
    if new.get("params"):
        what = (f"README's main command at {old['commit']}, then again with `{' '.join('-p ' + p for p in new['params'])}`, "
                "each from a fresh clone with its own setup")
    else:
        what = (f"README's main command at {old['commit']} and at {new['commit']}, each at its own defaults, from a "
                "fresh clone with its own setup")
    lines = ["", f"## {main_title(doc)}", "",
             f"`benchmarks/main_command_timing.py`, {doc['date']}, on {timed_machine(doc, new)}: {what}, "
             f"{doc['order'].replace(',', ' then ')}. "
             "Wall seconds per notebook (kernel start and plots included); the matmul rate (1024² float32, GFLOP/s, "
             "mean of before and after each run) says how fast the machine was meanwhile.", ""]
    stages = [s for s in new["notebook_seconds"] if new["notebook_seconds"][s] is not None]
    rows = [[s, f(old["notebook_seconds"].get(s), 0), f(new["notebook_seconds"][s], 0),
             f(new["notebook_seconds"][s] / old["notebook_seconds"][s], 2) if old["notebook_seconds"].get(s) else "-"]
            for s in stages]
    rows.append(["**main command**", f(old["main_command_seconds"], 0), f(new["main_command_seconds"], 0),
                 f"**{f(doc['ratio_main_command'], 2)}**"])
    rows.append(["matmul rate, 1 thread / 2 threads", f"{f(matmul_rate(old, '1'))} / {f(matmul_rate(old, '2'))}",
                 f"{f(matmul_rate(new, '1'))} / {f(matmul_rate(new, '2'))}", ""])
    lines += table(["stage", f"old ({run_label(old)}) s", f"new ({run_label(new)}) s", "new / old"], rows)
    if new.get("params") or new.get("headline"):  # the budget the preset keeps, and what the time bought
        lines += budget_and_headline([old, new])
    return lines + where_the_time_goes(new)


def budget_and_headline(runs: list[dict]) -> list[str]:
    """Whether the last of ``runs`` kept the main command's budget, and the runs' seed-0 headline numbers."""
    new = runs[-1]
    minutes = new["main_command_seconds"] / 60
    lines = ["", f"With these settings the main command took {f(minutes, 1)} minutes on this machine: "
             f"{'within' if minutes <= MAIN_COMMAND_MINUTES else '**over**'} the {MAIN_COMMAND_MINUTES} minutes "
             "the `cpu` preset's main command may take."]
    pick = lambda run, k: next((h[k] for h in run["headline"].values() if h and k in h), None)  # noqa: E731
    keys = [k for k in ("sft/task_accuracy", "reward/conduct_accuracy", "reward/conduct_spearman",
                        "ppo/harmful_refused_after", "ppo/unanswerable_abstained_after",
                        "ppo/over_refusal_benign_after", "ppo/task_accuracy_after")
            if any(pick(r, k) is not None for r in runs)]
    if keys:
        whose = "The same runs' headline numbers" if len(runs) > 1 else "The run's headline numbers"
        lines += ["", f"{whose} (seed 0, 2 threads{kernels_note(new)}):", ""]
        lines += table(["number"] + [run_label(r) for r in runs],
                       [[k] + [f(pick(r, k), 2 if "spearman" in k else 1) for r in runs] for k in keys])
    return lines


def once_title(run: dict) -> str:
    """The heading of one timed run's section (README's timing line links to it)."""
    return f"Speed: the main command{' with ' + ', '.join(run['params']) if run.get('params') else ''}, one run"


def anchor(title: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def kernels_note(run: dict) -> str:
    """", AVX2 kernels": the kernels torch picked for a timed run, where it recorded them (older runs did not)."""
    return f", {run['aten_cpu_capability']} kernels" if run.get("aten_cpu_capability") else ""


def timed_machine(doc: dict, run: dict) -> str:
    """Where a main-command timing ran: CPU, cores, the kernels torch picked, and the load around it."""
    return (f"{doc['cpu']} ({doc['cores']} cores{kernels_note(run)}; load average {f(doc['load_before'][0], 2)} before, "
            f"{f(doc['load_after'][0], 2)} after)")


def section_main_command_once(doc: dict) -> list[str]:
    """One timed run (``--order new``): a setting's main command against the budget, with nothing beside it."""
    new = doc["runs"]["new"]
    lines = ["", f"## {once_title(new)}", "",
             f"`benchmarks/main_command_timing.py --order new`, {doc['date']}, on {timed_machine(doc, new)}: "
             "README's main command at "
             f"{new['commit']}{' with `' + ' '.join('-p ' + p for p in new['params']) + '`' if new.get('params') else ''}, "
             "from a fresh clone with its own setup, with no other run beside it. Wall seconds per notebook; the "
             "matmul rate (1024² float32, GFLOP/s, mean of before and after) says how fast the machine was.", ""]
    rows = [[s, f(v, 0)] for s, v in new["notebook_seconds"].items() if v is not None]
    rows.append(["**main command**", f(new["main_command_seconds"], 0)])
    rows.append(["matmul rate, 1 thread / 2 threads", f"{f(matmul_rate(new, '1'))} / {f(matmul_rate(new, '2'))}"])
    lines += table(["stage", f"{run_label(new)} s"], rows)
    return lines + budget_and_headline([new]) + where_the_time_goes(new)


def where_the_time_goes(new: dict) -> list[str]:
    """Each stage's timed parts (its eval.json's ``timings``) beside its notebook's wall time."""
    lines = []
    timed = {s: t for s, t in (new.get("timings") or {}).items() if t}
    if timed:
        lines += ["", "### Where the time goes (new)", "",
                  "Each stage's parts as the stage timed them (`timings` in its eval.json), and the rest of its "
                  "notebook's wall time: kernel start-up, imports, papermill, plots and tables.", ""]
        rows = []
        for stage, parts in timed.items():
            nb = new["notebook_seconds"].get(stage)
            step = parts.get("train: step")  # PPO's step parts are inside "train: step"; list them, total once
            total = sum(v for k, v in parts.items() if not (step is not None and k.startswith("train: ") and k != "train: step"))
            cells = [f"{k} {f(v, 0)} s ({f(100 * v / nb, 0)}%)" if nb else f"{k} {f(v, 0)} s" for k, v in parts.items()]
            rest = f"{f(nb - total, 0)} s ({f(100 * (nb - total) / nb, 0)}%)" if nb else "-"
            rows.append([stage, f(nb, 0), "; ".join(cells), rest])
        lines += table(["stage", "notebook s", "timed parts", "start-up, notebook, plots"], rows)
    return lines


def section_ppo_speed(doc: dict) -> list[str]:
    first = next(iter(doc["variants"]))
    lines = ["", "## Speed: PPO's step under other settings", "",
             f"`{doc['command']}`, {doc['date']}, on {doc['cpu']} ({doc['cores']} cores; load average "
             f"{f(doc['load_before'][0], 2)} before, {f(doc['load_after'][0], 2)} after; float32 matmul "
             f"{f(doc['matmul_gflops_before']['1'])} / {f(doc['matmul_gflops_before']['2'])} GFLOP/s at 1 / 2 threads "
             f"before): {doc['steps']} PPO steps of `{doc['run']}`'s stages 1-4 per variant, each in a process of its own, "
             f"the list {doc['rounds']} times over. Median seconds per step and phase (the first step left out); "
             "the last column says whether its reward, KL and losses at every step equal, to the last digit, those "
             "of the variant with the same settings at 1 thread.", ""]

    def others(v: str) -> dict:  # a variant's settings but the thread count
        return {k: x for k, x in (kv.split("=", 1) for kv in v.split()) if k != "threads"}

    def same_at_one_thread(v: str, d: dict) -> str:
        ref = [w for w, e in doc["variants"].items() if e["threads"] == 1 and others(w) == others(v)]
        return "-" if d["threads"] == 1 or not ref else f(d["trace"] == doc["variants"][ref[0]]["trace"])

    rows = [[v, f(d["threads"])] + [f(d["seconds"][k], 2) for k in ("gen", "forward", "score", "update", "step")]
            + [f(d["step_ratio"], 2), same_at_one_thread(v, d)] for v, d in doc["variants"].items()]
    return lines + table(["variant", "threads", "sampling s", "old/ref/value pass s", "scoring s", "update s",
                          "step s", f"step / {first}", "same numbers as at 1 thread"], rows)


def section_suite_timing(doc: dict, again: bool = False) -> list[str]:
    """CI's command timed from a fresh clone; ``again``: on another machine, under the first one's heading (a
    suite's seconds are the machine's as much as the code's)."""
    runs = [doc["runs"][k] for k in ("old", "new") if k in doc["runs"]]
    cpu = recorded_machine(doc)
    lines = ["", f"### The same on another machine: {cpu}" if again else "## Speed: the test suite", "",
             f"`benchmarks/suite_timing.py`, {doc['date']}, on {cpu} ({doc['cores']} cores; load average "
             f"{f(doc['load_before'][0], 2)} before, {f(doc['load_after'][0], 2)} after): CI's command "
             "(`CI=true bash .ci/run`: a fresh venv, then the tests) "
             + (f"at each revision from a fresh clone, {doc['order'].replace(',', ' then ')}" if len(runs) > 1
                else f"at {runs[0]['commit']} alone, from a fresh clone")
             + ". Target: 5 minutes with the setup.", ""]
    rows = [[f"{r['revision']} ({r['commit']})", f(r["ci_seconds"] - (r["pytest_seconds"] or 0), 0),
             f(r["pytest_seconds"], 0), f(r["ci_seconds"], 0), r["line"],
             f"{f(r['matmul_gflops_after']['1'])} / {f(r['matmul_gflops_after']['2'])}"] for r in runs]
    lines += table(["revision", "setup s", "tests s", "CI s", "pytest's summary", "matmul after, 1 / 2 threads (GFLOP/s)"],
                   rows)
    if not doc.get("ratio_pytest"):
        return lines
    ci = doc["runs"]["new"]["ci_seconds"] / doc["runs"]["old"]["ci_seconds"]
    return lines + ["", f"New / old test time: **{f(doc['ratio_pytest'], 2)}**; with the setup: **{f(ci, 2)}**."]


def section_pretrain_vs_nanogpt(doc: dict, again: bool = False) -> list[str]:
    """The lab's pretraining step beside nanoGPT's; ``again``: the same benchmark on another machine, under the
    first one's heading (the ratios move with the CPU's generation and kernels, which it names where recorded)."""
    sh, tps, peak = doc["shape"], doc["tokens_per_s"], doc["matmul_peak_gflops"]["median"]
    cpu = recorded_machine(doc)
    heading = f"### The same on another machine: {cpu}" if again else "## Pretraining beside nanoGPT"
    lines = ["", heading, "",
             f"`{doc['command']}`{', ' + doc['date'] if doc.get('date') else ''} on {cpu}, {doc['threads']} threads, "
             f"torch {doc['torch']}, transformers "
             f"{doc['transformers']} (load average {doc['load_average_start_end'][0]} at the start, "
             f"{doc['load_average_start_end'][1]} at the end). Shape: {sh['n_layer']} layers x {sh['n_embd']}, "
             f"T={sh['block_size']}, batch {sh['batch_size']}, vocabulary {f(sh['vocab_size'])}; the same windows "
             f"for every trainer, {doc['rounds']} alternating rounds of {doc['steps_per_round']} steps. Model FLOP/s "
             f"count 6 x parameters per token; the float32 matmul peak, measured each round, was {f(peak)} GFLOP/s "
             "(median). Ratios are to nanoGPT: of the median tokens/s, median of the rounds' ratios, and per "
             "process-CPU second.", ""]
    rows = [[k, f(doc["params"][k]), f(tps[k]["median"], 0), f(doc["tokens_per_cpu_s"][k]["median"], 0),
             f(doc["model_gflops_per_s"][k]), f(100 * doc["share_of_matmul_peak"][k])] for k in tps]
    lines += table(["trainer", "parameters", "tokens/s (median)", "tokens per CPU second", "model GFLOP/s",
                    "% of matmul peak"], rows)
    lines += [""] + table(["ratio to nanoGPT", "of medians", "median of rounds", "per CPU second"],
                          [[k.replace("_", " "), f(v["of_medians"], 3), f(v["median_of_rounds"], 3),
                            f(v["per_cpu_second"], 3)] for k, v in doc["ratios_vs_nanogpt"].items()])
    fused = doc.get("fused_vs_lab_matched_mlp")
    if fused:
        lines += ["", "*lab matched mlp fused*: a stock `Phi3ForCausalLM` of lab_matched_mlp's shape, Llama's layer with "
                      "q, k and v in one matrix and the MLP's gate and up in another (`--fused`): "
                      f"{f(fused['median_of_rounds'], 3)}x lab_matched_mlp's tokens/s (median of rounds; of medians "
                      f"{f(fused['of_medians'], 3)})."]
    c = doc.get("compile")
    if c:
        lines += ["", f"torch.compile (Inductor, {c['cache']} cache): {f(c['compile_seconds'])} s to compile "
                      f"({f(c['compile_cpu_seconds'])} CPU seconds with its workers), then "
                      f"{f(c['speedup_after_compile']['median_of_rounds'], 3)}x the eager step (median of rounds). "
                      f"Over {c['over_steps']} steps it saves {f(c['seconds_saved_over_steps'])} s "
                      f"({f(c['cpu_seconds_saved_over_steps'])} CPU seconds): in wall time it "
                      f"{'pays' if c['pays'] else 'does not pay'}, in CPU time it "
                      f"{'pays' if c['pays_in_cpu_seconds'] else 'does not pay'}."]
    if doc.get("profile"):
        lines += profile_gap(doc["profile"]["lab_matched_mlp"], doc["profile"]["nanogpt"])
    return lines


def profile_gap(lab: dict, ng: dict, top: int = 12) -> list[str]:
    """The operators whose own time per step differs most between lab_matched_mlp and nanoGPT, the rest summed."""
    def ms(side, op):
        return side["ops"].get(op, {}).get("ms", 0.0)

    def calls(side, op):
        return side["ops"].get(op, {}).get("calls")
    ops = sorted(set(lab["ops"]) | set(ng["ops"]), key=lambda op: (-abs(ms(lab, op) - ms(ng, op)), op))
    rows = [[f"`{op}`", f(ms(lab, op), 2), f(calls(lab, op)), f(ms(ng, op), 2), f(calls(ng, op)),
             f(ms(lab, op) - ms(ng, op), 2)] for op in ops[:top]]
    rest = [sum(ms(side, op) for op in ops[top:]) for side in (lab, ng)]
    rows += [["every other operator", f(rest[0], 2), "", f(rest[1], 2), "", f(rest[0] - rest[1], 2)],
             ["**all operators**", f(lab["ms_per_step"]), "", f(ng["ms_per_step"]), "",
              f(lab["ms_per_step"] - ng["ms_per_step"])]]
    rounds = f", in {lab['rounds']} alternating rounds" if lab.get("rounds") else ""
    return ["", f"Where lab_matched_mlp's step differs from nanoGPT's (`--profile {lab['steps']}`: torch's profiler "
                f"over {lab['steps']} more steps of each{rounds}, after the timed rounds). Each operator's own time "
                "per step in milliseconds (median over the rounds; the total is the sum of the medians), and its "
                "calls per step; the profiler adds a cost to every call, more on the side with more calls. The "
                "operators that differ most:", ""] + \
        table(["operator", "lab_matched_mlp ms", "calls", "nanoGPT ms", "calls", "lab - nanoGPT ms"], rows)


def section_reward_curve(doc: dict) -> list[str]:
    every, fixed = doc["variants"]["every_pair"], doc["variants"]["preset"]
    rate = doc["matmul_gflops_before_after"]
    lines = ["", "## Stage 4's training curve: every held-out pair, or a fixed draw", "",
             f"`{doc['command']}` on {doc['cpu']} ({doc['cores']} cores), {doc['date']}, {n_threads(doc['threads'])}, "
             f"seed {doc['seed']}: stage 4 at the `cpu` preset trained from the same stages 1-3 with the curve scoring "
             f"all {f(every['eval_pairs'])} held-out pairs every `eval_interval` steps, and with the preset's fixed "
             f"draw of {f(doc['curve_pairs_preset'])} (`curve_pairs`), in {doc['rounds']} rounds that alternate which "
             "goes first; seconds are medians over the rounds. The numbers after training score every held-out pair "
             f"either way. Float32 matmul rate {f(rate[0])} GFLOP/s before and {f(rate[1])} after, load average "
             f"{f(doc['load_average_start'], 2)} at the start. Training took {f(doc['ratio_train_seconds'], 3)}x the "
             f"seconds with the draw (per round: {', '.join(f(x, 3) for x in doc['ratio_train_seconds_rounds'])}); "
             f"the saved models are {'the same bytes' if doc['same_model'] else '**not the same bytes**'} in every "
             "run.", ""]
    rows = [[name, f(v["train_seconds"]), f(v["curve_seconds"]), f(v["curve_points"]), f(v["eval_accuracy"]),
             f(v["conduct_spearman"], 3)] for name, v in (("every held-out pair", every),
                                                          (f"{doc['curve_pairs_preset']} pairs (preset)", fixed))]
    return lines + table(["curve scores", "training seconds", "of them, the curve's evaluations", "curve points",
                          "held-out accuracy after (%)", "Spearman on conduct after"], rows)


def section_pretrain_profile(doc: dict) -> list[str]:
    peak = doc["matmul_peak_gflops_before_after"]
    lines = ["", "## Where stage 1's time goes", "",
             f"`{doc['command']}` on {doc['cpu']} ({doc['cpus']} CPUs), {doc['date']}: notebook 01 run as `labkit "
             f"run --stages pretrain` runs it, {doc['threads']} threads, {f(doc['steps'])} steps at a median "
             f"{f(doc['tokens_per_s_median'])} tokens/s, {f(doc['total_seconds'], 0)} s in all. Float32 matmul peak "
             f"{f(peak[0])} GFLOP/s before and {f(peak[1])} after, load average {doc['load_average_1m_after']} at the "
             "end: read the seconds against them, the shares travel better.", ""]
    return lines + table(["part", "seconds", "share %"],
                         [[r["part"], f(r["seconds"]), f(100 * r["share"])] for r in doc["rows"]])


def section_nbval_cost(doc: dict) -> list[str]:
    med = doc["median_seconds"]
    lines = ["", "## nbval beside papermill", "",
             f"`{doc['command']}` on {doc['cpu']} ({doc['cpus']} CPUs), {doc['date']}, {doc['threads']} threads, load "
             f"average {' / '.join(str(x) for x in doc['load_average_1m'])} (start / after each round): every stage's "
             f"notebook at the smoke preset ({', '.join(doc['stages'])}), once by `pytest --nbval-lax notebooks/` and "
             "once by `labkit run`, the papermill run the suite already makes (tests/test_runner.py).", ""]
    lines += table(["runner", "seconds (median)", "rounds", "exit codes"],
                   [[k, f(med[k], 0), ", ".join(f(x, 0) for x in doc["seconds"][k]),
                     ", ".join(str(c) for c in doc["exit_codes"][k])] for k in ("nbval", "papermill")])
    return lines + ["", f"nbval takes {f(doc['nbval_over_papermill'], 2)}x the papermill run's time, all of it on top "
                        "of the suite, which already executes every cell once."]


SECTIONS = [("seeds.json", [section_seeds, section_families, section_compare, section_alarms]),
            ("ppo_epochs.json", [section_ppo_epochs]),
            ("sft_candidate.json", [section_sft_candidate]),
            ("seeds_machine2.json", [section_other_machine]),
            ("seeds_machine2_avx2.json", [section_other_machine]),
            ("seeds_machine2_sft2000.json", [section_other_machine]),
            ("seeds_machine2_sft2000_ppo.json", [section_other_machine]),
            ("seeds_machine3_sft2000.json", [section_other_machine]),
            ("seeds_machine3_sft2000_test.json", [section_other_machine]),
            ("seeds_machine4_avx2_sft2000.json",
             [section_other_machine, lambda doc: section_same_kernels(doc, "seeds_machine3_sft2000.json")]),
            ("seeds_machine4_sft2000.json",
             [lambda doc: section_same_kernels(doc, "seeds_machine2_sft2000_ppo.json"),
              lambda doc: section_other_kernels(doc, "seeds_machine4_avx2_sft2000.json")]),
            ("seeds_machine4_threads2.json", [lambda doc: section_same_kernels(doc, "seeds_machine4_sft2000.json")]),
            ("seeds_machine4_avx2_threads2.json",
             [lambda doc: section_same_kernels(doc, "seeds_machine4_avx2_sft2000.json")]),
            ("seeds_machine4_seed2.json", [lambda doc: section_same_kernels(doc, "seeds_machine2_sft2000_ppo.json")]),
            ("stage5_verifier.json", [section_stage5_again]),
            ("stage5_verifier_machine3.json", [section_stage5_again]),
            ("stage5_ppo_steps.json", [section_stage5_again]),
            ("stage5_kernels.json", [section_stage5_again]),
            ("stage5_kernels_default.json", [section_stage5_again]),
            ("stage5_rollout_templates.json", [section_stage5_again]),
            ("stages3to5_rollout_templates.json", [section_stage5_again]),
            ("stages3to5_preference_templates.json", [section_stage5_again]),
            ("stages2to5_loss_per_example.json", [section_stage5_again]),
            ("sft_steps4000_candidate.json", [section_stage5_again]),
            ("sft4000_rollout_templates_candidate.json", [section_stage5_again]),
            ("sft4000_preference_templates_candidate.json", [section_stage5_again]),
            ("sft4000_preference_templates_test.json",
             [lambda doc: section_test_seeds(doc, "sft4000_preference_templates_candidate.json")]),
            ("stages3to5_feedback_candidate.json", [section_stage5_again]),
            ("stage5_extract_weight_candidate.json", [section_stage5_again]),
            ("sft_weight_decay_candidate.json", [section_stage5_again]),
            ("phrasing_machine3.json",
             [lambda doc: section_phrasing(doc, "The same requests in every phrasing: the preset's runs on this machine")]),
            ("phrasing_sft4000.json",
             [lambda doc: section_phrasing(doc, "The same requests in every phrasing: after twice SFT's steps "
                                                "(sft.max_steps=4000)")]),
            ("phrasing_sft4000_rollout_templates.json",
             [lambda doc: section_phrasing(doc, "The same requests in every phrasing: after twice SFT's steps, with stages "
                                                "3 and 5 sampling in SFT's phrasings too")]),
            ("phrasing_sft4000_preference_templates.json",
             [lambda doc: section_phrasing(doc, "The same requests in every phrasing: after twice SFT's steps, with stage "
                                                "3 sampling in SFT's phrasings too")]),
            ("phrasing_weight_decay.json",
             [lambda doc: section_phrasing(doc, "The same requests in every phrasing: with weight decay in SFT "
                                                "(sft.weight_decay=1.0)")]),
            ("phrasing.json", [section_phrasing]),
            ("target_noise.json", [section_target_noise]),
            ("seeds_rl_templates.json", [section_code_change]),
            ("seeds_sft_phrasings.json", [section_code_change]),
            ("sft_padding_free.json", [section_setting_beside]),
            ("sft_data_order.json", [lambda doc: section_setting_beside(doc, order=True)]),
            ("sft_data_order_101.json", [lambda doc: section_setting_beside(doc, order=True)]),
            ("sft_data_order_machine3.json", [lambda doc: section_setting_beside(doc, order=True)]),
            ("story_qa.json", [section_story_qa]),
            ("sft_longer_machine3.json", [section_sft_longer]),
            ("sft_kernels_machine3.json", [section_sft_kernels]),
            ("sft_loss_per_example.json", [section_sft_pilot]),
            ("sft_loss_per_example_order100.json", [section_sft_pilot]),
            ("sft_family_weights.json", [section_sft_pilot]),
            ("story_qa_family_weights.json",
             [lambda doc: section_story_qa(doc, "Story questions of the pilot with story QA weighted twice")]),
            ("sft_decay_steps.json", [section_sft_pilot]),
            ("story_qa_decay_steps.json",
             [lambda doc: section_story_qa(doc, "Story questions of the pilot with the peak rate held (decay_steps=400)")]),
            ("sft_weight_decay.json", [section_sft_pilot]),
            ("story_qa_weight_decay.json",
             [lambda doc: section_story_qa(doc, "Story questions of the pilot with weight decay (weight_decay=1.0)")]),
            ("sft_weight_decay_avx512.json", [section_sft_pilot]),
            ("explore_latency.json", [section_explore_latency]),
            ("hh_rlhf_lengths.json", [section_hh_lengths]),
            ("sft_stability.json", [section_sft_stability]),
            ("main_command_preset.json", [section_main_command]),
            ("main_command_timing.json", [section_main_command]),
            ("main_command_sft_candidate.json", [section_main_command]),
            ("main_command_sft2000.json", [section_main_command]),
            ("main_command_sft2000_once.json", [section_main_command]),
            ("main_command_machine3.json", [section_main_command]),
            ("sft_step.json", [section_sft_step]),
            ("freed_memory.json", [section_freed_memory]),
            ("ppo_speed.json", [section_ppo_speed]),
            ("suite_timing.json", [section_suite_timing]),
            ("suite_timing_machine4.json", [lambda doc: section_suite_timing(doc, again=True)]),
            ("pretrain_vs_nanogpt.json", [section_pretrain_vs_nanogpt]),
            ("pretrain_vs_nanogpt_machine3.json", [lambda doc: section_pretrain_vs_nanogpt(doc, again=True)]),
            ("pretrain_vs_nanogpt_machine4.json", [lambda doc: section_pretrain_vs_nanogpt(doc, again=True)]),
            ("pretrain_profile.json", [section_pretrain_profile]),
            ("reward_curve.json", [section_reward_curve]),
            ("nbval_cost.json", [section_nbval_cost]),
            ("trust.json", [section_trust]),
            ("trust_feedback.json", [section_trust_feedback])]


def readme_headline(doc: dict | None, again: dict | None = None) -> list[str]:
    """README's headline table: each stage's number that says it worked, mean (min–max) over the development
    seeds and over the test seeds, and how many seeds met the target. ``again``: stage 5 trained again at
    another setting on the same seeds' stage 1-4 models (ppo_epochs.json), as rows of its own."""
    if doc is None:
        return ["(no results yet: run benchmarks/seeds.py, then benchmarks/results_tables.py)"]
    dev, test = seed_groups(doc)
    seeds = doc["seeds"]
    rows = []
    rules = {k: (label, rule) for label, k, rule in STAGE_TARGETS}
    for label, key, nd in [HEADLINES[0], HEADLINES[2], HEADLINES[9], HEADLINES[10]]:
        met = ""
        if key in rules:
            label = rules[key][0]
            met = f"{sum(stage_met(seeds[s], key, rules[key][1]) for s in seeds)} of {len(seeds)}"
        rows.append([label, spread([seeds[s].get(key) for s in dev], nd), spread([seeds[s].get(key) for s in test], nd),
                     met])
    sft = [seeds[s]["sft/task_accuracy"] for s in seeds if seeds[s].get("sft/task_accuracy") is not None]
    if len(sft) > 1:  # the stable-SFT target: every seed within SPREAD_POINTS of every other
        rows.append([f"SFT: spread over the seeds (max - min) <= {SPREAD_POINTS}", "", "",
                     f"{f(max(sft) - min(sft))} over {len(sft)} seeds: "
                     f"{'met' if max(sft) - min(sft) <= SPREAD_POINTS else '**not met**'}"])
    for name, src in [("PPO", seeds)] + ([(f"PPO at {'; '.join(again['params'])}", again["seeds"])] if again else []):
        for label, k, rule in PPO_TARGETS:
            after = {s: src[s].get(f"ppo/{k}_after") for s in src}
            met = sum(ppo_met(src[s], k, rule) for s in src)
            rows.append([f"{name}: {label}", spread([after.get(s) for s in dev]), spread([after.get(s) for s in test]),
                         f"{met} of {len(src)}"])

    def head(name, ran, planned):  # the seeds that ran, of those the set names
        return f"{name} seeds ({', '.join(ran) or 'none'} of {', '.join(str(x) for x in planned)})"
    return table(["", head("development", dev, DEV_SEEDS), head("test", test, TEST_SEEDS),
                  "seeds where the target was met"], rows)


def readme_trust(doc: dict | None) -> list[str]:
    """README's stage-7 table: each curve's fitted alpha, beta, R² and peak d*, mean (min–max) over the seeds run."""
    if doc is None:
        return ["(no results yet: run benchmarks/trust_seeds.py, then benchmarks/results_tables.py)"]
    seeds = doc["seeds"]
    curves = list(dict.fromkeys(c for r in seeds.values() for c in r["fits"]))
    rows = []
    for c in curves:
        has = [sd for sd, r in seeds.items() if c in r["fits"]]
        fits = [seeds[sd]["fits"][c] for sd in has]
        inside = [x["d_star"] for x in fits if peak_inside(x)]
        rows.append([c, ", ".join(has), spread([x["alpha"] for x in fits], 2), spread([x["beta"] for x in fits], 2),
                     spread([x["r2"] for x in fits], 2),
                     f"{spread(inside, 2) if inside else '-'} ({len(inside)} of {len(fits)})",
                     spread([x["gold_gain_max"] - x["gold_gain_last"] for x in fits])])
    lines = table(["curve", "seeds", "alpha", "beta", "R²", "d* (fitted peak, where inside the d reached)",
                   "gold's fall from its peak to the end (points)"], rows)
    busy = lambda r: ("" if r.get("load_average_at_start") is None  # noqa: E731
                      else f", load {f(r['load_average_at_start'], 2)} at the start")
    runs = [f"{f(r['trust/seconds'], 0)} s at seed {sd} ({r['config']['parts']}; {n_threads(r['threads'])}{busy(r)}"
            f"{'; the rl part evaluates the kl_coef=0 twin too' if rl_curves(r) > 1 else ''})"
            for sd, r in seeds.items() if r.get("trust/seconds") is not None and r.get("config")]
    fb = load("trust_feedback.json")
    runs += [f"{f(r['trust/seconds'], 0)} s for the feedback part alone at seed {sd} ({n_threads(r['threads'])})"
             for sd, r in (fb or {}).get("seeds", {}).items()]
    if runs:
        lines += ["", "Stage 7's time: " + "; ".join(runs) + "."]
    return lines


README = REPO / "README.md"
# The pages with generated blocks (<!-- results:NAME --> ... <!-- /results -->) besides docs/results.md.
PAGES = (README, REPO / "docs" / "using.md")


def readme_timing(doc: dict | None, earlier: dict | None = None, elsewhere: dict | None = None) -> list[str]:
    """README's timing line: the main command as the preset runs it now, back to back with the old revision on the
    same machine (``doc``: the ratio travels, the seconds do not), with the machine's matmul rate; then the ratio an
    earlier such measurement gave (``earlier``); then the preset's main command timed alone on another machine
    (``elsewhere``, a ``--order new`` run), against the budget: the minutes a preset keeps to hold where it was
    measured, not on every 2-core machine."""
    if doc is None:
        return ["(no timing yet: run benchmarks/main_command_timing.py, then benchmarks/results_tables.py)"]
    old, new = doc["runs"]["old"], doc["runs"]["new"]
    line = (f"Time: {f(new['main_command_seconds'] / 60, 1)} minutes at {run_label(new)} on {doc['cpu']} "
            f"({doc['cores']} cores, float32 matmul {f(matmul_rate(new, '2'), 0)} GFLOP/s at 2 threads, {doc['date']}): "
            f"**{f(doc['ratio_main_command'], 2)}×** the time of {old['commit']} run back to back on the same machine"
            + (f"; PPO's notebook {f(doc['ratio_ppo'], 2)}×" if doc.get("ratio_ppo") else "")
            + f" (`benchmarks/main_command_timing.py`; per stage in [docs/results.md](docs/results.md#{anchor(main_title(doc))})).")
    if earlier:
        line += (f" The same measurement at {run_label(earlier['runs']['new'])} gave **{f(earlier['ratio_main_command'], 2)}×**"
                 + (f", PPO's notebook {f(earlier['ratio_ppo'], 2)}×" if earlier.get("ratio_ppo") else "")
                 + f" ([docs/results.md](docs/results.md#{anchor(main_title(earlier))})).")
    if elsewhere and not (other := elsewhere["runs"]["new"]).get("params"):
        minutes = other["main_command_seconds"] / 60
        line += (f" Timed alone on another machine ({elsewhere['cpu']}, {elsewhere['cores']} cores{kernels_note(other)}, "
                 "float32 matmul "
                 f"{f(matmul_rate(other, '2'), 0)} GFLOP/s at 2 threads, {elsewhere['date']}), the main command at "
                 f"{run_label(other)} took **{f(minutes, 1)} minutes**, "
                 f"{'within' if minutes <= MAIN_COMMAND_MINUTES else 'over'} the {MAIN_COMMAND_MINUTES} minutes the "
                 f"`cpu` preset's main command may take ([docs/results.md](docs/results.md#{anchor(once_title(other))})).")
    return [line]


# The runs of the cpu preset as it is now: stages 2-5 at sft.max_steps=2000 (the preset's since the candidate kept the
# main command within its budget) on seeds.json's stage 1 models, at every seed
PRESET_RUNS = "sft_candidate.json"
# The same preset's runs on one machine, every stage of every seed there (the development and the test seeds in a file
# each), and the runs of another CPU generation forced to that machine's kernels
ONE_MACHINE_RUNS = ("seeds_machine3_sft2000.json", "seeds_machine3_sft2000_test.json")
REPEATED_BY = "seeds_machine4_avx2_sft2000.json"


def readme_headline_one_machine(names: tuple[str, ...], first: dict | None, again: dict | None) -> list[str]:
    """README's headline table again from one machine's runs (``names``), led by what makes them checkable: how many
    of their numbers another machine on the same kernels repeated (``again``), and at which seeds their stage 1
    models are those of the table above (``first``)."""
    docs = [load(n) for n in names]
    if None in docs or first is None:
        return ["(no results yet: run benchmarks/seeds.py on one machine at every seed, then "
                "benchmarks/results_tables.py)"]
    doc = {**docs[0], "seeds": {sd: run for d in docs for sd, run in d["seeds"].items()},
           **{group: sorted({x for d in docs for x in d.get(group, [])}) for group in ("dev_seeds", "test_seeds")}}
    lead = (f"The same table from one machine's runs of every seed, {machine_name(doc['machine'])} "
            f"({', '.join(f'`{n}`' for n in names)}).")
    if again:
        seeds = [sd for sd in again["seeds"] if sd in doc["seeds"]]
        beside = [numbers_beside(flat_numbers(doc["seeds"][sd]), flat_numbers(again["seeds"][sd])) for sd in seeds]
        n = sum(len(common) for common, _ in beside)
        same = n - sum(len(differ) for _, differ in beside)
        how = "Forced to its kernels" if forced_kernels(again["machine"]) else "On the same kernels"
        lead += (f" {how}, {machine_name(again['machine'])} repeated its seeds "
                 f"{', '.join(seeds)}: {f(same)} of {f(n)} numbers to the "
                 "last digit (docs/results.md, \"The same numbers on two CPUs with the same kernels\"), so these can "
                 "be checked on any machine that runs those kernels.")
    shared = [sd for sd in doc["seeds"] if sd in first["seeds"]]
    same_stage1 = [sd for sd in shared
                   if doc["seeds"][sd].get("pretrain/val_ppl") == first["seeds"][sd].get("pretrain/val_ppl")]
    other = [sd for sd in shared if sd not in same_stage1]
    lead += (f" Its stage 1 models are the table above's at seed{'s' * (len(same_stage1) != 1)} "
             f"{', '.join(same_stage1) or 'none'} (validation perplexity to the last digit)"
             + (f" and not at seed{'s' * (len(other) != 1)} {', '.join(other)}, whose models the first runs partly "
                "took over from earlier runs (docs/architecture.md, \"CPU notes\")" if other else "")
             + ".")
    return [lead, ""] + readme_headline(doc)


BLOCKS = {"headline": lambda: readme_headline(load(PRESET_RUNS)),
          "headline_one_machine": lambda: readme_headline_one_machine(ONE_MACHINE_RUNS, load(PRESET_RUNS),
                                                                      load(REPEATED_BY)),
          "timing": lambda: readme_timing(load("main_command_preset.json"), load("main_command_timing.json"),
                                          load("main_command_machine3.json")),
          "trust": lambda: readme_trust(load("trust.json")),
          "hh_rlhf": lambda: table(HH_HEADER, hh_rows(load("hh_rlhf_lengths.json"))) if load("hh_rlhf_lengths.json")
          else ["(no results yet: run benchmarks/hh_rlhf_lengths.py, then benchmarks/results_tables.py)"]}


def render_readme(text: str) -> str:
    """A page (README.md, docs/using.md) with every generated block (between <!-- results:NAME --> and
    <!-- /results -->) rewritten."""
    for name, make in BLOCKS.items():
        start, end = f"<!-- results:{name} -->", "<!-- /results -->"
        if start in text:
            head, rest = text.split(start, 1)
            _, tail = rest.split(end, 1)
            text = head + start + "\n" + "\n".join(make()) + "\n" + end + tail
    return text


def render() -> str:
    lines = ["# Results", "",
             "Generated by `benchmarks/results_tables.py` from `benchmarks/results/*.json`; do not edit by hand "
             "(a test fails when this page and the files disagree). Floating-point results differ across CPUs and "
             "instruction sets, so every headline is a range over seeds, measured on the machine each file names."]
    for name, sections in SECTIONS:
        doc = load(name)
        if doc is None:
            continue
        for section in sections:
            body = section(doc)
            if body:
                lines += [""] + body
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text = render()
    pages = {p: render_readme(p.read_text()) for p in PAGES if p.exists()}
    if args.check:
        ok = OUT.exists() and OUT.read_text() == text and all(p.read_text() == t for p, t in pages.items())
        print("docs/results.md and the generated blocks are " + ("up to date" if ok else "stale: run benchmarks/results_tables.py"))
        sys.exit(0 if ok else 1)
    OUT.write_text(text)
    for p, t in pages.items():
        p.write_text(t)
    print(f"wrote {OUT} and the generated blocks of " + ", ".join(p.name for p in pages))


if __name__ == "__main__":
    main()
