"""What TRL's trainer costs per step beyond the model's own forward, backward and AdamW step (stage 2's shape).

    .venv/bin/python benchmarks/trl_overhead.py                 # cpu preset's model, 1 thread
    .venv/bin/python benchmarks/trl_overhead.py --threads 2 --steps 40 --rounds 3

The same batches (taken from the trainer's own data loader, so the padding is identical) go through
``trl.SFTTrainer.train`` exactly as stage 2 configures it, and through a plain PyTorch loop: forward with
labels, backward, clip, AdamW step. Rounds alternate between the two so a machine that speeds up or slows
down moves both. The model has random weights: the cost of a step does not depend on them. Writes
``benchmarks/results/trl_overhead.json``; the median seconds per step of each and their ratio.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per round (after 3 warm-up steps)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "trl_overhead.json"))
    a = ap.parse_args()

    import torch
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    from labkit import pretrain, sft
    from labkit import world as W
    from labkit.models import build_model, matmul_gflops
    from labkit.tokenizer import to_prompt_completion, train_tokenizer
    from labkit.training import trainer_args

    torch.set_num_threads(a.threads)
    pcfg, cfg = pretrain.config("cpu"), sft.config("cpu", n_train_tasks=2000)
    tok = train_tokenizer(W.corpus(W.World(0), 2000, seed=1), pcfg.tokenizer, pcfg.vocab_size)
    torch.manual_seed(0)
    model = build_model("causal", tok, pcfg.n_layer, pcfg.n_head, pcfg.n_embd, pcfg.block_size)
    train, _ = sft.world_tasks(W.World(0), cfg)
    data = Dataset.from_list(to_prompt_completion(tok, train))
    warm = 3

    def trl_round() -> list[float]:
        stamps = []

        class Stamp(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                stamps.append(time.perf_counter())

        args = trl.SFTConfig(max_steps=warm + a.steps, per_device_train_batch_size=cfg.batch_size,
                             learning_rate=1e-3, lr_scheduler_type="cosine", warmup_steps=cfg.warmup_steps,
                             max_length=cfg.max_length, completion_only_loss=True,
                             **trainer_args("/tmp/trl_overhead", torch.device("cpu"), False, log_interval=cfg.log_interval))
        trainer = trl.SFTTrainer(model=model, args=args, processing_class=tok, train_dataset=data, callbacks=[Stamp()])
        trainer.train()
        return [b - a_ for a_, b in zip(stamps[warm - 1:], stamps[warm:])], trainer

    def plain_round(batches) -> list[float]:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        model.train()
        times = []
        for i, batch in enumerate(batches[:warm + a.steps]):
            t = time.perf_counter()
            out = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=batch["labels"])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= warm:
                times.append(time.perf_counter() - t)
        return times

    trl_times, plain_times = [], []
    batches = None
    for _ in range(a.rounds):
        times, trainer = trl_round()
        trl_times += times
        if batches is None:  # the trainer's own batches: same collator, same padding
            batches = [b for _, b in zip(range(warm + a.steps), trainer.get_train_dataloader())]
            tokens = statistics.mean(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel()
                                     for b in batches)
        plain_times += plain_round(batches)
    t_trl, t_plain = statistics.median(trl_times), statistics.median(plain_times)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), None)
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu, "cores": os.cpu_count(), "threads": a.threads,
              "load_average_1m": os.getloadavg()[0], "torch": torch.__version__, "trl": trl.__version__,
              "steps_per_round": a.steps, "rounds": a.rounds, "batch_size": cfg.batch_size,
              "mean_real_tokens_per_batch": round(tokens, 1), "matmul_gflops": round(matmul_gflops(), 1),
              "trl_seconds_per_step": round(t_trl, 4), "plain_seconds_per_step": round(t_plain, 4),
              "trl_over_plain": round(t_trl / t_plain, 3)}
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"TRL {t_trl * 1000:.0f} ms/step, plain loop {t_plain * 1000:.0f} ms/step: x{t_trl / t_plain:.2f}; wrote {a.out}")


if __name__ == "__main__":
    main()
