"""CI's test command, old and new, back to back from fresh clones on the same machine: how long the suite takes.

    .venv/bin/python benchmarks/suite_timing.py --old c9f717e --new HEAD
    .venv/bin/python benchmarks/suite_timing.py --new HEAD          # this revision alone, no ratio

Each revision is cloned from this repository into ``--work`` and runs its own ``.ci/run`` with CI=true: a fresh
venv from ``./setup.sh --dev``, then README's test command. The setup and the tests are timed apart (the tests
by pytest's own summary line), with the machine's matmul rate before and after, so the ratio travels where an
absolute time does not. Run it on a machine with nothing else running. Writes
``benchmarks/results/suite_timing.json``; ``benchmarks/results_tables.py`` renders it into docs/results.md.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.main_command_timing import fresh_clone, matmul  # noqa: E402
from benchmarks.seeds import machine  # noqa: E402  (CPU name, family/model/stepping, kernels, as every benchmark)


def pytest_summary(output: str) -> dict:
    """pytest's last line: '537 passed, 11 warnings in 611.84s (0:10:11)' -> counts and seconds."""
    line = next((ln for ln in reversed(output.splitlines()) if re.search(r" in [\d.]+s", ln)), "")
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", line)}
    secs = re.search(r" in ([\d.]+)s", line)
    return {"line": line.strip("= "), "counts": counts, "pytest_seconds": float(secs.group(1)) if secs else None}


def run_revision(rev: str, work: Path) -> dict:
    clone, commit, env = fresh_clone(rev, work)
    env["CI"] = "true"
    t0 = time.perf_counter()
    p = subprocess.run(["bash", ".ci/run"], cwd=clone, env=env, capture_output=True, text=True)
    total = time.perf_counter() - t0
    (work / f"{rev.replace('/', '_')}.log").write_text(p.stdout + p.stderr)
    python = str(clone / ".venv" / "bin" / "python")
    summary = pytest_summary(p.stdout)
    return {"revision": rev, "commit": commit, "returncode": p.returncode, "ci_seconds": round(total, 1),
            **summary, "matmul_gflops_after": {t: matmul(t, python) for t in (1, 2)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", help="the revision to compare against (none: time --new alone)")
    ap.add_argument("--new", default="HEAD")
    ap.add_argument("--order", default="old,new", help="which runs first (the machine warms and drifts)")
    ap.add_argument("--work", default="/tmp/labkit-suite-timing")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "suite_timing.json"))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    order = [w for w in a.order.split(",") if getattr(a, w)]
    runs = {which: run_revision(getattr(a, which), work) for which in order}
    old, new = runs.get("old") or {}, runs["new"]
    ratio = new["pytest_seconds"] / old["pytest_seconds"] if old.get("pytest_seconds") and new["pytest_seconds"] else None
    Path(a.out).write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": machine(), "cores": os.cpu_count(), "load_before": load,
        "load_after": os.getloadavg(), "order": ",".join(order), "runs": runs,
        "ratio_pytest": round(ratio, 3) if ratio else None}, indent=1) + "\n")
    print(f"new / old pytest time: {ratio}; wrote {a.out}")
    if any(r["returncode"] for r in runs.values()):
        sys.exit(f"a revision's CI failed: see {work}/*.log")


if __name__ == "__main__":
    main()
