"""PPO under data parallelism: two CPU processes (torchrun, gloo) run the same stage code as a notebook.

``torchrun --standalone --nproc_per_node 2`` starts two processes (``accelerate
launch --cpu`` silently starts one on a machine without MPI, DESIGN.md);
accelerate wraps policy + critic in DDP, each process draws its own prompts,
and the stage records ``world_size`` and whether the processes' weights stayed
identical.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from labkit import pretrain
from labkit.runs import Run, read_json, read_jsonl

REPO = Path(__file__).resolve().parent.parent


def _standins(runs: Path) -> Run:
    """Pretrain (smoke) standing in for SFT, plus a reward model with a random head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    torch.set_num_threads(1)
    r = Run("ddp", runs)
    pretrain.run(pretrain.config("smoke", threads=1), run="ddp", runs_dir=str(runs), progress_bar=False, live=False)
    src = r.path / "01_pretrain" / "model"
    shutil.copytree(src, r.stage_dir("sft") / "model")
    r.complete("sft", 0.0, {})
    tok = AutoTokenizer.from_pretrained(str(src))
    rm = AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(r.stage_dir("reward") / "model")
    tok.save_pretrained(r.stage_dir("reward") / "model")
    r.complete("reward", 0.0, {})
    return r


def test_two_process_data_parallel_run(tmp_path):
    r = _standins(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # "--" ends torchrun's own options: its parser would take "--run" for an abbreviation of "--run-path".
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "labkit.runner", "--", "train", "ppo", "--run", str(r.path), "--preset", "smoke"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("'world_size': 2") == 2  # both ranks returned the result
    ev = read_json(r.path / "05_ppo" / "eval.json")
    assert ev["world_size"] == 2 and ev["ranks_in_sync"] and ev["ppo/steps"] == 4
    assert [m["step"] for m in read_jsonl(r.path / "05_ppo" / "metrics.jsonl")] == [1, 2, 3, 4]
    assert len(read_jsonl(r.path / "05_ppo" / "samples.jsonl")) == ev["eval_prompts"]  # gathered from both ranks
    assert Run("ddp", tmp_path).is_complete("ppo")
