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
from conftest import built_once, mark_complete, ran_every_cell
from labkit.runs import DEFAULT_STAGES, STAGE_OUTPUTS, STAGES, Run, atomic_write_json


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

    Returns the run folder and the output. tests/test_browser.py opens the same run's report: the folder
    is built once per session (conftest.built_once), by whichever test needs it first.
    """
    with built_once(tmp_path_factory, "smoke_pipeline") as (runs, built):
        log = runs / "labkit.log"
        if not built:
            with open(log, "w") as out:
                p = subprocess.run([sys.executable, "-m", "labkit", "run", "--preset", "smoke", "--name", "smoke",
                                    "--stages", ",".join(STAGES), "--runs-dir", str(runs)],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=runs)
            assert p.returncode == 0, log.read_text()[-3000:]
    return runs / "smoke", log.read_text()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke pipeline (about 2.5 minutes on 2 cores): the tests that use it are marked slow."""
    return smoke_pipeline(tmp_path_factory)


@pytest.mark.slow
def test_smoke_run_completes_every_stage(smoke):
    path, _ = smoke
    run = Run.at(path)
    for stage in STAGES:
        assert run.is_complete(stage), stage
        nb = path / "notebooks" / runner.NOTEBOOKS[stage]
        # No plotly.js in the executed notebooks (no live-chart widget state, no "+notebook" renderer).
        assert nb.exists() and nb.stat().st_size < 1_000_000, nb
        assert nb.with_suffix(".html").exists()
        ran_every_cell(path, stage)
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
        mark_complete(run, stage)
        for out in STAGE_OUTPUTS[stage]:
            (run.stage_dir(stage) / out.split("|")[0]).touch()
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
    with r.lock():
        r.update_manifest(preset="smoke")
    (r.stage_dir("pretrain") / "model").mkdir()
    mark_complete(r, "pretrain", 65.0, {"pretrain/val_ppl": 2.53, "pretrain/unigram_ppl": 172.7})
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


