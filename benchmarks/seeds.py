"""The headline numbers over several seeds: mean and range, not one lucky run.

    .venv/bin/python benchmarks/seeds.py --base runs/demo --seeds 0,1,2 --reuse-base            # every stage
    .venv/bin/python benchmarks/seeds.py --base runs/demo --seeds 0,1,2 --reuse-base --from reward  # stages 4-5
    .venv/bin/python benchmarks/seeds.py --base runs/demo --seeds 1 --to preferences --out s1.json  # stages 1-3

For each seed, a run folder under ``--work`` trains the stages from ``--from`` on with ``-p seed=<seed>``
(pretraining: init and data order; SFT: init, data order, which conduct demonstrations are aligned and
its held-out tasks; preferences: prompts and samples; reward: held-out split and score-head init; PPO:
LoRA init, prompt draws, sampling and its held-out prompts). The stages before ``--from`` are copied from
``--base``. A seed whose folder already holds a finished stage is read, not re-run; seed 0 may simply be
``--base`` itself (``--reuse-base``). Writes one JSON (``--out``) with every seed's numbers and, per number,
the mean, min and max. Two seeds side by side with ``--threads 1`` keep the 2-core box busy, not oversubscribed.
"""
import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from labkit import runner
from labkit.runs import STAGE_DIRS, Run, read_json

PIPELINE = ("pretrain", "sft", "preferences", "reward", "ppo")
REWARD = ("reward/eval_accuracy", "reward/spearman", "reward/conduct_accuracy", "reward/conduct_spearman")
PPO = ("harmful_refused", "unanswerable_abstained", "over_refusal", "task_accuracy")


def numbers(folder: Path) -> dict:
    """One seed's headline numbers, from its run folder (None where a stage is missing)."""
    ev = {s: read_json(folder / STAGE_DIRS[s] / "eval.json", {}) for s in PIPELINE}
    out = {"pretrain/val_ppl": ev["pretrain"].get("pretrain/val_ppl"),
           **{k: ev["sft"].get(k) for k in ("sft/task_accuracy", "sft/harmful_refused", "sft/unanswerable_abstained",
                                            "sft/over_refusal")},
           "preferences/pairs": ev["preferences"].get("preferences/pairs")}
    out.update({k: ev["reward"].get(k) for k in REWARD})
    pp = ev["ppo"]
    for when in ("before", "after"):
        out.update({f"ppo/{k}_{when}": pp.get(when, {}).get(k) for k in PPO})
    out.update({"ppo/kl_after": pp.get("after", {}).get("kl"), "ppo/drift_ppl_before": pp.get("before", {}).get("drift_ppl"),
                "ppo/drift_ppl_after": pp.get("after", {}).get("drift_ppl"), "ppo/alarms": len(pp.get("alarms", []))})
    out.update({f"ppo/best_of_k_{k}": (pp.get("before", {}).get("best_of_k_rates") or {}).get(k) for k in PPO})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="a run folder with the stages before --from complete")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--from", dest="first", default="pretrain", choices=PIPELINE, help="first stage each seed trains")
    ap.add_argument("--to", dest="last", default="ppo", choices=PIPELINE, help="last stage each seed trains")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--reuse-base", action="store_true", help="read seed 0 from --base (it ran with seed 0)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per stage (1: two seeds can run side by side)")
    ap.add_argument("--work", default="runs/seeds")
    ap.add_argument("--out", default="benchmarks/results/seeds.json")
    args = ap.parse_args()
    base, work = Path(args.base), Path(args.work)
    kept = PIPELINE[:PIPELINE.index(args.first)]
    trained = PIPELINE[PIPELINE.index(args.first):PIPELINE.index(args.last) + 1]
    per_seed = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        folder = base if seed == 0 and args.reuse_base else work / f"seed-{seed}"
        if folder != base and not folder.exists():
            folder.mkdir(parents=True)
            for stage in kept:
                shutil.copytree(base / STAGE_DIRS[stage], folder / STAGE_DIRS[stage])
            manifest = json.loads((base / "run.json").read_text())  # the copied stages only
            manifest["stages"] = {k: v for k, v in manifest.get("stages", {}).items() if k in kept}
            (folder / "run.json").write_text(json.dumps(manifest, indent=1))
        for stage in trained:
            if not Run(folder.name, folder.parent).is_complete(stage):
                runner.train_stage(stage, folder, args.preset, {"seed": seed, "threads": args.threads})
        per_seed[seed] = numbers(folder)
        print(seed, json.dumps(per_seed[seed]), flush=True)
    summary = {}
    for k in next(iter(per_seed.values())):
        vals = [v[k] for v in per_seed.values() if v[k] is not None]
        if vals:
            summary[k] = {"mean": statistics.mean(vals), "min": min(vals), "max": max(vals)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"preset": args.preset, "date": time.strftime("%Y-%m-%d"), "from": args.first,
                                          "seeds": per_seed, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
