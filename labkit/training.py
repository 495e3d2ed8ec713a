"""The plumbing every stage that trains through TRL or peft shares: one helper per job.

* ``trainer_args``: the hardware and bookkeeping arguments of a TRL trainer config (SFT, reward model,
  DPO, RLOO), so no stage forgets that TRL's defaults assume a GPU;
* ``MetricsCallback``: TRL's log lines -> ``metrics.jsonl`` under the stage's names, the live chart and
  the progress bar;
* ``lora_config``: peft's ``LoraConfig`` for a causal LM or a sequence classifier;
* ``quiet_libraries`` / ``quiet_peft`` / ``no_printer``: one progress display per stage, not three;
* ``length_grouped_order`` / ``grouped_by_length``: batches of examples of similar length (SFT's
  ``group_by_length``; PPO's minibatches use the same order).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch

from .planner import lora_targets
from .runs import append_jsonl

# TRL's log names that get another name in the lab's metrics ("lr", as pretraining and PPO log it).
RENAMED_LOGS = {"learning_rate": "lr"}


def trainer_args(output_dir: str | Path, device, bf16: bool, gradient_checkpointing: bool = False,
                 log_interval: int = 10, report_to: str = "none", seed: int = 0) -> dict:
    """The arguments every TRL config here gets. TRL's defaults assume a GPU (bf16 and activation
    checkpointing): on a CPU both made training ~1.8x slower (docs/architecture.md, "CPU notes"), so
    they follow the device and the stage's settings. Checkpoints are the stage's own (atomic) business."""
    return dict(output_dir=str(output_dir), bf16=bf16, activation_checkpointing=gradient_checkpointing,
                use_cpu=device.type == "cpu", dataloader_num_workers=0, dataloader_pin_memory=device.type == "cuda",
                disable_tqdm=True, save_strategy="no", logging_steps=log_interval, report_to=report_to,
                seed=seed, data_seed=seed)


def metric_name(prefix: str, key: str) -> str:
    """``prefix/key`` for one of TRL's log keys ("loss" -> "sft/loss", "learning_rate" -> "sft/lr"). The
    summary at the end of training keeps its "train_" ("sft/train_loss" is the mean over the run, not the
    last step's loss)."""
    return f"{prefix}/{RENAMED_LOGS.get(key, key)}"


def metrics_record(prefix: str, step: int, logs: dict, **extra) -> dict | None:
    """One metrics.jsonl line from TRL's ``logs``: numbers only, accuracies in percent (as every stage
    reports them). None when the logs hold no number."""
    rec = {metric_name(prefix, k): float(v) * (100 if k.endswith(("accuracy", "accuracies")) else 1)
           for k, v in (logs or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"step": step, **extra, **rec} if rec else None


class MetricsCallback:
    """TRL's logs -> ``metrics.jsonl`` (``metrics_record``), the live chart and the progress bar (one tick
    per optimizer step; ``show`` names the metrics it prints beside the bar)."""

    def __new__(cls, path: Path, prefix: str, chart, bar=None, show: tuple[str, ...] = (), **extra):
        from transformers import TrainerCallback  # built lazily: importing labkit must not import Trainer

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if bar is not None:
                    bar.update(1)

            def on_log(self, args, state, control, logs=None, **kw):
                rec = metrics_record(prefix, state.global_step, logs, **extra)
                if rec is None:
                    return
                append_jsonl(path, rec)
                chart.update(state.global_step, rec)
                shown = {k.rsplit("/", 1)[1]: f"{rec[k]:.3g}" for k in show if k in rec}
                if bar is not None and shown:
                    bar.set_postfix(**shown)

        return _Callback()


def lora_config(model, r: int, alpha: int, dropout: float = 0.0, target_modules=None, classifier: bool = False):
    """peft's LoRA config on ``target_modules`` (None: every linear layer of the blocks, ``planner.lora_targets``,
    so a plan counts the adapters training adds). A sequence classifier's new score head trains in full
    (``modules_to_save``): adapters feeding a frozen random projection would learn nothing useful."""
    from peft import LoraConfig
    return LoraConfig(task_type="SEQ_CLS" if classifier else "CAUSAL_LM", r=r, lora_alpha=alpha,
                      lora_dropout=dropout, target_modules=lora_targets(model, target_modules),
                      modules_to_save=["score"] if classifier else None)


@contextlib.contextmanager
def quiet_peft():
    """peft 0.21 asks transformers 5 a deprecated question (is_gradient_checkpointing); not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing.*", FutureWarning)
        yield


@contextlib.contextmanager
def quiet_libraries():
    """No per-call bars from datasets.map / from_pretrained / save_pretrained: the stage shows one bar."""
    from datasets.utils import logging as dlog
    from transformers.utils import logging as tlog
    was = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            dlog.enable_progress_bar()
        if was[1]:
            tlog.enable_progress_bar()


def no_printer(trainer) -> None:
    """Metrics go to metrics.jsonl, the chart and the stage's bar, not to TRL's printed dicts and bar."""
    from transformers import PrinterCallback, ProgressCallback
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)


def length_grouped_order(lengths: torch.Tensor, batch_size: int, gen: torch.Generator) -> torch.Tensor:
    """A permutation of the rows in which each ``batch_size`` consecutive rows have similar ``lengths``
    (random among equal lengths) and the batches come in random order.

    A batch is padded to its longest row and the padding is computed like real tokens (docs/results.md,
    "What a batch holds"). HF's ``group_by_length`` sorts mega-batches of 50 batches
    long to short, so training sweeps through lengths every 50 steps; here the batches are shuffled.
    """
    perm = torch.randperm(len(lengths), generator=gen)
    perm = perm[torch.argsort(lengths[perm], stable=True)]
    groups = perm.split(batch_size)
    return torch.cat([groups[i] for i in torch.randperm(len(groups), generator=gen).tolist()])


class LengthGroupedBatches(torch.utils.data.Sampler):
    """``length_grouped_order`` as a sampler: another order every epoch, the same on every process (so
    accelerate can deal the batches out), from ``seed`` and the epoch alone."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = torch.tensor(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1  # a trainer that never calls set_epoch still gets a new order each epoch
        yield from length_grouped_order(self.lengths, self.batch_size, gen).tolist()


def grouped_by_length(trainer_cls):
    """``trainer_cls`` (a transformers/TRL trainer) whose training batches come from
    ``LengthGroupedBatches`` over the tokenized examples' lengths. Evaluation keeps its sequential
    batches, so a validation loss means the same with grouping as without."""

    class Grouped(trainer_cls):
        def _get_train_sampler(self, train_dataset=None):
            ds = self.train_dataset if train_dataset is None else train_dataset
            seed = self.args.seed if self.args.data_seed is None else self.args.data_seed
            return LengthGroupedBatches([len(x) for x in ds["input_ids"]], self.args.train_batch_size, seed)

    Grouped.__name__ = f"{trainer_cls.__name__}GroupedByLength"
    return Grouped
