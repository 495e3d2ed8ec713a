"""A reward model as the later stages use it: its input format, its scores, its preference data, and
how it is trained.

Stage 4 trains the reward model; stages 5 (PPO), 6 (the comparison) and 7 (trust) score with it, and
stage 6 and 7 read the same pairs with the same split. Stage 7 also trains reward models of its own
with stage 4's recipe (``reward_trainer``: TRL's ``RewardTrainer`` with stage 4's settings). So these
live here, shared, and no stage imports another. A reward model is the SFT model with a one-output head
read at the last token (the EOS): ``AutoModelForSequenceClassification`` with ``num_labels=1``, as
TRL's ``RewardTrainer`` trains it. Long pairs are fitted into its positions by ``fit_pairs`` (earliest
turns go first, responses never).
"""

from __future__ import annotations

import contextlib
import math
import random
import re
from pathlib import Path

import torch

from .config import ConfigError
from .runs import Run, read_json, read_jsonl
from .tokenizer import conversation
from .tracking import hf_logging_dir, tb_dir
from .training import lora_config, no_printer, trainer_args


# --- the scoring format: one function for every stage that scores ------------------------------

def scoring_text(tokenizer, instruction: str, response: str) -> str:
    """Exactly what the reward model reads: ``<|user|>instruction<|assistant|> response<eos>``."""
    return tokenizer.apply_chat_template(conversation(instruction, response), tokenize=False)


@torch.no_grad()
def score(model, tokenizer, instructions: list[str], responses: list[str], batch_size: int = 64,
          autocast=contextlib.nullcontext()) -> torch.Tensor:
    """Reward-model scores for (instruction, response) pairs, [B] float32 on the CPU: stage 4's evaluation,
    PPO's rewards and the comparison's all score through here.

    The text is `scoring_text`, the format the model was trained on, right-padded like TRL's training
    batches; the model reads its score at the last non-pad token (the EOS), so padding never changes a
    score. Texts longer than the model's positions are cut there rather than failing. Dropout is off while
    scoring (eval mode), then the model's mode is restored.
    """
    if len(instructions) != len(responses):
        raise ValueError(f"{len(instructions)} instructions but {len(responses)} responses")
    device = next(model.parameters()).device
    limit = getattr(model.config, "max_position_embeddings", None)
    was_training = model.training
    model.eval()
    texts = [scoring_text(tokenizer, i, r) for i, r in zip(instructions, responses)]
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, padding_side="right",
                        add_special_tokens=False, truncation=limit is not None, max_length=limit).to(device)
        with torch.no_grad(), autocast:
            out.append(model(**enc, use_cache=False).logits[:, 0].float().cpu())  # one pass: no KV cache to fill
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


# --- the model --------------------------------------------------------------------------------

def load_reward_model(path: str | Path, tokenizer):
    """A one-output sequence classifier from a causal-LM (or reward-model) checkpoint, pad id set."""
    from transformers import AutoModelForSequenceClassification
    try:  # silence the expected "score.weight newly initialised / lm_head unused" report
        from trl.trainer.reward_trainer import suppress_seqcls_warning
    except ImportError:
        suppress_seqcls_warning = contextlib.nullcontext
    with suppress_seqcls_warning():
        model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=torch.float32)
    # The classifier reads the score at the last non-pad token, so it must know which id is padding.
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


# --- data ---------------------------------------------------------------------------------

def load_pairs(r: Run, data: str = "pairs", max_pairs: int | None = None, margin_field: str | None = None,
               split: str = "train") -> tuple[list[dict], str]:
    """Preference pairs {"prompt", "chosen", "rejected"} (+ "task", "margin" when present) and a one-line note:
    ``data="pairs"`` reads this run's stage 3, anything else is a file or hub dataset (``data.load_preferences``)."""
    if data == "pairs":
        path = r.require("preferences", "pairs.jsonl")
        rows = read_jsonl(path)
        bad = [i for i, p in enumerate(rows) if not all(isinstance(p.get(k), str) for k in ("prompt", "chosen", "rejected"))]
        if bad:
            raise ConfigError(f"{path} line {bad[0] + 1}: a pair needs string 'prompt', 'chosen' and 'rejected'")
        kept = []
        for n, p in enumerate(rows, start=1):
            if p["chosen"] == p["rejected"]:
                continue  # a tie teaches nothing
            q = {k: v for k, v in p.items() if k != "margin"}  # a margin is used only when asked for
            if margin_field:
                if not isinstance(p.get(margin_field), (int, float)):
                    raise ConfigError(f"{path} line {n}: margin_field={margin_field!r} needs a number there")
                q["margin"] = float(p[margin_field])
            kept.append(q)
        rows = kept[:max_pairs] if max_pairs else kept
        # Stage 3 keeps each prompt's world task (answer, family) in candidates.jsonl: attach it for the
        # per-family breakdown. The reward model never sees it.
        tasks = {c["prompt"]: c.get("task") for c in read_jsonl(path.parent / "candidates.jsonl")}
        for p in rows:
            if p.get("task") is None and tasks.get(p["prompt"]):
                p["task"] = tasks[p["prompt"]]
        note = f"{path}: {len(rows)} pairs"
    else:
        if margin_field:
            raise ConfigError("margin_field applies to this run's pairs.jsonl (data='pairs'); external preference "
                              "data carries no margins")
        from .data import load_preferences  # hh-rlhf, prompt/chosen/rejected, chat-message pairs
        rows, report = load_preferences(data, split=split, max_records=max_pairs)
        note = str(report)
    if len(rows) < 2:
        raise ConfigError(f"{note}: need at least 2 preference pairs to train a reward model")
    return rows, note


