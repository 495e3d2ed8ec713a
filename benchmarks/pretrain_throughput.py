"""Tokens/s of the lab's pretraining step vs a minimal hand-written PyTorch loop, same model/batch/data.

    python benchmarks/pretrain_throughput.py                 # cpu preset shape
    python benchmarks/pretrain_throughput.py --preset gpu    # on a GPU

Both loops train the same freshly built model on the same token stream with
the same batch shape. They alternate in rounds (A B A B ...) so machine noise
hits both alike; we report the median tokens/s of each and their ratio
(lab / hand-written; >= 0.9 is the target). Threads are pinned deliberately:
on a shared 2-core box oversubscribed threads made training >10x slower.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

from labkit import pretrain, textdata
from labkit.config import set_threads
from labkit.models import build_model, pick_device
from labkit.tokenizer import train_tokenizer
from labkit.world import World, corpus


def hand_written_step(model, opt, x, grad_clip, autocast):
    """What a person writes from scratch: forward, backward, clip, step."""
    with autocast:
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                                 x[:, 1:].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--steps", type=int, default=10, help="steps per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    threads = set_threads(args.threads)
    cfg = pretrain.config(args.preset)
    device = pick_device(cfg.device)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    docs = corpus(World(0), 3000, seed=1)
    tok = train_tokenizer(docs, cfg.tokenizer, cfg.vocab_size)
    stream = textdata.encode(tok, docs)
    torch.manual_seed(0)
    model = build_model("causal", tok, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size).to(device)
    if cfg.compile:
        model = torch.compile(model)
    opt = pretrain.make_optimizer(model, cfg, device)
    gen = torch.Generator().manual_seed(0)
    tokens = cfg.batch_size * cfg.block_size

    def lab_round():
        for _ in range(args.steps):
            batches = [{k: v.to(device) for k, v in pretrain.get_batch(stream, cfg, tok, gen).items()}]
            loss = pretrain.train_step(model, opt, batches, cfg, autocast)
        float(loss)

    def hand_round():
        for _ in range(args.steps):
            ix = torch.randint(len(stream) - cfg.block_size - 1, (cfg.batch_size,), generator=gen)
            x = torch.stack([stream[i:i + cfg.block_size] for i in ix.tolist()]).to(device)
            loss = hand_written_step(model, opt, x, cfg.grad_clip, autocast)
        float(loss)

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.steps * tokens / (time.perf_counter() - t)

    lab_round(), hand_round()  # warm-up (allocator, compile)
    lab, hand = [], []
    for _ in range(args.rounds):
        lab.append(timed(lab_round))
        hand.append(timed(hand_round))
    out = {"preset": args.preset, "device": str(device), "threads": threads, "batch": cfg.batch_size,
           "block_size": cfg.block_size, "params": sum(p.numel() for p in model.parameters()),
           "lab_tokens_per_s": statistics.median(lab), "hand_tokens_per_s": statistics.median(hand),
           "ratio": statistics.median(lab) / statistics.median(hand),
           "round_ratios": [a / b for a, b in zip(lab, hand)]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
