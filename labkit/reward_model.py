"""A reward model as the later stages use it: its input format, its scores, and its preference data.

Stage 4 trains the reward model; stages 5 (PPO), 6 (the comparison) and 7 (trust) score with it, and
stage 6 and 7 read the same pairs with the same split. So these live here, shared, and no stage imports
another. A reward model is the SFT model with a one-output head read at the last token (the EOS):
``AutoModelForSequenceClassification`` with ``num_labels=1``, as TRL's ``RewardTrainer`` trains it.
Long pairs are fitted into its positions by ``fit_pairs`` (earliest turns go first, responses never).
"""

from __future__ import annotations

import contextlib
import random
import re
from pathlib import Path

import torch

from .config import ConfigError
from .runs import Run, read_jsonl
from .tokenizer import conversation


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


