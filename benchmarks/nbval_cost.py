"""What nbval would cost CI: `pytest --nbval-lax notebooks/` beside the `labkit run` the suite already makes.

    .venv/bin/python benchmarks/nbval_cost.py            # one round of each, nbval first
    .venv/bin/python benchmarks/nbval_cost.py --rounds 2 # alternate them, the medians

The suite's `tests/test_runner.py` runs every stage's notebook once through papermill at the smoke preset
(`labkit run --preset smoke --stages <all>`) and checks that every cell ran. An nbval pass executes the
same notebooks a second time. Both run here into temporary runs folders on the same machine, alternated,
so the seconds are read as a ratio; the 1-minute load average is recorded beside them. Writes
``benchmarks/results/nbval_cost.json``; ``benchmarks/results_tables.py`` renders it into docs/results.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labkit.models import cpu_model
from labkit.runs import STAGES

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict) -> tuple[float, int]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return time.perf_counter() - t0, done.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/nbval_cost.json"))
    args = ap.parse_args()
    secs = {"nbval": [], "papermill": []}
    codes = {"nbval": [], "papermill": []}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for kind in ("nbval", "papermill"):
            with tempfile.TemporaryDirectory() as tmp:
                env = {**os.environ, "LABKIT_THREADS": str(args.threads), "LABKIT_RUNS_DIR": tmp,
                       "LABKIT_PRESET": "smoke", "LABKIT_RUN": "cost"}
                cmd = ([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "--nbval-lax", "notebooks/"]
                       if kind == "nbval" else
                       [sys.executable, "-m", "labkit", "run", "--preset", "smoke", "--name", "cost", "--runs-dir", tmp,
                        "--stages", ",".join(STAGES)])
                s, rc = timed(cmd, env)
                secs[kind].append(round(s, 1))
                codes[kind].append(rc)
                print(f"{kind}: {s:.0f} s (exit {rc})", flush=True)
        load.append(os.getloadavg()[0])
    out = {"command": "python benchmarks/nbval_cost.py" + (f" --rounds {args.rounds}" if args.rounds != 1 else ""),
           "cpu": cpu_model(), "cpus": len(os.sched_getaffinity(0)), "threads": args.threads,
           "date": time.strftime("%Y-%m-%d"), "stages": list(STAGES), "load_average_1m": [round(x, 2) for x in load],
           "seconds": secs, "exit_codes": codes,
           "median_seconds": {k: statistics.median(v) for k, v in secs.items()},
           "nbval_over_papermill": round(statistics.median(secs["nbval"]) / statistics.median(secs["papermill"]), 3)}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
