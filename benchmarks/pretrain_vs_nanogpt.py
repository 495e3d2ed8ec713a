"""Pretraining tokens/s beside nanoGPT's ``model.py``: same CPU, shape, tokens and thread count, one process.

    python benchmarks/pretrain_vs_nanogpt.py --nanogpt ~/src/nanoGPT/model.py            # 2 threads
    python benchmarks/pretrain_vs_nanogpt.py --nanogpt ~/src/nanoGPT/model.py --compile  # + torch.compile
    python benchmarks/pretrain_vs_nanogpt.py --nanogpt ~/src/nanoGPT/model.py --fused    # + fused projections

``--nanogpt`` is the ``model.py`` of a nanoGPT checkout (github.com/karpathy/nanoGPT, MIT licence); it is
loaded from that path, nothing of it is copied here. Three trainers (and those the flags below add) see
the same token windows in the same order, at the ``cpu`` preset's shape (batch x block, layers, heads,
width, vocabulary):

* ``lab``: what ``pretrain.run`` does every step (``get_batch`` + ``train_step``, its optimizer) on the
  model the cpu preset builds (a stock ``LlamaForCausalLM``, SwiGLU MLP at ``ffn_mult`` x width);
* ``lab_matched_mlp``: the same at ``ffn_mult=8/3``, where SwiGLU's three matrices hold the weights of
  GPT-2's two at 4x (Shazeer 2020, "GLU Variants Improve Transformer"; LLaMA's 2/3 * 4d);
* ``nanogpt``: nanoGPT's ``GPT`` (bias=False, dropout 0) and its ``configure_optimizers``, stepped as
  its ``train.py`` does on a CPU (no compile: its README's CPU recipe passes ``--compile=False``).

They alternate in rounds so machine noise hits all alike; each round also times a 2048^2 float32
matmul at the same thread count, the machine's practical peak, so the ratios travel. Ratios: tokens/s,
and per model FLOP (6 * parameters * tokens/s, Kaplan et al. 2020). ``--compile`` adds
``lab_matched_mlp`` under ``torch.compile`` (Inductor) and its compile seconds from a cold cache, and
says whether it pays over ``--over-steps`` steps. ``--fused`` adds a stock ``Phi3ForCausalLM`` at
``lab_matched_mlp``'s shape: the same layer with q/k/v and gate/up each one matrix, as nanoGPT fuses
q/k/v. ``--profile`` then runs torch's profiler over a few more steps of ``lab_matched_mlp`` and
``nanogpt``, in alternating rounds: each operator's own CPU time per step on either side (median over the
rounds), so the gap at matched parameters is read per operator (the profiler's own cost per call weighs
more on the side with more, smaller operators). Writes ``benchmarks/results/pretrain_vs_nanogpt.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from labkit import pretrain, textdata
from labkit.config import set_threads
from labkit.models import build_model, count_params, cpu_model, matmul_gflops
from labkit.tokenizer import train_tokenizer
from labkit.world import World, corpus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds import machine  # noqa: E402  (the machine record every seeds.py run has: CPU generation, kernels)

MATCHED_FFN = 8 / 3  # SwiGLU hidden size at which its 3 matrices hold as many weights as GPT-2's 2 at 4x


def load_nanogpt(path: str):
    """nanoGPT's model.py as a module, from the path given."""
    if not Path(path).is_file():
        sys.exit(f"--nanogpt {path}: no such file; pass the model.py of a nanoGPT checkout")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "GPT"):
        sys.exit(f"--nanogpt {path}: has no class GPT; pass the model.py of a nanoGPT checkout")
    return module


def pretrain_stepper(model, cfg, tok, stream, seed: int, compile_model: bool = False):
    """pretrain.run's step (``get_batch`` + ``train_step``, its optimizer) on ``model``: a function doing one step,
    and the model."""
    opt = pretrain.make_optimizer(model, cfg, torch.device("cpu"))
    fwd = torch.compile(model) if compile_model else model
    gen = torch.Generator().manual_seed(seed)

    def step():
        return pretrain.train_step(fwd, opt, [pretrain.get_batch(stream, cfg, tok, gen)], cfg, contextlib.nullcontext())
    return step, model


