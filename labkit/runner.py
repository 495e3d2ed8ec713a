"""The runner: execute the stage notebooks in order with papermill, then write the report.

    labkit run --name demo --preset cpu                      # stages 1-5 (runs.DEFAULT_STAGES)
    labkit run --name demo --preset cpu --stages compare     # stage 6 after them: DPO, RLOO, best-of-n beside PPO
    labkit run --stages pretrain -p data=book.txt -p max_steps=300
    labkit run --stages sft -p sft.learning_rate=1e-3        # stage-qualified name

    labkit status --name demo                                # what the run holds, what runs next

or in Python: ``run_pipeline("demo", "cpu", params={"max_steps": 300})``.
``python -m labkit`` is the same command.

Parameters are checked against each stage's config dataclass *before* any
notebook runs: papermill would inject a misspelled name as a harmless global
and the run would silently use the default. An unqualified ``key=value`` goes
to every selected stage whose config has that field; ``stage.key=value`` to one.
Stages already completed in the run folder are skipped when they were run
with the same config; with another one the command is refused (saying what
differs) rather than silently keeping the old model: ``--force`` re-runs them.

While a notebook runs, one live line per stage shows its progress (see
``labkit.live.StageLine``); Ctrl-C stops the kernel, keeps every completed
stage and leaves no half-written notebook, and the same command resumes. At
the end: the scorecard of every stage against its target, and report.html.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .config import PRESET_NAMES, RENAMED, ConfigError, did_you_mean, field_help, field_names, make_config
from .live import PROGRESS_ENV, StageLine, format_seconds, watch_stage
from .runs import DEFAULT_STAGES, NOTEBOOKS, STAGE_DIRS, STAGES, Run, RunLocked, StageMissing, read_json

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
# Globals every stage notebook's parameters cell has besides its config fields.
NOTEBOOK_GLOBALS = ("run", "runs_dir", "preset")


def stage_module(stage: str):
    return importlib.import_module(f"labkit.{stage}")


def config_class(stage: str):
    """The stage's config dataclass: what its ``config()`` returns (declared in the stage module, or in a
    shared one it imports, as ``ppo_config.PPOConfig``)."""
    import typing
    return typing.get_type_hints(stage_module(stage).config)["return"]


def available_stages() -> list[str]:
    """Stages whose notebook ships with this checkout, in pipeline order."""
    return [s for s in STAGES if (NOTEBOOK_DIR / NOTEBOOKS[s]).exists()]


def parse_params(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"parameter {p!r} must look like key=value")
        k, v = p.split("=", 1)
        out[k.strip()] = v
    return out


# What a data file's name ends with: such a value is a file (made absolute, and checked before any stage runs).
DATA_SUFFIXES = (".txt", ".json", ".jsonl", ".ndjson", ".parquet", ".gz")


def is_data_file(value) -> bool:
    """Whether a parameter value names a data file, by its suffix (whether or not the file exists)."""
    return isinstance(value, str) and Path(value).suffix.lower() in DATA_SUFFIXES


def absolute_paths(per: dict[str, dict]) -> dict[str, dict]:
    """Parameter values (``split_params``' routing) that name a file or folder relative to where the command runs,
    made absolute: the notebooks run in notebooks/, where ``-p data=book.txt`` would name another file, or none.
    Touched: a value that exists there, unless the field's help names it as a keyword ('world', 'pairs', 'sft'...),
    and a data file's name (so that its "file not found" names the place meant); "org/name" stays a hub name."""
    import re

    def absolute(v, keywords):
        if not isinstance(v, str) or os.path.isabs(v) or v in keywords:
            return v
        path = Path(v)
        return str(path.resolve()) if is_data_file(v) or path.exists() else v
    out = {}
    for stage, params in per.items():
        helps = field_help(config_class(stage))
        out[stage] = {k: absolute(v, set(re.findall(r"'([\w-]+)'", helps.get(k, "")))) for k, v in params.items()}
    return out


def split_params(params: dict, stages: list[str]) -> dict[str, dict]:
    """Route each parameter to the stages it belongs to; unknown names are an error naming the valid ones."""
    per = {s: {} for s in stages}
    valid = {s: set(field_names(config_class(s))) for s in stages}
    for key, value in params.items():
        stage, _, name = key.rpartition(".")
        if stage:
            if stage not in per:
                raise ConfigError(f"parameter {key!r} names stage {stage!r}, which is not selected "
                                  f"(selected: {', '.join(stages)})")
            targets = [stage] if name in valid[stage] else []
        else:
            targets = [s for s in stages if name in valid[s]]
        if not targets:
            if name in RENAMED:
                raise ConfigError(f"parameter {key!r} was renamed to {RENAMED[name]!r}")
            allv = sorted(set().union(*valid.values()))
            raise ConfigError(f"unknown parameter {key!r}{did_you_mean(name, allv)} for stages {', '.join(stages)}; "
                              f"valid: {', '.join(allv)}")
        for s in targets:
            per[s][name] = value
    return per


def jsonable(cfg) -> dict:
    """A config as ``config.json`` stores it, so that a requested config and a recorded one compare equal."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


# Fields that change where a stage reports, not what it makes: a completed stage is kept whatever they say.
NOT_RESULTS = {"report_to"}


def config_changes(old: dict, new: dict) -> list[str]:
    """``name old -> new`` for every field whose value differs (bar NOT_RESULTS)."""
    return [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted((set(old) | set(new)) - NOT_RESULTS)
            if old.get(k) != new.get(k)]


def recorded_config(run: Run, stage: str) -> dict | None:
    """The config a completed stage was asked to run with: what the runner recorded, else its config.json.

    The runner's record comes first because a stage may adapt its config before writing config.json
    (the GPU memory planner picks batch sizes): comparing against that would refuse every re-run.
    """
    requested = run.manifest()["stages"][stage].get("requested")
    return requested if requested is not None else read_json(run.path / STAGE_DIRS[stage] / "config.json")


def completed_with_other_config(run: Run, configs: dict[str, dict]) -> list[str]:
    """One message per selected stage already complete in ``run`` with another config."""
    out = []
    for stage, cfg in configs.items():
        old = recorded_config(run, stage) if run.is_complete(stage) else None
        changes = config_changes(old, cfg) if old is not None else []
        if changes:
            more = f" and {len(changes) - 5} more" if len(changes) > 5 else ""
            out.append(f"{stage} ({', '.join(changes[:5])}{more})")
    return out


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a stage; says which stage, and how far it got, for the one-line message."""

    def __init__(self, stage: str, n: int | None, total: int | None):
        super().__init__(stage)
        self.stage, self.n, self.total = stage, n, total


@contextmanager
def environ(**values: str):
    """Set environment variables for the body (the kernel papermill starts inherits them), then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def headline_metric(stage: str) -> str | None:
    """The metric the live line shows: the first series of the stage's chart (loss, reward…)."""
    chart = getattr(stage_module(stage), "CHART", None)
    return next(iter(chart.values()))[0] if chart else None


def execute_stage(run: Run, stage: str, parameters: dict, line: StageLine) -> None:
    """Run one stage's notebook into ``notebooks/``, showing its progress on ``line``.

    papermill saves the output notebook cell by cell, so it writes to a hidden partial file that
    replaces the real one only at the end (the notebook is kept when a cell fails, to show where).
    The kernel talks over IPC sockets, not TCP (so it has no reason to warn that TCP is unencrypted),
    and is killed at once at the end or on Ctrl-C: stages write every file atomically, so a kill
    loses nothing, and a graceful shutdown of a busy kernel prints a traceback into the terminal.
    """
    import shutil
    import tempfile

    import papermill as pm
    from traitlets.config import Config

    # The parameters were checked against the stage's config already; papermill's own check parses
    # the parameters cell, misreads lines whose comment has an "=", and warns about parameters that work.
    logging.getLogger("papermill").setLevel(logging.ERROR)

    out = run.path / "notebooks" / NOTEBOOKS[stage]
    partial = out.with_name(f".{out.stem}.partial.ipynb")
    progress_file = run.path / f".{stage}.progress.json"
    progress_file.unlink(missing_ok=True)
    # Figures as plotly JSON only: JupyterLab and the report draw them; "+notebook" would embed
    # plotly.js (4.9 MB) into every executed notebook.
    # The kernel's sockets in a folder of its own. By default they are kernel-ipc-N in the kernel's working
    # folder (notebooks/), numbered by the first free N: two labkit runs starting kernels at once (a sweep) took
    # the same files and talked to each other's kernels ("Invalid Signature"). /tmp keeps the socket paths under
    # the ~100 characters a Unix socket's path may have.
    sockets = tempfile.mkdtemp(prefix="labkit-kernel-")
    kernel = Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(sockets, "kernel")}})
    with environ(PLOTLY_RENDERER="plotly_mimetype", **{PROGRESS_ENV: str(progress_file)}):
        try:
            with watch_stage(line, run.path / STAGE_DIRS[stage], progress_file, headline_metric(stage)):
                pm.execute_notebook(str(NOTEBOOK_DIR / NOTEBOOKS[stage]), str(partial), kernel_name="python3",
                                    parameters=parameters, cwd=str(NOTEBOOK_DIR), progress_bar=False,
                                    config=kernel, shutdown_kernel="immediate")
        except KeyboardInterrupt:
            line.close()
            partial.unlink(missing_ok=True)  # half a notebook records nothing
            raise Interrupted(stage, line.n, line.total) from None
        except BaseException:
            line.close()
            raise
        finally:
            progress_file.unlink(missing_ok=True)
            shutil.rmtree(sockets, ignore_errors=True)
            if partial.exists():
                os.replace(partial, out)


