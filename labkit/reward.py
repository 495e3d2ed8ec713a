"""Stage 4: a Bradley-Terry reward model that turns preference pairs into one number per response.

P(a > b) = sigmoid(r(a) - r(b)); the loss is -log sigmoid(r(chosen) - r(rejected)). The network is
the SFT model with a one-output head read at the EOS (``AutoModelForSequenceClassification``,
``num_labels=1``), trained by TRL's ``RewardTrainer``, fully or with LoRA, on what
``reward_model.scoring_text`` renders. A reward model is a proxy that PPO will exploit, so the stage
measures it three ways (``reward_eval``): held-out pairwise accuracy, calibration (ECE), and Spearman
with the verifier on fresh SFT samples, each also for the conduct families and per family.
Why: docs/how-it-works.md, "Stage 4: the reward model".

    from labkit import reward
    result = reward.run(reward.config("smoke"), run="demo")   # needs stages sft and preferences

Writes ``04_reward/``: ``model/``, ``config.json``, ``metrics.jsonl`` (``reward/loss``,
``reward/accuracy``, ``reward/eval_accuracy``, ...), ``eval.json`` (``reward/eval_accuracy``,
``reward/conduct_accuracy``, ``reward/spearman``, ``reward/conduct_spearman``, ``reward/ece``, per
family), ``eval_pairs.jsonl``, ``verifier_samples.jsonl``, ``conduct_samples.jsonl``, ``plan.json``.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import world as W
from .config import (ConfigError, bf16_field, device_field, gpu_memory_field, gradient_checkpointing_field,
                    lora_alpha_field, lora_r_field, lora_target_modules_field, make_config, require_at_least,
                    seed_field, set_threads, threads_field)
from .live import LiveChart, Timer, progress
from .models import count_params, pick_device, resolve_bf16
from .planner import lora_targets
from .reward_eval import by_family, evaluate_pairs, pairwise_accuracy, spearman, verifier_agreement, verifier_samples
from .reward_model import fit_pairs, load_pairs, load_reward_model, planned_steps, reward_trainer, split_by_prompt
from .runs import (Run, StageMissing, atomic_dir, atomic_write_json, atomic_write_text, read_json, read_jsonl,
                   write_jsonl_atomic, writes_run)
from .tokenizer import ensure_chat_ready
from .tracking import report_to_field, tb_dir
from .training import MetricsCallback, quiet_libraries


@dataclass
class RewardConfig:
    # data
    data: str = field(default="pairs", metadata={"help": "'pairs' (this run's 03_preferences/pairs.jsonl), or preference data: a local file/folder or hub dataset (hh-rlhf, prompt/chosen/rejected, chat-message pairs)"})
    data_split: str = field(default="train", metadata={"help": "split to read when data is a hub dataset"})
    # 8,000 pairs, one epoch: enough for conduct pairs at the cpu preset in a few minutes on 2 cores
    # (stage 7's data-size curve measures what more or fewer buy)
    max_pairs: int | None = field(default=8000, metadata={"help": "use at most this many pairs, those of the first prompts in the file (None: all)"})
    eval_fraction: float = field(default=0.15, metadata={"help": "fraction of prompts held out for evaluation (all pairs of a prompt stay on one side)"})
    margin_field: str | None = field(default=None, metadata={"help": "pairs.jsonl field with a per-pair margin m, loss -log σ(Δr - m) (Llama 2, sec. 3.2.2); None: no margin"})
    max_length: int | None = field(default=None, metadata={"help": "fit pairs into this many tokens (None: the model's max positions): a long prompt loses its earliest turns, then its start; a pair whose responses alone do not fit is dropped (reward_model.fit_pairs)"})
    # model
    init_from: str = field(default="sft", metadata={"help": "'sft' (this run's 02_sft model) or a checkpoint folder / hub name to start the reward model from"})
    use_lora: bool = field(default=False, metadata={"help": "train LoRA adapters (+ the score head) instead of every weight; merged before saving"})
    lora_r: int = lora_r_field(16)
    lora_alpha: int = lora_alpha_field(32)
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA path"})
    lora_target_modules: str | None = lora_target_modules_field()
    # optimisation
    num_epochs: float = field(default=1.0, metadata={"help": "passes over the training pairs (one is usual: reward models overfit fast, Ouyang et al. 2022)"})
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps; overrides num_epochs (None: use num_epochs)"})
    batch_size: int = field(default=16, metadata={"help": "pairs per micro-batch (the model sees twice as many sequences)"})
    grad_accum_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    learning_rate: float = field(default=3e-4, metadata={"help": "peak learning rate (AdamW)"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "fraction of steps spent in linear warm-up (then cosine decay)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip gradient norm to this (0: off)"})
    center_rewards_coefficient: float | None = field(default=0.01, metadata={"help": "weight of mean(r^2), keeping scores near 0 for PPO (Eisenstein et al. 2023, eq. 2); None: off"})
    # bookkeeping
    log_interval: int = field(default=10, metadata={"help": "steps between training-loss log lines"})
    eval_interval: int = field(default=50, metadata={"help": "steps between held-out evaluations during training"})
    curve_pairs: int | None = field(default=256, metadata={"help": "held-out pairs scored every eval_interval steps for the training curve, one fixed draw (None: all); the numbers after training score every held-out pair"})
    seed: int = seed_field("the split, the score head's init, data order and sampling")
    # evaluation
    calibration_bins: int = field(default=10, metadata={"help": "bins of P(chosen) for the calibration curve and ECE"})
    verifier_tasks: int = field(default=60, metadata={"help": "held-out world tasks to sample fresh SFT responses for (0: skip the verifier check)"})
    eval_samples: int = field(default=4, metadata={"help": "samples per task, so there are right and wrong ones to rank"})
    verifier_temperature: float = field(default=1.0, metadata={"help": "sampling temperature for the fresh samples"})
    verifier_max_new_tokens: int = field(default=32, metadata={"help": "response length limit for the fresh samples (a response that hits it did not stop: wrong)"})
    conduct_verifier_tasks: int = field(default=60, metadata={"help": "held-out conduct tasks (harmful, unanswerable, benign: those among stage 3's families) to sample fresh SFT responses for, sampled like the verifier check, for reward/conduct_spearman (0: skip)"})
    worst_k: int = field(default=10, metadata={"help": "worst disagreements with the verifier to list"})
    score_batch_size: int = field(default=64, metadata={"help": "sequences per forward pass when scoring"})
    # hardware
    device: str = device_field()
    bf16: bool | None = bf16_field()
    gradient_checkpointing: bool = gradient_checkpointing_field()
    gpu_memory_gb: float | None = gpu_memory_field("micro-batch, accumulation, LoRA, checkpointing and bf16")
    threads: int | None = threads_field()
    report_to: str = report_to_field()


PRESETS = {
    "smoke": dict(max_steps=8, batch_size=4, log_interval=2, eval_interval=4, verifier_tasks=5,
                  conduct_verifier_tasks=3, eval_samples=2, verifier_max_new_tokens=12, worst_k=3,
                  calibration_bins=5),
    "cpu": dict(),  # the dataclass defaults are the cpu preset (one pass over 8,000 of stage 3's pairs at 3e-4)
    "gpu": dict(max_pairs=None, num_epochs=1.0, batch_size=32, learning_rate=5e-5, eval_interval=100, verifier_tasks=200,
                conduct_verifier_tasks=200, eval_samples=8, score_batch_size=256),
    "hub": dict(max_pairs=None, use_lora=True, num_epochs=1.0, batch_size=8, grad_accum_steps=4, learning_rate=1e-4, verifier_tasks=100,
                conduct_verifier_tasks=100, gradient_checkpointing=True, score_batch_size=32),
}

# Which metrics the live chart and the report draw, grouped into subplots.
CHART = {"loss": ["reward/loss", "reward/eval_loss"], "pairwise accuracy (%)": ["reward/accuracy", "reward/eval_accuracy"]}
def config(preset: str = "cpu", **overrides) -> RewardConfig:
    return make_config(RewardConfig, PRESETS, preset, overrides)


# --- models ---------------------------------------------------------------------------------

def _sft_dir(r: Run, stage: Path) -> Path:
    """The run's SFT model as a plain checkpoint folder (a PEFT adapter is merged into a temp folder)."""
    d = r.require("sft", what="")
    if (d / "model").exists():
        return d / "model"
    if (d / "adapter").exists():
        from peft import AutoPeftModelForCausalLM
        from transformers import AutoTokenizer
        merged = Path(tempfile.mkdtemp(dir=stage, prefix=".sft_merged."))
        AutoPeftModelForCausalLM.from_pretrained(d / "adapter").merge_and_unload().save_pretrained(merged)
        AutoTokenizer.from_pretrained(d / "adapter").save_pretrained(merged)
        return merged
    raise StageMissing(f"stage 'sft' of run '{r.name}' is marked complete but has neither {d / 'model'} "
                       f"nor {d / 'adapter'}")


