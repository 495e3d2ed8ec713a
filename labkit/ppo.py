"""Stage 5: RLHF with PPO -- make the SFT model write what the reward model prefers, on a KL leash.

One iteration (``ppo_step``) samples a response per prompt from the policy, scores it with the reward
model (minus ``kl_coef`` x a per-token KL estimate to the SFT model, the leash), turns the rewards into
GAE advantages with a critic initialised from the reward model, and takes ``ppo_epochs`` passes of
clipped minibatch updates (PPO-ptx: plus an LM loss on task demonstrations). The file reads in that
order, then ``run``; the networks are in ``ppo_models``, the evaluation and alarms in ``ppo_eval``,
the maths in ``ppo_math``, the settings in ``ppo_config``. Why each piece is there, with the papers
and the implementation details that matter: docs/how-it-works.md, "Stage 5: PPO".

    from labkit import ppo
    result = ppo.run(ppo.config("smoke"), run="demo")     # needs stages sft and reward in runs/demo
    # two processes ("--": what follows is labkit's, not torchrun's):
    # torchrun --standalone --nproc_per_node 2 -m labkit.runner -- train ppo --name demo --preset cpu

Writes ``runs/<run>/05_ppo/``: ``model/`` (merged policy), ``adapter/`` (LoRA), ``config.json``,
``metrics.jsonl`` (one line per step: ``ppo/rm_score``, ``ppo/score``, ``ppo/true_score``, ``ppo/kl``,
``ppo/over_refusal``, the losses, clip fractions and timings; the full list in docs/how-it-works.md),
``eval.json`` (before/after on held-out prompts, alarms), ``samples.jsonl``, ``ckpt/`` (resume) and
``snapshots/step-<n>/`` (the policy every ``snapshot_interval`` steps, for stage 7).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from pathlib import Path

import torch

from . import ppo_math as pm
from . import verifier as V
from .config import ConfigError, set_threads
from .live import LiveChart, Timer, progress
from .models import count_params, peak_memory_mb, resolve_bf16
# The stage's interface, as every stage module has it (the runner reads PRESETS, the config class and
# config()), lives in ppo_config, shared with the modules that read stage 5's settings.
from .ppo_config import (PRESETS, RESUMABLE, PPOConfig, check, config, load_prompts, model_paths,  # noqa: F401
                         pick_prompts, snapshot_path, snapshots)
from .ppo_eval import announce, check_alarms, evaluate, final_alarms, judge_verdict
from .ppo_math import seed_for
from .ppo_models import (PolicyAndValue, adapter_disabled, demonstration_tasks, demonstrations, load_models,
                         position_ids, ptx_loss, reference, rollout_inputs, sample)
from .reward_model import score as rm_scores
from .runs import (Run, append_jsonl, atomic_dir, atomic_write_json, atomic_write_text, config_fingerprint, file_hash,
                   read_json, read_jsonl, resumable_checkpoint, write_jsonl_atomic, writes_run)
from .textdata import drift_ppl
from .tokenizer import format_prompt
from .tracking import Tracker, closes_trackers, tb_dir
from .training import length_grouped_order
from .verifier import true_score


# Which metrics the live chart and the report draw, grouped into subplots.
# The conduct numbers reported before and after (generate.conduct_summary): eval.json's ppo/<key>_before/_after.
CONDUCT_KEYS = ("harmful_refused", "unanswerable_abstained", "over_refusal", "over_refusal_benign",
                "over_refusal_answerable", "mixed_rate", "task_accuracy")
CHART = {"learned reward": ["ppo/rm_score", "ppo/score"], "true score, over-refusal (%)": ["ppo/true_score", "ppo/over_refusal"],
         "KL to reference": ["ppo/kl"], "losses": ["ppo/pg_loss", "ppo/vf_loss", "ppo/ptx_loss"],
         "update size": ["ppo/clipfrac", "ppo/approx_kl"]}
# --- one iteration: sample, score, advantages, update, log --------------------------------

def minibatch_order(query_mask: torch.Tensor, cfg: PPOConfig, gen: torch.Generator) -> torch.Tensor:
    """A permutation of the batch rows; consecutive ``minibatch_size`` rows form one minibatch.

    With ``group_by_length`` each minibatch holds prompts of similar length (random among equals) and
    the minibatches come in random order -- far less padding to compute through
    (``training.length_grouped_order``); otherwise a plain shuffle.
    """
    if not cfg.group_by_length:
        return torch.randperm(len(query_mask), generator=gen)
    return length_grouped_order(query_mask.sum(1).cpu(), cfg.minibatch_size, gen)


@torch.no_grad()
def forward_pass(pv: PolicyAndValue, ref, batch: dict, temperature: float, micro: int, autocast,
                 order: torch.Tensor | None = None) -> dict:
    """Old log-probs, reference log-probs, values and entropies of a rollout batch, [B, R] each.

    These are the "old" quantities of PPO: computed exactly as the training passes compute them
    (same micro-batches in the same ``order`` as the first epoch, padding, position ids,
    temperature), not taken from generate(), so the first ratio is exactly 1 [NDetails].
    """
    B, R = batch["response"].shape
    order = torch.arange(B) if order is None else order.cpu()
    out = {k: [] for k in ("logprobs", "ref_logprobs", "values", "entropy")}
    for idx in order.split(micro):
        ids, attn = rollout_inputs(batch, idx)
        with autocast:
            logits, values = pv(ids, attn, R)
        logits = logits.float() / temperature
        out["logprobs"].append(pm.logprobs_from_logits(logits, batch["response"][idx]))
        out["entropy"].append(pm.entropy_from_logits(logits))
        out["values"].append(values.float())
        with reference(pv, ref) as model, autocast:
            ref_logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn),
                               logits_to_keep=R + 1, use_cache=False).logits[:, :-1]
        out["ref_logprobs"].append(pm.logprobs_from_logits(ref_logits.float() / temperature, batch["response"][idx]))
    back = torch.argsort(order)  # rows back into batch order
    return {k: torch.cat(v)[back.to(v[0].device)] for k, v in out.items()}


def advantages_and_returns(batch: dict, cfg: PPOConfig) -> dict:
    """Shaped per-token rewards -> GAE advantages (whitened) and value targets [NDetails, TRL]."""
    rewards, kl = pm.per_token_rewards(batch["score"], batch["logprobs"], batch["ref_logprobs"], batch["mask"],
                                       batch["kl_coef"], cfg.kl_estimator)
    if cfg.whiten_rewards:
        rewards = pm.masked_whiten(rewards, batch["mask"], shift_mean=False)
    adv, returns = pm.gae(rewards, batch["values"], batch["mask"], cfg.gamma, cfg.lam)
    return {"rewards": rewards, "kl": kl, "advantages": pm.masked_whiten(adv, batch["mask"]), "returns": returns}


def ppo_update(model, opt, acc, batch: dict, cfg: PPOConfig, autocast, step: int, ptx: dict | None = None) -> dict:
    """``ppo_epochs`` passes of clipped-surrogate minibatch updates; stops early on a large approx KL.
    With ``ptx`` (demonstration tensors, see ``ppo_models.demonstrations``) every minibatch also takes
    ``ptx_coef`` x the LM loss on ``ptx_batch_size`` of them."""
    B, R = batch["response"].shape
    micro = cfg.micro_batch_size or cfg.minibatch_size
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed_for(cfg.seed, "minibatch", acc.process_index, step))
    stats = {k: [] for k in ("pg_loss", "vf_loss", "clipfrac", "vf_clipfrac", "approx_kl")}
    ratio_dev_first, epochs = None, 0
    ptx_gen, ptx_losses = torch.Generator().manual_seed(seed_for(cfg.seed, "ptx", acc.process_index, step)), []
    for epoch in range(cfg.ppo_epochs):
        # epoch 0 goes through the batch in the order forward_pass used (the same numbers, ratio 1)
        perm = batch["order"] if epoch == 0 and "order" in batch else minibatch_order(batch["query_mask"], cfg, gen)
        perm = perm.to(batch["response"].device)
        epoch_kl = []
        for mb in range(0, B, cfg.minibatch_size):
            rows = perm[mb:mb + cfg.minibatch_size]
            chunks = rows.split(micro)
            if ptx is not None:
                # no_sync: these gradients join the minibatch's, all-reduced with its last chunk's backward
                with acc.no_sync(model):
                    demo = torch.randint(len(ptx["input_ids"]), (cfg.ptx_batch_size,), generator=ptx_gen)
                    loss = ptx_loss(acc.unwrap_model(model).policy, ptx, demo, autocast)
                    acc.backward(cfg.ptx_coef * loss)
                ptx_losses.append(loss.detach())
            for k, idx in enumerate(chunks):
                last = k == len(chunks) - 1
                with (contextlib.nullcontext() if last else acc.no_sync(model)):
                    ids, attn = rollout_inputs(batch, idx)
                    with autocast:
                        logits, values = model(ids, attn, R)
                    logp = pm.logprobs_from_logits(logits.float() / cfg.temperature, batch["response"][idx])
                    mask = batch["mask"][idx]
                    pg_loss, clipfrac, approx_kl = pm.policy_loss(logp, batch["logprobs"][idx], batch["advantages"][idx],
                                                                  mask, cfg.clip_range)
                    vf_loss, vf_clipfrac = pm.value_loss(values.float(), batch["values"][idx], batch["returns"][idx],
                                                         mask, cfg.clip_range_value)
                    acc.backward((pg_loss + cfg.vf_coef * vf_loss) / len(chunks))
                if ratio_dev_first is None:  # before any update: new == old up to float noise
                    ratio = torch.exp(logp.detach() - batch["logprobs"][idx])
                    ratio_dev_first = (ratio - 1).abs().masked_fill(~mask.bool(), 0).max().item()
                for name, v in zip(stats, (pg_loss, vf_loss, clipfrac, vf_clipfrac, approx_kl)):
                    stats[name].append(v.detach())
                epoch_kl.append(approx_kl)
            if cfg.grad_clip:
                acc.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        epochs += 1
        # Same decision on every process: the mean approx KL over all of them.
        if cfg.early_stop_kl is not None and acc.reduce(torch.stack(epoch_kl).mean(), "mean").item() > cfg.early_stop_kl:
            break
    out = {k: torch.stack(v).mean().item() for k, v in stats.items()}
    if ptx_losses:
        out["ptx_loss"] = torch.stack(ptx_losses).mean().item()
    return {**out, "ratio_dev_first": ratio_dev_first, "epochs": epochs}


def rollout_stats(batch: dict, raw: torch.Tensor, tasks: list[dict]) -> dict:
    """This process's metrics of one batch of rollouts (averaged over processes by the caller)."""
    mask = batch["mask"]
    truth = [true_score(t, x, bool(e)) for t, x, e in zip(tasks, batch["texts"], batch["has_eos"])]
    # Over-refusal: refusing or saying "not stated" where the helpful answer was wanted (world tasks only)
    helpful = [V.over_refused(t, x) for t, x in zip(tasks, batch["texts"])
               if t.get("answer") is not None and V.answer_due(t)]
    return {"ppo/rm_score": raw.mean().item(), "ppo/score": batch["score"].mean().item(),
            "ppo/true_score": 100 * sum(truth) / len(truth) if None not in truth else float("nan"),
            "ppo/over_refusal": 100 * sum(helpful) / len(helpful) if helpful else float("nan"),
            "ppo/kl": batch["kl"].sum(1).mean().item(),  # per response: the sum over its tokens
            "ppo/reward": batch["rewards"].sum(1).mean().item(),
            "ppo/entropy": pm.masked_mean(batch["entropy"], mask).item(),
            "ppo/response_len": mask.sum(1).float().mean().item(),
            "ppo/eos_rate": 100 * batch["has_eos"].float().mean().item(),
            "ppo/explained_var": pm.explained_variance(batch["values"], batch["returns"], mask).item()}


