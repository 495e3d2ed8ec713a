"""The reward-model probe: one prompt, two responses, and what stage 4's reward model makes of them.

    from labkit import explore_reward
    explore_reward.probe(run="demo", runs_dir="../runs")   # notebook 04

Both responses are editable, and the scores follow every edit: each response's reward, and
P(A > B) = sigmoid(r_A - r_B), the Bradley-Terry probability the reward model was trained to give
(Bradley & Terry 1952; Ouyang et al. 2022, eq. 1). On a held-out world task the verifier's verdict
sits beside each score, so a disagreement is visible at once. Two buttons try the blind spots:
"swap" (does the model judge the text or the slot?) and "make it mixed" (append the other
response: refuse, then comply anyway -- does the refusal's reward survive what follows it?).

Built like every explorer (``labkit.explore``).
"""

from __future__ import annotations

import random

from . import world as W
from .explore import (TONES, Explorer, check_text, example_options, examples, launch, load_reward, open_run,
                      rewards, short, showcase)
from .reward_eval import sigmoid
from .runs import Run


def pair_for(task: dict) -> tuple[str, str]:
    """(aligned response, a typical misaligned one) for a world task: on harmful and unanswerable tasks a
    crowd-style demonstration that complies or makes an answer up; elsewhere an over-refusal."""
    rng = random.Random(task["id"])
    if task["family"] in W.DECLINING_FAMILIES:
        return W.demonstration(task, True, rng), W.demonstration(task, False, rng)
    return task["answer"], W.declining(task, rng)


def judge_pair(r: Run, prompt: str, a: str, b: str, task: dict | None) -> dict:
    """Rewards, P(A > B) and the verifier's verdicts (None off the world's tasks) of one pair."""
    ra, rb = rewards(r, [prompt, prompt], [a, b])
    return {"reward_a": ra, "reward_b": rb, "p_a": sigmoid(ra - rb),
            "verdict_a": W.verdict(task, a) if task else None, "verdict_b": W.verdict(task, b) if task else None}


class RewardProbe(Explorer):
    """Two responses to one prompt, scored by the reward model as they are edited."""

    kind, title = "reward_probe", "Reward-model probe"
    help = ("Edit any box and the scores follow. P(A \u227b B) = \u03c3(r_A \u2212 r_B): the Bradley\u2013Terry "
            "model the reward model was trained with. Verdicts are the world's verifier (held-out examples only).")

    def __init__(self, r: Run):
        super().__init__()
        self.run = r
        load_reward(r)  # fail now, with what the run folder holds, if there is none
        self.examples = examples(r)
        self.by_id = {t["id"]: t for t in self.examples}
        self.result: dict | None = None
        self.pick(showcase(self.examples, 1)[0]["id"])

    def pick(self, task_id: str) -> None:
        task = self.by_id[task_id]
        a, b = pair_for(task)
        self.values = {"example": task_id, "prompt": task["prompt"], "a": a, "b": b}

    def controls(self):
        return [{"id": "example", "type": "select", "label": "held-out example", "options": example_options(self.examples)},
                {"id": "prompt", "type": "textarea", "label": "prompt", "rows": 2},
                {"id": "a", "type": "textarea", "label": "response A", "rows": 2},
                {"id": "b", "type": "textarea", "label": "response B", "rows": 2},
                {"id": "swap", "type": "button", "label": "Swap A and B"},
                {"id": "mix_a", "type": "button", "label": "Make A mixed (A + B)"},
                {"id": "mix_b", "type": "button", "label": "Make B mixed (B + A)"}]

    def task(self) -> dict | None:
        return next((t for t in self.examples if t["prompt"] == self.values["prompt"]), None)

    def set(self, name, value):
        super().set(name, value)
        if name == "example" and self.values["example"]:
            self.pick(self.values["example"])
        self.score()

    def click(self, name):
        v = self.values
        if name == "swap":
            v["a"], v["b"] = v["b"], v["a"]
        elif name == "mix_a":
            v["a"] = f"{v['a']} {v['b']}".strip()
        elif name == "mix_b":
            v["b"] = f"{v['b']} {v['a']}".strip()
        self.score()

    def start(self):
        self.score()

    def score(self) -> dict:
        self.result = None
        prompt = check_text(self.values["prompt"])
        a = check_text(self.values["a"], "response A", allow_empty=True)
        b = check_text(self.values["b"], "response B", allow_empty=True)
        self.result = judge_pair(self.run, prompt, a, b, self.task())
        self.say("" if self.task() else "Not a held-out world task: no verifier verdict.")
        return self.result

    def sections(self):
        res = self.result
        if res is None:
            return []
        cards = []
        for side in ("a", "b"):
            verdict = res[f"verdict_{side}"]
            badges = ([{"text": verdict, "tone": TONES[verdict]}] if verdict else []) + \
                [{"text": f"reward {res[f'reward_{side}']:+.3f}", "tone": "info"}]
            cards.append({"title": side.upper(), "subtitle": "", "items": [{"text": self.values[side], "badges": badges}]})
        return [{"type": "cards", "title": "", "cards": cards},
                {"type": "table", "title": "Bradley\u2013Terry", "columns": ["r_A", "r_B", "r_A \u2212 r_B", "P(A \u227b B)"],
                 "rows": [[f"{res['reward_a']:+.3f}", f"{res['reward_b']:+.3f}",
                           f"{res['reward_a'] - res['reward_b']:+.3f}", f"{100 * res['p_a']:.1f}%"]]}]

    def static_table(self):
        import pandas as pd
        rows = []
        for task in showcase(self.examples, 4):
            a, b = pair_for(task)
            pairs = [("aligned vs not", a, b)] + ([("mixed vs aligned", f"{a} {b}", a)]
                                                  if task["family"] in W.DECLINING_FAMILIES else [])
            for what, x, y in pairs:
                res = judge_pair(self.run, task["prompt"], x, y, task)
                rows.append({"family": task["family"], "prompt": short(task["prompt"], 60), "pair": what, "A": x,
                             "B": y, "reward_A": round(res["reward_a"], 3), "reward_B": round(res["reward_b"], 3),
                             "P(A>B)": round(res["p_a"], 3), "verdict_A": res["verdict_a"], "verdict_B": res["verdict_b"]})
        return pd.DataFrame(rows)


def probe(run="demo", runs_dir="runs", interactive: bool | None = None):
    """The reward-model probe over run ``run``'s stage 4."""
    return launch("reward_probe", lambda: RewardProbe(open_run(run, runs_dir)), interactive)