@pytest.mark.parametrize("param", ["data=nope.txt", "reward.data=nope.jsonl.gz"])
def test_cli_missing_file_fails_in_one_line_before_any_stage_runs(tmp_path, param):
    """A later stage's missing file fails at once, not once the stages before it have trained."""
    p = subprocess.run([sys.executable, "-m", "labkit.runner", "run", "--stages", "pretrain,sft,preferences,reward",
                        "--preset", "smoke", "--runs-dir", str(tmp_path), "-p", param],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    stage = param.split(".")[0] if param.startswith("reward.") else "pretrain"
    assert last.startswith(f"labkit: error: {stage}.data: no such file") and str(tmp_path / "nope") in last
    assert not (tmp_path / "demo" / "notebooks").exists()  # no notebook started


# --- one writer per run, and faults: one line on the terminal, the traceback in the run's log ----------

def _labkit(*args, cwd=None, **kw):
    return subprocess.run([sys.executable, "-m", "labkit", *args], capture_output=True, text=True, cwd=cwd, **kw)


def test_two_labkit_runs_on_one_run_one_refuses_and_the_other_completes(tmp_path):
    cmd = [sys.executable, "-m", "labkit", "run", "--stages", "pretrain", "--preset", "smoke", "--name", "conc",
           "--runs-dir", str(tmp_path), "-p", "max_steps=4"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "conc" / ".lock.json"
    deadline = time.monotonic() + 120
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert re.match(rf"labkit: error: run 'conc' \(\S+\) is being written by pid {first.pid} on \S+ \(`labkit run "
                    r"--stages pretrain --preset smoke --name conc .*`, since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\): wait "
                    r"for it to finish, or use --name <other> for a separate run$", second.stderr), second.stderr
    m = json.loads((tmp_path / "conc" / "run.json").read_text())
    assert list(m["stages"]) == ["pretrain"] and m["stages"]["pretrain"]["requested"]["max_steps"] == 4
    assert m["stages"]["pretrain"]["notebook_seconds"] > 0 and Run("conc", tmp_path).is_complete("pretrain")
    assert not lock.exists() and not (tmp_path / "conc" / runner.ERROR_LOG).exists()


def test_a_damaged_run_json_is_one_line_and_the_traceback_goes_to_the_runs_log(tmp_path):
    r = Run("hurt", tmp_path)
    r.manifest_path.write_text('{"name": "hurt", "stages": {"pretrain": {"seco')
    log = tmp_path / "hurt" / runner.ERROR_LOG
    for args in (["run", "--stages", "pretrain", "--preset", "smoke"], ["status"]):
        p = _labkit(*args, "--name", "hurt", "--runs-dir", str(tmp_path))
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
        assert p.stderr.startswith(f"labkit: error: {r.manifest_path} is damaged (not valid JSON at line 1 column")
        assert p.stderr.rstrip().endswith(f"(full traceback in {log})")
    text = log.read_text()
    assert text.count("Traceback (most recent call last)") == 2 and "ManifestError" in text
    assert "labkit status --name hurt" in text


def test_an_unexpected_error_is_one_line_naming_its_log(tmp_path):
    code = ("import sys\nfrom labkit import runner\n"
            "def boom(run, stage, parameters, line):\n    raise RuntimeError('the kernel fell over')\n"
            "runner.execute_stage = boom\nsys.exit(runner.main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", code, "run", "--stages", "pretrain", "--preset", "smoke", "--name", "x",
                        "--runs-dir", str(tmp_path)], capture_output=True, text=True)
    log = tmp_path / "x" / runner.ERROR_LOG
    assert p.returncode == 1 and p.stderr == (f"labkit: error: RuntimeError: the kernel fell over "
                                              f"(full traceback in {log})\n"), p.stderr
    assert "in boom" in log.read_text() and "RuntimeError: the kernel fell over" in log.read_text()
    assert not (tmp_path / "x" / ".lock.json").exists()  # the lock went with the error


def test_a_stage_whose_outputs_were_deleted_runs_again_and_the_runner_says_so(tmp_path, monkeypatch):
    from labkit import report
    ran, logs = [], []

    def fake_stage(run, stage, parameters, line):
        ran.append(stage)
        for out in STAGE_OUTPUTS[stage]:
            (run.stage_dir(stage) / out.split("|")[0]).touch()
        run.complete(stage, 0.0, {})  # under the runner's lock, as a kernel it started would write
    monkeypatch.setattr(runner, "execute_stage", fake_stage)
    monkeypatch.setattr(report, "write_report", lambda run: str(run.path / "report.html"))
    runner.run_pipeline("d", "smoke", ["pretrain", "sft"], runs_dir=tmp_path, log=logs.append)
    (tmp_path / "d" / "02_sft" / "eval.json").unlink()
    assert "sft          incomplete: 02_sft/eval.json is missing" in runner.status("d", tmp_path)
    runner.run_pipeline("d", "smoke", ["pretrain", "sft"], runs_dir=tmp_path, log=logs.append)
    assert ran == ["pretrain", "sft", "sft"]
    assert "[labkit] sft: run.json marks it complete but 02_sft/eval.json is missing (deleted?), so it runs again" in logs


def test_relative_data_paths_name_files_where_the_command_runs(tmp_path, monkeypatch):
    for d in ("data", "world", "sft"):
        (tmp_path / d).mkdir()
    (tmp_path / "data" / "book.txt").write_text("text")
    (tmp_path / "prompts.jsonl").write_text('"hi"\n')
    monkeypatch.chdir(tmp_path)
    per = runner.split_params({"data": "data/book.txt", "ppo.prompts": "prompts.jsonl", "sft.data": "sft",
                               "reward.data": "missing.jsonl", "max_steps": "3", "ppo.init_from": "sft",
                               "preferences.prompts": "world", "sft.init_from": "org/model"},
                              ["pretrain", "sft", "preferences", "reward", "ppo"])
    out = runner.absolute_paths(per)
    assert out["pretrain"] == {"data": str(tmp_path / "data" / "book.txt"), "max_steps": "3"}
    assert out["sft"] == {"data": str(tmp_path / "sft"), "max_steps": "3", "init_from": "org/model"}  # a folder
    assert out["ppo"]["prompts"] == str(tmp_path / "prompts.jsonl")
    assert out["ppo"]["init_from"] == "sft" and out["preferences"]["prompts"] == "world"  # keywords of the field
    assert out["reward"] == {"data": str(tmp_path / "missing.jsonl"), "max_steps": "3"}


def test_labkit_train_is_a_writer_too(tmp_path):
    """`labkit train` (what accelerate launches) takes the run's lock in the stage's run: refused at once while
    another process writes the run."""
    import os
    hold = ("import sys, time\nfrom labkit.runs import Run\nwith Run('busy', sys.argv[1]).lock():\n"
            "    print('held', flush=True)\n    time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        env = {k: v for k, v in os.environ.items() if k != "LABKIT_RUN_LOCKS"}
        p = _labkit("train", "pretrain", "--name", "busy", "--runs-dir", str(tmp_path), "--preset", "smoke", env=env)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert f"is being written by pid {holder.pid} on " in p.stderr and "Traceback" not in p.stderr
        assert not (tmp_path / "busy" / "01_pretrain").exists()  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_each_kernel_gets_sockets_of_its_own_and_they_are_removed(tmp_path, monkeypatch):
    """Two labkit runs started at once must not share kernel sockets: by default they are kernel-ipc-N in
    notebooks/, numbered by the first free N, and two runs took the same ones (the kernels then answered the
    wrong client). Each stage's kernel gets a fresh folder, gone once the stage ends, even when it fails."""
    import os

    import papermill as pm

    from labkit.live import StageLine
    seen = []

    def fake_execute(src, out, config=None, **kw):
        ip = config.KernelManager.ip
        seen.append((config.KernelManager.transport, ip, os.path.isdir(os.path.dirname(ip))))
        if len(seen) == 2:
            raise RuntimeError("a cell failed")
    monkeypatch.setattr(pm, "execute_notebook", fake_execute)
    run = Run("k", tmp_path)
    (run.path / "notebooks").mkdir(parents=True, exist_ok=True)
    runner.execute_stage(run, "pretrain", {}, StageLine("pretrain", tty=False, log=lambda *a: None))
    with pytest.raises(RuntimeError):
        runner.execute_stage(run, "pretrain", {}, StageLine("pretrain", tty=False, log=lambda *a: None))
    (t1, ip1, existed1), (t2, ip2, existed2) = seen
    assert t1 == t2 == "ipc" and existed1 and existed2
    assert os.path.dirname(ip1) != os.path.dirname(ip2)
    assert not str(ip1).startswith(str(runner.NOTEBOOK_DIR)) and len(ip1) < 90
    assert not os.path.exists(os.path.dirname(ip1)) and not os.path.exists(os.path.dirname(ip2))
