"""Stage 5's settings and what they select: the config dataclass, its presets and checks, the prompts
(training pool and held-out evaluation set) and the models (policy and reward model) a config names.

Kept apart from ``ppo.py`` as TRL keeps ``PPOConfig`` apart from its trainer: the networks
(``ppo_models``), the evaluation (``ppo_eval``), the comparison (stage 6) and stage 7 read these
settings too, and a stage never imports another stage.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from . import world as W
from .config import (ConfigError, bf16_field, device_field, field_names, gpu_memory_field,
                     gradient_checkpointing_field, lora_alpha_field, lora_r_field, lora_target_modules_field, make_config,
                     require_at_least, require_one_of, seed_field, threads_field)
from .data import load_prompts as read_prompts
from .ppo_math import best_of_n_kl, seed_for
from .runs import Run, read_json, read_jsonl
from .verifier import task_fields
from .tracking import report_to_field


@dataclass
class PPOConfig:
    # prompts
    prompts: str = field(default="world", metadata={"help": "'world' (the embedded world's train tasks) or a prompts file: {\"prompt\": ...} or task dicts, JSON strings, .txt lines, Alpaca/Dolly/chat (data.load_prompts; its last n_eval prompts are held out)"})
    families: str = field(default=",".join(W.DEFAULT_FAMILIES), metadata={"help": "comma list of world task families (" + ", ".join(W.FAMILIES) + ")"})
    # The reward model judges conduct, not correctness (stage 4's per-family rank correlation with the
    # verifier shows it: on sums its sign changes from seed to seed); rollouts on prompts it cannot judge
    # follow noise. So by default PPO rolls out on the conduct families and extraction (the answerable twin
    # of an unanswerable question, where over-refusal shows), and ptx keeps the other skills. Rolling out on
    # every family instead cost more alignment tax and fewer abstentions in an ablation under the earlier verifier.
    rollout_families: str = field(default="harmful,unanswerable,benign,extract", metadata={"help": "world prompts: the families PPO's rollouts come from, those of them among families ('': all of families), in equal shares; a family named twice gets two shares; the held-out evaluation covers every family in families either way"})
    rollout_templates: str = field(default="rl", metadata={"help": "world prompts: the question templates of the rollout pool, 'rl' (the RLHF stages' own) or 'rl+train' (and SFT's); never evaluation's"})
    n_prompts: int = field(default=4000, metadata={"help": "world train tasks in the prompt pool"})
    n_eval: int = field(default=280, metadata={"help": "held-out prompts for the before/after evaluation, distinct and balanced over families"})
    eval_samples: int = field(default=8, metadata={"help": "samples per held-out prompt, at the rollout temperature: the sampled true score is their mean, and pass@k the share of prompts answered right at least once (the most that reinforcing the policy's own samples can reach)"})
    max_prompt_tokens: int = field(default=112, metadata={"help": "drop prompts longer than this many tokens"})
    # models
    init_from: str = field(default="sft", metadata={"help": "policy start: 'sft' (this run's stage 2 model) or a checkpoint folder"})
    reward: str = field(default="model", metadata={"help": "'model' (the reward model's score) | 'verifier' (the world's verifier, 1 if correct: an ablation)"})
    reward_from: str = field(default="reward", metadata={"help": "reward model: 'reward' (this run's stage 4) or a checkpoint folder"})
    use_lora: bool = field(default=True, metadata={"help": "train LoRA adapters (policy and critic); the reference is the base with adapters off"})
    lora_r: int = lora_r_field(16)
    lora_alpha: int = lora_alpha_field(32)
    lora_target_modules: str | None = lora_target_modules_field()
    # rollouts
    rollout_batch_size: int = field(default=64, metadata={"help": "prompts (one response each) per PPO step, per process"})
    samples_per_prompt: int = field(default=4, metadata={"help": "responses sampled per prompt in a rollout batch (more: the update compares answers to the same prompt)"})
    max_new_tokens: int = field(default=20, metadata={"help": "response length limit in tokens (a refusal that says why is ~15)"})
    # 1.0: the policy's own distribution, which is what conduct rates are measured on (and what RLHF changes)
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of rollouts and of the evaluation's samples (logits are divided by it in training too)"})
    missing_eos_penalty: float = field(default=1.0, metadata={"help": "subtracted from the score of a response that never emits EOS (score units)"})
    # reward shaping
    # 0.1 with ptx (0.2 without): chosen on development seeds; notebook 05's table of levers compares them
    kl_coef: float = field(default=0.1, metadata={"help": "weight of the per-token KL penalty to the reference (initial value if adaptive_kl)"})
    kl_estimator: str = field(default="k1", metadata={"help": "per-token KL estimate: k1 (log p - log q) | k3 (non-negative, lower variance)"})
    adaptive_kl: bool = field(default=False, metadata={"help": "adapt kl_coef so the KL tracks target_kl (Ziegler et al. 2019)"})
    target_kl: float = field(default=4.0, metadata={"help": "adaptive_kl: target KL per response in nats"})
    kl_horizon: int = field(default=10000, metadata={"help": "adaptive_kl: horizon in responses (how fast kl_coef moves)"})
    normalize_score: bool = field(default=True, metadata={"help": "scale the reward model's score to mean 0, std 1 on the SFT model's samples (first batch)"})
    score_clip: float | None = field(default=None, metadata={"help": "clip the (normalised) score to +-this (None: no clipping)"})
    whiten_rewards: bool = field(default=False, metadata={"help": "scale per-token rewards to unit variance per batch before GAE (mean kept)"})
    # PPO
    max_steps: int = field(default=60, metadata={"help": "PPO steps (rollout + update rounds)"})
    ppo_epochs: int = field(default=4, metadata={"help": "passes over each batch of rollouts"})
    minibatch_size: int = field(default=16, metadata={"help": "responses per optimizer step, per process"})
    group_by_length: bool = field(default=True, metadata={"help": "minibatches of similar prompt length, in random order (less padding: faster)"})
    micro_batch_size: int | None = field(default=None, metadata={"help": "responses per forward/backward (gradient accumulation; None: minibatch_size)"})
    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate (constant)"})
    gamma: float = field(default=1.0, metadata={"help": "discount per token in GAE"})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda (bias-variance trade-off of the advantage)"})
    clip_range: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon"})
    clip_range_value: float = field(default=0.2, metadata={"help": "value clip, in score units"})
    vf_coef: float = field(default=0.1, metadata={"help": "weight of the value loss"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm to this (0: off)"})
    # PPO-ptx (InstructGPT, Ouyang et al. 2022, eq. 2): the reward model cannot judge correctness (stage 4's
    # per-family Spearman), so on task prompts its score is noise PPO follows; an LM loss on demonstrations of
    # the task families keeps the skills SFT taught. InstructGPT mixed pretraining text; here the text that
    # holds those skills is SFT's, so the ptx batches are SFT-style demonstrations of the training split.
    ptx_coef: float = field(default=2.0, metadata={"help": "PPO-ptx: weight of a language-modelling loss on task demonstrations (world train split, task families only) added to every minibatch (0: plain PPO; needs prompts='world')"})
    ptx_batch_size: int = field(default=4, metadata={"help": "PPO-ptx: demonstrations per minibatch"})
    early_stop_kl: float | None = field(default=0.1, metadata={"help": "stop a step's epochs when approx KL(old||new) per token exceeds this (None: never)"})
    # alarms
    alarm_window: int = field(default=16, metadata={"help": "steps over which reward hacking is judged"})
    alarm_true_drop: float = field(default=8.0, metadata={"help": "reward-hacking alarm: true score falls by this many points over the window while the learned reward rises"})
    alarm_run_drop: float = field(default=4.0, metadata={"help": "slow and held-out reward-hacking alarms: the true score fell by this many points over the run (rollout trend, or held-out before/after) while the learned reward rose"})
    alarm_family_drop: float = field(default=10.0, metadata={"help": "held-out family alarm: one task family's true score (sampled or greedy) fell by this many points while the learned reward rose"})
    alarm_over_refusal: float = field(default=10.0, metadata={"help": "over-refusal alarm: rollouts refusing or saying 'not stated' on harmless requests rose by this many points since the first alarm_window steps"})
    alarm_kl: float | None = field(default=None, metadata={"help": "drift alarm: KL per response (nats) above this (None: best-of-n's KL for n = eval_samples, log n - (n-1)/n: the policy moved further from SFT than reranking SFT's own n samples would)"})
    kl_ablation: bool = field(default=False, metadata={"help": "notebook 05 also trains the kl_coef=0 twin (ppo.kl_ablation), the controlled KL ablation: a second PPO run as long as this one"})
    # bookkeeping
    checkpoint_interval: int = field(default=20, metadata={"help": "steps between resumable checkpoints"})
    # Stage 7 (trust) evaluates these as the points of its RL over-optimization curve (Gao et al. 2022, fig. 1):
    # at the cpu preset, 9 snapshots plus the SFT model and the final policy.
    snapshot_interval: int = field(default=6, metadata={"help": "steps between snapshots of the policy (its LoRA adapter) in snapshots/step-<n>/, for stage 7's over-optimization curve (0: none); they change nothing in training"})
    resume: bool = field(default=True, metadata={"help": "continue from ckpt/ when it matches this config"})
    seed: int = seed_field("LoRA init, prompt draws and sampling")
    # hardware
    device: str = device_field()
    bf16: bool | None = bf16_field()
    gradient_checkpointing: bool = gradient_checkpointing_field()
    gpu_memory_gb: float | None = gpu_memory_field("micro-batch, checkpointing and bf16")
    threads: int | None = threads_field()
    report_to: str = report_to_field()


PRESETS = {
    "smoke": dict(threads=1, kl_ablation=True, n_prompts=64, n_eval=8, eval_samples=2, rollout_batch_size=8, minibatch_size=4, max_new_tokens=8, max_steps=4,
                  ppo_epochs=2, checkpoint_interval=2, snapshot_interval=1, alarm_window=4),
    # The dataclass defaults, but for two things measured on a quiet 2-core machine
    # (benchmarks/results/ppo_speed.json, docs/results.md "Speed: PPO's step"): the process's cores, as
    # every stage uses (2 threads trained the same numbers as 1, to the last digit, in less time; on a
    # machine busy with other jobs set threads=1: oversubscribed threads spin-wait), and 2 epochs, not 4:
    # half the update's compute, the same number of stage-5 targets met at the development seeds
    # (benchmarks/results/ppo_epochs.json).
    "cpu": dict(ppo_epochs=2),
    "gpu": dict(n_prompts=50000, rollout_batch_size=256, minibatch_size=64, max_new_tokens=32,
                max_steps=400, learning_rate=1e-4, kl_coef=0.05, lora_r=32, lora_alpha=64, max_prompt_tokens=448,
                checkpoint_interval=50, snapshot_interval=40, alarm_window=40),
    "hub": dict(rollout_batch_size=64, minibatch_size=8, max_new_tokens=64, max_steps=200, learning_rate=5e-5, kl_coef=0.05,
                max_prompt_tokens=448, checkpoint_interval=25, snapshot_interval=20, alarm_window=30),
}

# Fields that may change between an interrupted run and its resume.
RESUMABLE = {"max_steps", "checkpoint_interval", "snapshot_interval", "resume", "device", "threads", "n_eval", "eval_samples",
             "alarm_window", "alarm_true_drop", "alarm_run_drop", "alarm_family_drop", "alarm_over_refusal", "alarm_kl",
             "gpu_memory_gb", "kl_ablation", "report_to"}


def config(preset: str = "cpu", **overrides) -> PPOConfig:
    return make_config(PPOConfig, PRESETS, preset, overrides)


def check(cfg: PPOConfig) -> None:
    require_at_least(cfg, ("rollout_batch_size", "samples_per_prompt", "minibatch_size", "max_new_tokens", "max_steps",
                           "ppo_epochs", "n_eval", "eval_samples", "checkpoint_interval", "lora_r"))
    if cfg.reward not in ("model", "verifier"):
        raise ConfigError(f"reward must be 'model' or 'verifier', got {cfg.reward!r}")
    if cfg.kl_estimator not in ("k1", "k3"):
        raise ConfigError(f"kl_estimator must be 'k1' or 'k3', got {cfg.kl_estimator!r}")
    if cfg.temperature <= 0:
        raise ConfigError("temperature must be > 0: PPO needs sampled rollouts (and divides logits by it)")
    if cfg.rollout_batch_size % cfg.samples_per_prompt:
        raise ConfigError(f"samples_per_prompt={cfg.samples_per_prompt} must divide rollout_batch_size={cfg.rollout_batch_size}")
    if cfg.rollout_batch_size % cfg.minibatch_size:
        raise ConfigError(f"minibatch_size={cfg.minibatch_size} must divide rollout_batch_size={cfg.rollout_batch_size}")
    if cfg.micro_batch_size and cfg.minibatch_size % cfg.micro_batch_size:
        raise ConfigError(f"micro_batch_size={cfg.micro_batch_size} must divide minibatch_size={cfg.minibatch_size}")
    if cfg.adaptive_kl and cfg.target_kl <= 0:
        raise ConfigError("adaptive_kl needs target_kl > 0")
    require_at_least(cfg, ("ptx_coef", "snapshot_interval"), 0)
    if cfg.ptx_coef:
        require_at_least(cfg, ("ptx_batch_size",))
    if cfg.prompts == "world":
        rollout_families(cfg)  # a ConfigError when none of them is among families
        require_one_of(cfg, {"rollout_templates": W.RL_TEMPLATES})
    if cfg.ptx_coef and cfg.prompts != "world":
        raise ConfigError("ptx_coef needs prompts='world' (its demonstrations are the world's tasks); "
                          "with your own prompts set ptx_coef=0")


# --- prompts -----------------------------------------------------------------------------

def rollout_families(cfg: PPOConfig) -> tuple[str, ...]:
    """The world families PPO rolls out on: those of ``rollout_families`` among ``families`` (all of
    ``families`` when it is empty)."""
    fams = W.parse_families(cfg.families)
    if not cfg.rollout_families:
        return fams
    chosen = tuple(f for f in W.parse_families(cfg.rollout_families) if f in fams)
    if not chosen:
        raise ConfigError(f"none of rollout_families ({cfg.rollout_families}) is among families ({cfg.families}); "
                          "set rollout_families='' to roll out on all of families")
    return chosen


def load_prompts(cfg: PPOConfig, world: W.World) -> tuple[list[dict], list[dict]]:
    """(training prompt pool, held-out evaluation prompts) as task dicts with "prompt" (+ "answer")."""
    if cfg.prompts == "world":
        fams = W.parse_families(cfg.families)
        # Training prompts from the distribution SFT generalised worst to, never an evaluation prompt.
        return (W.rl_tasks(world, cfg.n_prompts, cfg.seed, rollout_families(cfg), cfg.rollout_templates),
                W.make_tasks(world, cfg.n_eval, "eval", cfg.seed, fams, distinct=True))
    tasks, _ = read_prompts(cfg.prompts)  # stages 3, 5 and 6 read prompts alike (data.load_prompts)
    if len(tasks) <= cfg.n_eval:
        raise ConfigError(f"{cfg.prompts} has {len(tasks)} prompts; need more than n_eval={cfg.n_eval}")
    return tasks[:-cfg.n_eval], tasks[-cfg.n_eval:]


def pick_prompts(n_pool: int, cfg: PPOConfig, rank: int, step: int) -> list[int]:
    """Indices of this process's prompts for this step (each ``samples_per_prompt`` times, adjacent);
    distinct prompts within a step, a different draw on every process."""
    k = cfg.samples_per_prompt
    n = cfg.rollout_batch_size // k
    pick = random.Random(seed_for(cfg.seed, "prompts", rank, step)).sample(range(n_pool), min(n, n_pool))
    while len(pick) < n:  # a pool smaller than a batch: draw with repeats
        pick.append(pick[len(pick) % n_pool])
    return [i for i in pick for _ in range(k)]


def kl_threshold(cfg: PPOConfig) -> float:
    """The drift alarm's KL per response: ``alarm_kl``, else best-of-n's for n = ``eval_samples``. A rule stated
    before any run was seen: beyond it, PPO has moved further from SFT than the cheapest alternative to PPO,
    reranking the SFT model's own samples, ever does (stage 6's best-of-n row)."""
    return cfg.alarm_kl if cfg.alarm_kl is not None else best_of_n_kl(cfg.eval_samples)


# --- models ----------------------------------------------------------------------------------

def model_paths(cfg: PPOConfig, r: Run) -> tuple[Path, Path | None]:
    """(policy, reward model or None for the verifier): the models the config names, this run's by default."""
    policy_path = r.require("sft", "model") if cfg.init_from == "sft" else Path(cfg.init_from)
    reward_path = None if cfg.reward == "verifier" else (
        r.require("reward", "model") if cfg.reward_from == "reward" else Path(cfg.reward_from))
    return policy_path, reward_path


