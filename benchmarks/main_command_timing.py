"""The main command, old and new, back to back from fresh clones on the same machine: how long each stage takes.

    .venv/bin/python benchmarks/main_command_timing.py --old e3bcdee --new HEAD
    .venv/bin/python benchmarks/main_command_timing.py --old e3bcdee --new HEAD --order new,old --out x.json
    .venv/bin/python benchmarks/main_command_timing.py --old HEAD --new HEAD -p sft.max_steps=2000 \
        --out benchmarks/results/main_command_sft_candidate.json     # what a setting would cost the main command
    .venv/bin/python benchmarks/main_command_timing.py --order new -p sft.max_steps=2000 --out x.json  # one run

Each revision is cloned from this repository into ``--work``, set up with its own ``./setup.sh`` (a fresh
venv) and run with README's main command, ``.venv/bin/labkit run --preset cpu``; the stage times are read
from the run's ``run.json`` (the runner records each notebook's wall seconds). The machine's matmul rate
(float32, the threads the stages use) is measured before and after each run, so the ratio travels where an
absolute time does not. Run it on a machine with nothing else running: a second job moves every number.
``-p`` settings go to the new run's ``labkit run`` only: the same revision twice, with and without them, is what
a setting would cost the main command before a preset takes it.
Writes ``benchmarks/results/main_command_timing.json``.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def matmul(threads: int, python: str) -> float:
    """GFLOP/s of a 1024x1024 float32 matmul, median of a few, in ``python`` (that clone's venv)."""
    code = ("import time, statistics, torch; torch.set_num_threads(%d); a=torch.randn(1024,1024); b=torch.randn(1024,1024)\n"
            "[a@b for _ in range(3)]\nts=[]\nfor _ in range(15):\n t=time.perf_counter(); a@b; ts.append(time.perf_counter()-t)\n"
            "print(2*1024**3/statistics.median(ts)/1e9)" % threads)
    return float(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def fresh_clone(rev: str, work: Path) -> tuple[Path, str, dict]:
    """``rev`` cloned from this repository into ``work`` (an old clone replaced): the folder, its short commit,
    and an environment without this checkout's venv, paths or thread setting."""
    clone = work / rev.replace("/", "_")
    if clone.exists():
        shutil.rmtree(clone)
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", rev], check=True)
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "LABKIT_THREADS")}
    return clone, commit, env


def run_revision(rev: str, work: Path, params: list[str] = ()) -> dict:
    clone, commit, env = fresh_clone(rev, work)
    t0 = time.perf_counter()
    subprocess.run(["./setup.sh"], cwd=clone, env=env, check=True, stdout=subprocess.DEVNULL)
    setup = time.perf_counter() - t0
    python = str(clone / ".venv" / "bin" / "python")
    peak_before = {t: matmul(t, python) for t in (1, 2)}
    # the kernels torch picked (AVX2, AVX512, ...): the same seed computes other numbers on another instruction set
    isa = subprocess.run([python, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    t0 = time.perf_counter()
    subprocess.run([str(clone / ".venv" / "bin" / "labkit"), "run", "--preset", "cpu",
                    *[x for p in params for x in ("-p", p)]], cwd=clone, env=env, check=True, stdout=subprocess.DEVNULL)
    total = time.perf_counter() - t0
    peak_after = {t: matmul(t, python) for t in (1, 2)}
    stages = json.loads((clone / "runs" / "demo" / "run.json").read_text())["stages"]
    # where each stage's time went: the parts every stage times into its eval.json (revisions that do)
    parts = {}
    for folder in sorted((clone / "runs" / "demo").glob("0*_*")):
        ev = folder / "eval.json"
        if ev.exists():
            parts[folder.name.split("_", 1)[1]] = json.loads(ev.read_text()).get("timings")
    return {"revision": rev, "commit": commit, "params": list(params), "setup_seconds": round(setup, 1), "main_command_seconds": round(total, 1),
            "notebook_seconds": {s: v.get("notebook_seconds") for s, v in stages.items()},
            "stage_seconds": {s: v.get("seconds") for s, v in stages.items()}, "timings": parts,
            "matmul_gflops_before": peak_before, "aten_cpu_capability": isa, "matmul_gflops_after": peak_after,
            "headline": {s: v.get("headline") for s, v in stages.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", default=None, help="the revision to compare against (e3bcdee: before this work)")
    ap.add_argument("--new", default="HEAD")
    ap.add_argument("--order", default="old,new", help="which runs first (the machine warms and drifts); `new` alone "
                    "times one run (a setting against an absolute budget), with no ratio")
    ap.add_argument("-p", "--param", action="append", default=[],
                    help="a setting for the new run only, as `labkit run -p` takes it (sft.max_steps=2000); repeatable")
    ap.add_argument("--work", default="/tmp/labkit-timing")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "main_command_timing.json"))
    a = ap.parse_args()
    order = a.order.split(",")
    if not set(order) <= {"old", "new"} or len(set(order)) != len(order):
        ap.error(f"--order takes old and new, or new alone; got {a.order!r}")
    if "old" in order and not a.old:
        ap.error("--old is needed unless --order is new alone")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    runs = {which: run_revision(getattr(a, which), work / which, a.param if which == "new" else [])
            for which in order}
    from labkit.models import cpu_model
    cpu = cpu_model()
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu, "cores": os.cpu_count(), "load_before": load,
              "load_after": os.getloadavg(), "order": a.order, "runs": runs}
    if "old" in runs and "new" in runs:
        result["ratio_main_command"] = round(runs["new"]["main_command_seconds"] / runs["old"]["main_command_seconds"], 3)
        result["ratio_ppo"] = round(runs["new"]["notebook_seconds"].get("ppo") / runs["old"]["notebook_seconds"].get("ppo"), 3)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print({k: v["main_command_seconds"] for k, v in runs.items()},
          {k: v for k, v in result.items() if k.startswith("ratio")}, f"wrote {a.out}")


if __name__ == "__main__":
    main()
