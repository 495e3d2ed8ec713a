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


def _hh(turns: list[str], chosen: str, rejected: str) -> dict:
    """An hh-rlhf pair as data.load_preferences gives it: the transcript up to the last "Assistant:"."""
    prompt = "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))
    return {"prompt": prompt + "\n\nAssistant:", "chosen": " " + chosen, "rejected": " " + rejected}


def test_fit_pairs_keeps_the_last_turns_and_never_cuts_a_response():
    tok = T.train_tokenizer(TEXT, "bpe", 400)
    n = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    short = _hh(["Where does Mara live?"], "In Brindle.", "No idea.")
    turns = ["Tell me about the town of Brindle and the people who live there, every one of them."] * 6 + \
        ["So where does Mara live?"]
    long = _hh(turns, "Mara lives in Brindle.", "Mara lives somewhere.")
    hopeless = _hh(["Where?"], "Mara lives in Brindle. " * 40, "No.")
    limit = 80
    assert n(T.scoring_text(tok, long["prompt"], long["chosen"])) > limit >= n(T.scoring_text(tok, short["prompt"], short["chosen"]))
    kept, counts, longest = T.fit_pairs([short, long, hopeless], tok, limit)
    assert counts == {"pairs": 3, "whole": 1, "truncated": 1, "dropped": 1}
    assert kept[0] == short and longest <= limit
    cut = kept[1]
    assert (cut["chosen"], cut["rejected"]) == (long["chosen"], long["rejected"])  # the preference is untouched
    assert cut["prompt"].endswith("Human: So where does Mara live?\n\nAssistant:")  # the last turns stay
    assert long["prompt"].endswith(cut["prompt"]) and cut["prompt"].startswith("Human: ")  # whole turns, from the left
    assert cut["prompt_tokens_before"] == n(long["prompt"])
    assert all(n(T.scoring_text(tok, p["prompt"], p[s])) <= limit for p in kept for s in ("chosen", "rejected"))


def test_fit_pairs_cuts_inside_a_last_turn_too_long_to_keep_whole():
    tok = T.train_tokenizer(TEXT, "bpe", 400)
    pair = _hh(["Mara went to the market and bought bread, milk and eggs. " * 6 + "What did she buy?"], "Bread.", "Fish.")
    (cut,), counts, _ = T.fit_pairs([pair], tok, 48)
    assert counts["truncated"] == 1
    assert cut["prompt"].endswith("What did she buy?\n\nAssistant:") and len(cut["prompt"]) < len(pair["prompt"])
    assert len(tok(T.scoring_text(tok, cut["prompt"], cut["chosen"]), add_special_tokens=False)["input_ids"]) <= 48
