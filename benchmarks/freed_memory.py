"""What keeping freed memory in the heap (``config.keep_freed_memory``) buys, and that it changes no result.

    .venv/bin/python benchmarks/freed_memory.py                  # 2 threads, 5 rounds
    .venv/bin/python benchmarks/freed_memory.py --run runs/demo  # that run's SFT model instead of random weights

Each round starts two fresh processes, one with glibc's own malloc thresholds ("plain") and one after
``keep_freed_memory`` ("kept"), in alternating order so a machine that speeds up or slows down moves both.
Each process times, on the cpu preset's shapes, (1) pretraining steps (``pretrain.train_step`` on random
windows), (2) SFT training steps (forward, backward, AdamW on batches of 32 padded examples) and then (3)
generating as stage 3 makes its candidates (64 prompts a batch, 6 samples each at temperature 1.2, 24 new
tokens, transformers' KV cache). It also records a digest of every generated
text and of the losses: the two settings must agree on them exactly, since only where memory comes from
differs. Writes ``benchmarks/results/freed_memory.json``; the ratios are the result, seconds are this
machine's (the float32 matmul rate is measured beside them).
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SETTINGS = ("plain", "kept")
KEYS = ("pretrain_step_s", "sft_step_s", "generate_s")


def child(setting: str, threads: int, run: str | None, batches: int, steps: int) -> dict:
    import contextlib

    import torch

    from labkit import pretrain, sft, textdata
    from labkit import world as W
    from labkit.config import keep_freed_memory
    from labkit.generate import generate
    from labkit.models import build_model
    from labkit.tokenizer import to_prompt_completion

    torch.set_num_threads(threads)
    if setting == "kept":
        assert keep_freed_memory(), "not glibc: nothing to measure"
    pcfg, cfg = pretrain.config("cpu"), sft.config("cpu", n_train_tasks=2000)
    if run:
        from transformers import AutoTokenizer

        from labkit.models import load_model
        from labkit.tokenizer import ensure_chat_ready
        model = load_model(Path(run) / "02_sft" / "model", "causal")
        tok = ensure_chat_ready(AutoTokenizer.from_pretrained(str(Path(run) / "02_sft" / "model")))
    else:
        from labkit.tokenizer import train_tokenizer
        tok = train_tokenizer(W.corpus(W.World(0), 2000, seed=1), pcfg.tokenizer, pcfg.vocab_size)
        torch.manual_seed(0)
        model = build_model("causal", tok, pcfg.n_layer, pcfg.n_head, pcfg.n_embd, pcfg.block_size)
    train, held_out = sft.world_tasks(W.World(0), cfg)
    prompts = [t["prompt"] for t in held_out][:64 * batches]

    pre_model = build_model("causal", tok, pcfg.n_layer, pcfg.n_head, pcfg.n_embd, pcfg.block_size)
    pre_opt = pretrain.make_optimizer(pre_model, pcfg, torch.device("cpu"))
    stream = textdata.encode(tok, W.corpus(W.World(0), 1000, seed=2))
    gen_rng = torch.Generator().manual_seed(0)
    pre_s, pre_losses = [], []
    for _ in range(steps):  # stage 1's step on the cpu preset's windows (a model of its own: SFT's stays as it is)
        t = time.perf_counter()
        pre_losses.append(float(pretrain.train_step(pre_model, pre_opt, [pretrain.get_batch(stream, pcfg, tok, gen_rng)],
                                                    pcfg, contextlib.nullcontext())))
        pre_s.append(time.perf_counter() - t)
    del pre_model, pre_opt

    rows = to_prompt_completion(tok, train)[:32 * steps]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses, step_s = [], []
    pad = tok.pad_token_id
    for i in range(steps):
        chunk = rows[32 * i:32 * (i + 1)]
        seqs = [tok(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"] for r in chunk]
        n = min(cfg.max_length, max(map(len, seqs)))
        ids = torch.tensor([(s[:n] + [pad] * n)[:n] for s in seqs])
        mask = torch.tensor([[1] * min(len(s), n) + [0] * (n - min(len(s), n)) for s in seqs])
        labels = ids.masked_fill(mask == 0, -100)
        t = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_s.append(time.perf_counter() - t)
        losses.append(loss.item())
    # generation last, as a stage does after training (SFT's evaluation, PPO's after training)
    model.eval()
    t = time.perf_counter()
    outs = generate(model, tok, prompts, max_new_tokens=24, temperature=1.2, batch_size=64,
                    num_return_sequences=6, seed=0)
    gen_s = time.perf_counter() - t
    digest = hashlib.sha256(json.dumps([[o["response"] for o in outs], losses, pre_losses]).encode()).hexdigest()[:16]
    return {"generate_s": gen_s, "sft_step_s": statistics.median(step_s[1:]),
            "pretrain_step_s": statistics.median(pre_s[1:]), "digest": digest, "sequences": len(outs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=2, help="generation batches of 64 prompts per process")
    ap.add_argument("--steps", type=int, default=12, help="pretraining and SFT steps per process (the first is not timed)")
    ap.add_argument("--run", default=None, help="a run folder whose 02_sft/model to use (default: random weights)")
    ap.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "freed_memory.json"))
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.threads, a.run, a.batches, a.steps)))
        return

    import torch

    from labkit.models import cpu_model, matmul_gflops
    torch.set_num_threads(a.threads)
    rate_before = matmul_gflops()
    per = {s: [] for s in SETTINGS}
    for r in range(a.rounds):
        for s in (SETTINGS if r % 2 == 0 else SETTINGS[::-1]):
            cmd = [sys.executable, __file__, "--child", s, "--threads", str(a.threads), "--batches", str(a.batches),
                   "--steps", str(a.steps)] + (["--run", a.run] if a.run else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            per[s].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(r, s, per[s][-1], flush=True)
    digests = {d["digest"] for s in SETTINGS for d in per[s]}
    med = {s: {k: statistics.median(d[k] for d in per[s]) for k in KEYS} for s in SETTINGS}
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": os.cpu_count(), "threads": a.threads,
              "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
              "model": a.run or "random weights, cpu preset shape", "rounds": a.rounds,
              "generated_sequences": per["plain"][0]["sequences"], "steps_timed": a.steps - 1,
              "matmul_gflops_before": round(rate_before, 1), "matmul_gflops_after": round(matmul_gflops(), 1),
              "same_results": len(digests) == 1,
              "seconds": {s: {k: [round(d[k], 4) for d in per[s]] for k in KEYS} for s in SETTINGS},
              "median": {s: {k: round(v, 4) for k, v in med[s].items()} for s in SETTINGS},
              "kept_over_plain": {k: round(med["kept"][k] / med["plain"][k], 3) for k in KEYS}}
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["kept_over_plain"]), "same results:", result["same_results"], f"wrote {a.out}")
    if not result["same_results"]:
        sys.exit("the two settings generated or trained differently")


if __name__ == "__main__":
    main()
