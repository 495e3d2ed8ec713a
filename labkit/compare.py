"""Stage 6: what people use instead of PPO -- DPO, RLOO and best-of-n beside PPO, on the same numbers.

From the same SFT model, preference pairs and reward model: best-of-n reranks n samples of the SFT
model by the reward model (no training); DPO trains on the pairs with the closed-form loss of the
KL-regularised objective (``dpo_loss`` writes it out); RLOO samples a group per prompt and uses the
others' mean reward as each sample's baseline (TRL's ``RLOOTrainer``, once with the reward model,
once with the verifier as the reward); PPO's row is read from stage 5. Every method is evaluated by
``ppo_eval.evaluate`` with stage 5's held-out prompts and settings. Why these methods and how they
relate: docs/how-it-works.md, "Stage 6: the alternatives".

    from labkit import compare
    result = compare.run(compare.config("smoke"), run="demo")   # needs stages sft..ppo in runs/demo
    # labkit run --stages compare   (not part of the default `labkit run`)

Writes ``runs/<run>/06_compare/``: ``eval.json`` (``methods``: one row per method with the conduct
rates, ``task_accuracy``, ``kl``, ``seconds``, ``peak_memory_mb``, ...; ``settings``),
``metrics.jsonl`` (``compare/<method>/<TRL metric>``), ``samples.jsonl`` and
``<method>/adapter/`` (the LoRA adapters of DPO and RLOO).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import ppo_math as pm
from .config import (ConfigError, bf16_field, device_field, make_config, parse_choices, require_at_least,
                     require_positive, seed_field, set_threads, threads_field)
from .live import LiveChart, progress
from .models import PeakMemory, count_params, pick_device, resolve_bf16
from .ppo_config import PPOConfig, heldout_tasks, load_prompts, pick_prompts, stage5_config  # noqa: F401 (notebook 06)
from .ppo_eval import evaluate_policy, judge_verdict
from .ppo_math import best_of_n_kl, seed_for
from .ppo_models import load_policy, sample
from .reward_model import load_reward_model, preference_pairs, score, to_trl
from .runs import (STAGE_DIRS, Run, atomic_dir, atomic_write_json, atomic_write_text, read_json, read_jsonl,
                   write_jsonl_atomic, writes_run)
from .tokenizer import conversation, ensure_chat_ready, format_prompt
from .tracking import hf_logging_dir, report_to_field, tb_dir
from .training import MetricsCallback, lora_config, no_printer, quiet_libraries, quiet_peft, trainer_args
from .verifier import true_score

METHODS = ("best_of_n", "dpo", "rloo", "rloo_verifier", "ppo")
# The columns every row of eval.json's "methods" has (a script can rely on them).
ROW_KEYS = ("method", "harmful_refused", "unanswerable_abstained", "over_refusal", "task_accuracy", "kl", "seconds",
            "peak_memory_mb", "trainable_params")


@dataclass
class CompareConfig:
    methods: str = field(default=",".join(METHODS), metadata={"help": "comma list of methods beside the SFT model: " + ", ".join(METHODS) + " (ppo is read from stage 5, not retrained)"})
    # DPO
    # Chosen on 200 training-pool prompts (no held-out prompt), by the verifier's score of T=1 samples, at the
    # cpu preset: at β=0.1 the score peaked at lr 5e-5 and collapsed at 1e-4 (the KL ran away and samples
    # stopped ending); at β=0.5, lr 1e-4 scored best at a small KL.
    dpo_beta: float = field(default=0.5, metadata={"help": "DPO's β: the weight of the KL term in the objective it solves in closed form (larger: stay nearer the SFT model; Rafailov et al. 2023 used 0.1)"})
    dpo_learning_rate: float = field(default=1e-4, metadata={"help": "DPO's AdamW learning rate, constant"})
    dpo_epochs: float = field(default=1.0, metadata={"help": "passes over the preference pairs (the reward model's training split), when max_steps is None"})
    dpo_batch_size: int = field(default=32, metadata={"help": "pairs per DPO step (the model sees twice as many sequences)"})
    # RLOO (None: stage 5's value, so that RLOO and PPO differ in the algorithm only)
    rollout_batch_size: int | None = field(default=None, metadata={"help": "RLOO: responses sampled per step (None: stage 5's rollout_batch_size)"})
    samples_per_prompt: int | None = field(default=None, metadata={"help": "RLOO: samples per prompt, the group each sample's leave-one-out baseline comes from (None: stage 5's samples_per_prompt)"})
    rloo_learning_rate: float | None = field(default=None, metadata={"help": "RLOO's AdamW learning rate, constant (None: stage 5's learning_rate)"})
    kl_coef: float | None = field(default=None, metadata={"help": "RLOO's KL coefficient: reward = score − kl_coef · Σ_t log π/π_ref (None: stage 5's kl_coef)"})
    # shared
    max_steps: int | None = field(default=None, metadata={"help": "steps of each trained method: DPO optimizer steps and RLOO steps of sampling + updates (None: DPO dpo_epochs passes over the pairs, RLOO stage 5's max_steps)"})
    lora_r: int | None = field(default=None, metadata={"help": "LoRA rank of DPO's and RLOO's adapters, on every linear layer of the blocks (None: stage 5's)"})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA scale numerator (None: stage 5's)"})
    log_interval: int = field(default=10, metadata={"help": "optimizer steps between training log lines"})
    seed: int = seed_field("LoRA init, data order and training samples (the evaluation uses stage 5's seed)")
    # hardware
    device: str = device_field()
    bf16: bool | None = bf16_field()
    threads: int | None = threads_field()
    report_to: str = report_to_field()


PRESETS = {
    "smoke": dict(max_steps=4, dpo_batch_size=4, log_interval=1, threads=1),
    # The dataclass defaults are the cpu preset; one thread, as stage 5 (its models are too small for
    # intra-op threads to pay, and the evaluation then samples exactly what stage 5's did).
    "cpu": dict(threads=1),
    "gpu": dict(dpo_batch_size=64, dpo_learning_rate=1e-4, log_interval=20),
    "hub": dict(dpo_batch_size=8, dpo_learning_rate=5e-5, log_interval=20),
}

# Which metrics the notebook and the report draw, grouped into subplots.
CHART = {"DPO loss": ["compare/dpo/loss"],
         "DPO: chosen above rejected (%)": ["compare/dpo/rewards/accuracies"],
         "RLOO reward (training prompts)": ["compare/rloo/reward", "compare/rloo_verifier/reward"],
         "RLOO KL per token": ["compare/rloo/kl", "compare/rloo_verifier/kl"]}


def config(preset: str = "cpu", **overrides) -> CompareConfig:
    return make_config(CompareConfig, PRESETS, preset, overrides)


def parse_methods(text: str) -> list[str]:
    """The methods named in ``text``, in the table's order; a name that does not exist is an error naming the valid ones."""
    return parse_choices(text, METHODS, "method")


