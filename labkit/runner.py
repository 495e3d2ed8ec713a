"""The runner: execute the stage notebooks in order with papermill, then write the report.

    labkit run --name demo --preset cpu                      # every stage
    labkit run --stages pretrain -p data=book.txt -p max_steps=300
    labkit run --stages sft -p sft.learning_rate=1e-3        # stage-qualified name

or in Python: ``run_pipeline("demo", "cpu", params={"max_steps": 300})``.

Parameters are checked against each stage's config dataclass *before* any
notebook runs: papermill would inject a misspelled name as a harmless global
and the run would silently use the default. An unqualified ``key=value`` goes
to every selected stage whose config has that field; ``stage.key=value`` to one.
Stages already completed in the run folder are skipped (``--force`` re-runs them).
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

from .config import ConfigError, field_names, make_config
from .runs import NOTEBOOKS, STAGES, Run

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
# Globals every stage notebook's parameters cell has besides its config fields.
NOTEBOOK_GLOBALS = ("run_name", "runs_dir", "preset")


def stage_module(stage: str):
    return importlib.import_module(f"labkit.{stage}")


def config_class(stage: str):
    mod = stage_module(stage)
    return next(v for k, v in vars(mod).items() if k.endswith("Config") and isinstance(v, type)
                and v.__module__ == mod.__name__)


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
            import difflib
            allv = sorted(set().union(*valid.values()))
            close = difflib.get_close_matches(name, allv, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown parameter {key!r}{hint} for stages {', '.join(stages)}; "
                              f"valid: {', '.join(allv)}")
        for s in targets:
            per[s][name] = value
    return per


def run_pipeline(name: str = "demo", preset: str = "cpu", stages: list[str] | None = None,
                 params: dict | None = None, runs_dir: str | Path = "runs", force: bool = False,
                 log=print) -> Path:
    """Run the selected stages' notebooks into ``runs/<name>/notebooks/`` and write ``report.html``."""
    import papermill as pm
    from .report import write_report

    available = available_stages()
    stages = stages or available
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage {', '.join(unknown)}; stages are {', '.join(STAGES)}")
    missing = [s for s in stages if s not in available]
    if missing:
        raise ConfigError(f"stage {', '.join(missing)} has no notebook in {NOTEBOOK_DIR}")
    stages = [s for s in STAGES if s in stages]  # pipeline order, whatever order was given
    per = split_params(params or {}, stages)
    for s in stages:  # build every config now: bad values fail before hours of training
        make_config(config_class(s), stage_module(s).PRESETS, preset, per[s])

    runs_dir = Path(runs_dir).resolve()
    run = Run(name, runs_dir)
    run.update_manifest(preset=preset)
    out_dir = run.path / "notebooks"
    out_dir.mkdir(exist_ok=True)
    env_backup = os.environ.get("PLOTLY_RENDERER")
    # Static plotly figures only survive nbconvert/html export with the mimetype renderer (DESIGN.md).
    os.environ["PLOTLY_RENDERER"] = "plotly_mimetype+notebook"
    try:
        for s in stages:
            if run.is_complete(s) and not force:
                log(f"[labkit] {s}: already complete in {run.path}, skipping (use --force to re-run)")
                continue
            nb = NOTEBOOK_DIR / NOTEBOOKS[s]
            log(f"[labkit] {s}: running {nb.name} (preset={preset}) ...")
            t0 = time.perf_counter()
            pm.execute_notebook(str(nb), str(out_dir / NOTEBOOKS[s]), kernel_name="python3",
                                parameters={"run_name": name, "runs_dir": str(runs_dir), "preset": preset, **per[s]},
                                cwd=str(NOTEBOOK_DIR), progress_bar=False)
            if not Run(name, runs_dir).is_complete(s):
                raise RuntimeError(f"notebook {nb.name} finished but did not mark stage {s!r} complete")
            log(f"[labkit] {s}: done in {time.perf_counter() - t0:.0f}s")
    finally:
        if env_backup is None:
            os.environ.pop("PLOTLY_RENDERER", None)
        else:
            os.environ["PLOTLY_RENDERER"] = env_backup
    report = write_report(run)
    log(f"[labkit] report: {report}")
    return run.path


def train_stage(stage: str, run_dir: str | Path, preset: str = "cpu", params: dict | None = None) -> dict:
    """Run one stage's ``run(cfg)`` directly, without a notebook (what ``labkit train`` and accelerate use)."""
    mod = stage_module(stage)
    cfg = make_config(config_class(stage), mod.PRESETS, preset, params or {})
    run_dir = Path(run_dir)
    return mod.run(cfg, run=run_dir.name, runs_dir=str(run_dir.parent), preset=preset, live=False)


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="labkit", description="LLM Training Lab: run the stage notebooks")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute stage notebooks in order (papermill) and write report.html")
    r.add_argument("--name", default="demo", help="run folder name under --runs-dir")
    r.add_argument("--preset", default="cpu", help="smoke | cpu | gpu | hub")
    r.add_argument("--stages", default=None, help=f"comma list from {','.join(STAGES)} (default: all)")
    r.add_argument("-p", "--param", action="append", default=[], help="key=value or stage.key=value")
    r.add_argument("--runs-dir", default="runs")
    r.add_argument("--force", action="store_true", help="re-run stages already complete")
    t = sub.add_parser("train", help="run one stage without a notebook (works under accelerate launch)")
    t.add_argument("stage", choices=STAGES)
    t.add_argument("--run", required=True, help="run folder, e.g. runs/demo")
    t.add_argument("--preset", default="cpu")
    t.add_argument("-p", "--param", action="append", default=[])
    rep = sub.add_parser("report", help="(re)write runs/<name>/report.html")
    rep.add_argument("--name", default="demo")
    rep.add_argument("--runs-dir", default="runs")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "run":
            stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
            run_pipeline(args.name, args.preset, stages, parse_params(args.param), args.runs_dir, args.force)
        elif args.cmd == "train":
            params = parse_params(args.param)
            split_params(params, [args.stage])
            print(train_stage(args.stage, args.run, args.preset, params))
        else:
            from .report import write_report
            print(write_report(Run(args.name, args.runs_dir)))
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"labkit: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # papermill wraps notebook failures: show the cause in one line
        name = type(e).__name__
        if name == "PapermillExecutionError":
            print(f"labkit: error: a notebook cell failed: {e.ename}: {e.evalue}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
