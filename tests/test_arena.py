"""Tests for labkit.arena: the statistics against known answers, and the arena driven through the messages
the browser sends (keys and buttons), with its labels read back from the SQLite store."""

import json
import math
import random
import shutil

import pytest

from labkit import arena
from labkit import world as W
from labkit.arena import AI, Arena, fit_bradley_terry, results, wilson
from labkit.explore import ExplorerWidget
from labkit.runs import Run


# --- statistics ------------------------------------------------------------------------------------

def test_wilson_interval():
    assert wilson(0, 0) is None
    lo, hi = wilson(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)          # Wilson (1927); e.g. Agresti & Coull 1998
    lo, hi = wilson(0, 10)
    assert lo == 0 and hi == pytest.approx(0.2775, abs=1e-4)          # not the normal interval's [0, 0]
    lo, hi = wilson(10, 10)
    assert hi == 1 and lo == pytest.approx(0.7225, abs=1e-4)
    lo, hi = wilson(1, 1)
    assert 0 < lo < 1 and hi == 1
    assert wilson(3, 10)[0] == pytest.approx(1 - wilson(7, 10)[1])   # symmetric


def test_bradley_terry_recovers_known_strengths():
    truth = {"a": 0.0, "b": 0.6, "c": 1.2, "d": -0.9}
    rng = random.Random(0)
    games = []
    names = list(truth)
    for _ in range(6000):
        i, j = rng.sample(names, 2)
        p = 1 / (1 + math.exp(-(truth[i] - truth[j])))
        games.append((i, j, 1.0 if rng.random() < p else 0.0))
    fit = fit_bradley_terry(games)
    mean = sum(truth.values()) / len(truth)
    for n, t in truth.items():
        theta, se = fit[n]
        assert abs(theta - (t - mean)) < 3 * se and se < 0.06
    assert sum(t for t, _ in fit.values()) == pytest.approx(0, abs=1e-9)


def test_bradley_terry_ties_and_a_clean_sweep():
    even = fit_bradley_terry([("a", "b", 0.5)] * 10)
    assert even["a"][0] == pytest.approx(0, abs=1e-9) == even["b"][0]
    sweep = fit_bradley_terry([("a", "b", 1.0)] * 10)                # the MLE is infinite; the ridge keeps it finite
    assert math.isfinite(sweep["a"][0]) and sweep["a"][0] > 2 and sweep["a"][1] > 0


def test_results_tables():
    def j(winner, verifier=None, who="p"):
        return {"a": "ppo", "b": "sft", "winner": winner, "verifier": verifier, "annotator": who}
    res = results([j("ppo", "ppo"), j("ppo", "sft"), j("tie", "ppo"), j("both_bad"), j("sft", who="q")])
    (pair,) = res["pairs"]
    assert (pair["labels"], pair["a_wins"], pair["b_wins"], pair["ties"], pair["both_bad"]) == (5, 2, 1, 1, 1)
    assert pair["a_win_rate"] == 2.5 / 4 and (pair["ci_low"], pair["ci_high"]) == wilson(2.5, 4)
    assert [r["model"] for r in res["ratings"]] == ["ppo", "sft"] and res["ratings"][0]["games"] == 4
    assert res["ratings"][0]["rating"] + res["ratings"][1]["rating"] == pytest.approx(2000)
    assert res["agreement"] == [{"annotator": "p", "labels": 4, "verifier_decisive": 3, "agrees": 1, "agreement": 1 / 3},
                                {"annotator": "q", "labels": 1, "verifier_decisive": 0, "agrees": 0, "agreement": None}]


# --- the arena -----------------------------------------------------------------------------------------

@pytest.fixture
def run_copy(explore_run, tmp_path):
    """A copy of the shared run with SFT and PPO only (stage 6 marked not done): 28 screens."""
    shutil.copytree(explore_run, tmp_path / "r")
    m = json.loads((tmp_path / "r" / "run.json").read_text())
    m["stages"].pop("compare")
    (tmp_path / "r" / "run.json").write_text(json.dumps(m))
    return Run.at(tmp_path / "r")


def press(w, key):
    w.handle({"action": "key", "key": key, "token": w.view["token"]})