def run_pipeline(run: str = "demo", preset: str = "cpu", stages: list[str] | None = None,
                 params: dict | None = None, runs_dir: str | Path = "runs", force: bool = False,
                 log=print, tty: bool | None = None) -> Path:
    """Run the selected stages' notebooks into ``runs/<run>/notebooks/`` and write ``report.html``.

    ``tty``: redraw one live line per stage (default: when logging with ``print`` to a terminal).
    """
    from .report import format_scorecard, scorecard, total_seconds, write_report

    available = available_stages()
    stages = stages or [s for s in DEFAULT_STAGES if s in available]  # compare runs when named (runs.py says why)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage {', '.join(unknown)}; stages are {', '.join(STAGES)}")
    missing = [s for s in stages if s not in available]
    if missing:
        raise ConfigError(f"stage {', '.join(missing)} has no notebook in {NOTEBOOK_DIR}")
    stages = [s for s in STAGES if s in stages]  # pipeline order, whatever order was given
    per = absolute_paths(split_params(params or {}, stages))
    # A data file that is not there fails now, not when its stage's notebook opens it, maybe hours in.
    for s, values in per.items():
        for k, v in values.items():
            if is_data_file(v) and not os.path.exists(v):  # absolute_paths made every data file absolute
                raise ConfigError(f"{s}.{k}: no such file: {v}")
    # Build every config now: bad values fail before hours of training.
    configs = {s: jsonable(make_config(config_class(s), stage_module(s).PRESETS, preset, per[s])) for s in stages}

    runs_dir = Path(runs_dir).resolve()
    r = Run(run, runs_dir)
    if tty is None:
        tty = log is print and sys.stdout.isatty()
    # One writer per run folder: held for the whole pipeline, and inherited by the notebook kernels it starts.
    with r.lock():
        if not force:
            differ = completed_with_other_config(r, configs)
            if differ:
                raise ConfigError(f"run '{run}' already completed {'; '.join(differ)}. Re-running would replace "
                                  f"what it made: add --force to re-run, or use --name <new> for a new run")
        r.update_manifest(preset=preset)
        (r.path / "notebooks").mkdir(exist_ok=True)
        for s in stages:
            if r.is_complete(s) and not force:
                log(f"[labkit] {s}: already complete in {r.path} with the same config, skipping (--force re-runs it)")
                continue
            if s in r.manifest()["stages"]:
                log(f"[labkit] {s}: run.json marks it complete but {', '.join(r.missing_outputs(s))} is missing "
                    f"(deleted?), so it runs again")
            line = StageLine(s, tty, log)
            line.say(f"[labkit] {s}: running {NOTEBOOKS[s]} (preset={preset}) ...")
            t0 = time.perf_counter()
            execute_stage(r, s, {"run": run, "runs_dir": str(runs_dir), "preset": preset, **per[s]}, line)
            if not r.is_complete(s):
                raise RuntimeError(f"notebook {NOTEBOOKS[s]} finished but did not mark stage {s!r} complete")
            seconds = time.perf_counter() - t0
            r.annotate(s, requested=configs[s], notebook_seconds=round(seconds, 2))
            line.say(f"[labkit] {s}: done in {format_seconds(seconds)}", final=True)
        report = write_report(r)
    log(f"[labkit] scorecard of run '{run}' (targets: labkit/report.py)")
    log(format_scorecard(scorecard(r)))
    log(f"[labkit] total time {format_seconds(total_seconds(r))} · report: {report}")
    return r.path


