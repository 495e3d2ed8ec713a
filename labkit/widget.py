"""A notebook widget for labelling preferences by hand (stage 3).

    RankingWidget(candidates, LabelStore(path), annotator="alice", mode="pair", judge=Constitution())

Pair mode: a / <- (A better), b / -> (B better), t (tie), x (both bad). Rank mode: 1..9 picks the
next best response, Backspace takes the last pick back. Both: s skips, u undoes the last saved label.
Each label is committed before the widget moves on; a new widget resumes where the annotator stopped;
with ``judge=`` the message line says whether the AI judge agreed.

One ``anywidget.AnyWidget``: Python owns the logic and sends the browser a plain ``view`` dict; the
browser draws it with ``textContent`` only (a response holding ``<script>`` shows those characters)
and sends back key names, buttons included -- so tests drive the exact code path the browser does.
The browser side is widget.js and widget.css beside this file.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import anywidget
import traitlets

from labkit.judges import stopped_flags
from labkit.store import LabelStore, work_units

CHOICE_NAMES = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both bad"}
PAIR_KEYS = {"a": "a", "arrowleft": "a", "b": "b", "arrowright": "b", "t": "tie", "x": "both_bad"}
RANK_KEYS = [str(d) for d in range(1, 10)]   # "3" picks response 3; buttons also send "10", "11", ...


def _unit_key(unit) -> str:
    """A unit as a string, so the browser can say which unit a key press was meant for."""
    return "" if unit is None else "|".join(str(u) for u in unit)


class RankingWidget(anywidget.AnyWidget):
    """Label `candidates` into `store` as `annotator`, in "pair" or "rank" mode; see the module docstring."""

    # The browser side (package files; anywidget reads a Path set in the class body).
    # Text from the model only ever goes through textContent.
    _esm = Path(__file__).with_name("widget.js")
    _css = Path(__file__).with_name("widget.css")

    view = traitlets.Dict().tag(sync=True)        # everything the browser draws
    rationale = traitlets.Unicode("").tag(sync=True)  # the optional free-text "why", cleared after each label

    def __init__(self, candidates: list[dict], store: LabelStore, annotator: str, mode: str = "pair",
                 judge=None, **kwargs):
        super().__init__(**kwargs)
        if not annotator or not annotator.strip():
            raise ValueError("annotator: give your name, so labels record who gave them")
        if annotator.startswith("ai:"):
            raise ValueError("annotator names starting with 'ai:' are kept for AI judges")
        self.candidates = list(candidates)
        self.store, self.annotator, self.mode, self.judge = store, annotator.strip(), mode, judge
        self.units = work_units(self.candidates, mode)
        self._by_id = {c["id"]: c for c in self.candidates}
        self._skipped: set = set()   # skipped this session: shown again only when nothing else is left
        self._picks: list[int] = []  # rank mode: responses picked so far for the current item, best first
        self.message = ""
        self.index = store.next_item(self.units, self.annotator, mode)  # resume
        self.on_msg(self._on_browser_msg)
        self._draw()

    # -- what the buttons and keys call ------------------------------------------------

    @property
    def unit(self):
        """The unit on screen: (item_id, a, b) in pair mode, (item_id, None, None) in rank mode; None when done."""
        return None if self.index is None else self.units[self.index]

    def press(self, key: str, unit: str | None = None):
        """Handle one key (or button, which sends its key). `unit`: the unit the browser showed.

        A press meant for another unit is ignored: that is the second click of a
        double click arriving after the first one already saved and moved on.
        """
        if unit is not None and unit != _unit_key(self.unit):
            return None
        key = key.lower()
        if key == "u":
            return self.undo()
        if key == "s":
            return self.skip()
        if self.mode == "pair" and key in PAIR_KEYS:
            return self.click_choice(PAIR_KEYS[key])
        if self.mode == "rank" and key.isdigit():
            return self.pick(int(key) - 1)
        if self.mode == "rank" and key == "backspace":
            return self.unpick()
        return None

    def click_choice(self, choice: str) -> int | None:
        """Pair mode: save "a", "b", "tie" or "both_bad" for the pair on screen; return the label id."""
        if self.mode != "pair" or self.unit is None:
            return None
        item_id, a, b = self.unit
        return self._save({"a": a, "b": b, "choice": choice})

    def pick(self, index: int) -> int | None:
        """Rank mode: response `index` is the next best. Saves (and returns the id) once the order is complete."""
        if self.mode != "rank" or self.unit is None:
            return None
        k = len(self._by_id[self.unit[0]]["responses"])
        if not 0 <= index < k or index in self._picks:
            return None
        self._picks.append(index)
        if len(self._picks) == k - 1:  # the one left is the worst: no need to click it
            self._picks += [i for i in range(k) if i not in self._picks]
        if len(self._picks) == k:
            return self._save({"order": self._picks})
        self._draw()
        return None

    def unpick(self):
        """Rank mode: take back the last pick."""
        if self._picks:
            self._picks.pop()
        self._draw()

    def skip(self):
        """Leave the unit on screen unlabelled for now and move on."""
        if self.unit is not None:
            self._skipped.add(self.unit)
            self.message = "Skipped."
            self._advance(skipped=True)
        self._draw()

    def undo(self):
        """Take back this annotator's last saved label (in this mode) and show its unit again."""
        label = self.store.undo_last(self.annotator, kind=self.mode)
        self._picks = []
        if label is None:
            self.message = "Nothing to undo."
        else:
            self.message = f"Undid label #{label.id}."
            self._skipped.discard(label.unit)
            if label.unit in self.units:
                self.index = self.units.index(label.unit)
        self._draw()
        return label

    # -- the rest ------------------------------------------------------------------

    def _save(self, payload: dict) -> int:
        item_id = self.unit[0]
        label_id = self.store.add_label(item_id, self.annotator, self.mode, payload,
                                        rationale=self.rationale.strip() or None)
        self.message = f"Saved label #{label_id}." + self._judge_says(item_id, payload)
        self.rationale = ""
        self._advance()
        self._draw()
        return label_id

    def _advance(self, skipped: bool = False):
        """Show the next unit: after the last label, or after the unit just skipped."""
        self._picks = []
        self.index = self.store.next_item(self.units, self.annotator, self.mode, skip=self._skipped,
                                          after=self.unit if skipped else None)

    def _judge_says(self, item_id: str, payload: dict) -> str:
        """" The AI judge agrees." or what it would have said instead ('' without a judge)."""
        if self.judge is None:
            return ""
        name = getattr(self.judge, "name", "judge")
        try:
            return self._judge_verdict(name, self._by_id[item_id], payload)
        except Exception as e:  # the label is saved either way; the judge is only a second opinion
            return f" AI judge ({name}) failed: {type(e).__name__}: {e}."

    def _judge_verdict(self, name: str, cand: dict, payload: dict) -> str:
        responses, stopped, task = cand["responses"], stopped_flags(cand), cand.get("task")
        if self.mode == "pair":
            a, b = payload["a"], payload["b"]
            says = self.judge.compare(cand["prompt"], task, responses[a], responses[b], stopped[a], stopped[b])
            verdict = "agrees" if says == payload["choice"] else "disagrees"
            return f" AI judge ({name}): {CHOICE_NAMES[says]} - {verdict}."
        order = self.judge.rank(cand["prompt"], task, responses, stopped)
        mine = {i: p for p, i in enumerate(payload["order"])}
        theirs = {i: p for p, i in enumerate(order)}
        pairs = list(itertools.combinations(range(len(responses)), 2))
        same = sum((mine[i] < mine[j]) == (theirs[i] < theirs[j]) for i, j in pairs)
        ranked = " > ".join(str(i + 1) for i in order)
        return f" AI judge ({name}) ranked {ranked} - agrees on {same} of {len(pairs)} pairs."

    def _on_browser_msg(self, widget, content, buffers):
        if not (isinstance(content, dict) and "key" in content):
            return
        try:
            self.press(str(content["key"]), unit=content.get("unit"))
        except Exception as e:
            # An error in a comm callback only reaches the kernel's log: say it where the person looks.
            self.message = f"That did not work - {type(e).__name__}: {e}"
            self.view = {**self.view, "message": self.message}  # not _draw(): the store may be what failed
            raise

    def _draw(self):
        """Rebuild the `view` dict the browser draws (and the tests read)."""
        done_units = {lab.unit for lab in self.store.labels(annotator=self.annotator, kind=self.mode)}
        done = sum(u in done_units for u in self.units)
        view = {"mode": self.mode, "annotator": self.annotator, "unit": _unit_key(self.unit),
                "done": done, "total": len(self.units), "finished": self.unit is None,
                "message": self.message, "prompt": "", "item_id": "", "candidates": [], "buttons": []}
        if self.mode == "pair":
            view["buttons"] = [{"label": "A is better", "key": "a"}, {"label": "B is better", "key": "b"},
                               {"label": "Tie", "key": "t"}, {"label": "Both bad", "key": "x"}]
            view["help"] = ("Keys: a or \u2190 = A better, b or \u2192 = B better, t = tie, x = both bad, "
                            "s = skip, u = undo")
        else:
            view["buttons"] = [{"label": "Take back pick", "key": "backspace"}]
            view["help"] = "Keys: 1-9 = pick the next best response, Backspace = take back a pick, s = skip, u = undo"
        view["buttons"] += [{"label": "Skip", "key": "s"}, {"label": "Undo", "key": "u"}]
        view["keys"] = sorted({*(PAIR_KEYS if self.mode == "pair" else [*RANK_KEYS, "backspace"]), "s", "u"})
        if self.unit is None:
            done_note = f"All {len(self.units)} labelled - thank you!"
            view["message"] = f"{self.message} {done_note}" if self.message else done_note
        else:
            item_id, a, b = self.unit
            cand = self._by_id[item_id]
            view["prompt"], view["item_id"] = cand["prompt"], item_id
            if self.mode == "pair":
                view["candidates"] = [
                    {"title": "A", "subtitle": f"response {a + 1}", "text": cand["responses"][a], "key": None},
                    {"title": "B", "subtitle": f"response {b + 1}", "text": cand["responses"][b], "key": None}]
            else:
                view["candidates"] = [
                    {"title": f"Response {i + 1}", "text": text, "key": str(i + 1),
                     "subtitle": f"ranked {self._picks.index(i) + 1}" if i in self._picks else ""}
                    for i, text in enumerate(cand["responses"])]
        self.view = view