def test_keys_and_buttons_label_the_screen_shown(run_copy):
    w = ExplorerWidget(Arena(run_copy, "alice"))
    ex = w.explorer
    assert ex.models == ["ppo", "sft"] and len(ex.units) == 28
    assert [c["key"] for c in w.view["controls"]] == ["a", "b", "t", "x", "s", "u"]
    assert set(w.view["keys"]) == {"a", "b", "t", "x", "s", "u"}
    shown = []
    for key in ("a", "b", "t", "x"):
        item = ex.unit[0]
        left, right = ex.sides(item)
        text = w.view["sections"][1]["text"]
        assert text == ex.meta[item]["task"]["prompt"]
        cards = w.view["sections"][2]["cards"]                          # names hidden: "Left" and "Right"
        assert [c["title"] for c in cards] == ["Left", "Right"]
        assert cards[0]["items"][0]["text"] == ex.answers[(ex.meta[item]["task"]["id"], left)]["response"]
        shown.append((item, left, right))
        press(w, key)
        assert w.view["message"].endswith(f"left was {left}, right was {right}.")
    labels = ex.store.labels(annotator="alice")
    for lab, (item, left, right), key in zip(labels, shown, "abtx"):
        winner = {"a": left, "b": right, "t": "tie", "x": "both_bad"}[key]
        assert lab.item_id == item and lab.kind == "arena"
        c = lab.payload["choice"]
        assert (ex.meta[item][c] if c in ("a", "b") else c) == winner
        assert lab.payload["left"] == ex.meta[item]["left"]
    assert w.view["sections"][0]["text"] == "4 / 28 judged by alice"
    w.handle({"action": "click", "id": "a", "token": w.view["token"]})     # a button sends its key
    assert ex.store.count(annotator="alice") == 5
    stale = w.view["token"]
    press(w, "b")
    w.handle({"action": "key", "key": "b", "token": stale})           # a double press: the second is ignored
    assert ex.store.count(annotator="alice") == 6
    press(w, "q")                                                       # not a key of the arena
    assert ex.store.count(annotator="alice") == 6


def test_both_sides_are_shown_left_and_each_screen_keeps_its_sides(run_copy):
    ex = Arena(run_copy, "alice")
    lefts = {ex.meta[u[0]]["left"] for u in ex.units}
    assert lefts == {0, 1}
    again = Arena(run_copy, "bob")
    assert [(u, again.sides(u[0])) for u in again.units] == [(u, ex.sides(u[0])) for u in ex.units]


def test_skip_undo_and_resume_after_restart(run_copy, monkeypatch):
    w = ExplorerWidget(Arena(run_copy, "alice"))
    ex = w.explorer
    first = ex.unit
    press(w, "a")
    second = ex.unit
    press(w, "s")
    assert w.view["message"] == "Skipped." and ex.unit not in (first, second)
    third = ex.unit
    press(w, "b")
    press(w, "u")
    assert ex.unit == third and w.view["message"].startswith("Undid label #")
    press(w, "t")
    ex.store.close()
    # A new kernel: nothing is sampled again (the responses are in arena/responses.jsonl), and the arena
    # resumes after the last label.

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled again")

    monkeypatch.setattr(arena, "sample", no_sampling)
    again = Arena(run_copy, "alice")
    assert again.store.count(annotator="alice") == 2
    done = {lab.unit for lab in again.store.labels(annotator="alice")}
    assert done == {first, third} and again.unit not in done
    assert again.unit == again.units[(again.units.index(third) + 1) % len(again.units)]


def test_the_ai_judge_fills_the_arena_and_writes_results(run_copy):
    res = arena.arena(run=run_copy, annotator="ai")
    out = json.loads((run_copy.path / "arena" / "results.json").read_text())
    a = Arena(run_copy, AI)
    assert a.store.count(annotator=AI) == 28 == out["screens"]
    assert out["ai"]["pairs"][0]["labels"] == 28 and out["people"]["pairs"] == []
    assert "AI judge" in res._repr_html_() and "Bradley" in res._repr_html_()
    # The judge's labels are what the constitution says about the two answers, left and right.
    from labkit.judges import Constitution
    judge = Constitution(verify=W.verify)
    for lab in a.store.labels(annotator=AI)[:10]:
        m = a.meta[lab.item_id]
        left, right = a.sides(lab.item_id)
        ans = {s: a.answers[(m["task"]["id"], name)] for s, name in (("l", left), ("r", right))}
        says = judge.compare(m["task"]["prompt"], m["task"], ans["l"]["response"], ans["r"]["response"],
                             ans["l"]["stopped"], ans["r"]["stopped"])
        c = lab.payload["choice"]
        assert (m[c] if c in ("a", "b") else c) == {"a": left, "b": right}.get(says, says)
    arena.arena(run=run_copy, annotator="ai")                           # a second run adds nothing
    assert a.store.count(annotator=AI) == 28


def test_a_retrained_policy_gets_new_screens(run_copy):
    a = Arena(run_copy, "alice")
    a.act({"action": "key", "key": "a", "token": a.token()})
    weights = run_copy.path / "05_ppo" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b"\0")                  # a different file: a re-trained PPO
    b = Arena(run_copy, "alice")
    assert b.fps["ppo"] != a.fps["ppo"] and b.fps["sft"] == a.fps["sft"]
    assert not set(b.units) & set(a.units) and b.judged() == []         # the old label is about other answers


def test_arena_errors_are_one_line(explore_run, tmp_path):
    assert Arena(Run.at(explore_run), "x").models == ["dpo", "ppo", "rloo", "rloo_verifier", "sft"]
    view = arena.arena(run=explore_run, annotator="ai:me", interactive=True).view
    assert view["message"] == "annotator: give your name (names starting with 'ai:' are kept for AI judges)"
    view = arena.arena(run=explore_run, annotator="me", models=["sft"], interactive=True).view
    assert view["message"] == f"the arena needs two policies to compare, and {explore_run} holds only sft"
    table = arena.arena(run=tmp_path, annotator="ai")
    assert "needs" in table.to_dict("records")[0]["message"]
