import pytest

from labkit import tokenizer as T
from labkit import world as W

TEXT = W.corpus(W.World(0), 400, seed=0)


@pytest.mark.parametrize("kind", T.KINDS)
def test_train_each_kind_roundtrips_and_has_specials(kind, tmp_path):
    tok = T.train_tokenizer(TEXT, kind, 400)
    for s in T.SPECIAL_TOKENS:
        assert tok.convert_tokens_to_ids(s) != tok.unk_token_id or s == T.UNK
    assert tok.pad_token == T.PAD and tok.eos_token == T.EOS and tok.mask_token == T.MASK
    ids = tok("Mara went to the market.", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids).replace(" .", ".").strip() == "Mara went to the market."
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("Mara went", add_special_tokens=False)["input_ids"] == tok("Mara went", add_special_tokens=False)["input_ids"]
    assert again.chat_template == T.CHAT_TEMPLATE


def test_vocab_too_small_is_a_clear_error():
    with pytest.raises(T.TokenizerError, match="too small"):
        T.train_tokenizer(TEXT, "bpe", 100)


def test_unknown_kind_and_empty_text():
    with pytest.raises(T.TokenizerError, match="unknown tokenizer"):
        T.train_tokenizer(TEXT, "char", 500)
    with pytest.raises(T.TokenizerError, match="empty"):
        T.train_tokenizer(["  ", ""], "bpe", 500)


def test_chat_template_marks_the_assistant_and_ends_with_eos():
    tok = T.train_tokenizer(TEXT, "bpe", 400)
    prompt = T.format_prompt(tok, "What is 2 plus 3?")
    assert prompt == "<|user|>What is 2 plus 3?<|assistant|>"
    full = tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "5"}],
                                   tokenize=False)
    assert full == prompt.replace("What is 2 plus 3?", "hi") + " 5<eos>"  # the answer starts with a space
    enc = tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "5"}],
                                  tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    assert [i for i, m in zip(ids, mask) if m][-1] == tok.eos_token_id  # EOS is trained with the answer


def test_compare_reports_each_tokenizer():
    rows = T.compare(TEXT[:300], TEXT[300:], 400, example="Café ☕ 12")
    assert [r["tokenizer"] for r in rows] == list(T.KINDS)
    bpe = rows[0]
    assert bpe["unk_rate"] == 0.0  # byte-level: nothing is unknown
    wp = rows[1]
    assert "<unk>" in wp["example"]  # WordPiece never saw the emoji
    assert all(r["chars_per_token"] > 1 for r in rows)


def test_answer_copies_the_prompts_tokens(smoke_run):
    """A name the answer copies from the story is the same tokens in both: the answer starts with a space."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(smoke_run / "01_pretrain/model")
    story = "Yesterday, Lena went to the park. Lena gave the kite to Tomar.\nQuestion: Who got the kite?"
    rec = T.to_prompt_completion(tok, [{"prompt": story, "answer": "Tomar"}])[0]
    assert rec["completion"] == " Tomar" + tok.eos_token
    prompt_ids = tok(rec["prompt"], add_special_tokens=False).input_ids
    answer_ids = tok(rec["completion"], add_special_tokens=False).input_ids[:-1]
    assert any(prompt_ids[i:i + len(answer_ids)] == answer_ids for i in range(len(prompt_ids)))
    # ...and it is what the chat template renders, so SFT trains on the text the reward model reads.
    assert rec["prompt"] + rec["completion"] == tok.apply_chat_template(
        [{"role": "user", "content": story}, {"role": "assistant", "content": "Tomar"}], tokenize=False)


def test_hub_template_completion_ends_at_eos(smoke_run):
    """A ChatML-style hub template writes "<|im_end|>\n" after the answer: the completion stops at EOS."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(smoke_run / "01_pretrain/model")
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<eos>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    rec = T.to_prompt_completion(tok, [{"prompt": "What is 2 plus 3?", "answer": "5"}])[0]
    assert rec["prompt"] == "<|im_start|>user\nWhat is 2 plus 3?<eos>\n<|im_start|>assistant\n"
    assert rec["completion"] == "5<eos>"
