"""The pretraining text: load it, split it, encode it, cut windows from it, and measure drift on it.

Stage 1 trains on this text; SFT and PPO measure *drift* on it (``drift_ppl``: perplexity on stage 1's
validation windows, which shows how far fine-tuning moved a model from the language it learned). Both
need the same documents and the same windows, so the code lives here, shared, and the stages read
stage 1's settings from its ``config.json`` in the run folder rather than importing stage 1.
"""

from __future__ import annotations

import contextlib
import math

import torch

from . import world as W
from .runs import STAGE_DIRS, Run, read_json

# The settings of stage 1 that say which text it read (names and defaults as in PretrainConfig).
TEXT_SETTINGS = {"data": "world", "text_field": "text", "world_docs": 12000, "world_seed": 0,
                 "val_fraction": 0.05, "seed": 0}


def load_corpus(data: str = "world", text_field: str = "text", world_docs: int = 12000, world_seed: int = 0,
                val_fraction: float = 0.05, seed: int = 0) -> tuple[list[str], list[str]]:
    """Train and validation documents, split by document (never inside one)."""
    if data == "world":
        docs = W.corpus(W.World(world_seed), world_docs, seed=seed + 1)
    else:
        from .data import load_texts  # real text: local files or a hub dataset
        docs = load_texts(data, text_field=text_field)
        if len(docs) < 20:  # one long file: cut into ~paragraph-sized pieces so a split is possible
            docs = [c for d in docs for c in _chunks(d, 600)]
    return W.split_docs(docs, val_fraction, seed=seed)


def _chunks(text: str, size: int) -> list[str]:
    words, out, cur = text.split(), [], []
    for w in words:
        cur.append(w)
        if sum(len(x) + 1 for x in cur) >= size:
            out.append(" ".join(cur))
            cur = []
    return out + ([" ".join(cur)] if cur else [])


def encode(tokenizer, docs: list[str]) -> torch.Tensor:
    """One long token stream, EOS after every document (so the model learns where text ends)."""
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return torch.tensor([t for doc in ids for t in doc + [eos]], dtype=torch.long)


def windows(stream: torch.Tensor, batch_size: int, block_size: int, gen: torch.Generator) -> torch.Tensor:
    """``batch_size`` random windows of ``block_size`` tokens, [B, T], drawn with ``gen``."""
    starts = torch.randint(len(stream) - block_size - 1, (batch_size,), generator=gen)
    return torch.stack([stream[s:s + block_size] for s in starts.tolist()])


def eval_generator(seed: int) -> torch.Generator:
    """The generator of the validation windows: the same windows at every evaluation, so numbers compare."""
    return torch.Generator().manual_seed(seed + 12345)


@torch.no_grad()
def causal_val_loss(model, stream: torch.Tensor, batch_size: int, block_size: int, eval_batches: int, seed: int,
                    autocast=contextlib.nullcontext()) -> float:
    """Mean next-token loss of a causal model on ``eval_batches`` fixed validation windows."""
    gen, device = eval_generator(seed), next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = []
    for _ in range(eval_batches):
        x = windows(stream, batch_size, block_size, gen).to(device)
        with autocast:
            losses.append(model(input_ids=x, labels=x, use_cache=False).loss.float().item())
    model.train(was_training)
    return sum(losses) / len(losses)


def stage1_settings(run: Run) -> dict | None:
    """Stage 1's saved config in this run folder, or None when it has none."""
    return read_json(run.path / STAGE_DIRS["pretrain"] / "config.json")


def stage1_corpus(saved: dict) -> tuple[list[str], list[str]]:
    """The training and validation documents stage 1 read, from its saved config."""
    return load_corpus(**{k: saved.get(k, default) for k, default in TEXT_SETTINGS.items()})


def drift_ppl(model, tokenizer, run: Run, autocast=contextlib.nullcontext()) -> float | None:
    """Perplexity of a (fine-tuned) causal model on this run's stage-1 validation text: the same
    documents and windows stage 1 reported, so a later stage can show how far it moved the model
    from the language it learned (drift). None when stage 1 is not a causal run of this folder."""
    saved = stage1_settings(run)
    if not saved or saved.get("objective", "causal") != "causal":
        return None
    _, val_docs = stage1_corpus(saved)
    loss = causal_val_loss(model, encode(tokenizer, val_docs), saved["batch_size"], saved["block_size"],
                           saved["eval_batches"], saved["seed"], autocast)
    return math.exp(min(loss, 50))
