"""Pretraining under data parallelism: two CPU processes (gloo) train exactly what one process does.

``accelerate launch`` with configs/accelerate/cpu_2proc.yaml and ACCELERATE_USE_CPU=true
starts two processes that see world size 2 (``accelerate launch --cpu`` starts one on a
machine without MPI; docs/architecture.md, "Memory planner and scaling"). ``batch_size``
is the global micro-batch: each process draws the same windows and keeps its half, DDP
averages the gradients, so the logged losses (averaged over the processes) match a
single-process run with the same ``batch_size``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import pretrain
from labkit.runs import Run, read_json, read_jsonl

REPO = Path(__file__).resolve().parent.parent
# 6 steps of 2 micro-batches of 8 sequences (4 per process): the gradient-accumulation path
# (no all-reduce before the last micro-batch) and the plain one are both exercised.
PARAMS = dict(batch_size=8, grad_accum_steps=2, max_steps=6, log_interval=1, eval_interval=6,
              checkpoint_interval=100, threads=1)


def _launch_two_processes(run_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs/accelerate/cpu_2proc.yaml"), "-m", "labkit.runner", "train", "pretrain",
           "--name", run_dir.name, "--runs-dir", str(run_dir.parent), "--preset", "smoke", *[a for k, v in PARAMS.items() for a in ("-p", f"{k}={v}")]]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


def test_two_processes_match_one(tmp_path):
    runs = tmp_path / "runs"
    proc = _launch_two_processes(runs / "ddp")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("'world_size': 2") == 2  # both ranks ran and returned rank 0's result

    single = pretrain.run(pretrain.config("smoke", **PARAMS), run="single", runs_dir=str(runs), progress_bar=False)
    assert single["world_size"] == 1

    ddp, one = runs / "ddp/01_pretrain", runs / "single/01_pretrain"
    assert read_json(ddp / "eval.json")["world_size"] == 2
    rows_ddp, rows_one = read_jsonl(ddp / "metrics.jsonl"), read_jsonl(one / "metrics.jsonl")
    assert [m["step"] for m in rows_ddp] == [1, 2, 3, 4, 5, 6]  # written once, by rank 0
    loss_ddp = [m["pretrain/loss"] for m in rows_ddp]
    loss_one = [m["pretrain/loss"] for m in rows_one]
    assert loss_ddp == pytest.approx(loss_one, rel=1e-4)
    assert loss_ddp[-1] < loss_ddp[0]  # and it trains
    assert read_json(ddp / "eval.json")["pretrain/val_loss"] == pytest.approx(single["pretrain/val_loss"], rel=1e-4)
    assert read_json(ddp / "eval.json")["pretrain/tokens"] == single["pretrain/tokens"] == 6 * 2 * 8 * 128
    # one tokenizer for every process, the same one a single process trains
    vocab = [json.loads((d / "tokenizer/tokenizer.json").read_text())["model"]["vocab"] for d in (ddp, one)]
    assert vocab[0] == vocab[1]
    assert read_json(ddp / "config.json")["batch_size"] == 8
    assert Run("ddp", runs).is_complete("pretrain")
    assert not list(ddp.parent.glob("**/*.tmp"))  # no half-written files from a second writer
