"""How far the held-out draw alone moves a stage-5 (and stage-4) verdict.

    .venv/bin/python benchmarks/target_noise.py --group "the preset" runs/seeds 0,1,2 --large 160 \\
        --large-reward 240 --threads 1 --out benchmarks/results/target_noise.json

Stage 5 judges a seed by 40 held-out prompts per family, stage 4's Spearman by 60 conduct prompts. Another draw
from the same held-out distribution would give the same model other numbers, so a verdict a few points from its
threshold may say more about the draw than about the model. Per seed folder of ``benchmarks/seeds.py``:

1. **The stages' own draws.** Each target's 95% interval, the prompts the stage evaluated drawn again with
   replacement within each family, 4,000 times. Stage 5 (its samples.jsonl): harmful and "not stated" after PPO
   and their gains, before and after paired on the same prompt, and the change in greedy task accuracy;
   over-refusal and mixed answers are only in stage 5's totals. Stage 4 (its eval_pairs.jsonl and
   conduct_samples.jsonl): conduct pairs right and Spearman with the verifier, each prompt's rows drawn together.
   A target whose interval lies on one side of its threshold is *met* or *missed*; one whose interval holds the
   threshold is *close*: this draw cannot tell.
2. **Larger draws.** ``--large N``: the seed's SFT and PPO models sampled as stage 5 samples (``eval_samples`` at
   its temperature and length) on N fresh held-out prompts per conduct family. ``--large-reward N``: the reward
   model's Spearman on N fresh held-out conduct prompts sampled from the SFT model as stage 4 samples. Held-out
   templates and names, drawn with another seed, so they overlap the stages' own only by chance.

A diagnosis: nothing is chosen on it, and it reads test seeds' folders only to report them.
"""
import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds import commit, machine  # noqa: E402  (the same machine record as the runs it reads)

from labkit.config import DEV_SEEDS, set_threads  # noqa: E402
from labkit.report import TARGETS  # noqa: E402
from labkit.runs import STAGE_DIRS, atomic_write_json, file_hash, read_json, read_jsonl  # noqa: E402
from labkit.world import ANSWER_FAMILIES, CONDUCT_FAMILIES  # noqa: E402  (as stage 5 counts them)

DRAWS = 4000
LEVEL = 0.95
LARGE_SEED = 1000  # the larger draw's seed is LARGE_SEED + the run's seed: never stage 5's own draw seed
# The thresholds are the lab's own (labkit.report.TARGETS, the scorecard's): (level, gain over SFT) of the two
# declining rates, the task target's allowed change, over-refusal's ceiling and stage 4's two floors.
HARMFUL = tuple(t.value for t in TARGETS["ppo/harmful_refused_after"].targets)
NOT_STATED = tuple(t.value for t in TARGETS["ppo/unanswerable_abstained_after"].targets)
TASK_CHANGE = TARGETS["ppo/task_accuracy_after"].value
BENIGN = TARGETS["ppo/over_refusal_benign_after"].value
PAIRS_RIGHT, SPEARMAN = TARGETS["reward/conduct_accuracy"].value, TARGETS["reward/conduct_spearman"].value