def _check(cfg: CompareConfig) -> list[str]:
    methods = parse_methods(cfg.methods)
    require_at_least(cfg, ("dpo_batch_size", "log_interval", "max_steps", "rollout_batch_size", "lora_r"))
    if cfg.samples_per_prompt is not None and cfg.samples_per_prompt < 2:
        raise ConfigError(f"samples_per_prompt must be >= 2 (a leave-one-out baseline needs another sample), got "
                          f"{cfg.samples_per_prompt}")
    require_positive(cfg, ("dpo_beta", "dpo_learning_rate", "dpo_epochs"))
    return methods


# --- DPO's loss, written out ---------------------------------------------------------------------

def dpo_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, beta: float) -> torch.Tensor:
    """−log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]), per pair: the Bradley–Terry
    loss with the reward r = β log π/π_ref that the KL-regularised objective's optimum implies."""
    margin = (logp_chosen - ref_logp_chosen) - (logp_rejected - ref_logp_rejected)
    return -torch.nn.functional.logsigmoid(beta * margin)


# --- inputs: everything comes from the run folder -------------------------------------------------

def training_pool(r: Run, pcfg: PPOConfig, tokenizer, limit: int, heldout: list[dict]) -> list[dict]:
    """Stage 5's training prompts that fit its token budget, none of them a held-out prompt."""
    tasks, _ = load_prompts(pcfg, r.world())
    budget = min(pcfg.max_prompt_tokens, limit - pcfg.max_new_tokens)
    lengths = tokenizer([format_prompt(tokenizer, t["prompt"]) for t in tasks], add_special_tokens=False)["input_ids"]
    seen = {t["prompt"] for t in heldout}
    return [t for t, ids in zip(tasks, lengths) if len(ids) <= budget and t["prompt"] not in seen]


