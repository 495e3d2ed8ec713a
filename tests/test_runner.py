"""The runner: parameter checking, and the notebooks end to end through papermill on the smoke preset
(one run shared by the tests below): live progress, the scorecard, skipping, Ctrl-C and resuming, status.

This is the one place the suite executes the notebooks: the smoke pipeline runs all seven, and
test_smoke_run_completes_every_stage checks what nbval used to check by running them a second time
(every code cell of each committed notebook ran, and none raised)."""
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit import runner
from labkit.config import ConfigError
from labkit.runs import DEFAULT_STAGES, STAGES, Run, atomic_write_json

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


def smoke_pipeline(tmp_path_factory) -> tuple[Path, str]:
    """``python -m labkit run --preset smoke`` over every stage (compare and trust included, which the default
    leaves out), with its output in a file (not a terminal), once per session.

    Returns the run folder and the output. tests/test_browser.py opens the same run's report: the
    folder is under the session's base temp folder, so whichever module comes first runs it.
    """
    runs = tmp_path_factory.getbasetemp() / "smoke_pipeline"
    log = runs / "labkit.log"
    if not log.exists():
        runs.mkdir(exist_ok=True)
        with open(runs / "partial.log", "w") as out:
            p = subprocess.run([sys.executable, "-m", "labkit", "run", "--preset", "smoke", "--name", "smoke",
                                "--stages", ",".join(STAGES), "--runs-dir", str(runs)],
                               stdout=out, stderr=subprocess.STDOUT, cwd=runs)
        assert p.returncode == 0, (runs / "partial.log").read_text()[-3000:]
        (runs / "partial.log").rename(log)
    return runs / "smoke", log.read_text()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke pipeline (about 2.5 minutes on 2 cores): the tests that use it are marked slow."""
    return smoke_pipeline(tmp_path_factory)


@pytest.mark.slow
def test_smoke_run_completes_every_stage(smoke):
    import nbformat
    path, _ = smoke
    run = Run.at(path)
    for stage in STAGES:
        assert run.is_complete(stage), stage
        nb = path / "notebooks" / runner.NOTEBOOKS[stage]
        # No plotly.js in the executed notebooks (no live-chart widget state, no "+notebook" renderer).
        assert nb.exists() and nb.stat().st_size < 1_000_000, nb
        assert nb.with_suffix(".html").exists()
        # nbval's check: every cell of the committed notebook ran (papermill adds one, the injected
        # parameters), in order, and no output is an error.
        committed = nbformat.read(runner.NOTEBOOK_DIR / runner.NOTEBOOKS[stage], as_version=4)
        cells = [c for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code"]
        assert len(cells) == 1 + sum(c.cell_type == "code" for c in committed.cells), stage
        assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), stage
        assert not [o for c in cells for o in c.outputs if o.output_type == "error"], stage
    assert not list((path / "notebooks").glob(".*"))  # no partial notebook left behind
    m = json.loads((path / "run.json").read_text())
    assert m["preset"] == "smoke" and m["versions"]["torch"]
    assert m["stages"]["pretrain"]["requested"]["max_steps"] == 30 and m["stages"]["sft"]["notebook_seconds"] > 0


def test_the_default_is_stages_1_to_5_and_compare_and_trust_run_when_named(tmp_path, monkeypatch):
    """`labkit run` without --stages runs the pipeline (runs.DEFAULT_STAGES); the comparison (stage 6) and trust
    (stage 7) have a notebook like the others but run only when asked for, after PPO."""
    from labkit import report
    ran = []

    def fake_stage(run, stage, parameters, line):
        ran.append(stage)
        run.complete(stage, 0.0, {})
    monkeypatch.setattr(runner, "execute_stage", fake_stage)
    monkeypatch.setattr(report, "write_report", lambda run: str(run.path / "report.html"))
    for opt_in in ("compare", "trust"):
        assert opt_in in runner.available_stages() and opt_in not in DEFAULT_STAGES
    assert list(DEFAULT_STAGES) == [s for s in STAGES if s not in ("compare", "trust")] and STAGES[-2:] == ("compare", "trust")
    runner.run_pipeline("d", "smoke", None, runs_dir=tmp_path, log=lambda *a: None)
    assert ran == list(DEFAULT_STAGES)
    runner.run_pipeline("d", "smoke", ["trust", "compare"], runs_dir=tmp_path, log=lambda *a: None)
    assert ran == list(DEFAULT_STAGES) + ["compare", "trust"]


@pytest.mark.slow
def test_smoke_log_shows_progress_without_kernel_noise(smoke):
    _, log = smoke
    assert re.search(r"^\[labkit\] pretrain: \d+/30  loss \d", log, re.M), log
    assert re.search(r"^\[labkit\] ppo: \d/4  rm_score ", log, re.M), log
    for stage in DEFAULT_STAGES:
        assert re.search(rf"^\[labkit\] {stage}: done in \d", log, re.M), stage
    assert "\r" not in log  # plain lines in a file
    for noise in ("without encryption", "eavesdropping", "Unable to parse", "Traceback"):
        assert noise not in log


@pytest.mark.slow
def test_smoke_log_ends_with_the_scorecard(smoke):
    path, log = smoke
    card = log[log.index("stage "):]
    assert [line.split()[0] for line in card.splitlines()[1:] if line[:1].isalpha()] == list(STAGES)
    assert re.search(r"^pretrain +\d\S* +val_ppl +[\d.]+ +< unigram_ppl \([\d.]+\) +(met|not met)$", card, re.M)
    assert log.rstrip().endswith(f"· report: {path / 'report.html'}")
    assert re.search(r"^\[labkit\] total time \d+(s|m\d\ds|h\d\dm) · ", log, re.M)  # live.format_seconds' forms


@pytest.mark.slow
def test_complete_stages_are_skipped_only_with_the_same_config(smoke):
    path, _ = smoke
    logs = []
    runner.run_pipeline("smoke", "smoke", ["pretrain"], {}, runs_dir=path.parent, log=logs.append)
    assert any("already complete" in line and "skipping" in line for line in logs)
    before = (path / "run.json").read_bytes()
    with pytest.raises(ConfigError, match=r"already completed pretrain \(max_steps 30 -> 3\).*--force.*--name"):
        runner.run_pipeline("smoke", "smoke", ["pretrain"], {"max_steps": "3"}, runs_dir=path.parent)
    assert (path / "run.json").read_bytes() == before


def test_status_says_what_the_run_holds_and_what_runs_next(tmp_path):
    r = Run("half", tmp_path)
    r.update_manifest(preset="smoke")
    r.complete("pretrain", 65.0, {"pretrain/val_ppl": 2.53, "pretrain/unigram_ppl": 172.7})
    atomic_write_json(r.stage_dir("sft") / "config.json", {"max_steps": 8})  # started, then interrupted
    p = subprocess.run([sys.executable, "-m", "labkit", "status", "--name", "half", "--runs-dir", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert re.match(r" +pretrain +complete +1m05s +val_ppl 2\.53 +unigram_ppl 172\.7$", lines[1])
    assert "sft" in lines[2] and "the next run resumes it" in lines[2]
    assert lines[-1] == (f"next: labkit run --name half --preset smoke --runs-dir {tmp_path} "
                         f"--stages {','.join(runner.available_stages()[1:])}")
    missing = subprocess.run([sys.executable, "-m", "labkit", "status", "--name", "nope", "--runs-dir",
                              str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(smoke, tmp_path):
    """Interrupt pretraining after its checkpoint: one line, no notebook; then the rest of the steps
    (from the checkpoint), and the numbers of the uninterrupted smoke run."""
    cmd = [sys.executable, "-m", "labkit", "run", "--stages", "pretrain", "--preset", "smoke", "--name", "cut",
           "--runs-dir", str(tmp_path)]
    # Started with SIGINT ignored, as a child of a process that ignores it inherits: one Ctrl-C must still stop it.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    ckpt = tmp_path / "cut" / "01_pretrain" / "ckpt"
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert re.fullmatch(r"labkit: interrupted during stage pretrain(?: at step \d+/30)?; completed stages are kept, "
                        r"and `labkit run --stages pretrain --preset smoke --name cut --runs-dir \S+` resumes it\n",
                        err), err
    assert not Run("cut", tmp_path).is_complete("pretrain")
    assert list((tmp_path / "cut" / "notebooks").iterdir()) == []  # nothing half-written

    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    first = int(re.search(r"^\[labkit\] pretrain: (\d+)/30", again.stdout, re.M).group(1))
    assert first >= 15  # it went on from the checkpoint of step 15
    done = json.loads((tmp_path / "cut" / "run.json").read_text())["stages"]["pretrain"]["headline"]
    full = json.loads((smoke[0] / "run.json").read_text())["stages"]["pretrain"]["headline"]
    assert done["pretrain/val_ppl"] == pytest.approx(full["pretrain/val_ppl"], rel=1e-6)


def test_python_dash_m_labkit_is_the_labkit_command():
    p = subprocess.run([sys.executable, "-m", "labkit", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and all(c in p.stdout for c in ("run", "status", "report", "train"))


def test_cli_pretrains_on_real_english_text(tmp_path):
    txt = ROOT / "data" / "samples" / "english_sample.txt"
    p = subprocess.run([sys.executable, "-m", "labkit.runner", "run", "--stages", "pretrain", "--preset", "smoke",
                        "--runs-dir", str(tmp_path), "--name", "eng", "-p", f"data={txt}"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    ev = json.loads((tmp_path / "eng/01_pretrain/eval.json").read_text())
    data = json.loads((tmp_path / "eng/01_pretrain/data.json").read_text())
    # trained on the file, not the world: its tokens, and a model better than a uniform guess over them
    assert data["corpus"] != "world" and data["train_tokens"] > 0 and data["val_tokens"] > 0
    assert 1 < ev["pretrain/val_ppl"] < ev["vocab_size"]


def test_cli_missing_file_fails_in_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "labkit.runner", "run", "--stages", "pretrain", "--preset", "smoke",
                        "--runs-dir", str(tmp_path), "-p", f"data={tmp_path / 'nope.txt'}"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("labkit: error:") and "nope.txt" in last