def ppo_step(model, ref, opt, acc, tokenizer, score_fn, kl_ctl, train_tasks: list[dict], cfg: PPOConfig,
             step: int, norm: dict | None, autocast, ptx: dict | None = None) -> tuple[dict, dict | None]:
    """One PPO iteration: sample, score, compute advantages, update. Returns this step's metrics
    (averaged over processes) and the score normalisation (set from the first batch)."""
    rank = acc.process_index
    unwrapped = acc.unwrap_model(model)
    micro = cfg.micro_batch_size or cfg.minibatch_size
    t0 = time.perf_counter()
    # 1. rollouts: each process draws its own prompts; sampling is re-seeded per (seed, rank, step)
    tasks = [train_tasks[i] for i in pick_prompts(len(train_tasks), cfg, rank, step)]
    torch.manual_seed(seed_for(cfg.seed, "rollout", rank, step))
    batch = sample(unwrapped.policy, tokenizer, [t["prompt"] for t in tasks], cfg.max_new_tokens,
                   cfg.temperature, autocast)
    t_gen = time.perf_counter() - t0
    # 2. old log-probs, reference log-probs, values; then scores
    batch["order"] = minibatch_order(batch["query_mask"], cfg, torch.Generator().manual_seed(
        seed_for(cfg.seed, "order", rank, step)))
    batch.update(forward_pass(unwrapped, ref, batch, cfg.temperature, micro, autocast, batch["order"]))
    t_fwd = time.perf_counter() - t0 - t_gen
    raw = score_fn(tasks, batch["texts"], batch["has_eos"])
    t_score = time.perf_counter() - t0 - t_gen - t_fwd
    if norm is None and cfg.reward == "model" and cfg.normalize_score:
        # lm-human-preferences: reward model normalised to mean 0, std 1 on the SFT policy's samples
        everyone = acc.gather(raw.to(acc.device)).float()
        norm = {"mean": everyone.mean().item(), "std": max(everyone.std().item(), 1e-3) if everyone.numel() > 1 else 1.0}
    batch["score"] = pm.shape_scores(raw, batch["has_eos"], norm, cfg.missing_eos_penalty, cfg.score_clip).to(acc.device)
    batch["kl_coef"] = kl_ctl.value
    # 3. rewards (score at the end, KL penalty per token), advantages; the clipped update
    batch.update(advantages_and_returns(batch, cfg))
    local = rollout_stats(batch, raw, tasks)
    t_upd = time.perf_counter()
    upd = ppo_update(model, opt, acc, batch, cfg, autocast, step, ptx)
    t_upd = time.perf_counter() - t_upd
    local.update({f"ppo/{k}": v for k, v in upd.items() if k not in ("epochs",)})
    keys = sorted(local)
    means = acc.reduce(torch.tensor([local[k] for k in keys], device=acc.device, dtype=torch.float64), "mean")
    m = {"step": step + 1, **{k: None if v != v else v for k, v in zip(keys, means.tolist())},  # NaN -> None
         "ppo/kl_coef": kl_ctl.value, "ppo/epochs": upd["epochs"], "ppo/gen_seconds": t_gen,
         "ppo/forward_seconds": t_fwd, "ppo/score_seconds": t_score, "ppo/update_seconds": t_upd}
    return m, norm


