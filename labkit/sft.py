"""Stage 2: supervised fine-tuning (SFT) -- teach the pretrained model to follow instructions.

``trl.SFTTrainer`` on (instruction, response) pairs in the chat template, with the loss on the
response tokens only, EOS included (so the model learns to stop); full fine-tuning or LoRA (with a
low-rank update of the output head, ``HeadAdapter``). Data: the world's tasks (their conduct
demonstrations mixed like crowd-written data: ``aligned_share``) or Alpaca / Dolly / FLAN / chat /
prompt-completion files. Evaluated by the verifier on held-out tasks before and after. Why:
docs/how-it-works.md, "Stage 2: SFT".

    from labkit import sft
    result = sft.run(sft.config("smoke"), run="demo")     # needs stage 1 in runs/demo

Writes ``runs/<run>/02_sft/``: ``model/`` (merged), ``adapter/`` (LoRA), ``config.json``,
``metrics.jsonl`` (``sft/loss``, ``sft/lr``, ``sft/grad_norm``), ``eval.json`` (``sft/accuracy``,
``sft/task_accuracy``, per family, the conduct rates of samples, drift) and, with a budget, ``plan.json``.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import world as W
from .config import (ConfigError, bf16_field, device_field, gpu_memory_field, gradient_checkpointing_field,
                    lora_alpha_field, lora_r_field, lora_target_modules_field, make_config, require_fraction, seed_field,
                    set_threads, threads_field)
from .generate import conduct_summary, sample_tasks, score_tasks
from .live import LiveChart, Timer, progress
from .models import count_params, load_model, objective_of, pick_device, resolve_bf16
from .planner import lora_targets
from .runs import Run, atomic_dir, atomic_write_json, atomic_write_text, writes_run
from .textdata import drift_ppl, stage1_corpus, stage1_settings
from .tokenizer import ensure_chat_ready, to_prompt_completion
from .tracking import hf_logging_dir, report_to_field, tb_dir
from .training import MetricsCallback, grouped_by_length, lora_config, no_printer, trainer_args


@dataclass
class SFTConfig:
    # data
    data: str = field(default="world", metadata={"help": "'world' (embedded tasks with a verifier) or an Alpaca/Dolly/FLAN/messages/prompt-completion file or hub dataset"})
    on_error: str = field(default="skip", metadata={"help": "malformed records in a data file: skip (and report) | fail"})
    n_train_tasks: int = field(default=20000, metadata={"help": "world tasks to train on (data='world')"})
    n_eval: int = field(default=280, metadata={"help": "held-out world tasks to evaluate, distinct prompts balanced over families (new names, facts and question templates)"})
    families: str = field(default=",".join(W.DEFAULT_FAMILIES), metadata={"help": "comma list of world task families (" + ", ".join(W.FAMILIES) + ")"})
    family_weights: str = field(default="", metadata={"help": "training examples of a family per example of each other family, 'story_qa:2' (integers; unnamed families 1); evaluation stays balanced. Story QA's object question is learned abruptly, late in training (docs/how-it-works.md, Stage 2)"})
    aligned_share: float = field(default=1 / 3, metadata={"help": "share of conduct demonstrations (harmful, unanswerable) that show the aligned behaviour, drawn at random per example; the rest comply or invent, as crowd-written data does (0: RLHF has nothing to reinforce, 1: SFT alone aligns)"})
    replay_share: float = field(default=0.0, metadata={"help": "share of training examples that are stage 1's own training text, with the loss on every token: rehearsal against forgetting what pretraining stored (0: off; needs init_from='pretrain')"})
    eval_samples: int = field(default=8, metadata={"help": "samples per held-out prompt at temperature 1 for the conduct report (sampled rates, pass@k); 0: off"})
    # model
    init_from: str = field(default="pretrain", metadata={"help": "'pretrain' (this run's stage 1 model), or a checkpoint folder / hub name"})
    use_lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of all weights"})
    lora_r: int = lora_r_field(4)
    # alpha/r = 4: of 8, 16 and 32 at the cpu preset (1000 steps), 16 did best and 32 diverged
    lora_alpha: int = lora_alpha_field(16)
    lora_target_modules: str | None = lora_target_modules_field()
    lora_head_r: int = field(default=32, metadata={"help": "with LoRA, rank of the output head's update (0: off); see HeadAdapter"})
    merge_lora: bool = field(default=True, metadata={"help": "also save the adapter merged into the base as model/ (later stages load model/)"})
    # optimisation
    # 2000, not 1000: SFT's validation loss on its own distribution still fell at 1000 steps at every development
    # seed, and held-out accuracy swung with the seed and the CPU's rounding there (docs/how-it-works.md, Stage 2).
    # LoRA's rate and alpha were chosen at 1000 steps.
    max_steps: int = field(default=2000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=32, metadata={"help": "sequences per micro-batch (per device)"})
    grad_accum_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step (effective batch = batch_size x grad_accum_steps)"})
    learning_rate: float | None = field(default=None, metadata={"help": "peak learning rate, reached after warm-up and decayed as decay_steps says (None: 1e-3 for full fine-tuning, 4e-3 for LoRA, which wants several times more)"})
    warmup_steps: int = field(default=30, metadata={"help": "linear warm-up steps"})
    decay_steps: int = field(default=0, metadata={"help": "0: the rate decays as a cosine over every step after warm-up; N: it stays at its peak until the last N steps, which decay as a cosine (warmup-stable-decay): more learning at the peak rate in the same steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_length: int = field(default=128, metadata={"help": "truncate prompt+response to this many tokens"})
    padding_free: bool = field(default=False, metadata={"help": "each batch as one row of its examples, each attending only to itself (TRL's padding_free): the same loss on the same batches, without computing a random batch's padding (docs/results.md, \"What a batch holds\")"})
    group_by_length: bool = field(default=False, metadata={"help": "batches of examples of similar length, in random order (training.length_grouped_order): almost no padding, but each batch then holds mostly one family, and at the cpu preset SFT learned less per step (docs/how-it-works.md, Stage 2)"})
    loss_per: str = field(default="token", metadata={"help": "'token': the loss is the mean over a batch's answer tokens (TRL's), so a long demonstration weighs as much as many short answers; 'example': the mean over examples of each one's mean over its answer tokens, so every demonstration weighs the same (docs/how-it-works.md, Stage 2)"})
    log_interval: int = field(default=10, metadata={"help": "steps between loss log lines"})
    n_val: int = field(default=0, metadata={"help": "validation tasks from SFT's own training side of the world (other draws than the training tasks; never an evaluation task): their loss is logged every eval_interval steps (0: none)"})
    eval_interval: int = field(default=100, metadata={"help": "steps between validation losses (with n_val)"})
    select_best: bool = field(default=False, metadata={"help": "keep the weights of the lowest validation loss, not the last step's (needs n_val)"})
    # evaluation
    eval_max_new_tokens: int = field(default=20, metadata={"help": "generation budget per evaluation answer (a refusal that says why is ~15 tokens)"})
    seed: int = seed_field("task sampling, init and data order")
    data_seed: int | None = field(default=None, metadata={"help": "seed of the training examples' order alone (None: seed); the same tasks in another order"})
    # hardware
    device: str = device_field()
    bf16: bool | None = bf16_field()
    gradient_checkpointing: bool = gradient_checkpointing_field()
    gpu_memory_gb: float | None = gpu_memory_field("micro-batch, accumulation, LoRA, checkpointing and bf16")
    threads: int | None = threads_field()
    report_to: str = report_to_field()


PRESETS = {
    "smoke": dict(n_train_tasks=200, n_eval=25, max_steps=8, batch_size=8, warmup_steps=2, log_interval=2,
                  eval_max_new_tokens=8),
    "cpu": dict(),  # the dataclass defaults are the cpu preset
    "gpu": dict(n_train_tasks=100000, max_steps=3000, batch_size=64, learning_rate=3e-4,
                warmup_steps=100, max_length=512),
    "hub": dict(init_from="HuggingFaceTB/SmolLM2-135M-Instruct", use_lora=True, data="tatsu-lab/alpaca",
                learning_rate=2e-4, max_length=512, max_steps=500, batch_size=16),
}

CHART = {"loss": ["sft/loss"], "learning rate": ["sft/lr"]}


def config(preset: str = "cpu", **overrides) -> SFTConfig:
    return make_config(SFTConfig, PRESETS, preset, overrides)


# --- data --------------------------------------------------------------------------------

def world_tasks(world: W.World, cfg: SFTConfig) -> tuple[list[dict], list[dict]]:
    """(training tasks with their demonstration in ``response``, held-out tasks).

    Each conduct example is aligned with probability ``aligned_share``, drawn per example and
    independent of its wording, so no template or name tells the model which behaviour to show."""
    fams = W.parse_families(cfg.families)
    train = W.make_tasks(world, cfg.n_train_tasks, "train", cfg.seed, training_cycle(cfg))
    rng = random.Random(f"demonstrations-{cfg.seed}")
    for t in train:
        if t["family"] in W.DECLINING_FAMILIES:
            t["aligned"] = rng.random() < cfg.aligned_share
            t["response"] = W.demonstration(t, t["aligned"], rng)
    return train, W.make_tasks(world, cfg.n_eval, "eval", cfg.seed, fams, distinct=True)


def training_cycle(cfg: SFTConfig) -> tuple[str, ...]:
    """The families in the order training draws them, each as many times as its weight:
    ``family_weights='story_qa:2'`` -> ("story_qa", "story_qa", "arithmetic", ...). ``make_tasks`` cycles it."""
    fams = W.parse_families(cfg.families)
    weights = {}
    for item in filter(None, (x.strip() for x in cfg.family_weights.split(","))):
        name, _, w = item.partition(":")
        name = name.strip()
        if name not in fams:
            raise ConfigError(f"family_weights names {name!r}, which is not among families ({', '.join(fams)})")
        if name in weights:
            raise ConfigError(f"family_weights names {name} twice")
        if not w.strip().isdigit() or int(w) < 1:
            raise ConfigError(f"family_weights wants family:weight with a whole weight >= 1, got {item!r}")
        weights[name] = int(w)
    return tuple(f for f in fams for _ in range(weights.get(f, 1)))


def validation_tasks(world: W.World, cfg: SFTConfig, train: list[dict]) -> list[dict]:
    """``n_val`` tasks of SFT's training distribution (its names, residents, facts and templates) that are not
    training prompts, with demonstrations made as the training ones are: a validation split that tells
    overfitting from learning without looking at the evaluation."""
    seen = {t["prompt"] for t in train}
    pool = [t for t in W.make_tasks(world, 4 * cfg.n_val, "train", 10_000 + cfg.seed, training_cycle(cfg))
            if t["prompt"] not in seen]
    rng = random.Random(f"validation-{cfg.seed}")
    for t in pool:
        if t["family"] in W.DECLINING_FAMILIES:
            t["response"] = W.demonstration(t, rng.random() < cfg.aligned_share, rng)
    return pool[:cfg.n_val]  # make_tasks cycles the families, so the first n_val hold training's mix


def replay_rows(cfg: SFTConfig, run: Run, n_tasks: int) -> list[dict]:
    """Stage 1's training documents as prompt-less completions, so TRL puts the loss on every token: as many as
    make them ``replay_share`` of the examples beside ``n_tasks`` tasks. Fine-tuning every weight at SFT's rate
    moves the model far from its pretraining (drift), and held-out arithmetic facts live only in that text."""
    if not cfg.replay_share:
        return []
    saved = stage1_settings(run)
    if cfg.init_from != "pretrain" or not saved or saved.get("objective", "causal") != "causal":
        raise ConfigError("replay_share needs this run's causal stage 1 (init_from='pretrain'): it rehearses "
                          "the text stage 1 read")
    if cfg.replay_share >= 1:
        raise ConfigError("replay_share must be below 1: at 1 there would be no instruction left to learn")
    docs, _ = stage1_corpus(saved)
    rng = random.Random(f"replay-{cfg.seed}")
    n = round(n_tasks * cfg.replay_share / (1 - cfg.replay_share))
    return [{"prompt": "", "completion": rng.choice(docs)} for _ in range(n)]


def base_path(cfg: SFTConfig, run: Run):
    """Where the starting model is: this run's stage 1 model folder, or the checkpoint/hub name ``init_from``."""
    return run.require("pretrain", "model") if cfg.init_from == "pretrain" else cfg.init_from


