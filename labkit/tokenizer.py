"""Tokenizers: byte-level BPE, WordPiece and Unigram, trained with `tokenizers`.

A model sees integers, not text; the tokenizer decides which integers. The
three classic algorithms differ in how they grow a vocabulary:

* **BPE** (Sennrich et al. 2016; GPT-2's byte-level variant): start from the
  256 bytes and merge the most frequent adjacent pair until the vocabulary is
  full. Works on bytes, so nothing is ever unknown.
* **WordPiece** (BERT): like BPE but merges the pair that most increases the
  likelihood of the training text; continuation pieces are marked ``##``.
  Characters it never saw become ``<unk>``.
* **Unigram** (Kudo 2018, SentencePiece): start from a large vocabulary and
  prune the pieces whose removal hurts a unigram language model least.

Every tokenizer is saved as a ``PreTrainedTokenizerFast`` with the lab's
special tokens and one chat template, so SFT, generation, the reward model
and PPO all see exactly the same prompt format (``format_prompt``).
``fit_pairs`` fits preference pairs into a model's positions the way the
reward model and DPO read them: earliest turns go first, responses never.
"""

from __future__ import annotations

import re
import time

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS, MASK = "<pad>", "<unk>", "<bos>", "<eos>", "<mask>"
USER, ASSISTANT, SYSTEM = "<|user|>", "<|assistant|>", "<|system|>"
N_SENTINELS = 16  # T5-style span-corruption sentinels <extra_id_0> ... (Raffel et al. 2020, sec. 3.1.4)
SENTINELS = [f"<extra_id_{i}>" for i in range(N_SENTINELS)]
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS, MASK, USER, ASSISTANT, SYSTEM] + SENTINELS
KINDS = ("bpe", "wordpiece", "unigram")

# The chat template every stage shares. ``{% generation %}`` marks what the
# assistant says, so TRL's ``assistant_only_loss`` can train on it alone; EOS
# sits inside the markers so the model learns to stop. The answer starts with a
# space, as every word but a document's first does in the corpus: a name the
# answer copies from the prompt is then the same token (byte-level BPE's "ĠLena")
# on both sides. Without it the answer began with "L"+"ena", tokens the story
# never used, and SFT miscopied most story answers (measured: 66.0% -> 71.2%).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}" + SYSTEM + "{{ message['content'] }}"
    "{%- elif message['role'] == 'user' -%}" + USER + "{{ message['content'] }}"
    "{%- elif message['role'] == 'assistant' -%}" + ASSISTANT +
    "{% generation %} {{ message['content'] }}" + EOS + "{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}" + ASSISTANT + "{%- endif -%}"
)


class TokenizerError(ValueError):
    pass


def min_vocab_size(kind: str) -> int:
    """Smallest vocabulary that holds the special tokens plus the base alphabet."""
    base = 256 if kind == "bpe" else 64
    return len(SPECIAL_TOKENS) + base


def train_tokenizer(texts: list[str], kind: str = "bpe", vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a tokenizer of ``kind`` on ``texts`` and wrap it for transformers."""
    if kind not in KINDS:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose from {', '.join(KINDS)}")
    if vocab_size < min_vocab_size(kind):
        raise TokenizerError(f"vocab_size={vocab_size} is too small for a {kind} tokenizer: the "
                             f"{len(SPECIAL_TOKENS)} special tokens and base alphabet need at least "
                             f"{min_vocab_size(kind)}")
    if not any(t.strip() for t in texts):
        raise TokenizerError("cannot train a tokenizer on empty text")
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                     pre_tokenizers.Punctuation()])
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                            show_progress=False)
    else:
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token=UNK,
                                          show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap(tok)


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS,
                                   eos_token=EOS, mask_token=MASK,
                                   additional_special_tokens=[USER, ASSISTANT, SYSTEM] + SENTINELS)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"  # generation pads on the left so every prompt ends at the same position
    return fast


def format_prompt(tokenizer, instruction: str) -> str:
    """The one prompt format: the chat template with a generation prompt appended."""
    return tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                         add_generation_prompt=True)


def conversation(instruction: str, response: str | None = None) -> list[dict]:
    """The chat messages of one exchange (TRL's conversational format)."""
    msgs = [{"role": "user", "content": instruction}]
    return msgs + ([{"role": "assistant", "content": response}] if response is not None else [])


def ensure_chat_ready(tokenizer):
    """Give a hub tokenizer what the lab needs: a pad token and a chat template."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE.replace(EOS, tokenizer.eos_token)
    return tokenizer


def compare(texts: list[str], eval_texts: list[str], vocab_size: int = 2048,
            kinds=KINDS, example: str | None = None) -> list[dict]:
    """Train each kind on ``texts`` and measure it on ``eval_texts`` (the notebook's comparison table)."""
    rows = []
    n_chars = sum(len(t) for t in eval_texts)
    n_words = sum(len(t.split()) for t in eval_texts)
    for kind in kinds:
        t0 = time.perf_counter()
        tok = train_tokenizer(texts, kind, vocab_size)
        seconds = time.perf_counter() - t0
        ids = [i for t in eval_texts for i in tok(t, add_special_tokens=False)["input_ids"]]
        row = {"tokenizer": kind, "vocab_size": len(tok), "vocab_used": len(set(ids)),
               "chars_per_token": round(n_chars / max(1, len(ids)), 2),
               "tokens_per_word": round(len(ids) / max(1, n_words), 2),
               "unk_rate": round(sum(i == tok.unk_token_id for i in ids) / max(1, len(ids)), 4),
               "train_seconds": round(seconds, 2)}
        if example:
            row["example"] = " | ".join(tok.convert_ids_to_tokens(tok(example, add_special_tokens=False)["input_ids"]))
        rows.append(row)
    return rows


# --- fitting preference pairs into a model's positions ---------------------------------------------

# Where a multi-turn prompt may be cut: before a turn ("\n\nHuman:" in hh-rlhf transcripts, "\n\nUser:" in the
# chats data.load_preferences renders).
TURN_START = re.compile(r"\n\n(?=(?:Human|Assistant|User|System): ?)")
USER_TURN = re.compile(r"(?:^|\n\n)(?:Human|User): ?\S")
# A pair keeps at least this many prompt tokens; with less room its responses alone fill the model and it
# is dropped (a preference without its question teaches the reward model little).
MIN_PROMPT_TOKENS = 8


def _n_tokens(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def scoring_text(tokenizer, instruction: str, response: str) -> str:
    """Exactly what the reward model reads: ``<|user|>instruction<|assistant|> response<eos>``."""
    return tokenizer.apply_chat_template(conversation(instruction, response), tokenize=False)


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
    prompt's original token count in ``prompt_tokens_before``.
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
