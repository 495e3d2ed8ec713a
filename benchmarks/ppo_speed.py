"""PPO's step under other settings, from one trained run: seconds per phase, and whether the numbers changed.

    .venv/bin/python benchmarks/ppo_speed.py --run runs/seeds/seed-0                     # threads=1 vs threads=2
    .venv/bin/python benchmarks/ppo_speed.py --run runs/seeds/seed-0 -v threads=1 -v "threads=2 ppo_epochs=2"

Each variant (``-v``: space-separated ``key=value`` PPO settings over the ``cpu`` preset) trains ``--steps``
PPO steps in its own process (a fresh thread pool) on a scratch run folder that reads the given run's
stages 1-4, with a tiny held-out evaluation: the steps are what is timed, from each step's own
``ppo/*_seconds`` (median over the steps after the first). Variants run one after another, and the whole
list ``--rounds`` times, so a machine that drifts moves all of them. The JSON records, per variant, the
phase medians and the training numbers (reward, KL and losses per step): docs/results.md compares those of
each variant with the same variant at 1 thread, since a thread count that changes float summation order
could change them. Run it on a machine with nothing else running. Writes ``benchmarks/results/ppo_speed.json``.
"""
import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PHASES = ("gen", "forward", "score", "update", "step")
TRACE = ("ppo/reward", "ppo/kl", "ppo/vf_loss", "ppo/pg_loss")


def one_variant(run: Path, settings: dict, steps: int, work: Path) -> dict:
    """Train ``steps`` PPO steps from ``run``'s stages 1-4 in ``work`` (in this process); per-phase medians."""
    from labkit import ppo
    from labkit.runs import STAGE_DIRS
    folder = work / "run"
    folder.mkdir(parents=True)
    shutil.copy(run / "run.json", folder / "run.json")  # the stage updates its manifest: never the original's
    for stage in ("pretrain", "sft", "preferences", "reward"):
        os.symlink(run.resolve() / STAGE_DIRS[stage], folder / STAGE_DIRS[stage])
    cfg = ppo.config("cpu", max_steps=steps, n_eval=16, eval_samples=2, checkpoint_interval=10**6,
                     snapshot_interval=0, resume=False, **settings)
    ppo.run(cfg, run="run", runs_dir=str(work), live=False, progress_bar=False)
    rows = [json.loads(line) for line in open(folder / STAGE_DIRS["ppo"] / "metrics.jsonl")]
    return {"seconds": {k: statistics.median(r[f"ppo/{k}_seconds"] for r in rows[1:]) for k in PHASES},
            "trace": [[r.get(k) for k in TRACE] for r in rows], "threads": cfg.threads}


def parse(variant: str) -> dict:
    return dict(kv.split("=", 1) for kv in variant.split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a run folder with stages 1-4 (e.g. runs/seeds/seed-0)")
    ap.add_argument("-v", "--variant", action="append", default=[],
                    help="space-separated key=value PPO settings (default: threads=1, then threads=2)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ppo_speed.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)  # one variant, in a process of its own
    a = ap.parse_args()
    if a.child:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(one_variant(Path(a.run), parse(a.child), a.steps, Path(tmp))))
        return

    import torch

    from labkit.models import cpu_model, matmul_gflops

    def peak() -> dict:  # the machine's float32 matmul rate at 1 and 2 threads, GFLOP/s
        return {t: (torch.set_num_threads(t), matmul_gflops())[1] for t in (1, 2)}

    variants = a.variant or ["threads=1", "threads=2"]
    for v in variants:
        parse(v)  # a malformed variant fails before minutes of training
    load_before = os.getloadavg()
    peak_before = peak()
    results = {v: [] for v in variants}
    for rnd in range(a.rounds):
        for v in variants:
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, "--run", a.run, "--steps", str(a.steps), "--child", v],
                                 capture_output=True, text=True,
                                 env={k: x for k, x in os.environ.items() if k != "LABKIT_THREADS"})
            if out.returncode:
                sys.exit(f"variant {v!r} failed:\n{out.stderr[-3000:]}")
            results[v].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {rnd + 1}, {v}: step {results[v][-1]['seconds']['step']:.2f} s "
                  f"({time.perf_counter() - t0:.0f} s in all)", flush=True)
    doc = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)),
           "run": a.run, "steps": a.steps, "rounds": a.rounds, "load_before": load_before, "load_after": os.getloadavg(),
           "matmul_gflops_before": peak_before, "matmul_gflops_after": peak(),
           "command": shlex.join(["benchmarks/ppo_speed.py"] + sys.argv[1:]), "variants": {}}
    base = None
    for v in variants:
        med = {k: statistics.median(r["seconds"][k] for r in results[v]) for k in PHASES}
        base = base or med
        doc["variants"][v] = {"seconds": med, "step_ratio": med["step"] / base["step"],
                              "update_ratio": med["update"] / base["update"],
                              "threads": results[v][0]["threads"],
                              "same_numbers_every_round": all(r["trace"] == results[v][0]["trace"] for r in results[v]),
                              "trace": results[v][0]["trace"]}
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({v: round(d["step_ratio"], 3) for v, d in doc["variants"].items()}))


if __name__ == "__main__":
    main()