def split_by_prompt(pairs: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out whole prompts: no prompt has pairs on both sides, so eval accuracy is about new instructions.

    At least one prompt is held out when ``eval_fraction > 0``, and at least one always trains: pairs of a
    single prompt all train (the stage then reports on training pairs and says so)."""
    prompts = sorted({p["prompt"] for p in pairs})
    random.Random(seed).shuffle(prompts)
    n_eval = 0 if eval_fraction <= 0 else min(len(prompts) - 1, max(1, round(eval_fraction * len(prompts))))
    held = set(prompts[:n_eval])
    return [p for p in pairs if p["prompt"] not in held], [p for p in pairs if p["prompt"] in held]


def to_trl(pairs: list[dict]):
    """TRL's conversational preference format, so TRL renders them with the lab's chat template."""
    from datasets import Dataset
    rows = [{"prompt": conversation(p["prompt"]), "chosen": [{"role": "assistant", "content": p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}],
             **({"margin": p["margin"]} if "margin" in p else {})} for p in pairs]
    return Dataset.from_list(rows)


# --- fitting long (multi-turn) pairs into the model's positions -------------------------------------

# Where a multi-turn prompt may be cut: before a turn ("\n\nHuman:" in hh-rlhf transcripts, "\n\nUser:" in the
# chats data.load_preferences renders).
TURN_START = re.compile(r"\n\n(?=(?:Human|Assistant|User|System): ?)")
USER_TURN = re.compile(r"(?:^|\n\n)(?:Human|User): ?\S")
# A pair keeps at least this many prompt tokens; with less room its responses alone fill the model and it
# is dropped (a preference without its question teaches the reward model little).
MIN_PROMPT_TOKENS = 8


def _n_tokens(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _cut_prompt(tokenizer, prompt: str, budget: int) -> str:
    """The end of ``prompt`` in at most ``budget`` tokens: its last whole turns when they hold a user turn,
    else its last ``budget`` tokens (the start of the oldest kept text is cut, never the end)."""
    turns = [t for t in TURN_START.split(prompt) if t]
    kept = ""
    for k in range(1, len(turns) + 1):
        candidate = "\n\n".join(turns[-k:])
        if _n_tokens(tokenizer, [candidate])[0] > budget:
            break
        kept = candidate
    if USER_TURN.search(kept):
        return kept
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[-budget:]) if budget > 0 else ""


def fit_pairs(pairs: list[dict], tokenizer, max_tokens: int) -> tuple[list[dict], dict, int]:
    """Preference pairs that fit in ``max_tokens`` as the reward model reads them, the counts, and the longest.

    The truncation policy for long (multi-turn) pairs: the preference is in the responses, so they are never
    cut. When the longer of chosen and rejected does not fit with its prompt, the prompt is cut from the
    left: its earliest turns go first (the last turns, which the responses answer, stay), and when even the
    last user turn does not fit, its start is cut token by token. A pair whose responses leave fewer than
    ``MIN_PROMPT_TOKENS`` for the prompt is dropped. Returns (pairs, {"pairs", "whole", "truncated",
    "dropped"}, the longest kept text in tokens: what the memory planner sizes for). A cut pair records its
    prompt's original token count in ``prompt_tokens_before``. TRL would drop a long pair silently.
    """
    texts = [scoring_text(tokenizer, p["prompt"], p[side]) for p in pairs for side in ("chosen", "rejected")]
    lens = _n_tokens(tokenizer, texts)
    out, counts, longest = [], {"pairs": len(pairs), "whole": 0, "truncated": 0, "dropped": 0}, 0
    for i, pair in enumerate(pairs):
        need = max(lens[2 * i], lens[2 * i + 1])
        if need <= max_tokens:
            out.append(pair)
            counts["whole"] += 1
            longest = max(longest, need)
            continue
        prompt_tokens = _n_tokens(tokenizer, [pair["prompt"]])[0]
        budget = max_tokens - (need - prompt_tokens)  # the room the longer response leaves its prompt
        fitted = None
        while budget >= MIN_PROMPT_TOKENS and fitted is None:
            cut = _cut_prompt(tokenizer, pair["prompt"], budget)
            got = max(_n_tokens(tokenizer, [scoring_text(tokenizer, cut, pair[s]) for s in ("chosen", "rejected")]))
            if got <= max_tokens:
                fitted, longest = {**pair, "prompt": cut, "prompt_tokens_before": prompt_tokens}, max(longest, got)
            budget -= max(1, got - max_tokens)  # tokens merge differently at the cut: take off the overshoot
        if fitted is None:
            counts["dropped"] += 1
        else:
            out.append(fitted)
            counts["truncated"] += 1
    return out, counts, longest




def preference_pairs(r: Run, tokenizer, limit: int, heldout: list[dict] = (), needed_by: str = "the reward model",
                     instead: str = "") -> tuple[list[dict], list[dict]]:
    """Stage 3's pairs as the reward model saw them: the same file, long pairs dropped, and split by prompt
    with stage 4's settings (``04_reward/config.json``, as it ran) into (its training pairs, its held-out
    pairs). Stage 3 never draws a held-out prompt of stage 5; a pair on one (``heldout``) would be dropped
    all the same. ``needed_by`` and ``instead`` word the error for an empty pairs file."""
    rcfg = read_json(r.require("reward", "config.json"))
    if rcfg.get("data", "pairs") == "pairs":
        path = r.require("preferences", "pairs.jsonl")
        if not any(line.strip() for line in path.read_text(encoding="utf-8").splitlines()):
            raise ConfigError(f"{path} holds no preference pairs, and {needed_by} trains on them: re-run stage 3 "
                              f"(labkit run --stages preferences --force){instead}")
    pairs, _ = load_pairs(r, rcfg.get("data", "pairs"), rcfg.get("max_pairs"), rcfg.get("margin_field"),
                          rcfg.get("data_split", "train"))
    pairs, _, _ = fit_pairs(pairs, tokenizer, rcfg.get("max_length") or limit)  # as stage 4 fitted them
    train, held = split_by_prompt(pairs, rcfg.get("eval_fraction", 0.15), rcfg.get("seed", 0))
    seen = {t["prompt"] for t in heldout}
    train = [p for p in train if p["prompt"] not in seen]
    if not train:
        raise ConfigError(f"no preference pair fits the model's positions, so {needed_by} has nothing to train on")
    return train, held


# --- training: stage 4's recipe, for every stage that trains a reward model ----------------------

def planned_steps(settings: dict, n_pairs: int) -> int:
    """Optimizer steps of a training run on ``n_pairs`` pairs: ``max_steps``, else the epochs' worth."""
    if settings.get("max_steps"):
        return settings["max_steps"]
    return math.ceil(settings["num_epochs"] * math.ceil(n_pairs / settings["batch_size"]) / settings["grad_accum_steps"])


