"""Where one SFT step's time goes: TRL's trainer beside a plain PyTorch loop, and the padding of its batches.

    .venv/bin/python benchmarks/sft_step.py                      # 2 threads, 3 rounds of 40 steps
    .venv/bin/python benchmarks/sft_step.py --threads 1 --rounds 2

Stage 2's ``trl.SFTTrainer`` at the cpu preset's shape, configured as stage 2 configures it, four ways:
random batches padded to their longest example (the preset); the same batches (taken from the trainer's
own data loader) through a plain loop of forward, backward, clip and AdamW step (what TRL adds per
step); ``padding_free`` (each batch one row, no padding computed); and ``group_by_length`` (batches of
similar length). Rounds alternate between them, so a machine that speeds up or slows down moves all;
the ratios are the result, the seconds are this machine's. The model has random weights (a step's
cost does not depend on them); the float32 matmul rate is measured before and after. Writes
``benchmarks/results/sft_step.json``.
"""
import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
VARIANTS = ("random", "plain_loop", "padding_free", "group_by_length")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per round (after 3 warm-up steps)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sft_step.json"))
    a = ap.parse_args()

    import torch
    import trl
    from transformers import TrainerCallback

    from labkit import pretrain, sft
    from labkit import world as W
    from labkit.models import build_model, cpu_model, matmul_gflops
    from labkit.tokenizer import to_prompt_completion, train_tokenizer

    torch.set_num_threads(a.threads)
    pcfg, cfg = pretrain.config("cpu"), sft.config("cpu", n_train_tasks=4000)
    tok = train_tokenizer(W.corpus(W.World(0), 2000, seed=1), pcfg.tokenizer, pcfg.vocab_size)
    torch.manual_seed(0)
    model = build_model("causal", tok, pcfg.n_layer, pcfg.n_head, pcfg.n_embd, pcfg.block_size)
    train, _ = sft.world_tasks(W.World(0), cfg)
    rows = to_prompt_completion(tok, train)
    warm = 3
    rate_before = matmul_gflops()

    batches = []  # the preset's own batches (same collator, same padding), for the plain loop

    def plain_loop() -> list[float]:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        model.train()
        times = []
        for i, batch in enumerate(batches):
            t = time.perf_counter()
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= warm:
                times.append(time.perf_counter() - t)
        return times

    def one_round(variant: str) -> list[float]:
        """Seconds of each timed step."""
        if variant == "plain_loop":
            return plain_loop()
        stamps = []

        class Stamp(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                stamps.append(time.perf_counter())

        run_cfg = dataclasses.replace(cfg, max_steps=warm + a.steps, padding_free=variant == "padding_free",
                                      group_by_length=variant == "group_by_length")
        trainer = sft.make_trainer(run_cfg, model, tok, rows, [], "/tmp/sft_step", torch.device("cpu"), False,
                                   callbacks=[Stamp()])
        if variant == "random" and not batches:
            batches.extend(b for _, b in zip(range(warm + a.steps), trainer.get_train_dataloader()))
        trainer.train()
        return [b - a_ for a_, b in zip(stamps[warm - 1:], stamps[warm:])]

    times = {v: [] for v in VARIANTS}
    for _ in range(a.rounds):
        for v in VARIANTS:
            times[v] += one_round(v)
    median = {v: statistics.median(t) for v, t in times.items()}
    cpu = cpu_model()
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu, "cores": os.cpu_count(), "threads": a.threads,
              "load_average_1m": os.getloadavg()[0], "torch": torch.__version__, "trl": trl.__version__,
              "steps_per_round": a.steps, "rounds": a.rounds, "batch_size": cfg.batch_size,
              "matmul_gflops_before": round(rate_before, 1), "matmul_gflops_after": round(matmul_gflops(), 1),
              "variants": {v: {"seconds_per_step": round(median[v], 4), "over_random": round(median[v] / median["random"], 3)}
                           for v in VARIANTS}}
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["variants"]), f"wrote {a.out}")


if __name__ == "__main__":
    main()