# --- run -------------------------------------------------------------------------------------------

def plan_for(cfg: PPOConfig, r: Run, budget: float | None = None):
    """labkit.planner's plan for this stage's models in ``budget`` GiB (None: the config's gpu_memory_gb).

    `run` applies this plan when gpu_memory_gb is set and notebook 05 shows it, both through this call,
    so the notebook cannot show a plan the stage would not apply."""
    from . import planner
    policy_path, reward_path = model_paths(cfg, r)
    return planner.plan(str(policy_path), "ppo", cfg.gpu_memory_gb if budget is None else budget,
                        effective_batch_size=cfg.minibatch_size, seq_len=cfg.max_prompt_tokens + cfg.max_new_tokens,
                        use_lora=cfg.use_lora, lora_r=cfg.lora_r, critic="separate",
                        reward_model=str(reward_path) if reward_path else None,
                        generation_batch_size=cfg.rollout_batch_size)  # rollouts are generated in one batch


def fit_budget(cfg: PPOConfig, r: Run) -> PPOConfig:
    """With ``gpu_memory_gb`` set, the config with `plan_for`'s micro-batch, checkpointing and bf16."""
    from . import planner
    try:
        return planner.fit_config(cfg, lambda: plan_for(cfg, r))[0]
    except ValueError as e:
        raise ConfigError(f"PPO {e}") from None