def interval(groups: list[list[float]], draws: int = DRAWS, seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """``level`` percentile interval of the mean of every value in ``groups``, each group's values (one family's
    prompts) drawn again with replacement, so every draw keeps the evaluation's balance over families."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if not arrays:
        raise ValueError("no values to draw from")
    totals = np.zeros(draws)
    for a in arrays:
        totals += a[rng.integers(0, len(a), size=(draws, len(a)))].sum(1)
    low, high = np.quantile(totals / sum(len(a) for a in arrays), [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def cluster_interval(families: list[list[list[dict]]], statistic, draws: int = DRAWS, seed: int = 0,
                     level: float = LEVEL) -> tuple[float, float]:
    """``level`` percentile interval of ``statistic(rows)`` (not a mean: a Spearman correlation, an accuracy over
    pairs that come several to a prompt), each family's prompts -- a list of rows each -- drawn again with
    replacement, so a prompt's rows stay together. Draws where the statistic is undefined are left out."""
    rng = np.random.default_rng(seed)
    families = [f for f in families if f]
    if not families:
        raise ValueError("no prompts to draw from")
    values = []
    for _ in range(draws):
        rows = [r for f in families for i in rng.integers(0, len(f), size=len(f)) for r in f[int(i)]]
        v = statistic(rows)
        if v is not None:
            values.append(v)
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def call(low: float, high: float, op: str, threshold: float) -> str:
    """'met' when the whole interval meets ``op threshold``, 'missed' when none of it does, else 'close'."""
    if op == ">=":
        return "met" if low >= threshold else "missed" if high < threshold else "close"
    if op == "<=":
        return "met" if high <= threshold else "missed" if low > threshold else "close"
    raise ValueError(f"op must be '>=' or '<=', not {op!r}")


def part(what: str, groups: list[list[float]], op: str, threshold: float, seed: int) -> dict:
    """One side of a target: the value (mean of the groups' values), its interval and the calls on both."""
    values = [v for g in groups for v in g]
    value = sum(values) / len(values)
    low, high = interval(groups, seed=seed)
    point = value >= threshold if op == ">=" else value <= threshold
    return {"what": what, "value": value, "low": low, "high": high, "op": op, "threshold": threshold,
            "point": "met" if point else "not met", "call": call(low, high, op, threshold)}


def target(parts: list[dict]) -> dict:
    """A target met only when all its parts are: missed when any part is clearly missed, met when every part is
    clearly met, else close."""
    calls = [p["call"] for p in parts]
    return {"parts": parts, "point": "met" if all(p["point"] == "met" for p in parts) else "not met",
            "call": "missed" if "missed" in calls else "met" if all(c == "met" for c in calls) else "close"}


def rate_target(before: list[float], after: list[float], level: float, gain: float, seed: int) -> dict:
    """">= level and >= before + gain" on per-prompt rates (percent), the gain paired prompt by prompt."""
    return target([part("after", [after], ">=", level, seed),
                   part("gain", [[a - b for a, b in zip(after, before)]], ">=", gain, seed)])


def stage5_draw(folder: Path, seed: int) -> dict:
    """Part 1: the harmful, "not stated" and task-accuracy targets with intervals over stage 5's own prompts."""
    from labkit.verifier import over_refused

    d = folder / STAGE_DIRS["ppo"]
    rows, ev = read_jsonl(d / "samples.jsonl"), read_json(d / "eval.json")
    fam = {f: [r for r in rows if r["family"] == f] for f in {r.get("family") for r in rows}}
    if not all(fam.get(f) for f in ("harmful", "unanswerable")) or not any(fam.get(f) for f in ANSWER_FAMILIES):
        raise SystemExit(f"{d}: stage 5 evaluated no harmful, unanswerable or answer-family prompts here (a run on "
                         "its own prompts, not the world's?): its targets cannot be measured")

    def pct(f, key):
        return [100 * r[key] for r in fam.get(f, [])]

    out = {"prompts": {f: len(rs) for f, rs in sorted(fam.items())},
           "harmful": rate_target(pct("harmful", "before_sampled_correct"), pct("harmful", "after_sampled_correct"),
                                  *HARMFUL, seed),
           "unanswerable": rate_target(pct("unanswerable", "before_sampled_correct"),
                                       pct("unanswerable", "after_sampled_correct"), *NOT_STATED, seed),
           "task": target([part("change", [[a - b for a, b in zip(pct(f, "after_correct"), pct(f, "before_correct"))]
                                            for f in ANSWER_FAMILIES], ">=", TASK_CHANGE, seed)]),
           "over_refusal_benign": ev.get("ppo/over_refusal_benign_after"),  # no per-prompt record: the total alone
           # where a task-accuracy change lies: per answer family, % right greedily and how many greedy answers
           # decline an answerable question (a refusal or "not stated" where the answer was due)
           "task_by_family": {f: {"prompts": len(fam[f]), "before": sum(pct(f, "before_correct")) / len(fam[f]),
                                  "after": sum(pct(f, "after_correct")) / len(fam[f]),
                                  "declined_before": sum(over_refused(r, r["before"]) for r in fam[f]),
                                  "declined_after": sum(over_refused(r, r["after"]) for r in fam[f])}
                              for f in ANSWER_FAMILIES if fam.get(f)}}
    # The per-prompt file must be the one stage 5 summed: its means are eval.json's rates, to rounding.
    answered = [v for f in ANSWER_FAMILIES for v in pct(f, "after_correct")]
    for key, got in (("harmful_refused_after", out["harmful"]["parts"][0]["value"]),
                     ("unanswerable_abstained_after", out["unanswerable"]["parts"][0]["value"]),
                     ("task_accuracy_after", sum(answered) / len(answered))):
        want = ev.get(f"ppo/{key}")
        if want is None or abs(got - want) > 1e-6:
            raise SystemExit(f"{d}: samples.jsonl gives {key} {got:.4f}, eval.json {want}: not the same evaluation")
    return out


def by_prompt(rows: list[dict], family_of, key) -> list[list[list[dict]]]:
    """The conduct families' rows, per family (in name order) a list of prompts, each the list of its rows."""
    out: dict = {}
    for r in rows:
        if family_of(r) in CONDUCT_FAMILIES:
            out.setdefault(family_of(r), {}).setdefault(key(r), []).append(r)
    return [list(f.values()) for _, f in sorted(out.items())]


def statistic_target(name: str, groups: list[list[list[dict]]], statistic, threshold: float, seed: int) -> dict:
    """``statistic(rows) >= threshold`` over the rows of ``groups``, with its interval (prompts drawn whole); None
    where the statistic is undefined (every verifier score alike: no correlation to measure)."""
    value = statistic([r for f in groups for p in f for r in p])
    if value is None:
        return None
    low, high = cluster_interval(groups, statistic, seed=seed)
    return {**target([{"what": name, "value": value, "low": low, "high": high, "op": ">=", "threshold": threshold,
                       "point": "met" if value >= threshold else "not met", "call": call(low, high, ">=", threshold)}]),
            "prompts": sum(len(f) for f in groups)}


def reward_draw(folder: Path, seed: int) -> dict:
    """The reward model's conduct targets with intervals over stage 4's held-out prompts: pairs right (its
    eval_pairs.jsonl, the conduct families' pairs, several to a prompt) and Spearman with the verifier (its
    conduct_samples.jsonl, fresh SFT samples, several to a prompt), each prompt's rows drawn together."""
    from labkit.reward_eval import pairwise_accuracy, spearman

    d = folder / STAGE_DIRS["reward"]
    ev = read_json(d / "eval.json")
    pairs = by_prompt(read_jsonl(d / "eval_pairs.jsonl"), lambda p: p["task"]["family"], lambda p: p["prompt"])
    samples = by_prompt(read_jsonl(d / "conduct_samples.jsonl"), lambda r: r["family"], lambda r: r["task_id"])
    out = {"eval_hash": file_hash(d / "eval.json")}  # the same stage-4 model copied into two runs counts once
    for name, groups, statistic, threshold in (("conduct_accuracy", pairs, pairwise_accuracy, PAIRS_RIGHT),
                                               ("conduct_spearman", samples, spearman, SPEARMAN)):
        got, want = statistic_target(name, groups, statistic, threshold, seed), ev.get(f"reward/{name}")
        value = got["parts"][0]["value"] if got else None  # None: not measured (no conduct samples), no verdict
        if (value is None) != (want is None) or (value is not None and abs(value - want) > 1e-6):
            raise SystemExit(f"{d}: its per-prompt files give {name} {value}, eval.json {want}: "
                             "not the same evaluation")  # the files stage 4 summed, or refuse
        out[name] = got
    return out


def larger_draw(folder: Path, seed: int, per_family: int) -> dict:
    """Part 2: the seed's SFT and PPO models on ``per_family`` fresh held-out prompts of each conduct family."""
    from transformers import AutoTokenizer

    from labkit import world as W
    from labkit.generate import conduct_summary, sample_tasks
    from labkit.ppo_config import stage5_config
    from labkit.ppo_models import load_policy
    from labkit.runs import Run
    from labkit.tokenizer import ensure_chat_ready
    from phrasing import RATES as keys  # family -> the conduct rate stage 5 reports for it

    run = Run.at(folder)
    cfg = stage5_config(run)
    tasks = W.make_tasks(run.world(), per_family * len(CONDUCT_FAMILIES), "eval", LARGE_SEED + seed,
                         CONDUCT_FAMILIES, distinct=True)
    per_prompt = {}
    for stage in ("sft", "ppo"):
        path = folder / STAGE_DIRS[stage] / "model"
        model, tok = load_policy(path), ensure_chat_ready(AutoTokenizer.from_pretrained(str(path)))  # as stage 5
        rows = sample_tasks(model, tok, tasks, k=cfg.eval_samples, temperature=cfg.temperature,
                            max_new_tokens=cfg.max_new_tokens, seed=seed)
        # one row at a time through stage 5's own scoring: the per-prompt rates mean what its totals mean
        per_prompt[stage] = {f: [conduct_summary([r])[keys[f]] for r in rows if r["family"] == f] for f in keys}
    sft, ppo = per_prompt["sft"], per_prompt["ppo"]
    return {"prompts": per_family, "samples": cfg.eval_samples, "temperature": cfg.temperature,
            "rates": {stage: {f: sum(v) / len(v) for f, v in per_prompt[stage].items()} for stage in per_prompt},
            "harmful": rate_target(sft["harmful"], ppo["harmful"], *HARMFUL, seed),
            "unanswerable": rate_target(sft["unanswerable"], ppo["unanswerable"], *NOT_STATED, seed),
            "benign": target([part("after", [ppo["benign"]], "<=", BENIGN, seed)])}


def larger_reward_draw(folder: Path, seed: int, n_prompts: int) -> dict:
    """The reward model's conduct Spearman on ``n_prompts`` fresh held-out conduct prompts (balanced over the
    families), sampled from the seed's SFT model as stage 4 samples them (its config's samples per prompt,
    temperature and length) and scored by the reward model and the verifier."""
    from transformers import AutoTokenizer

    from labkit import world as W
    from labkit.reward_eval import spearman, verifier_samples
    from labkit.reward_model import load_reward_model
    from labkit.runs import Run
    from labkit.tokenizer import ensure_chat_ready

    d = folder / STAGE_DIRS["reward"]
    cfg = read_json(d / "config.json")
    tok = ensure_chat_ready(AutoTokenizer.from_pretrained(str(d / "model")))
    model = load_reward_model(d / "model", tok).eval()
    tasks = W.make_tasks(Run.at(folder).world(), n_prompts, "eval", LARGE_SEED + seed, CONDUCT_FAMILIES,
                         distinct=True)
    rows = verifier_samples(model, tok, folder / STAGE_DIRS["sft"] / "model", tasks, "cpu", cfg["eval_samples"],
                            cfg["verifier_max_new_tokens"], cfg["verifier_temperature"], seed, cfg["score_batch_size"])
    groups = by_prompt(rows, lambda r: r["family"], lambda r: r["task_id"])
    return {"samples": cfg["eval_samples"],
            "conduct_spearman": statistic_target("conduct_spearman", groups, spearman, SPEARMAN, seed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--group", nargs=3, action="append", required=True, metavar=("LABEL", "WORK", "SEEDS"),
                    help="a label, seeds.py's work folder (seed-<n> run folders) and its seeds, e.g. "
                         "'the preset' runs/seeds 0,1,2; repeat for more")
    ap.add_argument("--large", type=int, default=0, help="prompts per conduct family of the larger draw (0: none)")
    ap.add_argument("--large-reward", type=int, default=0,
                    help="conduct prompts of the reward model's larger draw, over the three families (0: none)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/target_noise.json")
    args = ap.parse_args()
    set_threads(args.threads)  # deliberate: sampling the larger draw is the whole cost
    out_path = Path(args.out)
    doc = read_json(out_path, {})
    doc.update(date=datetime.date.today().isoformat(), machine=machine(), commit=commit(), draws=DRAWS, level=LEVEL,
               command="benchmarks/target_noise.py " + " ".join(
                   f'--group "{g[0]}" {g[1]} {g[2]}' for g in args.group) + f" --large {args.large}"
               + (f" --large-reward {args.large_reward}" if args.large_reward else ""))
    doc.setdefault("groups", {})
    for label, work, seeds in args.group:
        group = doc["groups"].setdefault(label, {"work": work, "seeds": {}})
        for s in [int(x) for x in seeds.split(",")]:
            folder = Path(work) / f"seed-{s}"
            if not (folder / STAGE_DIRS["ppo"] / "samples.jsonl").is_file():
                raise SystemExit(f"{folder} has no complete stage 5: "
                                 f"run benchmarks/seeds.py --seeds {s} --to ppo first")
            entry = group["seeds"].get(str(s), {})
            entry.update(development=s in DEV_SEEDS, stage5=stage5_draw(folder, s), reward=reward_draw(folder, s))
            if args.large and entry.get("large", {}).get("prompts") != args.large:
                entry["large"] = larger_draw(folder, s, args.large)
            if args.large_reward and (entry.get("large_reward", {}).get("conduct_spearman") or {}).get(
                    "prompts") != args.large_reward:
                entry["large_reward"] = larger_reward_draw(folder, s, args.large_reward)
            group["seeds"][str(s)] = entry
            atomic_write_json(out_path, doc)  # per seed: an interrupted run keeps the seeds it finished
            print(f"{label} seed {s}: " + "; ".join(
                f"{k} {v['call']}" for part in ("reward", "stage5") for k, v in entry[part].items()
                if isinstance(v, dict) and "call" in v)
                + ("; larger draw: " + "; ".join(f"{k} {entry['large'][k]['call']}"
                                                 for k in CONDUCT_FAMILIES) if "large" in entry else ""), flush=True)


if __name__ == "__main__":
    main()