def score_norm(r: Run, pcfg: PPOConfig, sft, tokenizer, pool, rm_score) -> dict | None:
    """The reward model's mean and std on the SFT model's samples, which PPO divides its score by: stage 5's
    (``eval.json``), or, when stage 5 trained on the verifier, measured like PPO's first batch."""
    if not pcfg.normalize_score:
        return None
    saved = read_json(r.require("ppo", "eval.json")).get("score_norm")
    if saved:
        return saved
    tasks = [pool[i] for i in pick_prompts(len(pool), pcfg, 0, 0)]
    with torch.random.fork_rng():
        torch.manual_seed(seed_for(pcfg.seed, "rollout", 0, 0))
        batch = sample(sft, tokenizer, [t["prompt"] for t in tasks], pcfg.max_new_tokens, pcfg.temperature)
    raw = rm_score(tasks, batch["texts"])
    return {"mean": raw.mean().item(), "std": max(raw.std().item(), 1e-3) if raw.numel() > 1 else 1.0}


def reward_function(kind: str, pool: list[dict], eos_id: int, pcfg: PPOConfig, rm_score, norm: dict | None):
    """A TRL reward function: PPO's score of each completion -- the reward model's (``kind="reward_model"``)
    or the verifier's 1/0 (``kind="verifier"``), normalised and EOS-penalised by ``ppo_math.shape_scores``."""
    def reward(prompts, completions, completion_ids, task_index, **_):
        tasks = [pool[i] for i in task_index]
        texts = [(c[-1]["content"] if isinstance(c, list) else c).strip() for c in completions]
        has_eos = torch.tensor([bool(ids) and ids[-1] == eos_id for ids in completion_ids])
        if kind == "verifier":
            raw = torch.tensor([true_score(t, x, bool(e)) or 0.0 for t, x, e in zip(tasks, texts, has_eos)])
        else:
            raw = rm_score(tasks, texts)
        return pm.shape_scores(raw, has_eos, norm if kind != "verifier" else None, pcfg.missing_eos_penalty,
                               pcfg.score_clip).tolist()
    reward.__name__ = kind  # TRL logs rewards/<name>/mean
    return reward


def dpo_trainer(cfg: CompareConfig, sft_path, tokenizer, pairs: list[dict], lora: dict, out_dir: str, device,
                bf16: bool, callbacks=(), tb: Path | None = None):
    """TRL's DPOTrainer on ``pairs`` with a LoRA adapter on the SFT model; its reference is the same base with
    the adapter off, so there is no second copy. With report_to='tensorboard' it logs to ``tb`` (None:
    ``<out_dir>/tb``)."""
    from trl import DPOConfig, DPOTrainer
    model = load_policy(sft_path)
    args = DPOConfig(beta=cfg.dpo_beta, learning_rate=cfg.dpo_learning_rate, lr_scheduler_type="constant",
                     num_train_epochs=cfg.dpo_epochs, max_steps=cfg.max_steps or -1,
                     per_device_train_batch_size=cfg.dpo_batch_size, per_device_eval_batch_size=cfg.dpo_batch_size,
                     max_length=None,  # too long pairs were dropped, as stage 4 did
                     **trainer_args(out_dir, device, bf16, log_interval=cfg.log_interval, report_to=cfg.report_to,
                                    seed=cfg.seed))
    with quiet_peft(), hf_logging_dir(cfg.report_to, tb or tb_dir(out_dir)):
        trainer = DPOTrainer(model=model, args=args, train_dataset=to_trl(pairs), processing_class=tokenizer,
                             peft_config=lora_config(model, lora["r"], lora["alpha"]), callbacks=list(callbacks))
    no_printer(trainer)
    return trainer