def _accelerator(cfg: PPOConfig):
    from accelerate import Accelerator
    # cpu=True also makes accelerate see a torchrun launch on a machine without a GPU (else: one process each)
    return Accelerator(cpu=cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()))


def _eval_key(cfg: PPOConfig, policy_path, reward_path) -> dict:
    """What the "before" evaluation is a function of: the starting policy and reward model (their files'
    hash, or a hub name) and the settings that pick and score the held-out prompts."""
    def ident(p):
        return None if p is None else (file_hash(p) if Path(p).exists() else str(p))
    return {"policy": ident(policy_path), "reward": ident(reward_path),
            **{k: getattr(cfg, k) for k in ("prompts", "families", "n_eval", "eval_samples", "temperature",
                                            "max_new_tokens", "max_prompt_tokens", "rollout_batch_size", "reward",
                                            "seed")}}


def _save_ckpt(path: Path, acc, model, opt, kl_ctl, step, norm, alarms, cfg) -> None:
    """Trainable weights (adapters + critic head, or everything), optimizer, KL controller, step.
    RNG needs no state: every step re-seeds from (seed, rank, step)."""
    acc.wait_for_everyone()
    if acc.is_main_process:
        trainable = {n: p.detach().cpu() for n, p in acc.unwrap_model(model).named_parameters() if p.requires_grad}
        with atomic_dir(path) as d:
            torch.save({"trainable": trainable, "optimizer": opt.state_dict(), "kl_ctl": kl_ctl.state_dict(),
                        "step": step, "score_norm": norm, "alarms": alarms, "config": config_fingerprint(cfg, RESUMABLE),
                        "world_size": acc.num_processes}, d / "state.pt")
    acc.wait_for_everyone()


