"""PPO under data parallelism: two CPU processes (torchrun, gloo) run the same stage code as a notebook.

``torchrun --standalone --nproc_per_node 2`` starts two processes (``accelerate
launch --cpu`` silently starts one on a machine without MPI; docs/architecture.md,
"Memory planner and scaling");
accelerate wraps policy + critic in DDP, each process draws its own prompts,
and the stage records ``world_size`` and whether the processes' weights stayed
identical.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from labkit.runs import Run, read_json, read_jsonl

REPO = Path(__file__).resolve().parent.parent


def test_two_process_data_parallel_run(ppo_standins, tmp_path):
    shutil.copytree(ppo_standins.path, tmp_path / "ddp")
    r = Run("ddp", tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # "--" ends torchrun's own options, so none of ours is read as one of its.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "labkit.runner", "--", "train", "ppo", "--name", r.name, "--runs-dir", str(r.path.parent), "--preset", "smoke"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("'world_size': 2") == 2  # both ranks returned the result
    ev = read_json(r.path / "05_ppo" / "eval.json")
    assert ev["world_size"] == 2 and ev["ranks_in_sync"] and ev["ppo/steps"] == 4
    assert [m["step"] for m in read_jsonl(r.path / "05_ppo" / "metrics.jsonl")] == [1, 2, 3, 4]
    assert len(read_jsonl(r.path / "05_ppo" / "samples.jsonl")) == ev["eval_prompts"]  # gathered from both ranks
    assert Run("ddp", tmp_path).is_complete("ppo")