def lab_trainer(cfg, tok, stream, seed: int, compile_model: bool = False):
    """pretrain.run's step on a fresh model of ``cfg``'s shape."""
    torch.manual_seed(seed)
    model = build_model("causal", tok, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, ffn_mult=cfg.ffn_mult)
    return pretrain_stepper(model, cfg, tok, stream, seed, compile_model)


def fused_trainer(cfg, tok, stream, seed: int):
    """pretrain.run's step on a stock ``Phi3ForCausalLM`` of the lab model's shape: Llama's layer (RMSNorm, RoPE,
    SwiGLU) with q, k, v in one matrix and the MLP's gate and up in another, as nanoGPT's c_attn fuses q, k, v.
    Fewer, larger matmuls per layer: what the lab would gain by building that architecture instead."""
    from transformers import Phi3Config, Phi3ForCausalLM
    torch.manual_seed(seed)
    llama = build_model("causal", tok, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, ffn_mult=cfg.ffn_mult).config
    same = {k: getattr(llama, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                           "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                                           "rms_norm_eps", "tie_word_embeddings", "hidden_act", "pad_token_id",
                                           "bos_token_id", "eos_token_id")}
    model = Phi3ForCausalLM._from_config(Phi3Config(**same, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0,
                                                    original_max_position_embeddings=cfg.block_size),
                                         attn_implementation="sdpa")
    return pretrain_stepper(model, cfg, tok, stream, seed)


def nanogpt_trainer(ng, cfg, tok, stream, seed: int):
    """nanoGPT's model, optimizer and train.py step (get_batch's x/y windows, clip, step, zero_grad)."""
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter count and optimizer groups
        model = ng.GPT(ng.GPTConfig(block_size=cfg.block_size, vocab_size=len(tok), n_layer=cfg.n_layer,
                                    n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=0.0, bias=False))
        opt = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (0.9, 0.95), "cpu")
    gen = torch.Generator().manual_seed(seed)  # the lab's windows: same generator calls as pretrain.get_batch
    B, T = cfg.batch_size, cfg.block_size

    def step():
        ix = torch.randint(len(stream) - T - 1, (B,), generator=gen).tolist()
        x = torch.stack([stream[i:i + T] for i in ix])
        y = torch.stack([stream[i + 1:i + 1 + T] for i in ix])
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()
    return step, model