def status(run: str = "demo", runs_dir: str | Path = "runs") -> str:
    """Which stages the run folder holds, their headline numbers, and the command that runs what is left."""
    from .report import fmt, short, stage_seconds

    if not (Path(runs_dir) / run / "run.json").exists():
        raise FileNotFoundError(f"no run '{run}' in {Path(runs_dir).resolve()}; start one: labkit run --name {run}")
    r = Run(run, runs_dir)
    m = r.manifest()
    lines = [f"run '{run}' in {r.path} (preset {m.get('preset')})"]
    todo = []
    for stage in available_stages():
        info = m["stages"].get(stage)
        missing = r.missing_outputs(stage) if info else []
        if missing:
            lines.append(f"  {stage:<12} incomplete: {', '.join(missing)} is missing (the next run redoes it)")
            todo.append(stage)
            continue
        if info:
            numbers = "  ".join(f"{short(k)} {fmt(v)}" for k, v in list(info["headline"].items())[:3])
            lines.append(f"  {stage:<12} complete  {format_seconds(stage_seconds(info)):>7}  {numbers}")
            continue
        todo.append(stage)
        started = (r.path / STAGE_DIRS[stage] / "config.json").exists()
        lines.append(f"  {stage:<12} {'started, not finished (the next run resumes it)' if started else 'not run'}")
    cmd = f"labkit run --name {run} --preset {m.get('preset')}" + \
        (f" --runs-dir {runs_dir}" if Path(runs_dir) != Path("runs") else "")
    if todo:
        lines.append(f"next: {cmd}" + (f" --stages {','.join(todo)}" if todo != available_stages() else ""))
    else:
        lines.append(f"all stages complete; report: {r.path / 'report.html'} "
                     f"(re-run one: {cmd} --stages <stage> --force)")
    return "\n".join(lines)