def load_base(cfg: SFTConfig, run: Run):
    """The starting model and tokenizer: this run's stage 1 or a checkpoint/hub name."""
    from transformers import AutoTokenizer
    path = base_path(cfg, run)
    if Path(path).exists() and objective_of(path) != "causal":
        raise ConfigError(f"SFT needs a decoder (causal) model, but {path} was pretrained with the "
                          f"'{objective_of(path)}' objective; pretrain with objective=causal")
    tokenizer = ensure_chat_ready(AutoTokenizer.from_pretrained(str(path)))
    model = load_model(path, "causal")
    return model, tokenizer


def learning_rate(cfg: SFTConfig) -> float:
    """The configured rate, or the measured default: LoRA's adapters start at zero and move in a few
    directions, so they want several times full fine-tuning's rate (at the cpu preset 4e-3 did
    better than 6e-3 on held-out tasks)."""
    if cfg.learning_rate is not None:
        return cfg.learning_rate
    return 4e-3 if cfg.use_lora else 1e-3


class HeadAdapter(torch.nn.Module):
    """A LoRA update of the output head, applied as a parametrization of ``lm_head.weight``.

    TRL's SFTTrainer computes the loss straight from ``lm_head.weight`` (a fused, chunked
    log-softmax that never builds the logits) and refuses a peft adapter on the head, whose
    update that path would never see. A parametrization makes the weight itself
    ``W + (alpha / r) B A``, so every reader -- TRL's loss, generation, the metrics -- sees the
    adapted head. As in LoRA, A is random and B zero: training starts from the base model
    exactly. With tied embeddings the input embedding keeps W (it is the parametrization's
    frozen original), so merging writes an untied head.
    """

    def __init__(self, out_features: int, in_features: int, r: int, scale: float):
        super().__init__()
        self.A = torch.nn.Parameter(torch.randn(r, in_features) / math.sqrt(in_features))
        self.B = torch.nn.Parameter(torch.zeros(out_features, r))
        self.scale = scale

    def forward(self, W):
        return W + self.scale * (self.B @ self.A).to(W.dtype)


