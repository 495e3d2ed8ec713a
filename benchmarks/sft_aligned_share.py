"""What SFT's share of aligned conduct demonstrations does, measured: one SFT run per share.

    .venv/bin/python benchmarks/sft_aligned_share.py --base runs/demo --shares 0,0.333,1
    .venv/bin/python benchmarks/sft_aligned_share.py --base runs/seeds/seed-1 --seed 1 --shares 1 --out s1.json

Each share gets its own run folder under ``--work`` (stage 1 copied from ``--base``, then stage 2
with ``aligned_share=<share>``, ``seed=--seed`` and the preset's other settings; ``--base`` should
have run stage 1 with the same seed); a share whose folder already holds
a finished stage 2 is read, not re-run. Writes one JSON (``--out``) with, per share, the SFT model's
conduct rates on held-out prompts: sampled at temperature 1, greedy, pass@8, over-refusal and task
accuracy -- what notebook 02 shows as "what the share does". About 5 minutes per share on 2 cores.
"""
import argparse
import json
import platform
import shutil
import time
from pathlib import Path

from labkit import runner
from labkit.runs import Run, read_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="a run folder with stage 1 (pretrain) complete")
    ap.add_argument("--shares", default="0,0.333,1")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="SFT's seed (init, data order, which demonstrations are aligned)")
    ap.add_argument("--work", default="runs/aligned_share")
    ap.add_argument("--out", default="benchmarks/results/sft_aligned_share.json")
    args = ap.parse_args()
    base, work = Path(args.base), Path(args.work)
    rows = []
    for share in (float(s) for s in args.shares.split(",")):
        folder = work / (f"share-{share:g}" + (f"-seed-{args.seed}" if args.seed else ""))
        if not Run(folder.name, work).is_complete("sft"):
            if not (folder / "01_pretrain").exists():  # Run() above may have made the folder
                shutil.copytree(base / "01_pretrain", folder / "01_pretrain")
                shutil.copy(base / "run.json", folder / "run.json")
            runner.train_stage("sft", folder, args.preset, {"aligned_share": share, "seed": args.seed, "threads": args.threads})
        ev = read_json(folder / "02_sft" / "eval.json")
        rows.append({"aligned_share": share, "task_accuracy": ev.get("sft/task_accuracy"),
                     "over_refusal": ev.get("sft/over_refusal"), "conduct": ev.get("conduct"),
                     "seconds": ev.get("sft/seconds")})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "conduct"}))
    out = {"preset": args.preset, "seed": args.seed, "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
           "threads": args.threads, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