def token_limit(cfg: RewardConfig, model_config) -> int:
    """The longest text a pair may have: ``max_length``, else the model's positions."""
    return cfg.max_length or getattr(model_config, "max_position_embeddings", None) or 10 ** 9


def plan_for(cfg: RewardConfig, r: Run, budget: float | None = None, device=None):
    """labkit.planner's plan for this stage's model in ``budget`` GiB (None: the config's gpu_memory_gb), on
    ``device`` (None: the config's), sized for the longest pair that fits (the planner counts both
    sequences of each pair).

    `run` applies this plan when gpu_memory_gb is set and notebook 04 shows it, both through this call,
    so the notebook cannot show a plan the stage would not apply."""
    from transformers import AutoConfig, AutoTokenizer

    from . import planner
    pairs, _ = pairs_for(cfg, r)
    init_path = _sft_dir(r, r.stage_dir("reward")) if cfg.init_from == "sft" else cfg.init_from
    try:
        tokenizer = ensure_chat_ready(AutoTokenizer.from_pretrained(str(init_path)))
        _, _, longest = fit_pairs(pairs, tokenizer, token_limit(cfg, AutoConfig.from_pretrained(str(init_path))))
        return planner.config_plan(cfg, str(init_path), "reward", device or pick_device(cfg.device), seq_len=longest,
                                   budget=budget, lora_target_modules=lora_targets(str(init_path), cfg.lora_target_modules))
    finally:
        if Path(init_path).name.startswith(".sft_merged."):  # an adapter-only SFT merged for the look
            shutil.rmtree(init_path, ignore_errors=True)