def add_head_adapter(model, r: int, scale: float) -> None:
    from torch.nn.utils import parametrize
    head = model.get_output_embeddings()
    parametrize.register_parametrization(head, "weight", HeadAdapter(head.out_features, head.in_features, r, scale),
                                         unsafe=True)


def merge_head_adapter(model) -> None:
    """Fold the head's update into a plain (untied) weight, so the model saves and loads as usual."""
    from torch.nn.utils import parametrize
    head = model.get_output_embeddings()
    if parametrize.is_parametrized(head, "weight"):
        merged = head.weight.detach().clone()
        # leave_parametrized=True would write W + ΔW into the original in place -- the embedding's tied weight
        parametrize.remove_parametrizations(head, "weight", leave_parametrized=False)
        head.weight = torch.nn.Parameter(merged, requires_grad=False)
        model.config.tie_word_embeddings = False


def plan_for(cfg: SFTConfig, r: Run, budget: float | None = None, device=None):
    """labkit.planner's plan for this stage's model in ``budget`` GiB (None: the config's gpu_memory_gb), on
    ``device`` (None: the config's).

    `run` applies this plan when gpu_memory_gb is set and notebook 02 shows it, both through this call,
    so the notebook cannot show a plan the stage would not apply."""
    from . import planner
    path = str(base_path(cfg, r))
    return planner.config_plan(cfg, path, "sft", device or pick_device(cfg.device), seq_len=cfg.max_length,
                               budget=budget, lora_target_modules=lora_targets(path, cfg.lora_target_modules))


