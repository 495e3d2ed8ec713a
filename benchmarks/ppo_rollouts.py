"""PPO rollouts per second: ``labkit.ppo_models.sample`` generating ``rollout_batch_size`` responses (KV cache on).

    python benchmarks/ppo_rollouts.py                              # cpu presets: pretrain's model shape, ppo's batch
    python benchmarks/ppo_rollouts.py --preset gpu                 # on a GPU (bf16 autocast)
    python benchmarks/ppo_rollouts.py --model runs/demo/02_sft/model   # a trained SFT model instead
    python benchmarks/ppo_rollouts.py --preset smoke               # seconds, for CI

One rollout is one prompt -> one sampled response, exactly as a PPO step makes them
(``ppo_models.sample``: chat-formatted world prompts, left padding, temperature ``temperature``,
top_k=0, top_p=1, ``max_new_tokens``, KV cache). Without ``--model`` the policy is a freshly
initialised model of the ``pretrain`` preset's shape with the lab's tokenizer: it rarely emits
EOS, so every response runs to ``max_new_tokens`` -- the slowest case; a trained SFT model
stops earlier (``mean_response_tokens`` says how long responses were).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

from labkit import ppo, pretrain
from labkit.ppo_models import sample
from labkit import world as W
from labkit.config import set_threads
from labkit.models import build_model, load_model, pick_device
from labkit.tokenizer import ensure_chat_ready, train_tokenizer


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu", help="fills ppo's rollout_batch_size/max_new_tokens/temperature "
                                                    "and pretrain's model shape")
    ap.add_argument("--model", default=None, help="a causal-LM checkpoint folder (e.g. runs/demo/02_sft/model)")
    ap.add_argument("--rounds", type=int, default=3, help="timed batches (after one warm-up batch)")
    ap.add_argument("--rollout-batch-size", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    over = {k: v for k, v in (("rollout_batch_size", args.rollout_batch_size),
                              ("max_new_tokens", args.max_new_tokens)) if v}
    pcfg = ppo.config(args.preset, **over)
    device = pick_device(pcfg.device)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    world = W.World(0)
    if args.model:
        from transformers import AutoTokenizer
        tok = ensure_chat_ready(AutoTokenizer.from_pretrained(args.model))
        policy = load_model(args.model, "causal")
    else:
        shape = pretrain.config(args.preset)
        tok = train_tokenizer(W.corpus(world, 2000, seed=1), shape.tokenizer, shape.vocab_size)
        torch.manual_seed(0)
        policy = build_model("causal", tok, shape.n_layer, shape.n_head, shape.n_embd, shape.block_size)
    policy.to(device).eval()
    tasks, _ = ppo.load_prompts(pcfg, world)
    B = pcfg.rollout_batch_size
    batches = [[tasks[(r * B + i) % len(tasks)]["prompt"] for i in range(B)] for r in range(args.rounds + 1)]

    def rollout(prompts):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = sample(policy, tok, prompts, pcfg.max_new_tokens, pcfg.temperature, autocast)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, out

    torch.manual_seed(0)
    rollout(batches[0])  # warm-up: allocator, kernels
    seconds, new_tokens, prompt_tokens = [], [], []
    for prompts in batches[1:]:
        s, out = rollout(prompts)
        seconds.append(s)
        new_tokens.append(int(out["mask"].sum()))
        prompt_tokens.append(int(out["query_mask"].sum()))
    sec = statistics.median(seconds)
    res = {"preset": args.preset, "model": args.model or f"fresh {pretrain.config(args.preset).n_layer}-layer "
                                                        f"{pretrain.config(args.preset).n_embd}-wide Llama",
           "device": str(device), "threads": threads, "bf16": bf16,
           "params": sum(p.numel() for p in policy.parameters()), "rollout_batch_size": B,
           "max_new_tokens": pcfg.max_new_tokens, "temperature": pcfg.temperature, "kv_cache": True,
           "seconds_per_batch": sec, "rollouts_per_s": B / sec,
           "new_tokens_per_s": statistics.median(n / s for n, s in zip(new_tokens, seconds)),
           "mean_response_tokens": sum(new_tokens) / (B * len(new_tokens)),
           "mean_prompt_tokens": sum(prompt_tokens) / (B * len(prompt_tokens)),
           "round_seconds": seconds}
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