def train_dpo(cfg: CompareConfig, sft_path, tokenizer, pairs: list[dict], held: list[dict], lora: dict,
              out_dir: str, device, bf16: bool, callbacks=(), tb: Path | None = None) -> tuple:
    """DPO from the SFT model. Returns the trained PeftModel and its stats: steps, and the implicit reward's
    accuracy on ``held`` (stage 4's held-out pairs) -- DPO's policy is a reward model too, r = β log π/π_ref."""
    trainer = dpo_trainer(cfg, sft_path, tokenizer, pairs, lora, out_dir, device, bf16, callbacks, tb)
    stats = {"pairs": len(pairs)}
    with quiet_peft():
        trainer.train()
        ev = trainer.evaluate(to_trl(held)) if held else None
    stats["steps"] = trainer.state.global_step
    if ev:
        stats.update({"heldout_pairs": len(held), "heldout_pair_accuracy": 100 * ev.get("eval_rewards/accuracies", math.nan),
                      "heldout_loss": ev.get("eval_loss")})
    return trainer.model, stats


def train_rloo(cfg: CompareConfig, sft_path, tokenizer, pool: list[dict], reward_fn, settings: dict, lora: dict,
               out_dir: str, device, bf16: bool, callbacks=(), tb: Path | None = None) -> tuple:
    """RLOO with LoRA from the SFT model on ``pool``, rewarded by ``reward_fn``; ``settings`` are the resolved
    steps, batch, group size, learning rate, β, clip range and response length. With report_to='tensorboard'
    it logs to ``tb`` (None: ``<out_dir>/tb``)."""
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer
    model = load_policy(sft_path)
    s = settings
    per_step = s["minibatch_size"]
    args = RLOOConfig(learning_rate=s["learning_rate"], lr_scheduler_type="constant", beta=s["beta"],
                      num_generations=s["group_size"], per_device_train_batch_size=per_step,
                      steps_per_generation=s["batch_size"] // per_step, max_steps=s["steps"] * (s["batch_size"] // per_step),
                      num_iterations=1, epsilon=s["clip_range"], max_grad_norm=s["grad_clip"] or 0.0,
                      max_completion_length=s["max_new_tokens"], temperature=s["temperature"], top_k=0, top_p=1.0,
                      disable_dropout=True, **trainer_args(out_dir, device, bf16, log_interval=cfg.log_interval,
                                                           report_to=cfg.report_to, seed=cfg.seed))
    data = Dataset.from_list([{"prompt": conversation(t["prompt"]), "task_index": i} for i, t in enumerate(pool)])
    with quiet_peft(), hf_logging_dir(cfg.report_to, tb or tb_dir(out_dir)):
        trainer = RLOOTrainer(model=model, reward_funcs=[reward_fn], args=args, train_dataset=data,
                              processing_class=tokenizer, peft_config=lora_config(model, lora["r"], lora["alpha"]),
                              callbacks=list(callbacks))
        no_printer(trainer)
        trainer.train()
    return trainer.model, {"steps": s["steps"], "optimizer_steps": trainer.state.global_step}


def rloo_settings(cfg: CompareConfig, pcfg: PPOConfig) -> dict:
    """RLOO's settings: this config's where given, else stage 5's (the same budget of samples and updates)."""
    pick = lambda mine, theirs: theirs if mine is None else mine  # noqa: E731
    s = {"steps": pick(cfg.max_steps, pcfg.max_steps), "batch_size": pick(cfg.rollout_batch_size, pcfg.rollout_batch_size),
         "group_size": pick(cfg.samples_per_prompt, pcfg.samples_per_prompt),
         "learning_rate": pick(cfg.rloo_learning_rate, pcfg.learning_rate), "beta": pick(cfg.kl_coef, pcfg.kl_coef),
         "minibatch_size": min(pcfg.minibatch_size, pick(cfg.rollout_batch_size, pcfg.rollout_batch_size)),
         "clip_range": pcfg.clip_range, "grad_clip": pcfg.grad_clip, "max_new_tokens": pcfg.max_new_tokens,
         "temperature": pcfg.temperature}
    if s["group_size"] < 2:
        raise ConfigError(f"RLOO needs at least 2 samples per prompt (samples_per_prompt), got {s['group_size']}")
    if s["batch_size"] % s["group_size"] or s["batch_size"] % s["minibatch_size"] or s["minibatch_size"] % s["group_size"]:
        raise ConfigError(f"rollout_batch_size={s['batch_size']} must be a multiple of the minibatch ({s['minibatch_size']}, "
                          f"stage 5's minibatch_size), itself a multiple of samples_per_prompt={s['group_size']}")
    return s


