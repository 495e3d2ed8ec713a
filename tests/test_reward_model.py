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