def _save_outputs(stage: Path, policy, tokenizer, cfg: PPOConfig, before_rows: list, after_rows: list) -> None:
    """The adapter (LoRA), the merged model, and the before/after samples of the evaluation prompts."""
    if cfg.use_lora:
        with atomic_dir(stage / "adapter") as d:
            policy.save_pretrained(d)
            tokenizer.save_pretrained(d)
    final = policy.merge_and_unload() if cfg.use_lora else policy
    with atomic_dir(stage / "model") as d:
        final.save_pretrained(d)
        tokenizer.save_pretrained(d)
    samples = [{**V.task_fields(b), "family": b["family"], "answer": b["answer"],
                "before": b["greedy"], "before_correct": b["greedy_correct"],
                "after": a["greedy"], "after_correct": a["greedy_correct"],
                "before_sampled": b["sampled"], "after_sampled": a["sampled"],
                "before_sampled_correct": b["sampled_correct"], "after_sampled_correct": a["sampled_correct"],
                "before_pass_k": b["pass_k"], "after_pass_k": a["pass_k"],
                "rm_before": b["rm_score"], "rm_after": a["rm_score"], "kl_after": a["kl"]}
               for b, a in zip(before_rows, after_rows)]
    write_jsonl_atomic(stage / "samples.jsonl", samples)


