"""Tests for labkit.explore_reward, the reward-model probe, driven through the messages the browser sends."""

import pytest

from labkit import explore_reward
from labkit import world as W
from labkit.explore import ExplorerWidget, load_reward
from labkit.explore_reward import RewardProbe, pair_for, sigmoid
from labkit.reward_model import score
from labkit.runs import Run


def widget(explorer) -> ExplorerWidget:
    explorer.start()
    return ExplorerWidget(explorer)


def rm(run, prompt, texts):
    model, tok = load_reward(run)
    return score(model, tok, [prompt] * len(texts), texts).tolist()


def test_probe_scores_both_responses_with_the_reward_model(explore_run):
    r = Run.at(explore_run)
    w = widget(RewardProbe(r))
    v, res = w.explorer.values, w.explorer.result
    task = w.explorer.by_id[v["example"]]
    assert task["family"] == "harmful" and (v["a"], v["b"]) == pair_for(task)
    ra, rb = rm(r, v["prompt"], [v["a"], v["b"]])
    assert (res["reward_a"], res["reward_b"]) == (pytest.approx(ra, abs=1e-5), pytest.approx(rb, abs=1e-5))
    assert res["p_a"] == pytest.approx(sigmoid(ra - rb), abs=1e-5)
    assert (res["verdict_a"], res["verdict_b"]) == ("right", "wrong")
    cards = w.view["sections"][0]["cards"]
    assert [c["items"][0]["badges"][0] for c in cards] == [{"text": "right", "tone": "good"},
                                                            {"text": "wrong", "tone": "bad"}]
    assert w.view["sections"][1]["rows"][0][3] == f"{100 * res['p_a']:.1f}%"


def test_swap_mix_and_edit(explore_run):
    w = widget(RewardProbe(Run.at(explore_run)))
    ex = w.explorer
    a, b, before = ex.values["a"], ex.values["b"], dict(ex.result)
    w.handle({"action": "click", "id": "swap"})
    assert (ex.values["a"], ex.values["b"]) == (b, a)
    assert ex.result["reward_a"] == pytest.approx(before["reward_b"]) and ex.result["p_a"] == pytest.approx(1 - before["p_a"])
    w.handle({"action": "click", "id": "mix_b"})         # B is now "refusal + compliance"
    assert ex.values["b"] == f"{a} {b}"
    assert ex.result["verdict_b"] == W.verdict(ex.task(), f"{a} {b}")
    w.handle({"action": "click", "id": "mix_a"})
    assert ex.values["a"] == f"{b} {a} {b}"
    w.handle({"action": "set", "id": "prompt", "value": "Tell me a story."})   # not a world task
    assert ex.result["verdict_a"] is None and w.view["message"] == "Not a held-out world task: no verifier verdict."
    assert [len(c["items"][0]["badges"]) for c in w.view["sections"][0]["cards"]] == [1, 1]   # the reward only
    w.handle({"action": "set", "id": "prompt", "value": ""})
    assert w.view["error"] and w.view["message"] == "the prompt is empty: type one, or pick an example"
    assert w.view["sections"] == []
    benign = next(t for t in ex.examples if t["family"] == "benign")
    w.handle({"action": "set", "id": "example", "value": benign["id"]})
    assert ex.values["b"] == pair_for(benign)[1] and ex.result["verdict_b"] == "over-refused"


def test_probe_needs_a_reward_model(explore_run, tmp_path):
    import json
    import shutil
    shutil.copytree(explore_run / "01_pretrain", tmp_path / "r" / "01_pretrain")
    m = json.loads((explore_run / "run.json").read_text())
    m["stages"] = {"pretrain": m["stages"]["pretrain"]}
    (tmp_path / "r" / "run.json").write_text(json.dumps(m))
    view = explore_reward.probe(run=tmp_path / "r", interactive=True).view
    assert view["message"] == f"the reward model (stage 4) is missing: {tmp_path / 'r'} holds pretrain"


def test_probe_static_table(explore_run):
    table = explore_reward.probe(run=explore_run, interactive=False)
    assert list(table["pair"]) == ["aligned vs not", "mixed vs aligned"] * 2 + ["aligned vs not"] * 2
    assert list(table["verdict_A"][::2]) == ["right"] * 3 and (table["P(A>B)"].between(0, 1)).all()
