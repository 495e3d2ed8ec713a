"""Pretraining tokens/s and MFU of the lab's training step, at the ``gpu`` preset's shape.

    python benchmarks/gpu_throughput.py                        # 12 layers x 768, T=1024, batch 32, bf16, compiled
    python benchmarks/gpu_throughput.py --peak-tflops 989      # MFU against a peak you state
    python benchmarks/gpu_throughput.py --tiny                 # a reduced shape that runs on a CPU in seconds

It times ``labkit.pretrain.get_batch`` + ``train_step`` (what ``pretrain.run`` does every step) on
the model ``pretrain.run`` builds, after warm-up steps that absorb torch.compile.

**MFU** (model FLOPs utilisation; PaLM, Chowdhery et al. 2022, appendix B) is the model FLOP/s
achieved divided by the hardware's peak. Model FLOPs per token::

    6·N + 12·L·H·T

6N: every parameter takes part in one multiply-add (2 FLOPs) in the forward pass and two in the
backward pass (N counts the tied embedding once: it is the output projection's matmul).
12·L·H·T: attention scores Q·Kᵀ and the weighted sum of V, 2·2·H·T FLOPs per token and layer in
the forward pass, times 3 with the backward pass (L layers, width H, context T). Counted in full,
as PaLM and nanoGPT do, although a causal kernel skips about half; recomputation from activation
checkpointing is not counted. Peak: dense bf16 tensor-core FLOP/s from the vendor's data sheet
(``PEAK_TFLOPS``, no structured sparsity), or ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

from labkit import planner, pretrain, textdata
from labkit.config import set_threads
from labkit.models import build_model, pick_device
from labkit.tokenizer import train_tokenizer
from labkit.world import World, corpus

# Dense bf16 tensor-core peaks in TFLOP/s (data sheets; sparsity figures are twice these).
# Matched in order against torch.cuda.get_device_name(): "H100 PCIe" before "H100".
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0), ("A100", 312.0),
               ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0), ("RTX 4090", 165.0)]
TINY = dict(n_layer=2, n_head=2, n_embd=64, block_size=128, batch_size=8, vocab_size=512, compile=False)


def flops_per_token(n_params: int, n_layer: int, n_embd: int, block_size: int) -> int:
    """6N + 12*L*H*T (see the module docstring)."""
    return 6 * n_params + 12 * n_layer * n_embd * block_size


def peak_flops(device: torch.device, given_tflops: float | None) -> tuple[float | None, str]:
    if given_tflops:
        return given_tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return None, "no peak known for a CPU; pass --peak-tflops"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS:
        if key in name:
            return tflops * 1e12, f"table: {key} dense bf16"
    return None, f"{name} is not in the table; pass --peak-tflops"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="reduced shape for a CPU smoke run")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per round (default 20; 5 with --tiny)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (torch.compile happens here)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--peak-tflops", type=float, default=None, help="hardware peak for MFU, TFLOP/s")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    over = dict(TINY) if args.tiny else {}
    if args.batch_size:
        over["batch_size"] = args.batch_size
    if args.compile is not None:
        over["compile"] = args.compile
    cfg = pretrain.config("gpu", **over)
    steps = args.steps or (5 if args.tiny else 20)
    device = pick_device(cfg.device)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    docs = corpus(World(0), 600 if args.tiny else 20000, seed=1)
    tok = train_tokenizer(docs, cfg.tokenizer, cfg.vocab_size)
    stream = textdata.encode(tok, docs)
    torch.manual_seed(0)
    model = build_model("causal", tok, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    fwd = torch.compile(model) if cfg.compile else model
    opt = pretrain.make_optimizer(model, cfg, device)
    gen = torch.Generator().manual_seed(0)
    model.train()

    def run_steps(n):
        for _ in range(n):
            batches = [{k: v.to(device, non_blocking=True) for k, v in pretrain.get_batch(stream, cfg, tok, gen).items()}]
            loss = pretrain.train_step(fwd, opt, batches, cfg, autocast)
        return float(loss)  # one host sync per round

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    run_steps(args.warmup)
    warmup_s = time.perf_counter() - t
    tokens = steps * cfg.batch_size * cfg.block_size
    rates, loss = [], None
    for _ in range(args.rounds):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss = run_steps(steps)
        rates.append(tokens / (time.perf_counter() - t))
    tps = statistics.median(rates)
    fpt = flops_per_token(n_params, cfg.n_layer, cfg.n_embd, cfg.block_size)
    peak, peak_source = peak_flops(device, args.peak_tflops)
    estimate = planner.plan(model, "pretrain", None, effective_batch_size=cfg.batch_size, seq_len=cfg.block_size,
                            use_lora=False, bf16=bf16, gradient_checkpointing=False,
                            micro_batch_size=cfg.batch_size)
    out = {"shape": "tiny" if args.tiny else "gpu preset", "device": str(device),
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "threads": threads, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "block_size": cfg.block_size,
           "batch_size": cfg.batch_size, "vocab": len(tok), "params": n_params, "bf16": bf16, "compiled": cfg.compile,
           "tokens_per_s": tps, "round_tokens_per_s": rates, "warmup_seconds": warmup_s,
           "flops_per_token": fpt, "flops_formula": "6*N + 12*L*H*T",
           "model_tflops_per_s": tps * fpt / 1e12, "peak_tflops": peak and peak / 1e12, "peak_source": peak_source,
           "mfu": tps * fpt / peak if peak else None, "final_loss": loss,
           "planner_estimate_gib": round(estimate.total_gb, 3),
           "measured_peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