def timed_round(step, n: int, tokens_per_step: int) -> tuple[float, float]:
    """(tokens per wall second, tokens per process-CPU second) over ``n`` steps."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        loss = step()
    float(loss)
    return n * tokens_per_step / (time.perf_counter() - wall), n * tokens_per_step / (time.process_time() - cpu)


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (Inductor compiles in worker processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def op_profiles(steppers: dict, rounds: int, n: int) -> dict:
    """torch.profiler over ``n`` steps of each trainer, in alternating rounds as the timing runs (one profile
    alone is at the mercy of a stray page fault or a busy neighbour): per trainer and operator, its own CPU
    milliseconds per step (median over the rounds) and calls per step; the total is the sum of those medians."""
    from torch.profiler import profile
    per = {k: [] for k in steppers}
    for _ in range(rounds):
        for name, step in steppers.items():
            with profile() as prof:
                for _ in range(n):
                    float(step())
            per[name].append({e.key: (e.self_cpu_time_total / n / 1000, e.count / n) for e in prof.key_averages()
                              if e.self_cpu_time_total})
    out = {}
    for name, profs in per.items():
        ops = {op: {"ms": round(statistics.median(p.get(op, (0.0, 0))[0] for p in profs), 3),
                    "calls": round(max(p.get(op, (0.0, 0))[1] for p in profs), 1)}
               for op in set().union(*profs)}
        out[name] = {"steps": n, "rounds": rounds, "ms_per_step": round(sum(v["ms"] for v in ops.values()), 1),
                     "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1]["ms"], kv[0])))}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanogpt", required=True, help="path to a nanoGPT checkout's model.py")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads for every trainer")
    ap.add_argument("--steps", type=int, default=4, help="training steps per trainer per round")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--compile", action="store_true", help="also time lab_matched_mlp under torch.compile")
    ap.add_argument("--fused", action="store_true", help="also time a stock Phi-3 model of lab_matched_mlp's shape "
                    "(fused q/k/v and gate/up projections)")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS", help="then profile lab_matched_mlp and "
                    "nanogpt over STEPS steps each per round, --rounds alternating rounds: every operator's own CPU "
                    "time per step (0: no profile)")
    ap.add_argument("--cache-dir", default=None, help="Inductor's cache folder (default: a new empty one, the "
                    "compile time of a first run; run twice with the same folder for a warm cache)")
    ap.add_argument("--over-steps", type=int, default=None, help="steps over which compile must pay (default: "
                    "the cpu preset's max_steps)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pretrain_vs_nanogpt.json"))
    args = ap.parse_args()
    ng = load_nanogpt(args.nanogpt)
    threads = set_threads(args.threads)
    cfg = pretrain.config("cpu", device="cpu")
    docs = corpus(World(0), 3000, seed=1)
    tok = train_tokenizer(docs, cfg.tokenizer, cfg.vocab_size)
    stream = textdata.encode(tok, docs)
    matched = dataclasses.replace(cfg, ffn_mult=MATCHED_FFN)
    trainers = {"lab": lab_trainer(cfg, tok, stream, seed=0),
                "lab_matched_mlp": lab_trainer(matched, tok, stream, seed=0),
                "nanogpt": nanogpt_trainer(ng, cfg, tok, stream, seed=0)}
    if args.fused:
        trainers["lab_matched_mlp_fused"] = fused_trainer(matched, tok, stream, seed=0)
    compile_s = compile_cpu_s = None
    if args.compile:  # by default a cold Inductor cache: the compile time a first run pays
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.cache_dir or tempfile.mkdtemp(prefix="inductor-")
        trainers["lab_matched_mlp_compiled"] = lab_trainer(matched, tok, stream, seed=0, compile_model=True)
    tokens_per_step = cfg.batch_size * cfg.block_size
    load_start = os.getloadavg()
    for name, (step, _) in trainers.items():  # warm-up: allocator, and torch.compile's first call
        t, cpu = time.perf_counter(), cpu_seconds()
        step()
        first, first_cpu = time.perf_counter() - t, cpu_seconds() - cpu
        t, cpu = time.perf_counter(), cpu_seconds()
        float(step())
        if name.endswith("_compiled"):  # less one plain step; CPU seconds count Inductor's compile workers
            compile_s, compile_cpu_s = first - (time.perf_counter() - t), first_cpu - (cpu_seconds() - cpu)

    wall = {k: [] for k in trainers}
    per_cpu = {k: [] for k in trainers}
    peak = []
    for _ in range(args.rounds):
        peak.append(matmul_gflops())
        for name, (step, _) in trainers.items():
            w, c = timed_round(step, args.steps, tokens_per_step)
            wall[name].append(w)
            per_cpu[name].append(c)
    params = {k: count_params(m) for k, (_, m) in trainers.items()}
    med = {k: statistics.median(v) for k, v in wall.items()}
    gflops = {k: 6 * params[k] * med[k] / 1e9 for k in trainers}

    def ratio(a, b, flops=False):
        scale = params[a] / params[b] if flops else 1.0
        return {"of_medians": round(med[a] / med[b] * scale, 3),
                "median_of_rounds": round(statistics.median(x / y for x, y in zip(wall[a], wall[b])) * scale, 3),
                "per_cpu_second": round(statistics.median(per_cpu[a]) / statistics.median(per_cpu[b]) * scale, 3)}

    flags = [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
             if k not in ("nanogpt", "out", "compile", "fused") and v != ap.get_default(k)] + \
        ["--compile"] * args.compile + ["--fused"] * args.fused
    out = {"command": " ".join(["python benchmarks/pretrain_vs_nanogpt.py --nanogpt <nanoGPT checkout>/model.py",
                                *flags]),
           "shape": {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd,
                     "block_size": cfg.block_size, "batch_size": cfg.batch_size, "vocab_size": len(tok),
                     "ffn_mult": {"lab": cfg.ffn_mult, "lab_matched_mlp": round(MATCHED_FFN, 4)}},
           "date": time.strftime("%Y-%m-%d"), "params": params, "threads": threads, "steps_per_round": args.steps,
           "rounds": args.rounds,
           "torch": torch.__version__, "transformers": transformers.__version__, "cpu": cpu_model(),
           # the name alone hides the generation and the kernels torch picked, both of which move these ratios
           "machine": machine(),
           "load_average_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
           "matmul_peak_gflops": {"median": round(statistics.median(peak), 1), "rounds": [round(x, 1) for x in peak]},
           "tokens_per_s": {k: {"median": round(med[k]), "rounds": [round(x) for x in wall[k]]} for k in trainers},
           "tokens_per_cpu_s": {k: {"median": round(statistics.median(v)), "rounds": [round(x) for x in v]}
                                for k, v in per_cpu.items()},
           "model_gflops_per_s": {k: round(v, 1) for k, v in gflops.items()},
           "share_of_matmul_peak": {k: round(v / statistics.median(peak), 3) for k, v in gflops.items()},
           "ratios_vs_nanogpt": {
               "tokens_per_s_as_configured": ratio("lab", "nanogpt"),
               "tokens_per_s_matched_mlp": ratio("lab_matched_mlp", "nanogpt"),
               "per_model_flop_as_configured": ratio("lab", "nanogpt", flops=True),
               "per_model_flop_matched_mlp": ratio("lab_matched_mlp", "nanogpt", flops=True)}}
    if args.fused:
        out["ratios_vs_nanogpt"]["tokens_per_s_matched_mlp_fused"] = ratio("lab_matched_mlp_fused", "nanogpt")
        out["ratios_vs_nanogpt"]["per_model_flop_matched_mlp_fused"] = ratio("lab_matched_mlp_fused", "nanogpt",
                                                                             flops=True)
        out["fused_vs_lab_matched_mlp"] = ratio("lab_matched_mlp_fused", "lab_matched_mlp")
    if args.compile:
        over = args.over_steps or cfg.max_steps
        name = "lab_matched_mlp_compiled"
        cpu_med = {k: statistics.median(v) for k, v in per_cpu.items()}
        saved = over * tokens_per_step * (1 / med["lab_matched_mlp"] - 1 / med[name])
        saved_cpu = over * tokens_per_step * (1 / cpu_med["lab_matched_mlp"] - 1 / cpu_med[name])
        out["ratios_vs_nanogpt"]["tokens_per_s_matched_mlp_compiled"] = ratio(name, "nanogpt")
        out["compile"] = {"cache": "given folder" if args.cache_dir else "cold (new folder)",
                          "speedup_after_compile": ratio(name, "lab_matched_mlp"), "over_steps": over,
                          "compile_seconds": round(compile_s, 1), "seconds_saved_over_steps": round(saved, 1),
                          "compile_cpu_seconds": round(compile_cpu_s, 1),
                          "cpu_seconds_saved_over_steps": round(saved_cpu, 1),
                          "pays": saved > compile_s, "pays_in_cpu_seconds": saved_cpu > compile_cpu_s}
    if args.profile:  # after the timed rounds, so the profiler's cost touches none of the numbers above
        out["profile"] = op_profiles({k: trainers[k][0] for k in ("lab_matched_mlp", "nanogpt")}, args.rounds,
                                     args.profile)
    print(json.dumps(out, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