@writes_run
@closes_trackers
def run(cfg: PPOConfig, run: str = "demo", runs_dir: str = "runs", preset: str | None = None,
        live: bool | None = None, progress_bar: bool = True) -> dict:
    """Train the policy with PPO, evaluate before/after with the verifier, write the stage folder."""
    check(cfg)
    t_start, timer = time.perf_counter(), Timer()
    acc = _accelerator(cfg)
    main, world_size = acc.is_main_process, acc.num_processes
    cores = len(os.sched_getaffinity(0))
    threads = set_threads(cfg.threads or (max(1, cores // acc.num_processes) if world_size > 1 else None))
    device = acc.device
    bf16 = resolve_bf16(cfg.bf16, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    # Predecessors first: a missing stage fails before anything is written.
    r = Run(run, runs_dir)
    policy_path, reward_path = model_paths(cfg, r)
    cfg = fit_budget(cfg, r)
    micro = cfg.micro_batch_size or cfg.minibatch_size
    train_tasks, eval_tasks = load_prompts(cfg, r.world())
    if cfg.reward == "verifier" and any(t.get("answer") is None for t in train_tasks):
        raise ConfigError("reward='verifier' needs prompts with an 'answer' (world tasks or task dicts)")
    torch.manual_seed(cfg.seed)  # LoRA init
    with timer("load"):
        policy, ref, critic, rm, tokenizer, rm_tok = load_models(cfg, policy_path, reward_path)
    limit = getattr(policy.config, "max_position_embeddings", None) or 10**9
    budget = min(cfg.max_prompt_tokens, limit - cfg.max_new_tokens)
    lengths = tokenizer([format_prompt(tokenizer, t["prompt"]) for t in train_tasks + eval_tasks],
                        add_special_tokens=False)["input_ids"]
    n_train = len(train_tasks)
    train_tasks = [t for t, ids in zip(train_tasks, lengths[:n_train]) if len(ids) <= budget]
    eval_tasks = [t for t, ids in zip(eval_tasks, lengths[n_train:]) if len(ids) <= budget]
    if not train_tasks or not eval_tasks:
        raise ConfigError(f"no prompt fits in {budget} tokens (max_prompt_tokens, and the model's {limit} positions "
                          f"minus max_new_tokens={cfg.max_new_tokens})")

    pv = PolicyAndValue(policy, critic).to(device)
    for m in (ref, rm):
        if m is not None:
            m.to(device)
    opt = torch.optim.AdamW([p for p in pv.parameters() if p.requires_grad], lr=cfg.learning_rate,
                            eps=1e-5, weight_decay=0.0)  # Adam eps 1e-5 as in OpenAI's PPO [NDetails]
    n_trainable = count_params(pv, trainable_only=True)
    model, opt = acc.prepare(pv, opt)
    reward_net = rm if rm is not None else (critic if reward_path is not None else None)

    def score_fn(tasks, texts, has_eos):
        """The raw score of each response: the reward model's, or the verifier's 1/0 (``shape_scores`` shapes it)."""
        if reward_net is None:
            s = torch.tensor([true_score(t, x, bool(e)) or 0.0 for t, x, e in zip(tasks, texts, has_eos)])
        else:
            with (adapter_disabled(reward_net) if rm is None else contextlib.nullcontext()):
                s = rm_scores(reward_net, rm_tok, [t["prompt"] for t in tasks], texts, micro, autocast)
        return s

    # State: fresh, or resumed from the checkpoint of an interrupted run with the same config.
    stage = r.stage_dir("ppo")
    ckpt = stage / "ckpt"
    kl_ctl = (pm.AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon) if cfg.adaptive_kl
              else pm.FixedKLController(cfg.kl_coef))
    state = resumable_checkpoint(ckpt, cfg, RESUMABLE, cfg.max_steps) if cfg.resume else None
    acc.wait_for_everyone()
    step, norm, alarms = 0, None, []
    if state is not None:
        acc.unwrap_model(model).load_state_dict(state["trainable"], strict=False)
        opt.load_state_dict(state["optimizer"])
        kl_ctl.load_state_dict(state["kl_ctl"])
        step, norm, alarms = state["step"], state["score_norm"], state["alarms"]
    # The "before" evaluation depends only on the starting models and the evaluation settings: reuse a
    # saved one that matches them (a resumed run, or kl_ablation's twin, which starts where this run did).
    eval_key = _eval_key(cfg, policy_path, reward_path)
    saved = read_json(stage / "eval_before.json")
    before = saved if saved and saved.get("key") == eval_key else None

    metrics_path = stage / "metrics.jsonl"
    if main:
        r.update_manifest(preset=preset or r.manifest().get("preset"))
        r.start("ppo", dataclasses.asdict(cfg))
        kept = [m for m in read_jsonl(metrics_path, on_error="skip") if m.get("step", 0) <= step] if state else []
        write_jsonl_atomic(metrics_path, kept)
        for s, path in snapshots(stage):  # snapshots of an earlier run past where this one starts are not its own
            if s > step:
                shutil.rmtree(path)
    acc.wait_for_everyone()
    unwrapped = acc.unwrap_model(model)
    if before is None:
        with timer("evaluate before"):
            before, before_rows = evaluate(unwrapped, ref, score_fn, tokenizer, eval_tasks, cfg, acc, autocast)
        with timer("drift"):
            before["drift_ppl"] = drift_ppl(unwrapped.policy, tokenizer, r, autocast)
        if main:
            atomic_write_json(stage / "eval_before.json", {**before, "rows": before_rows, "key": eval_key})
    else:
        before_rows = before.pop("rows")
        before.pop("key")

    history = read_jsonl(metrics_path, on_error="skip") if main else []
    active = set()
    for i in range(len(history)):  # a resumed run: re-arm the alarms that were on (they are already recorded)
        check_alarms(history[:i + 1], cfg, active)
    chart = LiveChart(CHART, title="PPO", enabled=live if main else False)
    for h in history:
        chart.update(h["step"], h)
    bar = progress(cfg.max_steps, "ppo", initial=step, disable=not (progress_bar and main))
    tracker = Tracker(cfg.report_to, tb_dir(stage), resume_step=step, enabled=main)
    ptx = demonstrations(tokenizer, demonstration_tasks(r.world(), cfg.families, cfg.seed)) if cfg.ptx_coef else None
    model.train()
    while step < cfg.max_steps:
        t0 = time.perf_counter()
        m, norm = ppo_step(model, ref, opt, acc, tokenizer, score_fn, kl_ctl, train_tasks, cfg, step, norm, autocast, ptx)
        kl_ctl.update(m["ppo/kl"], cfg.rollout_batch_size * world_size)
        step += 1
        m["ppo/step_seconds"] = time.perf_counter() - t0
        if main:
            append_jsonl(metrics_path, m)
            tracker.log(m)
            history.append(m)
            chart.update(step, m)
            for a in check_alarms(history, cfg, active):
                alarms.append(a)
                announce(a)
            bar.update(1)
            bar.set_postfix(rm=f"{m['ppo/rm_score']:.2f}", true=f"{m['ppo/true_score'] or 0:.0f}%", kl=f"{m['ppo/kl']:.2f}")
        if step % cfg.checkpoint_interval == 0 and step < cfg.max_steps:
            _save_ckpt(ckpt, acc, model, opt, kl_ctl, step, norm, alarms, cfg)
        if main and cfg.snapshot_interval and step % cfg.snapshot_interval == 0 and step < cfg.max_steps:
            with atomic_dir(snapshot_path(stage, step)) as d:  # the final policy is adapter/ and model/
                unwrapped.policy.save_pretrained(d)
    bar.close()
    chart.update(step, {}, force=True)

    with timer("evaluate after"):
        after, after_rows = evaluate(unwrapped, ref, score_fn, tokenizer, eval_tasks, cfg, acc, autocast)
    # Drift: perplexity on stage 1's validation text, the language the model learned before any tuning
    with timer("drift"):
        after["drift_ppl"] = drift_ppl(unwrapped.policy, tokenizer, r, autocast)
    for a in final_alarms(before, after, cfg) if main else []:
        alarms.append(a)
        announce(a)
    # DDP keeps every process's copy identical; check it (a checksum of the trained weights per process).
    sums = acc.gather(torch.stack([p.detach().double().sum() for p in unwrapped.parameters() if p.requires_grad])[None])
    in_sync = bool(torch.allclose(sums, sums[:1].expand_as(sums), rtol=1e-9, atol=0))
    _save_ckpt(ckpt, acc, model, opt, kl_ctl, step, norm, alarms, cfg)  # a later run may continue training
    if main:
        with timer("save"):
            _save_outputs(stage, unwrapped.policy, tokenizer, cfg, before_rows, after_rows)
    judged = judge_verdict(eval_tasks, before_rows, after_rows)  # the AI judge: PPO's answer or SFT's? (any prompts)
    gain = (after["true_greedy"] - before["true_greedy"]) if before["true_greedy"] is not None else None
    result = {"ppo/true_score_before": before["true_greedy"], "ppo/true_score_after": after["true_greedy"],
              "ppo/true_score_gain": gain, "ppo/true_sampled_before": before["true_sampled"],
              "ppo/true_sampled_after": after["true_sampled"], "ppo/pass_at_k_before": before["pass_at_k"],
              "ppo/pass_at_k_after": after["pass_at_k"], "ppo/rm_score_before": before["rm_score"],
              "ppo/rm_score_after": after["rm_score"], "ppo/kl_after": after["kl"],
              "ppo/length_before": before["length"], "ppo/length_after": after["length"], "ppo/eval_prompts": len(eval_tasks),
              **{f"ppo/judge_{k}": judged[k] for k in ("win_rate", "low", "high")},
              "ppo/stop_rate_after": after["stop_rate"], "ppo/steps": step, "ppo/alarms": len(alarms),
              "ppo/drift_ppl_before": before["drift_ppl"], "ppo/drift_ppl_after": after["drift_ppl"],
              **{f"ppo/{k}_{when}": d.get(k) for when, d in (("before", before), ("after", after))
                 for k in CONDUCT_KEYS},
              "ppo/best_of_k": (before.get("best_of_k_rates") or {}),
              "ppo/trainable_params": n_trainable, "ppo/peak_memory_mb": peak_memory_mb(device),
              "ppo/seconds": time.perf_counter() - t_start, "ppo/threads": threads, "world_size": world_size,
              "ranks_in_sync": in_sync,
              "reward": cfg.reward, "use_lora": cfg.use_lora, "device": str(device),
              "resumed_from": state and state["step"]}
    if main:
        timings = {**timer.rounded(), **{f"train: {k}": round(sum(m.get(f"ppo/{k}_seconds") or 0 for m in history), 2)
                                         for k in ("gen", "forward", "score", "update", "step")}}
        atomic_write_json(stage / "eval.json", {**result, "timings": timings, "before": before, "after": after,
                                                "alarms": alarms, "judge": judged,
                                                "score_norm": norm, "eval_prompts": len(eval_tasks),
                                                "train_prompts": len(train_tasks)})
        # The verifier's numbers lead when the prompts have answers; without, what can be measured does.
        verified = ("ppo/true_score_before", "ppo/true_score_after", "ppo/pass_at_k_before", "ppo/rm_score_after",
                    "ppo/kl_after")
        measured = ("ppo/rm_score_before", "ppo/rm_score_after", "ppo/kl_after", "ppo/judge_win_rate", "ppo/judge_low",
                    "ppo/judge_high", "ppo/length_before", "ppo/length_after", "ppo/eval_prompts")
        keys = (verified if before["true_greedy"] is not None else measured) + (
            "ppo/harmful_refused_before", "ppo/harmful_refused_after", "ppo/unanswerable_abstained_before",
            "ppo/unanswerable_abstained_after", "ppo/over_refusal_benign_after", "ppo/over_refusal_answerable_after",
            "ppo/mixed_rate_before", "ppo/mixed_rate_after", "ppo/task_accuracy_before", "ppo/task_accuracy_after",
            "ppo/judge_win_rate")
        r.complete("ppo", result["ppo/seconds"], {k: round(result[k], 2) for k in dict.fromkeys(keys)
                                                  if result[k] is not None})
    acc.wait_for_everyone()
    return result


train = run  # kl_ablation's name for run(): inside it, "run" is the run folder's name


# --- the controlled KL ablation ------------------------------------------------------------------

def kl_ablation(cfg: PPOConfig, run: str = "demo", runs_dir: str = "runs", preset: str | None = None,
                live: bool | None = None) -> dict:
    """The controlled KL ablation: this run's stage 5 (``cfg.kl_coef``) against a twin that differs only
    in ``kl_coef=0``, trained from the same SFT and reward models in the run folder ``<run>-nokl``.

    Returns {"with leash": eval.json of this run's stage 5, "kl_coef=0": the twin's}, each with its
    ``metrics`` (the per-step history) added. Needs this run's stage 5 complete (the leash half)."""
    r = Run(run, runs_dir)
    leash_dir = r.require("ppo", what="")
    twin = Run(f"{run}-nokl", runs_dir)
    with twin.lock():  # the twin is a run of its own, written by this process alone
        twin.update_manifest(world_seed=r.manifest().get("world_seed", 0))
        # drift is measured on stage 1's validation text: the twin reads this run's (a config, not a model)
        pretrain_cfg = r.stage_dir("pretrain") / "config.json"
        if pretrain_cfg.exists():
            atomic_write_text(twin.stage_dir("pretrain") / "config.json", pretrain_cfg.read_text())
        # The twin starts from the same models with the same evaluation: its "before" is this run's (run()
        # checks the models' hashes and the settings before reusing it).
        atomic_write_text(twin.stage_dir("ppo") / "eval_before.json", (leash_dir / "eval_before.json").read_text())
        policy_path, reward_path = model_paths(cfg, r)  # the twin names this run's models by path
        train(dataclasses.replace(cfg, kl_coef=0.0, adaptive_kl=False, init_from=str(policy_path),
                                  reward_from=str(reward_path) if reward_path else cfg.reward_from),
              run=twin.name, runs_dir=runs_dir, preset=preset, live=live)
    out = {}
    for label, d in ((f"with leash (kl_coef={cfg.kl_coef:g})", leash_dir), ("kl_coef=0", twin.stage_dir("ppo"))):
        out[label] = {**read_json(d / "eval.json"), "metrics": read_jsonl(d / "metrics.jsonl", on_error="skip")}
    return out