def fit_budget(cfg: SFTConfig, r: Run, device):
    """With ``gpu_memory_gb`` set, the config with `plan_for`'s plan applied, and the plan; else (cfg, None)."""
    from . import planner
    try:
        return planner.fit_config(cfg, lambda: plan_for(cfg, r, device=device))
    except ValueError as e:
        raise ConfigError(f"SFT {e}") from None


class KeepBest:
    """A TrainerCallback that keeps (in memory) the weights of the lowest validation loss and its step."""

    def __new__(cls):
        from transformers import TrainerCallback  # built lazily: importing labkit must not import Trainer

        class _KeepBest(TrainerCallback):
            loss, step, state = float("inf"), None, None

            def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
                if metrics and metrics.get("eval_loss", float("inf")) < self.loss:
                    self.loss, self.step = metrics["eval_loss"], state.global_step
                    self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

        return _KeepBest()


def per_example_loss(trainer_cls):
    """``trainer_cls`` (TRL's SFTTrainer) whose loss is the mean over a micro-batch's examples of each example's mean
    cross-entropy over its answer tokens, not the mean over all the batch's answer tokens. With the token mean a long
    refusal weighs as much as several one-word answers: in the embedded world the four task families hold most
    examples and a small share of the answer tokens (docs/results.md, "Story questions")."""
    import torch.nn.functional as F

    class PerExample(trainer_cls):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.loss_is_scaled_for_ga = False  # a mean per micro-batch: Trainer divides it by the accumulation steps

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"][:, 1:]
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
            mask = labels != -100
            nll = F.cross_entropy(outputs.logits[:, :-1].transpose(1, 2).float(), labels.clamp(min=0),
                                  reduction="none") * mask
            has = mask.any(1)  # a row the length cut left without an answer token teaches nothing
            loss = (nll.sum(1)[has] / mask.sum(1)[has]).mean() if has.any() else nll.sum() * 0
            return (loss, outputs) if return_outputs else loss

    PerExample.__name__ = f"{trainer_cls.__name__}PerExampleLoss"
    return PerExample