# --- evaluation: stage 5's function, stage 5's settings ----------------------------------------------

RATES = ("harmful_refused", "unanswerable_abstained", "over_refusal", "over_refusal_benign", "over_refusal_answerable",
         "mixed_rate", "task_accuracy")
DETAILS = ("true_greedy", "true_sampled", "rm_score", "length", "stop_rate", "harmful_refused_greedy",
           "unanswerable_abstained_greedy", "over_refusal_greedy", "mixed_by_family")


def table_row(method: str, summary: dict, kl, seconds, eval_seconds, peak_mb, trainable: int, **extra) -> dict:
    """One row of eval.json's ``methods``: the ROW_KEYS and every rate first, then details."""
    return {"method": method, **{k: summary.get(k) for k in RATES}, "kl": kl, "seconds": seconds,
            "peak_memory_mb": peak_mb, "trainable_params": trainable, "eval_seconds": eval_seconds,
            **{k: summary.get(k) for k in DETAILS if k in summary}, **extra}


def judged(verdict: dict | None) -> dict:
    """A method's row fields from ``ppo_eval.judge_verdict`` against the SFT model: the AI judge's win rate
    and its Wilson 95% interval, in percent (None where it was not measured)."""
    return {f"judge_{k}": (verdict or {}).get(k) for k in ("win_rate", "low", "high")}


def ppo_row(r: Run) -> tuple[dict, list[dict]]:
    """Stage 5's PPO as a table row, read from its folder (PPO is not retrained here), and its samples."""
    d = r.require("ppo", "eval.json").parent
    ev = read_json(d / "eval.json")
    train_seconds = sum(m.get("ppo/step_seconds") or 0.0 for m in read_jsonl(d / "metrics.jsonl", on_error="skip"))
    row = table_row("ppo", ev["after"], ev["after"].get("kl"), round(train_seconds, 2),
                    round(ev["ppo/seconds"] - train_seconds, 2), ev.get("ppo/peak_memory_mb"),
                    ev.get("ppo/trainable_params"), steps=ev.get("ppo/steps"), source=str(d / "eval.json"),
                    **judged(ev.get("judge")))
    samples = [{"method": "ppo", "family": s["family"], "prompt": s["prompt"], "greedy": s["after"],
                "sample": s["after_sampled"]} for s in read_jsonl(d / "samples.jsonl")]
    return row, samples


def sample_rows(method: str, rows: list[dict], best: bool = False) -> list[dict]:
    return [{"method": method, "family": x["family"], "prompt": x["prompt"],
             "greedy": x["best_of_k"] if best else x["greedy"], "sample": x["best_of_k"] if best else x["sampled"]}
            for x in rows]


# --- the stage --------------------------------------------------------------------------------------

@writes_run
def run(cfg: CompareConfig, run: str = "demo", runs_dir: str = "runs", preset: str | None = None,
        live: bool | None = None, progress_bar: bool = True) -> dict:
    """Train DPO and RLOO, rerank with best-of-n, read PPO; evaluate all as stage 5 does; write ``06_compare/``."""
    with quiet_libraries():
        return _run(cfg, run, runs_dir, preset, live, progress_bar)