def fit_budget(cfg: RewardConfig, r: Run, device):
    """With ``gpu_memory_gb`` set, the config with `plan_for`'s plan applied, and the plan; else (cfg, None)."""
    from . import planner
    try:
        return planner.fit_config(cfg, lambda: plan_for(cfg, r, device=device))
    except ValueError as e:
        raise ConfigError(f"the reward model {e}") from None


def pairs_for(cfg: RewardConfig, r: Run) -> tuple[list[dict], str]:
    """The preference pairs this config trains on (``reward_model.load_pairs``) and a one-line note."""
    return load_pairs(r, cfg.data, cfg.max_pairs, cfg.margin_field, cfg.data_split)


def _check(cfg: RewardConfig) -> None:
    require_at_least(cfg, ("batch_size", "grad_accum_steps", "log_interval", "eval_interval", "calibration_bins",
                           "eval_samples", "score_batch_size", "curve_pairs"))
    if not 0 <= cfg.warmup_ratio < 1:
        raise ConfigError(f"warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    if not 0 <= cfg.eval_fraction < 1:
        raise ConfigError(f"eval_fraction must be in [0, 1), got {cfg.eval_fraction}")
    require_at_least(cfg, ("verifier_tasks", "conduct_verifier_tasks"), 0, why=" (0: skip that check)")
    if cfg.max_steps is None and cfg.num_epochs <= 0:
        raise ConfigError("num_epochs must be > 0 (or set max_steps)")


# --- the stage ----------------------------------------------------------------------------------

@writes_run
def run(cfg: RewardConfig, run: str = "demo", runs_dir: str = "runs", preset: str | None = None,
        live: bool | None = None, progress_bar: bool = True) -> dict:
    """Train the reward model on preference pairs, evaluate it three ways, write ``04_reward/``."""
    with quiet_libraries():
        return _run(cfg, run, runs_dir, preset, live, progress_bar)


def _run(cfg: RewardConfig, run: str, runs_dir: str, preset: str | None, live: bool | None,
         progress_bar: bool) -> dict:
    from transformers import AutoTokenizer

    _check(cfg)
    t_start, timer = time.perf_counter(), Timer()
    threads = set_threads(cfg.threads)
    device = pick_device(cfg.device)
    bf16 = resolve_bf16(cfg.bf16, device)

    # Inputs first: a missing predecessor fails before anything is written.
    r = Run(run, runs_dir)
    pairs, data_note = pairs_for(cfg, r)
    stage = r.stage_dir("reward")
    sft_ok = r.is_complete("sft")
    samples_wanted = sft_ok and (cfg.verifier_tasks or cfg.conduct_verifier_tasks)
    sft_path = _sft_dir(r, stage) if (cfg.init_from == "sft" or samples_wanted) else None
    init_path = sft_path if cfg.init_from == "sft" else cfg.init_from
    tokenizer = ensure_chat_ready(AutoTokenizer.from_pretrained(str(init_path)))
    torch.manual_seed(cfg.seed)  # the new score head is initialised randomly: same seed, same head
    model = load_reward_model(init_path, tokenizer)
    limit = token_limit(cfg, model.config)
    pairs, fit, _ = fit_pairs(pairs, tokenizer, limit)  # long prompts lose their earliest turns (reward_model.fit_pairs)
    train_pairs, eval_pairs = split_by_prompt(pairs, cfg.eval_fraction, cfg.seed)
    if not train_pairs:
        raise ConfigError(f"no pair fits in {limit} tokens ({fit['dropped']} dropped: their responses alone fill "
                          f"the model); use a model with more positions (stage 1's block_size)")
    cfg, plan = fit_budget(cfg, r, device)  # raises before anything is written when nothing fits
    if plan is not None:
        bf16 = cfg.bf16
        if plan.base_dtype == "bfloat16":
            model.to(torch.bfloat16)  # the planner's LoRA + bf16 plan counts a bf16 frozen base

    r.update_manifest(preset=preset or r.manifest().get("preset"))
    r.start("reward", dataclasses.asdict(cfg))
    plan_record = plan and {**dataclasses.asdict(plan), "summary": plan.summary(), "table": plan.table()}
    if plan_record:
        atomic_write_json(stage / "plan.json", plan_record)
    metrics_path = stage / "metrics.jsonl"
    atomic_write_text(metrics_path, "")
    initial = [p.detach().clone() for p in model.parameters()]

    chart = LiveChart(CHART, title="reward model", enabled=live)
    with tempfile.TemporaryDirectory(dir=stage, prefix=".trainer.") as out_dir:
        settings = dataclasses.asdict(cfg)
        # The curve only has to show the trend: scoring every held-out pair at every interval was a large share of
        # training at the cpu preset (benchmarks/reward_curve.py), and evaluating never changes the weights.
        curve = (eval_pairs if cfg.curve_pairs is None or len(eval_pairs) <= cfg.curve_pairs
                 else random.Random(f"curve-{cfg.seed}").sample(eval_pairs, cfg.curve_pairs))
        trainer = reward_trainer(model, tokenizer, train_pairs, curve, settings, out_dir, device, bf16, tb_dir(stage))
        bar = progress(planned_steps(settings, len(train_pairs)), "reward", disable=not progress_bar)
        trainer.add_callback(MetricsCallback(metrics_path, "reward", chart, bar, show=("reward/loss", "reward/eval_accuracy")))
        t_train = time.perf_counter()
        with timer("train"):
            trainer.train()
        t_train = time.perf_counter() - t_train
        bar.close()
        chart.update(trainer.state.global_step, {}, force=True)
        trainable = count_params(trainer.model, trainable_only=True)
        model = trainer.model.merge_and_unload() if cfg.use_lora else trainer.model
    model.eval()
    changed = sum(not torch.equal(a, b.detach().cpu()) for a, b in zip(initial, model.parameters()))
    with timer("save"), atomic_dir(stage / "model") as d:
        model.save_pretrained(d)
        tokenizer.save_pretrained(d)

    # 1. held-out pairwise accuracy and score distributions, 2. calibration, 3. the verifier on fresh samples
    check = eval_pairs or train_pairs  # without a held-out set, report on training pairs (and say so)
    with timer("evaluate pairs"):
        held = evaluate_pairs(model, tokenizer, check, cfg.calibration_bins, cfg.score_batch_size)
    sample = random.Random(cfg.seed).sample(train_pairs, min(len(train_pairs), 500))
    train_acc = evaluate_pairs(model, tokenizer, sample, cfg.calibration_bins, cfg.score_batch_size)["accuracy"]
    write_jsonl_atomic(stage / "eval_pairs.jsonl", held["rows"])
    # The evaluation prompts SFT and PPO report on (stage 3 never drew one), in stage 3's families. The verifier
    # checks judge the reward model on the embedded world's tasks: on anyone else's preferences they would
    # measure something it was not trained for, so they run only on stage 3's pairs of world prompts.
    prefs_cfg = read_json(r.stage_dir("preferences") / "config.json", {})
    on_world = cfg.data == "pairs" and prefs_cfg.get("prompts", "world") == "world"
    fams = W.parse_families(prefs_cfg.get("families") or ",".join(W.DEFAULT_FAMILIES))
    conduct_fams = tuple(f for f in fams if f in W.CONDUCT_FAMILIES)
    agree, vrows, crows = None, [], []
    if cfg.verifier_tasks and sft_path is not None and on_world:
        tasks = W.make_tasks(r.world(), cfg.verifier_tasks, "eval", seed=cfg.seed, families=fams, distinct=True)
        with timer("verifier samples"):
            vrows = verifier_samples(model, tokenizer, sft_path, tasks, device, cfg.eval_samples,
                                     cfg.verifier_max_new_tokens, cfg.verifier_temperature, cfg.seed, cfg.score_batch_size)
        agree = verifier_agreement(vrows, cfg.worst_k)
        write_jsonl_atomic(stage / "verifier_samples.jsonl", vrows)
    if cfg.conduct_verifier_tasks and conduct_fams and sft_path is not None and on_world:
        # The conduct families get a check of their own, so their Spearman rests on more than the overall
        # check's share of them.
        tasks = W.make_tasks(r.world(), cfg.conduct_verifier_tasks, "eval", seed=cfg.seed, families=conduct_fams,
                             distinct=True)
        with timer("verifier samples"):
            crows = verifier_samples(model, tokenizer, sft_path, tasks, device, cfg.eval_samples,
                                     cfg.verifier_max_new_tokens, cfg.verifier_temperature, cfg.seed, cfg.score_batch_size)
        write_jsonl_atomic(stage / "conduct_samples.jsonl", crows)
    # Where does it fail? World pairs and samples carry their task's family (the reward model never sees it);
    # a family's Spearman pools its samples from both checks.
    acc_by_family, rho_by_family = by_family(held["rows"], vrows + crows)
    if sft_path is not None and sft_path.name.startswith(".sft_merged."):
        shutil.rmtree(sft_path, ignore_errors=True)

    rows = read_jsonl(metrics_path, on_error="skip")
    last = {k: v for m in rows for k, v in m.items()}
    result = {
        "reward/eval_accuracy": held["accuracy"], "reward/train_accuracy": train_acc, "reward/ece": held["ece"],
        "reward/spearman": agree["spearman"] if agree else None,
        "reward/conduct_accuracy": pairwise_accuracy(held["rows"], W.CONDUCT_FAMILIES),
        "reward/conduct_spearman": spearman(crows, W.CONDUCT_FAMILIES) if crows else None,
        "reward/verifier_pair_accuracy": agree["pair_accuracy"] if agree else None,
        "reward/verifier_right_rate": 100 * sum(v["true_score"] for v in vrows) / len(vrows) if vrows else None,
        "reward/chosen_mean": held["chosen_mean"], "reward/rejected_mean": held["rejected_mean"],
        "reward/final_loss": last.get("reward/loss"), "reward/steps": trainer.state.global_step,
        "reward/pairs_train": len(train_pairs), "reward/pairs_eval": len(eval_pairs),
        "reward/prompts_eval": len({p["prompt"] for p in eval_pairs}), "reward/pairs_dropped_too_long": fit["dropped"],
        "reward/pairs_truncated": fit["truncated"],
        "reward/params": count_params(model), "reward/trainable_params": trainable,
        "reward/params_changed": changed, "reward/train_seconds": t_train,
        "reward/seconds": time.perf_counter() - t_start, "reward/threads": threads, "device": str(device),
        "eval_on": "held-out prompts" if eval_pairs else
                   "training pairs (" + ("eval_fraction=0" if cfg.eval_fraction <= 0 else "one prompt: nothing to hold out") + ")",
        "data": data_note, "init_from": str(init_path),
        "verifier_check": "done" if agree else "skipped: " + (
            "verifier_tasks=0" if not cfg.verifier_tasks else "this run has no SFT model to sample from"
            if sft_path is None else "no verifier for these preferences (not stage 3's pairs on world prompts)"),
        "conduct_check": "done" if crows else "skipped: " + (
            "conduct_verifier_tasks=0" if not cfg.conduct_verifier_tasks else
            "no verifier for these preferences (not stage 3's pairs on world prompts)" if not on_world else
            "stage 3 used no conduct family" if not conduct_fams else "this run has no SFT model to sample from"),
    }
    atomic_write_json(stage / "eval.json", {**result, "timings": timer.rounded(), "plan": plan_record,
                                            "calibration": held["bins"],
                                            "accuracy_by_family": acc_by_family, "spearman_by_family": rho_by_family,
                                            "worst_disagreements": agree["worst"] if agree else []})
    r.complete("reward", result["reward/seconds"], {k: result[k] for k in (
        "reward/eval_accuracy", "reward/ece", "reward/spearman", "reward/verifier_pair_accuracy",
        "reward/conduct_accuracy", "reward/conduct_spearman", "reward/pairs_train", "reward/pairs_eval",
        "reward/pairs_truncated", "reward/pairs_dropped_too_long")})
    return result