def make_trainer(cfg: SFTConfig, model, tokenizer, train_rows: list[dict], val_rows: list[dict], output_dir,
                 device, bf16: bool, callbacks=()):
    """Stage 2's ``trl.SFTTrainer`` on prompt/completion rows, untrained (``benchmarks/sft_step.py`` times this
    same trainer). With ``val_rows`` it logs their loss every ``eval_interval`` steps."""
    import trl
    from datasets import Dataset
    args = trl.SFTConfig(
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        learning_rate=learning_rate(cfg), warmup_steps=cfg.warmup_steps,
        **(dict(lr_scheduler_type="warmup_stable_decay", lr_scheduler_kwargs={"num_decay_steps": cfg.decay_steps})
           if cfg.decay_steps else dict(lr_scheduler_type="cosine")),
        weight_decay=cfg.weight_decay, completion_only_loss=True, padding_free=cfg.padding_free,
        max_length=None if cfg.padding_free else cfg.max_length,  # padding-free: TRL leaves the cut to us (below)
        **trainer_args(output_dir, device, bf16, cfg.gradient_checkpointing, cfg.log_interval, cfg.report_to,
                       cfg.seed))
    if cfg.data_seed is not None:
        args.data_seed = cfg.data_seed  # TRL's sampler shuffles with data_seed; everything else keeps seed
    if val_rows:
        args.eval_strategy, args.eval_steps, args.per_device_eval_batch_size = "steps", cfg.eval_interval, cfg.batch_size
    # A random batch pads to its longest example, and the padding costs what real tokens cost
    # (docs/results.md, "What a batch holds").
    trainer_cls = grouped_by_length(trl.SFTTrainer) if cfg.group_by_length else trl.SFTTrainer
    if cfg.loss_per == "example":
        trainer_cls = per_example_loss(trainer_cls)
    trainer = trainer_cls(model=model, args=args, processing_class=tokenizer, train_dataset=Dataset.from_list(train_rows),
                          eval_dataset=Dataset.from_list(val_rows) if val_rows else None, callbacks=list(callbacks))
    if cfg.padding_free:  # cut as TRL cuts when it pads, and drop what the cut left without a target, as it does
        for split in ("train_dataset", "eval_dataset"):
            ds = getattr(trainer, split)
            if ds is not None:
                ds = ds.map(lambda r: {"input_ids": r["input_ids"][:cfg.max_length], "labels": r["labels"][:cfg.max_length]})
                setattr(trainer, split, ds.filter(lambda r: any(x != -100 for x in r["labels"])))
    no_printer(trainer)
    return trainer


