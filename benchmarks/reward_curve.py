"""What stage 4's training curve costs: the reward model trained with the curve scoring every held-out pair at
every ``eval_interval``, and with it scoring the preset's fixed draw of them (``reward.curve_pairs``).

    .venv/bin/python benchmarks/reward_curve.py --run runs/seeds/seed-0       # 2 threads, 2 rounds

``--run`` is a run folder whose stages 1-3 are complete (a ``benchmarks/seeds.py`` seed folder, or the main
command's run). Each variant trains stage 4 from a copy of those stages, in its own process, at the cpu preset
and the run's seed; only ``curve_pairs`` differs. Rounds alternate which goes first (a machine that speeds up or
slows down moves both), and the medians over rounds are reported. Reported: training seconds, the
seconds the curve's evaluations took (the trainer's ``eval_runtime``), and whether the two saved models are the
same bytes (evaluating must not change training). The float32 matmul rate before and after says how busy the
machine was; the ratio is the result, the seconds are this machine's. Writes
``benchmarks/results/reward_curve.json``.
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def train(run: Path, seed: int, threads: int, curve_pairs: str, work: Path) -> dict:
    """Stage 4 on a copy of ``run``'s stages 1-3 with ``curve_pairs``; its seconds and the saved model's hash."""
    from labkit.runs import STAGE_DIRS, read_json, read_jsonl
    from seeds import copy_stages  # benchmarks/, this script's folder, is on sys.path when it runs

    folder = work / f"curve-{curve_pairs}"
    copy_stages(run, folder, ("pretrain", "sft", "preferences"))
    cmd = [sys.executable, "-m", "labkit", "train", "reward", "--name", folder.name, "--runs-dir", str(work),
           "--preset", "cpu", "-p", f"seed={seed}", "-p", f"threads={threads}", "-p", f"curve_pairs={curve_pairs}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LABKIT_THREADS": str(threads)})
    if done.returncode:
        raise SystemExit(f"stage 4 failed with curve_pairs={curve_pairs}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    stage = folder / STAGE_DIRS["reward"]
    ev = read_json(stage / "eval.json")
    evals = [m["reward/eval_runtime"] for m in read_jsonl(stage / "metrics.jsonl") if "reward/eval_runtime" in m]
    return {"train_seconds": round(ev["reward/train_seconds"], 1), "curve_seconds": round(sum(evals), 1),
            "curve_points": len(evals), "eval_pairs": ev["reward/pairs_eval"],
            "model_sha256": hashlib.sha256((stage / "model" / "model.safetensors").read_bytes()).hexdigest(),
            "eval_accuracy": ev["reward/eval_accuracy"], "conduct_spearman": ev.get("reward/conduct_spearman")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a run folder with stages 1-3 complete")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of both variants, the first in the order "
                    "every_pair, preset and the next reversed")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "reward_curve.json"))
    a = ap.parse_args()

    import torch

    from labkit import reward
    from labkit.models import cpu_model, matmul_gflops
    from labkit.runs import Run, read_json

    run = Path(a.run)
    if not Run(run.name, run.parent).is_complete("preferences"):
        raise SystemExit(f"--run {run}: stages 1-3 are not complete there")
    seed = int(read_json(run / "run.json")["seed"])
    preset = reward.config("cpu").curve_pairs
    torch.set_num_threads(a.threads)  # the matmul rate at the stages' thread count
    load, rate_before = os.getloadavg()[0], matmul_gflops()
    order = [("every_pair", None), ("preset", preset)]
    runs = {name: [] for name, _ in order}
    for i in range(a.rounds):
        for name, cp in (order if i % 2 == 0 else order[::-1]):
            with tempfile.TemporaryDirectory(prefix="reward-curve-") as tmp:
                runs[name].append(train(run, seed, a.threads, str(cp), Path(tmp)))
    rate_after = matmul_gflops()
    # a variant's numbers other than its seconds are the same every round (same seed, same threads)
    variants = {name: {**rs[0], **{k: round(statistics.median(r[k] for r in rs), 1) for k in ("train_seconds",
                                                                                          "curve_seconds")},
                       "rounds_train_seconds": [r["train_seconds"] for r in rs],
                       "same_model_every_round": len({r["model_sha256"] for r in rs}) == 1}
                for name, rs in runs.items()}
    every, fixed = variants["every_pair"], variants["preset"]
    flags = "".join(f" --{k} {v}" for k, v in (("threads", a.threads), ("rounds", a.rounds)) if v != ap.get_default(k))
    out = {"command": f"python benchmarks/reward_curve.py --run {run}{flags}", "rounds": a.rounds,
           "date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": os.cpu_count(), "threads": a.threads,
           "seed": seed, "curve_pairs_preset": preset, "load_average_start": round(load, 2),
           "matmul_gflops_before_after": [round(rate_before, 1), round(rate_after, 1)], "variants": variants,
           "same_model": every["model_sha256"] == fixed["model_sha256"] and every["same_model_every_round"]
           and fixed["same_model_every_round"],
           "ratio_train_seconds": round(fixed["train_seconds"] / every["train_seconds"], 3),
           "ratio_train_seconds_rounds": [round(p["train_seconds"] / e["train_seconds"], 3)
                                          for p, e in zip(runs["preset"], runs["every_pair"])]}
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "variants"}, indent=1))


if __name__ == "__main__":
    main()
