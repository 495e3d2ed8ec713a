"""Stage 7 (trust) on existing run folders of several seeds: Gao et al.'s fits with their range, the curves, and
README's figure. One command makes all three from the seeds' pipelines (``benchmarks/seeds.py``):

    .venv/bin/python benchmarks/trust_seeds.py --seeds 0,1,2 --work runs/seeds            # stage 7 where missing
    .venv/bin/python benchmarks/trust_seeds.py --seeds 0,1,2 --twin                        # stage 5's kl_coef=0 twin first
    .venv/bin/python benchmarks/trust_seeds.py --seeds 0 -p parts=best_of_n,rl,data_size,feedback --out x.json

Each seed's folder ``<work>/seed-<n>`` needs stages 2-5; stage 7 runs there through ``labkit train trust`` (the
function the notebook calls), one seed after another on ``--threads`` threads, and is read, not re-run, when it
is already complete (``--force`` re-runs it). With ``--twin`` a seed without stage 5's kl_coef=0 twin gets one
first (``ppo.kl_ablation``, as ``benchmarks/seeds.py --twin`` makes it), so the RL curve without the leash exists.

Writes ``--out`` (default ``benchmarks/results/trust.json``): per seed the fits (α, β, R², d*), the measured peaks,
every curve's points, the data-size and feedback results where run, the seconds per part and the machine's load
average while it ran; a summary (mean, min, max over the seeds) of every fitted number; and ``--figure`` (default
``docs/trust/overoptimization.png``): the gold-against-proxy figure of ``--figure-seed`` (the first seed by default), exported by plotly's kaleido
when it is installed, else drawn by plotly.js in the Chromium the browser tests use. README's table of the fits
and docs/results.md are written from the JSON by ``benchmarks/results_tables.py``.

Two seeds side by side: run each in its own command with ``--out`` to a scratch file and ``--figure ''``, then
once more over all the seeds; that last run reads each complete stage 7 and trains nothing.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from labkit import trust
from labkit.models import cpu_model
from labkit.runs import STAGE_DIRS, Run, read_json

CHROMIUM = "/usr/bin/chromium"
FIT_KEYS = ("alpha", "beta", "r2", "d_star", "d_peak_measured", "d_max", "gold_gain_max", "gold_gain_last",
            "proxy_gain_last")


def run_seed(seed: int, args) -> dict:
    """Stage 7 on one seed's folder (its kl_coef=0 twin first with --twin), then its numbers."""
    folder = Path(args.work) / f"seed-{seed}"
    env = {**os.environ, "LABKIT_THREADS": str(args.threads)}
    r = Run(folder.name, folder.parent)
    if args.twin and not Run(f"{folder.name}-nokl", folder.parent).is_complete("ppo"):
        code = ("from labkit import ppo; "
                f"ppo.kl_ablation(ppo.config({args.preset!r}, seed={seed}, threads={args.threads}), "
                f"{folder.name!r}, {str(folder.parent)!r}, {args.preset!r}, live=False)")
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
    if args.force or not r.is_complete("trust"):
        cmd = [sys.executable, "-m", "labkit", "train", "trust", "--name", folder.name, "--runs-dir", str(folder.parent),
               "--preset", args.preset, "-p", f"seed={seed}", "-p", f"threads={args.threads}"]
        for p in args.param:
            cmd += ["-p", p]
        t0 = time.time()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"seed {seed}: stage 7 failed:\n{done.stderr[-3000:]}")
        print(f"seed {seed}: stage 7 done in {time.time() - t0:.0f}s", flush=True)
    ev = read_json(r.path / STAGE_DIRS["trust"] / "eval.json")
    return {"fits": {row["curve"]: {k: row[k] for k in FIT_KEYS} for row in trust.fits_table(ev)},
            "curves": {name: c["points"] for name, c in trust.curves(ev).items()},
            "missing": {k: v["missing"] for k, v in (ev.get("rl") or {}).items() if "missing" in v},
            "data_size": [{k: m.get(k) for k in ("pairs", "conduct_accuracy", "accuracy", "d_peak", "gold_gain_max")}
                          | {"fit": m["fit"]} for m in (ev.get("data_size") or {}).get("models", [])],
            "weakest_peaks_earlier": (ev.get("data_size") or {}).get("weakest_peaks_earlier"),
            "feedback": ev.get("feedback"), "seconds": ev["seconds"], "trust/seconds": ev["trust/seconds"],
            "settings": ev["settings"], "threads": ev["threads"], "load_average_at_start": ev.get("load_average_at_start"),
            "config": read_json(r.path / STAGE_DIRS["trust"] / "config.json")}


def summary(per_seed: dict) -> dict:
    """mean / min / max of every fitted number of every curve, over the seeds that have it."""
    out = {}
    curves = {c for s in per_seed.values() for c in s["fits"]}
    for c in sorted(curves):
        for k in FIT_KEYS:
            vals = [s["fits"][c][k] for s in per_seed.values() if c in s["fits"] and s["fits"][c][k] is not None]
            if vals:
                out[f"{c}: {k}"] = {"mean": statistics.mean(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
    return out


def save_png(fig, path: Path) -> str:
    """The figure as a PNG: plotly's kaleido when installed, else plotly.js's toImage in headless Chromium."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.write_image(str(path), width=1200, height=500, scale=2)
        return "kaleido"
    except (ImportError, ValueError, RuntimeError):
        pass
    import base64

    from playwright.sync_api import sync_playwright
    page_html = fig.to_html(include_plotlyjs=True, full_html=True, div_id="fig")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.set_content(page_html)
        data = page.evaluate("Plotly.toImage(document.getElementById('fig'), {format: 'png', width: 1200, height: 500, scale: 2})")
        browser.close()
    path.write_bytes(base64.b64decode(data.split(",", 1)[1]))
    return "chromium"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--work", default="runs/seeds", help="the folder holding seed-<n>/ (benchmarks/seeds.py's --work)")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--twin", action="store_true", help="train stage 5's kl_coef=0 twin where a seed lacks it")
    ap.add_argument("--force", action="store_true", help="re-run stage 7 where it is already complete")
    ap.add_argument("-p", "--param", action="append", default=[], help="key=value for stage 7, every seed")
    ap.add_argument("--out", default="benchmarks/results/trust.json")
    ap.add_argument("--figure", default="docs/trust/overoptimization.png", help="'' for none")
    ap.add_argument("--figure-seed", type=int, help="the seed the figure shows (default: the first of --seeds)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {s: run_seed(s, args) for s in seeds}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "preset": args.preset, "date": time.strftime("%Y-%m-%d"), "params": args.param, "threads": args.threads,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "seeds": {str(s): results[s] for s in seeds}, "summary": summary(results)}, indent=1) + "\n")
    print(f"wrote {args.out}")
    if args.figure:
        shown = seeds[0] if args.figure_seed is None else args.figure_seed
        ev = read_json(Path(args.work) / f"seed-{shown}" / STAGE_DIRS["trust"] / "eval.json")
        how = save_png(trust.overoptimization_figure(ev, title=f"Gold (verifier) and proxy (reward model) against "
                                                               f"d = √KL, seed {shown}, {args.preset} preset"),
                       Path(args.figure))
        print(f"wrote {args.figure} ({how})")


if __name__ == "__main__":
    main()