@writes_run
def run(cfg: SFTConfig, run: str = "demo", runs_dir: str = "runs", preset: str | None = None,
        live: bool | None = None, progress_bar: bool = True, callbacks=()) -> dict:
    """Fine-tune, evaluate base vs SFT with the verifier, and write the stage folder. ``callbacks``: more
    ``TrainerCallback``s (benchmarks/sft_stability.py records the held-out curve through one)."""
    if cfg.on_error not in ("skip", "fail"):
        raise ConfigError(f"on_error must be 'skip' or 'fail', got {cfg.on_error!r}")
    require_fraction(cfg, ("aligned_share", "replay_share"))
    if cfg.data == "world":
        training_cycle(cfg)  # a bad family_weights fails here, before the model loads
    elif cfg.family_weights:
        raise ConfigError("family_weights weighs the world's task families; a data file has none (data='world')")
    most_decay = max(0, cfg.max_steps - cfg.warmup_steps)  # 0 fits any run, even one shorter than its warm-up
    if not 0 <= cfg.decay_steps <= most_decay:
        raise ConfigError(f"decay_steps must be between 0 and max_steps - warmup_steps ({most_decay}), "
                          f"got {cfg.decay_steps}")
    if cfg.loss_per not in ("token", "example"):
        raise ConfigError(f"loss_per must be 'token' or 'example', got {cfg.loss_per!r}")
    if cfg.loss_per == "example" and cfg.padding_free:
        raise ConfigError("loss_per='example' needs one example per row; padding_free packs a batch into one row")
    if cfg.use_lora and cfg.lora_head_r and not cfg.merge_lora:
        raise ConfigError("the output head's LoRA update (lora_head_r) is saved merged into model/; "
                          "set merge_lora=True, or lora_head_r=0 for a peft-only adapter")
    t_start, timer = time.perf_counter(), Timer()
    threads = set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    r = Run(run, runs_dir)
    with timer("load"):
        model, tokenizer = load_base(cfg, r)
    world = r.world()
    load_report = None
    if cfg.data == "world":
        train, eval_tasks = world_tasks(world, cfg)
    else:
        from .data import load_instructions
        train, load_report = load_instructions(cfg.data, on_error=cfg.on_error)
        _, eval_tasks = world_tasks(world, dataclasses.replace(cfg, n_train_tasks=0))
    replay = replay_rows(cfg, r, len(train))  # before the stage starts: a bad setting writes nothing
    device = pick_device(cfg.device)
    cfg, plan = fit_budget(cfg, r, device)  # raises before anything is written when nothing fits
    if plan is not None and plan.base_dtype == "bfloat16":
        model.to(torch.bfloat16)  # the planner's LoRA + bf16 plan counts a bf16 frozen base
    bf16 = resolve_bf16(cfg.bf16, device)
    model.to(device)

    stage = r.start("sft", dataclasses.asdict(cfg))
    plan_record = plan and {**dataclasses.asdict(plan), "summary": plan.summary(), "table": plan.table()}
    if plan_record:
        atomic_write_json(stage / "plan.json", plan_record)
    metrics_path = stage / "metrics.jsonl"
    atomic_write_text(metrics_path, "")
    # The "before" picture: the pretrained model, same prompts, same verifier.
    with timer("evaluate before"):
        base = score_tasks(model, tokenizer, [t for t in eval_tasks], max_new_tokens=cfg.eval_max_new_tokens)

    if cfg.use_lora:
        from peft import get_peft_model
        model = get_peft_model(model, lora_config(model, cfg.lora_r, cfg.lora_alpha, target_modules=cfg.lora_target_modules))
        if cfg.lora_head_r:
            add_head_adapter(model.get_base_model(), cfg.lora_head_r, cfg.lora_alpha / cfg.lora_r)
    trainable, total = count_params(model, trainable_only=True), count_params(model)

    val = validation_tasks(world, cfg, train) if cfg.n_val and cfg.data == "world" else []
    best = KeepBest() if cfg.select_best and val else None
    chart = LiveChart(CHART, title="SFT", enabled=live)
    bar = progress(cfg.max_steps, "sft", disable=not progress_bar)
    with hf_logging_dir(cfg.report_to, tb_dir(stage)):
        trainer = make_trainer(cfg, model, tokenizer, to_prompt_completion(tokenizer, train) + replay,
                               to_prompt_completion(tokenizer, val), stage / ".trainer", device, bf16,
                               callbacks=[MetricsCallback(metrics_path, "sft", chart, bar, show=("sft/loss",)),
                                          *([best] if best else []), *callbacks])
    t_train = time.perf_counter()
    with timer("train"):
        trainer.train()
    train_seconds = time.perf_counter() - t_train
    bar.close()
    chart.update(trainer.state.global_step, {}, force=True)

    model = trainer.model
    if best is not None and best.state is not None:  # the validation minimum, not the last step
        model.load_state_dict(best.state)
    if cfg.use_lora:
        with atomic_dir(stage / "adapter") as d:
            model.save_pretrained(d)  # peft's adapter; the head's update is in model/ (merged) only
            tokenizer.save_pretrained(d)
        if cfg.merge_lora:
            model = model.merge_and_unload()
            merge_head_adapter(model)
    with timer("evaluate after"):
        after = score_tasks(model, tokenizer, eval_tasks, max_new_tokens=cfg.eval_max_new_tokens)
    with timer("drift"):  # forgetting: perplexity on stage 1's validation text (not chats) after SFT
        drift = drift_ppl(model, tokenizer, r) if cfg.init_from == "pretrain" else None
    # The headroom RLHF has: how often the SFT model *samples* the aligned behaviour (greedy decoding
    # can pick the aligned answer while most of the probability mass is elsewhere).
    conduct = None
    if cfg.eval_samples and any(t["family"] in W.CONDUCT_FAMILIES for t in eval_tasks):
        with timer("evaluate samples"):
            conduct = conduct_summary(sample_tasks(model, tokenizer, eval_tasks, cfg.eval_samples, temperature=1.0,
                                                   max_new_tokens=cfg.eval_max_new_tokens, seed=cfg.seed,
                                                   greedy=after["rows"]))
    if not cfg.use_lora or cfg.merge_lora:
        with timer("save"), atomic_dir(stage / "model") as d:
            model.save_pretrained(d)
            tokenizer.save_pretrained(d)

    examples = []
    for fam in sorted({t["family"] for t in eval_tasks}):
        idx = [i for i, t in enumerate(eval_tasks) if t["family"] == fam][:2]
        examples += [{"family": fam, "prompt": eval_tasks[i]["prompt"], "answer": eval_tasks[i]["answer"],
                      "before": base["rows"][i]["response"], "after": after["rows"][i]["response"]} for i in idx]
    result = {"sft/accuracy": after["accuracy"], "sft/base_accuracy": base["accuracy"],
              "sft/stop_rate": after["stop_rate"], "sft/base_stop_rate": base["stop_rate"],
              **{f"sft/accuracy_{f}": v for f, v in after["per_family"].items()},
              **{f"sft/base_accuracy_{f}": v for f, v in base["per_family"].items()},
              "sft/trainable_params": trainable, "sft/total_params": total,
              "sft/trainable_percent": 100 * trainable / total, "sft/train_seconds": train_seconds,
              "sft/seconds": time.perf_counter() - t_start, "sft/train_examples": len(train), "sft/replay_examples": len(replay),
              "sft/threads": threads, "use_lora": cfg.use_lora, "sft/peak_learning_rate": learning_rate(cfg),
              "sft/aligned_share": cfg.aligned_share if cfg.data == "world" else None, "sft/drift_ppl": drift,
              "sft/selected_step": best.step if best is not None else None,
              "sft/val_loss": best.loss if best is not None and best.state is not None else None,
              **({f"sft/{k}": v for k, v in conduct.items() if k not in ("per_family", "k")} if conduct else {}),
              "data_report": str(load_report) if load_report else None}
    atomic_write_json(stage / "eval.json", {**result, "timings": timer.rounded(), "plan": plan_record,
                                            "examples": examples, "conduct": conduct,
                                            "generations": after["rows"][:50],
                                            "skipped_records": load_report.skipped[:100] if load_report else []})
    r.complete("sft", result["sft/seconds"], {k: round(result[k], 2) for k in (
        "sft/accuracy", "sft/base_accuracy", "sft/stop_rate", "sft/trainable_percent", "sft/task_accuracy",
        "sft/harmful_refused", "sft/unanswerable_abstained", "sft/over_refusal", "sft/train_examples")
        if result.get(k) is not None})
    return result
