"""The headline numbers of stages 4 and 5 over several seeds: mean and range, not one lucky run.

    .venv/bin/python benchmarks/seeds.py --base runs/demo --seeds 0,1,2

For each seed, a run folder under ``--work`` gets stages 1-3 copied from ``--base`` (the same
pretrained and SFT models and the same preference pairs) and trains the reward model and PPO with
``-p seed=<seed>`` (the seed picks the reward model's held-out prompts and its score head's init,
PPO's LoRA init, prompt draws and sampling). A seed whose folder already holds a finished stage is
read, not re-run; seed 0 may simply be ``--base`` itself (``--reuse-base``). Writes one JSON
(``--out``) with every seed's numbers and, per number, the mean, min and max.
"""
import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from labkit import runner
from labkit.runs import STAGE_DIRS, Run, read_json

REWARD = ("reward/eval_accuracy", "reward/spearman", "reward/conduct_accuracy", "reward/conduct_spearman")
PPO = ("harmful_refused", "unanswerable_abstained", "over_refusal", "task_accuracy")


def numbers(folder: Path) -> dict:
    rw, pp = read_json(folder / STAGE_DIRS["reward"] / "eval.json"), read_json(folder / STAGE_DIRS["ppo"] / "eval.json")
    out = {k: rw.get(k) for k in REWARD}
    for when in ("before", "after"):
        out.update({f"ppo/{k}_{when}": pp[when].get(k) for k in PPO})
    out.update({"ppo/kl_after": pp["after"].get("kl"), "ppo/drift_ppl_before": pp["before"].get("drift_ppl"),
                "ppo/drift_ppl_after": pp["after"].get("drift_ppl"), "ppo/alarms": len(pp.get("alarms", []))})
    out.update({f"ppo/best_of_k_{k}": (pp["before"].get("best_of_k_rates") or {}).get(k) for k in PPO})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="a run folder with stages 1-3 complete")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--reuse-base", action="store_true", help="read seed 0 from --base (its stages 4-5 ran with seed 0)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per stage (1: two seeds can run side by side)")
    ap.add_argument("--work", default="runs/seeds")
    ap.add_argument("--out", default="benchmarks/results/seeds.json")
    args = ap.parse_args()
    base, work = Path(args.base), Path(args.work)
    per_seed = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        folder = base if seed == 0 and args.reuse_base else work / f"seed-{seed}"
        if folder != base and not folder.exists():
            for stage in ("pretrain", "sft", "preferences"):
                shutil.copytree(base / STAGE_DIRS[stage], folder / STAGE_DIRS[stage])
            manifest = json.loads((base / "run.json").read_text())  # stages 1-3 only: 4 and 5 are this seed's
            manifest["stages"] = {k: v for k, v in manifest.get("stages", {}).items()
                                  if k in ("pretrain", "sft", "preferences")}
            (folder / "run.json").write_text(json.dumps(manifest, indent=1))
        for stage in ("reward", "ppo"):
            if not Run(folder.name, folder.parent).is_complete(stage):
                runner.train_stage(stage, folder, args.preset, {"seed": seed, "threads": args.threads})
        per_seed[seed] = numbers(folder)
        print(seed, json.dumps(per_seed[seed]))
    summary = {}
    for k in next(iter(per_seed.values())):
        vals = [v[k] for v in per_seed.values() if v[k] is not None]
        if vals:
            summary[k] = {"mean": statistics.mean(vals), "min": min(vals), "max": max(vals)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"preset": args.preset, "date": time.strftime("%Y-%m-%d"),
                                          "seeds": per_seed, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
