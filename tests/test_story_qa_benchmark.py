"""benchmarks/story_qa.py: the same stories told with either half of the story names, asked every question in
every template of each role, and each wrong answer sorted by what it said."""

import json
import sys

import pytest

from conftest import benchmark
from labkit import world as W
from labkit.verifier import verify


def test_the_two_halves_tell_the_same_stories_with_other_names():
    sq = benchmark("story_qa")
    world = W.World(0)
    told = sq.stories(world, 12, seed=3)
    for (a_text, a), (b_text, b) in zip(told["train"], told["eval"]):
        assert a["who"] in world.story_names["train"] and b["who"] in world.story_names["eval"]
        assert a["receiver"] in world.story_names["train"] and b["receiver"] in world.story_names["eval"]
        same = {k: v for k, v in a.items() if k not in ("who", "receiver")}
        assert same == {k: v for k, v in b.items() if k not in ("who", "receiver")}
        # only the names differ: put the other half's names in and the text is the same
        assert a_text.replace(a["who"], "@A").replace(a["receiver"], "@B") == \
            b_text.replace(b["who"], "@A").replace(b["receiver"], "@B")
    assert len({t for t, _ in told["train"]}) > 1  # the stories are drawn, not one repeated


def test_every_story_is_asked_every_question_in_every_template_of_a_role():
    sq = benchmark("story_qa")
    told = sq.stories(W.World(0), 3, seed=0)["eval"]
    for role in sq.ROLES:
        asked = sq.questions(told, role)
        assert len(asked) == len(told) * sum(len(r[role]) for r in W._STORY_Q.values())
        for t in asked:
            assert t["template"] in W._STORY_Q[t["key"]][role]
            assert t["answer"] == t["facts"][t["key"]] and verify(t, t["answer"]) == 1.0
            assert t["prompt"].startswith(next(text for text, f in told if f is t["facts"]) + "\nQuestion: ")


def test_a_wrong_answer_is_sorted_by_what_it_said():
    sq = benchmark("story_qa")
    told = sq.stories(W.World(0), 1, seed=0)["eval"]
    asked = {t["key"]: t for t in sq.questions(told, "eval")}
    facts = told[0][1]
    other_name = next(n for n in W.NAME_POOL if n not in (facts["who"], facts["receiver"]))
    other_place = next(p for p in W.PLACES if p != facts["place"])
    assert sq.wrong_kind(asked["receiver"], facts["who"] + ".") == "story"  # the giver for the receiver
    assert sq.wrong_kind(asked["receiver"], other_name) == "elsewhere"
    assert sq.wrong_kind(asked["receiver"], "the park") == "other"
    assert sq.wrong_kind(asked["place"], facts["color"]) == "story"  # the story's colour for its place
    assert sq.wrong_kind(asked["place"], other_place) == "elsewhere"
    assert sq.wrong_kind(asked["color"], "I cannot help with that.") == "other"


def test_it_writes_each_cell_per_question_for_a_run(explore_run, tmp_path, monkeypatch):
    sq = benchmark("story_qa")
    out = tmp_path / "story_qa.json"
    monkeypatch.setattr(sys, "argv", ["story_qa.py", "--runs", str(explore_run), "--stories", "4", "--out", str(out)])
    sq.main()
    run = json.loads(out.read_text())["runs"][str(explore_run)]
    assert set(run["cells"]) == {f"{h} names, {r} templates" for h in sq.NAMES for r in sq.ROLES}
    for name, cell in run["cells"].items():
        role = name.split(", ")[1].split()[0]
        for key in W._STORY_Q:
            c = cell[key]
            assert c["asked"] == 4 * len(W._STORY_Q[key][role])
            wrong = c["wrong_story"] + c["wrong_elsewhere"] + c["wrong_other"]
            assert abs(c["accuracy"] + wrong - 100) < 1e-9
        assert cell["all"]["accuracy"] == sum(cell[k]["accuracy"] for k in W._STORY_Q) / len(W._STORY_Q)


def test_the_answer_loss_is_the_models_own_loss_on_the_answer_tokens(explore_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from labkit.tokenizer import to_prompt_completion
    sq = benchmark("story_qa")
    model = AutoModelForCausalLM.from_pretrained(explore_run / "02_sft" / "model")
    tok = AutoTokenizer.from_pretrained(explore_run / "02_sft" / "model")
    tasks = sq.questions(sq.stories(W.World(0), 2, seed=0)["train"], "train")[:3]
    got = sq.answer_loss(model, tok, tasks)
    for t, loss, row in zip(tasks, got, to_prompt_completion(tok, tasks)):
        p = tok(row["prompt"], add_special_tokens=False).input_ids
        c = tok(row["completion"], add_special_tokens=False).input_ids
        assert c[-1] == tok.eos_token_id and len(c) >= 2  # the answer and its EOS, as SFT trains them
        with torch.no_grad():  # transformers' own loss, the prompt's labels masked
            want = model(torch.tensor([p + c]), labels=torch.tensor([[-100] * len(p) + c])).loss.item()
        assert loss == pytest.approx(want, rel=1e-5)


def test_the_answer_token_shares_count_sfts_own_training_examples(explore_run):
    from transformers import AutoTokenizer

    from labkit import sft
    from labkit.runs import read_json
    sq = benchmark("story_qa")
    tok = AutoTokenizer.from_pretrained(explore_run / "02_sft" / "model")
    cfg = read_json(explore_run / "02_sft" / "config.json")
    shares = sq.answer_tokens(W.World(0), tok, cfg)
    train, _ = sft.world_tasks(W.World(0), sft.config("smoke", seed=cfg["seed"]))
    assert sum(v["examples"] for v in shares.values()) == pytest.approx(100)
    assert sum(v["tokens"] for v in shares.values()) == pytest.approx(100)
    n_story = sum(t["family"] == "story_qa" for t in train)
    assert sum(v["examples"] for g, v in shares.items() if g.startswith("story_qa/")) == pytest.approx(100 * n_story / len(train))
    # a refusal is longer than a one-word answer: harmful's share of tokens exceeds its share of examples
    assert shares["harmful"]["tokens"] > shares["harmful"]["examples"] > 0


def test_a_models_name_holds_the_settings_it_trained_with_apart_from_the_preset_and_observers():
    import dataclasses

    from labkit import sft
    sq = benchmark("story_qa")
    preset = dataclasses.asdict(sft.config("cpu"))
    assert sq.settings(preset) == []
    # the order and a setting this code does not know are named; a validation split and threads only observe
    assert sorted(sq.settings({**preset, "data_seed": 100, "threads": 2, "n_val": 280, "loss_per": "example",
                               "a_later_setting": 1})) == ["a_later_setting=1", "data_seed=100", "loss_per=example"]