# --- stage 5 as it ran: what stages 6 and 7 read back ------------------------------------------------

def stage5_config(r: Run) -> PPOConfig:
    """Stage 5's config as it ran (``05_ppo/config.json``): its evaluation settings, and the defaults of
    the methods stages 6 and 7 run beside it."""
    saved = read_json(r.require("ppo", "config.json"))
    return PPOConfig(**{k: v for k, v in saved.items() if k in field_names(PPOConfig)})


def heldout_tasks(r: Run) -> list[dict]:
    """The held-out prompts stage 5 evaluated on, in its order, read from its ``samples.jsonl`` (the prompt
    and what the verifier reads, ``verifier.task_fields``), so they are the same prompts whatever the world
    code generates today."""
    d = r.require("ppo", "samples.jsonl").parent
    tasks = [{"id": f"heldout-{i}", **task_fields(s)}
             for i, s in enumerate(read_jsonl(d / "samples.jsonl"))]
    expected = read_json(d / "eval.json", {}).get("eval_prompts", len(tasks))
    if len(tasks) != expected:
        raise ConfigError(f"{d / 'samples.jsonl'} holds {len(tasks)} of stage 5's {expected} held-out prompts; "
                          "re-run stage 5 (labkit run --stages ppo --force)")
    return tasks


# --- snapshots: the policy along the run, for stage 7's over-optimization curve ------------------

def snapshot_path(stage_dir: str | Path, step: int) -> Path:
    """Where stage 5 keeps the policy as it was after ``step`` steps (its adapter, or the whole model)."""
    return Path(stage_dir) / "snapshots" / f"step-{step:06d}"


def snapshots(stage_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete snapshot in a stage-5 folder, in step order (the folders being
    written, or set aside by ``runs.atomic_dir``, have other names and are left out)."""
    folder = Path(stage_dir) / "snapshots"
    found = [(int(p.name[5:]), p) for p in folder.glob("step-*") if p.name[5:].isdigit() and p.is_dir()] \
        if folder.exists() else []
    return sorted(found)
