"""Tests for labkit.widget, driven headlessly through the same calls the browser's keys and buttons make."""

import re
import sqlite3
from pathlib import Path

import pytest

import labkit.widget
from labkit.judges import Constitution
from labkit.store import LabelStore
from labkit.widget import RankingWidget

XSS = ["<script>alert(1)</script>", '<img src=x onerror="window.__xss=1">']


def cands(n=3, k=3):
    return [{"id": f"p{i}", "prompt": f"prompt {i} <b>bold?</b>", "task": None, "gen": {},
             "responses": [XSS[j % 2] if i == 0 else f"p{i} answer {j}" for j in range(k)]}
            for i in range(n)]


@pytest.fixture
def store(tmp_path):
    with LabelStore(tmp_path / "labels.sqlite") as s:
        yield s


def choices(store, annotator="alice"):
    return [(lab.item_id, lab.payload["a"], lab.payload["b"], lab.payload["choice"])
            for lab in store.labels(annotator=annotator)]


def test_pair_mode_keys_and_buttons(store):
    w = RankingWidget(cands(), store, "alice", mode="pair")
    assert (w.view["unit"], w.view["done"], w.view["total"]) == ("p0|0|1", 0, 9)
    w.press("a")
    w.press("ArrowRight")
    w.click_choice("tie")
    w.press("x")
    w.press("B")           # shift held: same key
    w.press("arrowleft")
    w.press("q")           # not a shortcut: nothing happens
    assert choices(store) == [("p0", 0, 1, "a"), ("p0", 0, 2, "b"), ("p0", 1, 2, "tie"),
                              ("p1", 0, 1, "both_bad"), ("p1", 0, 2, "b"), ("p1", 1, 2, "a")]
    assert w.view["done"] == 6 and w.view["unit"] == "p2|0|1"
    assert [b["label"] for b in w.view["buttons"]] == ["A is better", "B is better", "Tie", "Both bad", "Skip", "Undo"]
    assert {"a", "b", "t", "x", "s", "u", "arrowleft", "arrowright"} <= set(w.view["keys"])


def test_skip_undo_and_resume(store):
    w = RankingWidget(cands(n=4, k=2), store, "alice")          # one pair per item
    w.press("a")                                                 # p0
    w.press("s")                                                 # skip p1
    assert w.view["unit"] == "p2|0|1" and w.view["message"] == "Skipped."
    w.press("b")                                                 # p2
    undone = w.press("u")                                        # takes back p2, shows it again
    assert undone.item_id == "p2" and w.view["unit"] == "p2|0|1" and w.view["done"] == 1
    w.press("a")                                                 # p2, relabelled
    assert choices(store) == [("p0", 0, 1, "a"), ("p2", 0, 1, "a")]
    assert len(store.labels(annotator="alice", include_undone=True)) == 3
    # A new widget (a restarted kernel) resumes right after the last label...
    w2 = RankingWidget(cands(n=4, k=2), store, "alice")
    assert w2.view["unit"] == "p3|0|1" and w2.view["done"] == 2
    w2.press("b")
    assert w2.view["unit"] == "p1|0|1"                           # ...then comes back for the skipped one
    w2.press("s")                                                # skipping the only one left keeps it
    assert w2.view["unit"] == "p1|0|1"
    w2.press("t")
    assert w2.view["finished"] and w2.view["done"] == 4 and "All 4 labelled" in w2.view["message"]
    w2.press("a")                                                # nothing left to label
    assert store.count() == 4
    w2.press("u")                                                # undo works from the end too
    assert w2.view["unit"] == "p1|0|1" and not w2.view["finished"]
    # Each annotator has their own place.
    assert RankingWidget(cands(n=4, k=2), store, "bob").view["unit"] == "p0|0|1"


def test_skip_cycles_through_several_skipped_units(store):
    w = RankingWidget(cands(n=3, k=2), store, "alice")
    seen = []
    for _ in range(7):
        seen.append(w.view["unit"])
        w.skip()
    assert seen == ["p0|0|1", "p1|0|1", "p2|0|1"] * 2 + ["p0|0|1"]
    assert store.count() == 0


def test_double_click_saves_once(store):
    w = RankingWidget(cands(), store, "alice")
    shown = w.view["unit"]
    # The browser sends both clicks tagged with the unit it was showing.
    w._on_browser_msg(w, {"key": "a", "unit": shown}, [])
    w._on_browser_msg(w, {"key": "a", "unit": shown}, [])
    w._on_browser_msg(w, {"key": "u", "unit": shown}, [])  # a stale undo is ignored too
    assert choices(store) == [("p0", 0, 1, "a")] and w.view["unit"] == "p0|0|2"


