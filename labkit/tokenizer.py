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
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

if TYPE_CHECKING:  # imported where a tokenizer is wrapped, as models.py does with transformers' models
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
# never used, and SFT miscopied story answers it otherwise got right.
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
    from transformers import PreTrainedTokenizerFast
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


def to_prompt_completion(tokenizer, records: list[dict]) -> list[dict]:
    """{"prompt": instruction, "response"/"answer"} -> TRL prompt/completion text in the chat format.

    The prompt is the chat template up to the assistant marker; the completion
    is the rest of what the template renders for the whole exchange (for the
    lab's template: a space, the answer, EOS), so SFT trains on exactly the text
    the reward model reads. TRL masks the prompt's labels, and appends EOS only
    to a completion that lacks it.
    """
    rows = []
    for r in records:
        prompt, answer = format_prompt(tokenizer, r["prompt"]), r.get("response", r.get("answer"))
        full = tokenizer.apply_chat_template(conversation(r["prompt"], answer), tokenize=False)
        completion = full[len(prompt):] if full.startswith(prompt) else answer
        eos = tokenizer.eos_token
        if eos and eos in completion:  # a hub template may add text after EOS ("<|im_end|>\n"): not the model's
            completion = completion[:completion.rindex(eos) + len(eos)]
        rows.append({"prompt": prompt, "completion": completion})
    return rows
