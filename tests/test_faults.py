"""Real use, with faults: a person's own files (shipped in data/samples/) through all six stages on the smoke
preset, with the run killed (SIGKILL, the runner and its notebook kernel) in the middle of every stage and the
same command started again each time.

What must hold (the run folder's promises, docs/architecture.md "Run folders"): the killed stage is not
complete; stages completed before it are untouched (their folders hash the same to the end); the next
`labkit run` takes the dead run's lock over with a notice, resumes pretraining and PPO from their checkpoints
and restarts the others; at the end every notebook ran every cell, without the world's verifier, and each
stage reports what can be measured on these files. The cheaper faults (a damaged run.json, deleted outputs,
two writers, a SIGKILLed lock holder) are tested in tests/test_runs.py and tests/test_runner.py.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ran_every_cell
from labkit.runs import STAGE_DIRS, Run, file_hash, read_json, read_jsonl
from labkit.runs import STAGES as ALL_STAGES

# Stages 1-6 take a person's own data; stage 7 measures against the world's verifier, so it needs the world.
STAGES = ALL_STAGES[:ALL_STAGES.index("compare") + 1]

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
# Where each stage is caught in the middle: pretraining and PPO once their first checkpoint exists (so that
# resuming is what the next run can do), stage 3 once its candidates are written, the others once started.
MIDDLE = {"pretrain": "ckpt/state.pt", "sft": "config.json", "preferences": "candidates.jsonl",
          "reward": "config.json", "ppo": "ckpt/state.pt", "compare": "config.json"}


def own_files(tmp_path: Path) -> dict[str, Path]:
    """The formats people bring, one folder per stage: a book; Alpaca, Dolly and chat messages for SFT; bare
    prompts, Alpaca and chats as prompts for stages 3, 5 and 6; hh-rlhf (one-turn and multi-turn) and
    prompt/chosen/rejected pairs for the reward model and DPO."""
    folders = {"sft": ["alpaca_sample.json", "dolly_sample.jsonl", "chat_sample.jsonl"],
               "prompts": ["alpaca_sample.json", "chat_sample.jsonl", "prompts_sample.jsonl"],
               "prefs": ["hh_multiturn_sample.jsonl.gz", "hh_sample.jsonl.gz", "prefs_sample.jsonl"]}
    for folder, names in folders.items():
        (tmp_path / folder).mkdir()
        for name in names:
            shutil.copy(SAMPLES / name, tmp_path / folder / name)
    return {"book": SAMPLES / "english_sample.txt", **{k: tmp_path / k for k in folders}}


def kill_in_the_middle(cmd: list[str], run_dir: Path, stage: str, cwd: Path, log: Path) -> None:
    """Start ``cmd``; once ``stage`` is in the middle, SIGKILL the runner and the notebook kernel writing for it
    (the kernel names itself in the lock's .lock.json)."""
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
    mark = run_dir / STAGE_DIRS[stage] / MIDDLE[stage]
    deadline = time.monotonic() + 600
    while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    kernels = read_json(run_dir / ".lock.json", {}).get("helpers", [])
    for pid in [proc.pid, *kernels]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    assert mark.exists(), f"{stage} never reached {mark}: {log.read_text()[-2000:]}"


@pytest.mark.slow
def test_own_data_through_six_stages_killed_in_the_middle_of_each(tmp_path):
    files = own_files(tmp_path)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "labkit", "run", "--preset", "smoke", "--name", "own", "--runs-dir", str(runs),
           "--stages", ",".join(STAGES), "-p", f"data={files['book']}", "-p", "sft.data=sft",
           "-p", "preferences.prompts=prompts", "-p", "reward.data=prefs", "-p", "ppo.prompts=prompts",
           "-p", "ppo.ptx_coef=0"]  # relative folders: labkit resolves them where the command runs
    run_dir, log = runs / "own", tmp_path / "labkit.log"
    done: dict[str, str] = {}
    for stage in STAGES:
        kill_in_the_middle(cmd, run_dir, stage, tmp_path, log)
        run = Run("own", runs)
        assert not run.is_complete(stage), f"{stage} finished before it was killed"
        for earlier, digest in done.items():
            assert run.is_complete(earlier) and file_hash(run_dir / STAGE_DIRS[earlier]) == digest, earlier
        done = {s: file_hash(run_dir / STAGE_DIRS[s]) for s in STAGES if run.is_complete(s)}
        assert list(done) == list(STAGES[:STAGES.index(stage)])

    final = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    assert "which is no longer running; taking the lock over" in final.stderr  # the last kill left the lock
    assert "Traceback" not in final.stdout + final.stderr
    run = Run("own", runs)
    for stage in STAGES:
        assert run.is_complete(stage), stage
        ran_every_cell(run_dir, stage)
    for earlier, digest in done.items():
        assert file_hash(run_dir / STAGE_DIRS[earlier]) == digest, earlier
    assert not list((run_dir / "notebooks").glob(".*")) and not (run_dir / ".lock.json").exists()

    # Pretraining and PPO went on from their checkpoints; the others started over.
    ev = {s: read_json(run_dir / STAGE_DIRS[s] / "eval.json") for s in STAGES}
    assert ev["pretrain"]["resumed_from"] == 15 and ev["ppo"]["resumed_from"] == 2
    sft_cfg = read_json(run_dir / "02_sft" / "config.json")
    first = read_jsonl(run_dir / "02_sft" / "metrics.jsonl")[0]["step"]  # the metrics start over with the stage
    assert first == sft_cfg.get("log_interval", sft_cfg.get("logging_steps"))

    # Pretraining read the book, not the world: its tokens, and a model better than a uniform guess over them.
    data = read_json(run_dir / "01_pretrain" / "data.json")
    assert data["corpus"] != "world" and data["train_tokens"] > 0 and data["val_tokens"] > 0
    assert 1 < ev["pretrain"]["pretrain/val_ppl"] < ev["pretrain"]["vocab_size"]

    # What each stage measured on these files, with no verifier.
    assert ev["sft"]["data_report"].count("loaded") == 1 and "chat" in ev["sft"]["data_report"]
    assert ev["preferences"]["preferences/chosen_correct"] is None and ev["preferences"]["preferences/pairs"] >= 1
    assert ev["reward"]["reward/eval_accuracy"] is not None and ev["reward"]["reward/pairs_truncated"] > 0
    assert ev["reward"]["verifier_check"].startswith("skipped: no verifier")
    assert "hh_rlhf" in ev["reward"]["data"] and "prompt_chosen_rejected" in ev["reward"]["data"]
    assert ev["ppo"]["ppo/true_score_before"] is None and ev["ppo"]["before"].get("harmful_refused") is None
    for key in ("rm_score_before", "rm_score_after", "kl_after", "length_before", "length_after", "judge_win_rate"):
        assert ev["ppo"][f"ppo/{key}"] is not None, key
    judge = ev["ppo"]["judge"]
    assert judge["n"] == ev["ppo"]["eval_prompts"] and judge["low"] <= judge["win_rate"] <= judge["high"]
    methods = {m["method"]: m for m in ev["compare"]["methods"]}
    assert set(methods) == {"sft", "best_of_n", "dpo", "rloo", "ppo"} and "rloo_verifier" in ev["compare"]["not_run"]
    assert all(methods[m]["judge_win_rate"] is not None for m in ("best_of_n", "dpo", "rloo", "ppo"))
    samples = read_jsonl(run_dir / "05_ppo" / "samples.jsonl")
    assert samples and all({"prompt", "before", "after"} <= set(s) for s in samples)  # side by side
    report = (run_dir / "report.html").read_text()
    assert "Not measured: conduct rates and task accuracy" in report
    assert json.loads((run_dir / "run.json").read_text())["preset"] == "smoke"