def test_rationale_is_saved_with_the_label_then_cleared(store):
    w = RankingWidget(cands(), store, "alice")
    w.rationale = "  A answers the question  "
    w.press("a")
    w.press("b")
    assert [lab.rationale for lab in store.labels()] == ["A answers the question", None]
    assert w.rationale == ""


def test_rank_mode(store):
    w = RankingWidget(cands(n=3, k=4), store, "alice", mode="rank")
    assert w.view["total"] == 3 and [c["key"] for c in w.view["candidates"]] == ["1", "2", "3", "4"]
    w.press("3")
    w.press("3")                   # already picked: ignored
    w.press("9")                   # no such response: ignored
    w.press("1")
    assert [c["subtitle"] for c in w.view["candidates"]] == ["ranked 2", "", "ranked 1", ""]
    w.press("Backspace")           # take back the 1
    w.pick(3)
    assert store.count() == 0
    label_id = w.press("2")        # the 4th is placed by itself: saved
    assert store.labels()[0].id == label_id and store.labels()[0].payload == {"order": [2, 3, 1, 0]}
    assert w.view["unit"] == "p1|None|None" and w.view["done"] == 1
    w.press("a")                   # pair keys do nothing in rank mode
    w.press("1")
    w.press("2")
    w.press("u")                   # undo drops the half-made order and returns to the undone item
    assert w.view["unit"] == "p0|None|None" and store.count() == 0
    assert all(c["subtitle"] == "" for c in w.view["candidates"])


def test_judge_feedback(store):
    c = [{"id": "q", "prompt": "say hi", "task": None,
          "responses": ["hi there", "hi hi hi hi hi hi hi"], "stopped": [True, False]}]
    w = RankingWidget(c, store, "alice", judge=Constitution())
    w.press("b")
    assert "AI judge (constitution): A is better - disagrees." in w.view["message"]
    w.press("u")
    w.press("a")
    assert "A is better - agrees." in w.view["message"]
    r = RankingWidget(c, store, "bob", mode="rank", judge=Constitution())
    r.press("1")
    assert "ranked 1 > 2 - agrees on 1 of 1 pairs" in r.view["message"]


def test_model_text_is_passed_as_text_never_html(store):
    w = RankingWidget(cands(), store, "alice")
    # The view carries the raw characters; the browser puts them in textContent.
    assert [c["text"] for c in w.view["candidates"]] == [XSS[0], XSS[1]]
    assert w.view["prompt"] == "prompt 0 <b>bold?</b>"
    esm = w._esm  # the trait the browser receives: widget.js's text, not its path
    assert esm == (Path(labkit.widget.__file__).parent / "widget.js").read_text()
    assert "export default { render }" in esm and ".labkit-card" in w._css
    assert "textContent" in esm
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment", esm)
    assert "data-lm-suppress-shortcuts" in esm  # JupyterLab must not turn "a" into "insert cell"


def test_annotator_names(store):
    for bad in ("", "  ", "ai:me"):
        with pytest.raises(ValueError):
            RankingWidget(cands(), store, bad)
    assert RankingWidget(cands(), store, " carol ").view["annotator"] == "carol"


def test_ten_responses_rank_through_buttons(store):
    w = RankingWidget(cands(n=1, k=10), store, "alice", mode="rank")
    assert w.view["candidates"][9]["key"] == "10"   # the "Pick 10" button sends "10"
    for key in ["10", "9", "8", "7", "6", "5", "4", "3", "2"]:
        w.press(key)
    assert store.labels()[0].payload["order"] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]


def test_errors_show_in_the_widget(store):
    class BrokenJudge:
        name = "broken"

        def compare(self, *args):
            raise RuntimeError("no verifier")

    w = RankingWidget(cands(), store, "alice", judge=BrokenJudge())
    w.press("a")   # the label is saved; the judge's failure is only reported
    assert store.count() == 1 and "AI judge (broken) failed: RuntimeError: no verifier." in w.view["message"]
    store.close()  # a store that cannot write: the person must see it, not only the kernel log
    with pytest.raises(sqlite3.ProgrammingError):
        w._on_browser_msg(w, {"key": "a", "unit": w.view["unit"]}, [])
    assert w.view["message"].startswith("That did not work - ProgrammingError")
