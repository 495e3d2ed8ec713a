"""Where stage 1's time goes: notebook 01 run as ``labkit run`` runs it, split into its parts.

    python benchmarks/pretrain_profile.py                        # the cpu preset
    python benchmarks/pretrain_profile.py -p max_steps=100       # any stage parameter, as labkit run takes it

Runs ``labkit run --stages pretrain`` into a temporary runs folder and splits its wall time:

* the command outside the notebook (imports, config checks, the report) and papermill with kernel
  start-up (the notebook's time outside its cells);
* every code cell of the notebook (papermill's per-cell durations), named by its first line;
* inside ``pretrain.run``'s cell: corpus generation, tokenizer training, training steps, evaluation
  passes, checkpoints, samples, saving the model (``eval.json``'s ``timings``), and the rest of it.

The machine's float32 matmul peak is measured before and after at the stage's thread count, so the
seconds can be read against the machine. Writes ``benchmarks/results/pretrain_profile.json``;
``benchmarks/results_tables.py`` turns it into a table in docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import torch

from labkit.config import set_threads
from labkit.models import cpu_model, matmul_gflops
from labkit.runs import NOTEBOOKS, Run, read_json

RESULTS = Path(__file__).parent / "results"


def cell_name(source: str) -> str:
    """A code cell's first line that is not a comment, cut to 60 characters."""
    lines = [ln.strip() for ln in source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return (lines[0][:57] + "...") if lines and len(lines[0]) > 60 else (lines[0] if lines else "(empty)")


def profile(preset: str, params: list[str], runs_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "labkit", "run", "--stages", "pretrain", "--preset", preset, "--name", "profile",
           "--runs-dir", str(runs_dir), *[a for p in params for a in ("-p", p)]]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    command_s = time.perf_counter() - t
    run = Run("profile", runs_dir)
    notebook_s = run.manifest()["stages"]["pretrain"]["notebook_seconds"]
    nb = nbformat.read(run.path / "notebooks" / NOTEBOOKS["pretrain"], as_version=4)
    cells = [(cell_name(c.source), c.metadata["papermill"]["duration"]) for c in nb.cells
             if c.cell_type == "code" and c.metadata.get("papermill", {}).get("duration") is not None]
    ev = read_json(run.stage_dir("pretrain") / "eval.json")
    return {"command_seconds": command_s, "notebook_seconds": notebook_s, "cells": cells,
            "run_parts": ev["timings"], "run_seconds": ev["pretrain/seconds"],
            "threads": ev["pretrain/threads"], "steps": ev["pretrain/steps"], "tokens_per_s": ev["pretrain/tokens_per_s"],
            "val_ppl": ev["pretrain/val_ppl"]}


def table(p: dict) -> list[tuple[str, float]]:
    """(part, seconds) rows that add up to the command's wall time."""
    cells = sum(s for _, s in p["cells"])
    rows = [("labkit run outside the notebook (imports, checks, report)", p["command_seconds"] - p["notebook_seconds"]),
            ("papermill and kernel start-up (notebook time outside its cells)", p["notebook_seconds"] - cells)]
    for name, s in p["cells"]:
        if name.startswith("result = pretrain.run("):
            rows += [(f"pretrain.run: {part}", sec) for part, sec in p["run_parts"].items()]
            rows.append(("pretrain.run: the rest (model build, run folder, logging)",
                         p["run_seconds"] - sum(p["run_parts"].values())))
            rows.append(("pretrain.run cell outside pretrain.run", s - p["run_seconds"]))
        else:
            rows.append((f"cell: {name}", s))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("-p", "--param", action="append", default=[], help="key=value, passed to labkit run")
    ap.add_argument("--out", default=str(RESULTS / "pretrain_profile.json"))
    args = ap.parse_args()
    threads = set_threads(int(os.environ.get("LABKIT_THREADS", "0")) or None)  # the stage's own default
    peak_before = matmul_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        p = profile(args.preset, args.param, Path(tmp))
    peak_after = matmul_gflops()
    rows = table(p)
    total = p["command_seconds"]
    out = {"command": " ".join(["python benchmarks/pretrain_profile.py", *(["--preset", args.preset] if args.preset != "cpu"
                                                                         else []), *[f"-p {p}" for p in args.param]]),
           "preset": args.preset, "params": args.param, "threads": p["threads"], "torch": torch.__version__,
           "cpu": cpu_model(), "cpus": len(os.sched_getaffinity(0)), "date": time.strftime("%Y-%m-%d"),
           "matmul_peak_gflops_before_after": [round(peak_before, 1), round(peak_after, 1)],
           "matmul_threads": threads, "load_average_1m_after": round(os.getloadavg()[0], 2),
           "total_seconds": round(total, 1), "steps": p["steps"], "tokens_per_s_median": round(p["tokens_per_s"]),
           "val_ppl": round(p["val_ppl"], 3),
           "rows": [{"part": k, "seconds": round(s, 2), "share": round(s / total, 4)} for k, s in rows]}
    print(json.dumps(out, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")

if __name__ == "__main__":
    main()
