"""The reward model's input format, scores and preference data (labkit.reward_model), on a tiny in-process model."""

import pytest
import torch

from labkit import reward_model


def test_scoring_format_is_the_chat_template_and_what_trl_trains_on(tiny):
    from trl.data_utils import _tokenize
    _, tok = tiny
    text = reward_model.scoring_text(tok, "What is 2 plus 3?", "5")
    assert text == tok.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"},
                                            {"role": "assistant", "content": "5"}], tokenize=False)
    assert text == "<|user|>What is 2 plus 3?<|assistant|> 5<eos>"
    row = reward_model.to_trl([{"prompt": "What is 2 plus 3?", "chosen": "5", "rejected": "7"}])[0]
    trl_ids = _tokenize(tok, row["prompt"] + row["chosen"])["input_ids"]  # what RewardTrainer feeds the model
    assert trl_ids == tok(text, add_special_tokens=False)["input_ids"]


def test_score_ignores_padding_and_batching(tiny):
    path, tok = tiny
    model = reward_model.load_reward_model(path, tok)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    ins, res = ["Name a pet.", "What is 10 plus 9? Answer with the number only."], ["cat", "19 and more words here"]
    batched = reward_model.score(model, tok, ins, res, batch_size=2)
    assert batched.dtype == torch.float32 and batched.shape == (2,) and not batched.requires_grad
    batched = batched.tolist()
    single = [reward_model.score(model, tok, [i], [r], batch_size=1)[0].item() for i, r in zip(ins, res)]
    assert batched == pytest.approx(single, abs=1e-5)


def test_split_by_prompt_keeps_prompts_on_one_side():
    pairs = [{"prompt": f"q{i % 7}", "chosen": "a", "rejected": f"b{i}"} for i in range(30)]
    train, held = reward_model.split_by_prompt(pairs, 0.3, seed=1)
    assert len(train) + len(held) == 30 and held
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in held}
    assert reward_model.split_by_prompt(pairs, 0.0, seed=1)[1] == []
    one = [{"prompt": "q", "chosen": "a", "rejected": f"b{i}"} for i in range(2)]
    assert reward_model.split_by_prompt(one, 0.3, seed=1) == (one, [])  # the only prompt trains, never all held out


def _hh(turns: list[str], chosen: str, rejected: str) -> dict:
    """An hh-rlhf pair as data.load_preferences gives it: the transcript up to the last "Assistant:"."""
    prompt = "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))
    return {"prompt": prompt + "\n\nAssistant:", "chosen": " " + chosen, "rejected": " " + rejected}


def _n(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def test_fit_pairs_keeps_the_last_turns_and_never_cuts_a_response(tiny):
    tok = tiny[1]
    short = _hh(["Where does Mara live?"], "In Brindle.", "No idea.")
    turns = ["Tell me about the town of Brindle and the people who live there, every one of them."] * 6 + \
        ["So where does Mara live?"]
    long = _hh(turns, "Mara lives in Brindle.", "Mara lives somewhere.")
    hopeless = _hh(["Where?"], "Mara lives in Brindle. " * 40, "No.")
    limit = 80
    scored = reward_model.scoring_text
    assert _n(tok, scored(tok, long["prompt"], long["chosen"])) > limit >= _n(tok, scored(tok, short["prompt"], short["chosen"]))
    kept, counts, longest = reward_model.fit_pairs([short, long, hopeless], tok, limit)
    assert counts == {"pairs": 3, "whole": 1, "truncated": 1, "dropped": 1}
    assert kept[0] == short and longest <= limit
    cut = kept[1]
    assert (cut["chosen"], cut["rejected"]) == (long["chosen"], long["rejected"])  # the preference is untouched
    assert cut["prompt"].endswith("Human: So where does Mara live?\n\nAssistant:")  # the last turns stay
    assert long["prompt"].endswith(cut["prompt"]) and cut["prompt"].startswith("Human: ")  # whole turns, from the left
    assert cut["prompt_tokens_before"] == _n(tok, long["prompt"])
    assert all(_n(tok, scored(tok, p["prompt"], p[s])) <= limit for p in kept for s in ("chosen", "rejected"))


def test_fit_pairs_cuts_inside_a_last_turn_too_long_to_keep_whole(tiny):
    tok = tiny[1]
    pair = _hh(["Mara went to the market and bought bread, milk and eggs. " * 6 + "What did she buy?"], "Bread.", "Fish.")
    (cut,), counts, _ = reward_model.fit_pairs([pair], tok, 48)
    assert counts["truncated"] == 1
    assert cut["prompt"].endswith("What did she buy?\n\nAssistant:") and len(cut["prompt"]) < len(pair["prompt"])
    assert _n(tok, reward_model.scoring_text(tok, cut["prompt"], cut["chosen"])) <= 48