def reward_trainer(model, tokenizer, train_pairs: list[dict], eval_pairs: list[dict], settings: dict, out_dir: str,
                   device, bf16: bool, tb: Path | None = None):
    """TRL's ``RewardTrainer`` on ``train_pairs`` with stage 4's recipe, untrained: Bradley–Terry loss (with a
    pair's ``margin`` where it has one), AdamW with linear warm-up then cosine decay, gradient clipping, the
    centring term, LoRA when ``use_lora``. ``settings`` holds ``reward.RewardConfig``'s fields as plain
    values (stage 4 passes its config; stage 7 reads ``04_reward/config.json``). With ``eval_pairs`` it
    evaluates every ``eval_interval`` steps. Printing goes; the caller adds its callbacks and trains."""
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer
    s, has_eval = settings, bool(eval_pairs)
    args = TRLRewardConfig(
        per_device_train_batch_size=s["batch_size"], per_device_eval_batch_size=s["batch_size"],
        gradient_accumulation_steps=s["grad_accum_steps"], learning_rate=s["learning_rate"],
        num_train_epochs=s["num_epochs"], max_steps=s["max_steps"] or -1, lr_scheduler_type="cosine",
        warmup_steps=s["warmup_ratio"],  # transformers reads a warmup_steps below 1 as a share of the steps
        weight_decay=s["weight_decay"], max_grad_norm=s["grad_clip"] or 0.0, logging_first_step=True,
        eval_strategy="steps" if has_eval else "no", eval_steps=s["eval_interval"], eval_on_start=has_eval,
        max_length=None,  # long pairs are fitted (and counted) before TRL sees them
        center_rewards_coefficient=s["center_rewards_coefficient"],
        **trainer_args(out_dir, device, bf16, s["gradient_checkpointing"], s["log_interval"], s["report_to"],
                       s["seed"]))
    with hf_logging_dir(s["report_to"], tb or tb_dir(out_dir)):
        trainer = RewardTrainer(model=model, args=args, train_dataset=to_trl(train_pairs),
                                eval_dataset=to_trl(eval_pairs) if has_eval else None, processing_class=tokenizer,
                                peft_config=lora_config(model, s["lora_r"], s["lora_alpha"], s["lora_dropout"],
                                                        s["lora_target_modules"], classifier=True)
                                if s["use_lora"] else None)
    no_printer(trainer)
    return trainer
