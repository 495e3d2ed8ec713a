"""How live the explorers feel: the playground's click and the token view's render, in seconds.

    python benchmarks/explore_latency.py                  # models of the cpu preset's shape, random weights
    python benchmarks/explore_latency.py --run runs/demo  # a trained run folder instead

The targets (issue 25): at the cpu preset on 2 cores, the playground answers 4 models x 4 samples of
32 new tokens within 2 s (median), and the token view renders within 1 s. Without --run this builds,
in a temp folder, a run with four policies of the cpu preset's shape (pretrained, SFT, PPO and a DPO
LoRA adapter on SFT) and a reward model, all with random weights: latency depends on the shapes, not
the weights, and training them would take 20 minutes. Random weights rarely write EOS, so every sample
runs to 32 tokens (the worst case; a trained model stops earlier). Each measurement goes through
``ExplorerWidget.handle``, the path a browser click takes, after one warm-up click: the median of
``--clicks`` clicks, at one thread (the explorers' setting) and at two (for comparison). The machine's
float32 matmul rate (1024 x 1024, same threads) and load average sit beside the numbers, so a result
from a busy machine reads as one. Writes benchmarks/results/explore_latency.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from labkit import pretrain
from labkit.explore import ExplorerWidget, Playground, clear_cache, open_run, policies
from labkit.explore_tokens import TokenChanges
from labkit.models import build_model
from labkit.runs import STAGE_OUTPUTS, Run, atomic_write_text
from labkit.tokenizer import train_tokenizer
from labkit.world import World, corpus

OUT = Path(__file__).parent / "results" / "explore_latency.json"


def cpu_preset_run(folder: Path) -> Run:
    """A run folder holding cpu-preset-shaped policies and reward model with random weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification
    cfg = pretrain.config("cpu")
    tok = train_tokenizer(corpus(World(0), 2000, seed=1), cfg.tokenizer, cfg.vocab_size)
    r = Run("latency", folder)
    with r.lock():  # run.json is written only under the run's lock
        return _fill(r, tok, cfg, LoraConfig, get_peft_model, AutoModelForSequenceClassification)


def _fill(r: Run, tok, cfg, LoraConfig, get_peft_model, AutoModelForSequenceClassification) -> Run:
    r.update_manifest(preset="cpu", world_seed=0)
    paths = {"pretrain": "01_pretrain/model", "sft": "02_sft/model", "ppo": "05_ppo/model", "reward": "04_reward/model"}
    for i, (stage, rel) in enumerate(paths.items()):
        torch.manual_seed(i)
        model = build_model("causal", tok, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size)
        model.save_pretrained(r.path / rel)
        tok.save_pretrained(r.path / rel)
        if stage == "reward":
            rm = AutoModelForSequenceClassification.from_pretrained(str(r.path / rel), num_labels=1)
            rm.config.pad_token_id = tok.pad_token_id
            rm.save_pretrained(r.path / rel)
        complete(r, stage)
    sft = build_model("causal", tok, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size)
    lora = get_peft_model(sft, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(r.path / "06_compare" / "dpo" / "adapter")
    complete(r, "compare")
    return r


def complete(r: Run, stage: str) -> None:
    """Mark ``stage`` complete with the files a complete stage has (runs.STAGE_OUTPUTS), empty."""
    for out in STAGE_OUTPUTS[stage]:
        path = r.stage_dir(stage) / out.split("|")[0]
        if not path.exists():
            atomic_write_text(path, "{}" if out.endswith(".json") else "")
    r.complete(stage, 0.0, {})


def median_s(fn, clicks: int) -> tuple[float, list[float]]:
    fn()  # warm-up: the first click loads the models
    times = []
    for _ in range(clicks):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def matmul_gflops(threads: int, n: int = 1024, reps: int = 20) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    s = time.perf_counter() - t0
    torch.set_num_threads(before)
    return 2 * n ** 3 * reps / s / 1e9


def measure(r: Run, models: list[str], clicks: int, threads: int) -> dict:
    os.environ["LABKIT_THREADS"] = str(threads)  # what the explorers run their models on (explore.few_threads)
    clear_cache()
    play = ExplorerWidget(Playground(r, models=models))
    for name, value in (("samples", 4), ("max_new_tokens", 32), ("temperature", 1.0)):
        play.handle({"action": "set", "id": name, "value": value})
    gen = {"action": "click", "id": "generate"}
    play_med, play_all = median_s(lambda: play.handle(gen), clicks)
    assert not play.view["error"], play.view["message"]
    lengths = [g["n_tokens"] for gs in play.explorer.results.values() for g in gs]

    view = ExplorerWidget(TokenChanges(r, policy=models[2]))
    view.explorer.values["response"] = play.explorer.results[models[2]][0]["response"]
    show = {"action": "click", "id": "show"}
    tok_med, tok_all = median_s(lambda: view.handle(show), clicks)
    assert not view.view["error"], view.view["message"]
    return {"threads": threads, "matmul_gflops": round(matmul_gflops(threads), 1),
            "playground_s": round(play_med, 3), "playground_clicks_s": [round(t, 3) for t in play_all],
            "playground_tokens_per_sample": lengths, "token_view_s": round(tok_med, 4),
            "token_view_clicks_s": [round(t, 4) for t in tok_all], "token_view_tokens": len(view.explorer.rows)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=None, help="a run folder with four policies (default: build a cpu-shaped one)")
    ap.add_argument("--clicks", type=int, default=7, help="timed clicks per measurement, after one warm-up")
    ap.add_argument("--threads", default="1,2", help="thread counts to measure at")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        r = open_run(args.run) if args.run else cpu_preset_run(Path(tmp))
        models = list(policies(r))[:4]
        if len(models) < 4:
            raise SystemExit(f"{r.path} holds {len(models)} policies ({', '.join(models)}); the benchmark needs 4")
        rows = [measure(r, models, args.clicks, int(t)) for t in args.threads.split(",")]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = {"date": datetime.date.today().isoformat(), "commit": commit, "torch": torch.__version__,
           "cpus": len(os.sched_getaffinity(0)),
           "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
           "models": models, "weights": "trained run " + str(args.run) if args.run else
           "random weights, cpu-preset shapes (4 layers x 192 wide, vocab 1024, 128 positions)",
           "playground": "4 models x 4 samples x 32 new tokens, temperature 1, median of clicks after a warm-up",
           "targets": {"playground_s": 2.0, "token_view_s": 1.0}, "results": rows}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    for row in rows:
        print(f"{row['threads']} thread(s): playground {row['playground_s']:.2f} s (target 2), token view "
              f"{row['token_view_s']:.3f} s (target 1), matmul {row['matmul_gflops']} GFLOP/s")
    print(f"load average {out['load_average_1m']['before']} -> {out['load_average_1m']['after']} on {out['cpus']} "
          f"cpus; wrote {OUT}")


if __name__ == "__main__":
    main()