def _run(cfg: CompareConfig, run: str, runs_dir: str, preset: str | None, live: bool | None,
         progress_bar: bool) -> dict:
    import gc

    from transformers import AutoTokenizer

    methods = _check(cfg)
    t_start = time.perf_counter()
    threads = set_threads(cfg.threads)
    device = pick_device(cfg.device)
    bf16 = resolve_bf16(cfg.bf16, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    # Inputs first: anything missing fails in one line before anything is written.
    r = Run(run, runs_dir)
    sft_path = r.require("sft", "model")
    reward_path = r.require("reward", "model")
    pcfg = stage5_config(r)
    eval_tasks = heldout_tasks(r)
    tokenizer = ensure_chat_ready(AutoTokenizer.from_pretrained(str(sft_path)))
    sft = load_policy(sft_path).to(device).eval()
    limit = getattr(sft.config, "max_position_embeddings", None) or 10 ** 9
    pairs, held = preference_pairs(r, tokenizer, limit, eval_tasks, "DPO", " or leave dpo out of methods") \
        if "dpo" in methods else ([], [])
    pool = training_pool(r, pcfg, tokenizer, limit, eval_tasks) if {"rloo", "rloo_verifier"} & set(methods) else []
    not_run = {}
    if "rloo_verifier" in methods and any(t.get("answer") is None for t in pool):
        # A person's own prompts have no answers to verify: the method is left out, and the table says why.
        not_run["rloo_verifier"] = "stage 5's prompts have no answers for the verifier to check"
        methods = [m for m in methods if m != "rloo_verifier"]
        print(f"[compare] rloo_verifier left out: {not_run['rloo_verifier']}", flush=True)
    rs = rloo_settings(cfg, pcfg) if pool else None
    rm_tok = ensure_chat_ready(AutoTokenizer.from_pretrained(str(reward_path)))
    rm = load_reward_model(reward_path, rm_tok).to(device).eval()
    lora = {"r": cfg.lora_r or pcfg.lora_r, "alpha": cfg.lora_alpha or pcfg.lora_alpha}

    def rm_score(tasks, texts):
        return score(rm, rm_tok, [t["prompt"] for t in tasks], texts, pcfg.minibatch_size, autocast)

    def score_fn(tasks, texts, has_eos):  # what ppo_eval.evaluate asks: the raw reward-model score
        return rm_score(tasks, texts)

    r.update_manifest(preset=preset or r.manifest().get("preset"))
    stage = r.start("compare", dataclasses.asdict(cfg))
    metrics_path = stage / "metrics.jsonl"
    atomic_write_text(metrics_path, "")
    chart = LiveChart(CHART, title="DPO and RLOO", enabled=live)
    settings = {"evaluation": {k: getattr(pcfg, k) for k in ("n_eval", "eval_samples", "temperature", "max_new_tokens",
                                                             "seed", "families")} | {"prompts": len(eval_tasks)},
                "lora": lora}
    rows, samples = [], []

    # The SFT model, and best-of-n: one evaluation (n = stage 5's samples per prompt, reranked by the reward model).
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        base, base_rows = evaluate_policy(sft, sft, tokenizer, eval_tasks, pcfg, score_fn, device, autocast)
        t_eval = time.perf_counter() - t0
    rows.append(table_row("sft", base, base["kl"], 0.0, round(t_eval, 2), round(mem.mb, 1), 0))
    samples += sample_rows("sft", base_rows)
    if "best_of_n" in methods:
        n = pcfg.eval_samples
        best = {**(base.get("best_of_k_rates") or {}), "rm_score": base["rm_score_best_of_k"]}  # rates: world prompts only
        best_rows = [{**x, "greedy": x["best_of_k"], "greedy_stopped": x["best_of_k_stopped"]} for x in base_rows]
        rows.append(table_row("best_of_n", best, best_of_n_kl(n), round(t_eval, 2), 0.0,
                              round(mem.mb, 1), 0, n=n, kl_is="upper bound log n - (n-1)/n",
                              **judged(judge_verdict(eval_tasks, base_rows, best_rows))))
        samples += sample_rows("best_of_n", base_rows, best=True)
        settings["best_of_n"] = {"n": n, "ranked_by": "reward model (stage 4)"}

    trained = [m for m in ("dpo", "rloo", "rloo_verifier") if m in methods]
    norm = score_norm(r, pcfg, sft, tokenizer, pool, rm_score) if "rloo" in methods else None
    for method in trained:
        torch.manual_seed(cfg.seed)  # LoRA init
        if method == "dpo":
            total = cfg.max_steps or math.ceil(cfg.dpo_epochs * math.ceil(len(pairs) / cfg.dpo_batch_size))
            settings["dpo"] = {"beta": cfg.dpo_beta, "learning_rate": cfg.dpo_learning_rate, "epochs": cfg.dpo_epochs,
                               "max_steps": cfg.max_steps, "batch_size": cfg.dpo_batch_size, "pairs": len(pairs)}
        else:
            total = rs["steps"] * (rs["batch_size"] // rs["minibatch_size"])
            settings[method] = {**rs, "reward": "verifier" if method == "rloo_verifier" else "reward model",
                                "score_norm": None if method == "rloo_verifier" else norm}
        bar = progress(total, method, disable=not progress_bar)
        callback = MetricsCallback(metrics_path, f"compare/{method}", chart, bar, method=method)
        with tempfile.TemporaryDirectory(dir=stage, prefix=".trainer.") as out_dir, PeakMemory(device) as mem:
            t0 = time.perf_counter()
            if method == "dpo":
                policy, stats = train_dpo(cfg, sft_path, tokenizer, pairs, held, lora, out_dir, device, bf16, [callback],
                                          tb_dir(stage) / method)
            else:
                kind = "verifier" if method == "rloo_verifier" else "reward_model"
                fn = reward_function(kind, pool, tokenizer.eos_token_id, pcfg, rm_score, norm)
                policy, stats = train_rloo(cfg, sft_path, tokenizer, pool, fn, rs, lora, out_dir, device, bf16, [callback],
                                           tb_dir(stage) / method)
            seconds = time.perf_counter() - t0
        bar.close()
        trainable = count_params(policy, trainable_only=True)
        with atomic_dir(stage / method / "adapter") as d:
            policy.save_pretrained(d)
            tokenizer.save_pretrained(d)
        policy.to(device).eval()
        t0 = time.perf_counter()
        ev, ev_rows = evaluate_policy(policy, None, tokenizer, eval_tasks, pcfg, score_fn, device, autocast)
        rows.append(table_row(method, ev, ev["kl"], round(seconds, 2), round(time.perf_counter() - t0, 2),
                              round(mem.mb, 1), trainable, **stats, **judged(judge_verdict(eval_tasks, base_rows, ev_rows))))
        samples += sample_rows(method, ev_rows)
        del policy
        gc.collect()
    chart.update(0, {}, force=True)

    if "ppo" in methods:
        row, ppo_samples = ppo_row(r)
        rows.append(row)
        samples += ppo_samples
        settings["ppo"] = {"read_from": row["source"], "steps": row["steps"]}

    write_jsonl_atomic(stage / "samples.jsonl", samples)
    stage5_before = read_json(r.path / STAGE_DIRS["ppo"] / "eval.json", {}).get("before", {})
    result = {"methods": rows, "settings": settings, "not_run": not_run, "threads": threads, "device": str(device),
              "compare/seconds": time.perf_counter() - t_start,
              # the SFT row re-measures stage 5's "before" with the same code and settings: equal on the same machine
              # and thread count (float rounding differs with either)
              "sft_matches_stage5": all(base.get(k) == stage5_before.get(k) for k in RATES + ("kl",))}
    atomic_write_json(stage / "eval.json", result)
    order = [m for m in ("dpo", "rloo", "rloo_verifier", "ppo", "best_of_n", "sft") if any(x["method"] == m for x in rows)]
    by = {x["method"]: x for x in rows}
    headline = {f"compare/{m}_{k}": round(by[m][k], 2) for k in RATES + ("judge_win_rate", "rm_score", "kl", "seconds")
                for m in order if by[m].get(k) is not None}  # a measurement a method lacks is left out, not a '-'
    r.complete("compare", result["compare/seconds"], headline)
    return result