def train_stage(stage: str, run: str = "demo", runs_dir: str | Path = "runs", preset: str = "cpu",
                params: dict | None = None) -> dict:
    """Run one stage's ``run(cfg)`` directly, without a notebook (what ``labkit train`` and accelerate use)."""
    mod = stage_module(stage)
    cfg = make_config(config_class(stage), mod.PRESETS, preset, params or {})
    return mod.run(cfg, run=run, runs_dir=str(runs_dir), preset=preset, live=False)


# --- the notebooks' parameters cells, written from the config dataclasses -----------------------------

PARAMETERS_HEADER = (
    'import os\n'
    'run = os.environ.get("LABKIT_RUN", "demo")               # run folder: <runs_dir>/<run>\n'
    'runs_dir = os.environ.get("LABKIT_RUNS_DIR", "../runs")  # the repository\'s runs/ (notebooks run from notebooks/)\n'
    'preset = os.environ.get("LABKIT_PRESET", "cpu")          # smoke | cpu | gpu | hub: fills every field left as None\n')


def parameters_cell(stage: str) -> str:
    """The ``parameters`` cell of a stage's notebook: the run, folder and preset, then every field of the
    stage's config dataclass as ``name = None`` with its one-line help. papermill injects overrides after
    it; ``config.from_notebook`` builds the config from these globals, so None keeps the preset's value."""
    cls = config_class(stage)
    helps = field_help(cls)
    width = max(len(n) for n in helps) + len(" = None") + 2
    lines = [f"# {cls.__name__} fields (None: the preset's value)"]
    lines += [f"{f'{name} = None':<{width}}# {helps[name]}".rstrip() for name in field_names(cls)]
    return PARAMETERS_HEADER + "\n".join(lines)


