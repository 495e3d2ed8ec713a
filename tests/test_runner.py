"""The runner: parameter checking, and the notebooks end to end through papermill on the smoke preset."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import runner
from labkit.config import ConfigError
from labkit.runs import Run

ROOT = Path(__file__).resolve().parent.parent


def test_unknown_parameter_is_rejected_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown parameter 'max_step'.*did you mean 'max_steps'"):
        runner.run_pipeline("x", "smoke", ["pretrain"], {"max_step": "3"}, runs_dir=tmp_path)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="not selected"):
        runner.split_params({"sft.max_steps": "3"}, ["pretrain"])


def test_params_route_to_the_stages_that_have_them():
    per = runner.split_params({"seed": "1", "sft.max_steps": "5", "vocab_size": "600"}, ["pretrain", "sft"])
    assert per["pretrain"] == {"seed": "1", "vocab_size": "600"}
    assert per["sft"] == {"seed": "1", "max_steps": "5"}


def test_cli_unknown_parameter_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "labkit.runner", "run", "--stages", "pretrain", "--runs-dir",
                        str(tmp_path), "-p", "lerning_rate=1"], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "did you mean 'learning_rate'" in p.stderr


def test_pipeline_runs_every_notebook_on_smoke_and_skips_completed(tmp_path):
    logs = []
    path = runner.run_pipeline("e2e", "smoke", None, {}, runs_dir=tmp_path, log=logs.append)
    run = Run("e2e", tmp_path)
    for stage in runner.available_stages():
        assert run.is_complete(stage), stage
        assert (path / "notebooks" / runner.NOTEBOOKS[stage]).exists()
    report = (path / "report.html").read_text()
    for d in ("01_pretrain", "02_sft", "03_preferences", "04_reward", "05_ppo"):
        assert d in report
    m = json.loads((path / "run.json").read_text())
    assert m["preset"] == "smoke" and m["versions"]["torch"]
    logs.clear()
    runner.run_pipeline("e2e", "smoke", ["pretrain"], {}, runs_dir=tmp_path, log=logs.append)
    assert any("skipping" in line for line in logs)


def test_cli_pretrains_on_real_english_text(tmp_path):
    txt = ROOT / "data" / "samples" / "english_sample.txt"
    p = subprocess.run([sys.executable, "-m", "labkit.runner", "run", "--stages", "pretrain", "--preset", "smoke",
                        "--runs-dir", str(tmp_path), "--name", "eng", "-p", f"data={txt}"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    ev = json.loads((tmp_path / "eng/01_pretrain/eval.json").read_text())
    assert 1 < ev["pretrain/val_ppl"] < float("inf")


def test_cli_missing_file_fails_in_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "labkit.runner", "run", "--stages", "pretrain", "--preset", "smoke",
                        "--runs-dir", str(tmp_path), "-p", f"data={tmp_path / 'nope.txt'}"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("labkit: error:") and "nope.txt" in last