def write_parameter_cells(check: bool = False) -> list[str]:
    """Rewrite each notebook's parameters cell from its dataclass (``check``: only list the stale ones).
    Returns the notebooks that differed; ``tests/test_notebooks.py`` fails when one does."""
    import nbformat
    stale = []
    for stage in available_stages():
        path = NOTEBOOK_DIR / NOTEBOOKS[stage]
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        if cell.source != parameters_cell(stage):
            stale.append(path.name)
            cell.source = parameters_cell(stage)
            if not check:
                nbformat.write(nb, path)
    return stale


def _interrupt(signum, frame):
    """Ctrl-C: stop. The kernel is killed mid-cell on the way out, and the kernel client then logs
    "Kernel died" and an unretrieved task's traceback: expected, not news, so logging goes quiet first."""
    logging.disable(logging.CRITICAL)
    raise KeyboardInterrupt


def main(argv=None) -> int:
    import argparse
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C must stop a run even when the parent ignored SIGINT: an ignored signal is inherited,
        # and Python then installs no KeyboardInterrupt handler (seen when the test suite, whose kernel
        # clients ignore SIGINT, started `labkit run`: every Ctrl-C was lost).
        signal.signal(signal.SIGINT, _interrupt)
    ap = argparse.ArgumentParser(prog="labkit", description="LLM Training Lab: run the stage notebooks")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute stage notebooks in order (papermill) and write report.html")
    r.add_argument("--name", default="demo", help="run folder name under --runs-dir")
    r.add_argument("--preset", default="cpu", choices=PRESET_NAMES)
    r.add_argument("--stages", default=None, help=f"comma list from {','.join(STAGES)} "
                                                  f"(default: {','.join(DEFAULT_STAGES)})")
    r.add_argument("-p", "--param", action="append", default=[], help="key=value or stage.key=value")
    r.add_argument("--runs-dir", default="runs")
    r.add_argument("--force", action="store_true", help="re-run stages already complete")
    t = sub.add_parser("train", help="run one stage without a notebook (works under accelerate launch)")
    t.add_argument("stage", choices=STAGES)
    t.add_argument("--name", default="demo", help="run folder name under --runs-dir")
    t.add_argument("--runs-dir", default="runs")
    t.add_argument("--preset", default="cpu", choices=PRESET_NAMES)
    t.add_argument("-p", "--param", action="append", default=[])
    rep = sub.add_parser("report", help="(re)write runs/<name>/report.html")
    rep.add_argument("--name", default="demo")
    rep.add_argument("--runs-dir", default="runs")
    nbp = sub.add_parser("notebooks", help="rewrite the notebooks' parameters cells from the config dataclasses")
    nbp.add_argument("--check", action="store_true", help="only list the notebooks whose cell is stale (exit 1)")
    st = sub.add_parser("status", help="which stages runs/<name> holds, their numbers, and what runs next")
    st.add_argument("--name", default="demo")
    st.add_argument("--runs-dir", default="runs")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"] and any(a == "--run" or a.startswith("--run=") for a in argv):
        print("labkit: error: train's --run was renamed: name the run with --name and its folder with --runs-dir "
              "(--run runs/demo is --name demo --runs-dir runs), as for labkit run", file=sys.stderr)
        return 2
    args = ap.parse_args(argv)
    run_dir = Path(args.runs_dir) / args.name if hasattr(args, "name") else None  # where an error's traceback goes
    try:
        if args.cmd == "run":
            stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
            run_pipeline(args.name, args.preset, stages, parse_params(args.param), args.runs_dir, args.force)
        elif args.cmd == "train":
            params = parse_params(args.param)
            split_params(params, [args.stage])
            print(train_stage(args.stage, args.name, args.runs_dir, args.preset, params))
        elif args.cmd == "status":
            print(status(args.name, args.runs_dir))
        elif args.cmd == "notebooks":
            stale = write_parameter_cells(check=args.check)
            print(("stale: " if args.check else "rewrote: ") + (", ".join(stale) or "none"))
            return 1 if args.check and stale else 0
        else:
            from .report import write_report
            r = Run(args.name, args.runs_dir)
            with r.lock():
                print(write_report(r))
    except Interrupted as e:
        at = f" at step {e.n}/{e.total or '?'}" if e.n is not None else ""
        again = shlex.join(["labkit", *(a for a in argv if a != "--force")])  # --force would redo finished stages
        print(f"labkit: interrupted during stage {e.stage}{at}; completed stages are kept, and `{again}` "
              f"resumes it", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("labkit: interrupted", file=sys.stderr)
        return 130
    except RunLocked as e:  # the run belongs to another process: write nothing into it, not even a log
        print(f"labkit: error: {e}", file=sys.stderr)
        return 2
    except (ConfigError, FileNotFoundError, ValueError, StageMissing) as e:
        print(f"labkit: error: {one_line(str(e))}{log_error(run_dir, argv, e)}", file=sys.stderr)
        return 2
    except Exception as e:  # anything else, papermill's notebook failures included: one line, the rest in the log
        cause = f"a notebook cell failed: {e.ename}: {e.evalue}" if type(e).__name__ == "PapermillExecutionError" \
            else f"{type(e).__name__}: {e}"
        print(f"labkit: error: {one_line(cause)}{log_error(run_dir, argv, e)}", file=sys.stderr)
        return 1
    return 0


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


ERROR_LOG = "labkit-errors.log"


def log_error(run_dir: Path | None, argv: list[str], e: BaseException) -> str:
    """Append ``e``'s full traceback (and a failed notebook cell's) to ``<run>/labkit-errors.log``; the text that
    names the log for the one-line error ("" when the run folder does not exist: nothing is created for a log)."""
    import re
    import traceback
    if run_dir is None or not run_dir.is_dir():
        return ""
    log = run_dir / ERROR_LOG
    cell = "".join(getattr(e, "traceback", None) or []) if type(e).__name__ == "PapermillExecutionError" else ""
    try:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')}  {shlex.join(['labkit', *argv])}  (pid {os.getpid()})\n")
            f.write("".join(traceback.format_exception(e)))
            if cell:  # the notebook's own traceback, without its terminal colours
                f.write("--- the notebook cell's traceback:\n" + re.sub(r"\x1b\[[0-9;]*m", "", cell) + "\n")
    except OSError:
        return ""
    return f" (full traceback in {log})"


if __name__ == "__main__":
    sys.exit(main())
