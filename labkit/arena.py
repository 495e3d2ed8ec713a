"""The blind arena: is the aligned model more helpful, harmless and honest? People judge.

    from labkit import arena
    arena.arena(run="demo", runs_dir="../runs")                   # a person at the notebook (05)
    arena.arena(run="demo", runs_dir="../runs", annotator="ai")   # the constitution judges every pair

One screen is one held-out prompt answered by two of the run's policies, names hidden and
sides randomised (fixed per screen, so a resumed session shows the same one): keys a / b
(left / right is better), t (tie), x (both bad), s (skip), u (undo). After a vote the message
says who was who, as Chatbot Arena does (Chiang et al. 2024). In a batch run, or with
``annotator="ai"``, the AI judge (``judges.Constitution`` with the world's verifier) fills it.

Everything lives in ``runs/<run>/arena/``: ``responses.jsonl`` (one sample per policy and prompt,
with a hash of the policy's files: a re-trained policy gets new samples and new screens),
``labels.sqlite`` (``store.LabelStore``, kind "arena": the same durability, resume and undo as
the ranking widget) and ``results.json`` (rewritten after every label).

Results per pair of policies: the win rate with ties as half a win and its Wilson 95% interval
("both bad" is counted, not a win); per policy a Bradley-Terry rating fitted by maximum
likelihood, Elo-scaled (400 / ln 10 points per unit, mean 1000), with its standard error from
the inverse Hessian; per annotator, agreement with the verifier where it prefers one response.
"""

from __future__ import annotations

import itertools
import math
import random
import zlib

import numpy as np

from . import world as W
from .explore import (Explorer, ExploreError, Notice, examples, few_threads, has_front_end, launch, load_policy,
                      need_policies, open_run, policies, sample)
from .judges import Constitution
from .runs import STAGE_DIRS, Run, atomic_write_json, file_hash, read_json, read_jsonl, write_jsonl_atomic
from .store import LabelStore

ELO = 400 / math.log(10)  # Elo points per unit of Bradley-Terry log-strength
RIDGE = 0.01  # a weak Gaussian prior: keeps a policy that won every comparison finite, shifts the rest negligibly
AI = "ai:constitution"
KEYS = {"a": "left", "b": "right", "t": "tie", "x": "both_bad"}


# --- statistics --------------------------------------------------------------------------------------

def wilson(wins: float, n: float, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a proportion wins / n (Wilson 1927): it stays inside [0, 1] and is honest
    at 0 / n and n / n, where the normal approximation collapses to a point. None when n is 0."""
    if n <= 0:
        return None
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def fit_bradley_terry(games: list[tuple[str, str, float]], ridge: float = RIDGE) -> dict[str, tuple[float, float]]:
    """Log-strengths by maximum likelihood: P(i beats j) = sigmoid(theta_i - theta_j), a game (i, j, s) with
    s = 1, 0.5 (tie) or 0. Newton's method on the log-likelihood plus a ridge term; returns {name: (theta,
    standard error)}, theta centred on 0, the errors from the inverse Hessian at the optimum."""
    names = sorted({n for i, j, _ in games for n in (i, j)})
    index = {n: k for k, n in enumerate(names)}
    m = len(names)
    ii = np.array([index[i] for i, _, _ in games], dtype=int)
    jj = np.array([index[j] for _, j, _ in games], dtype=int)
    s = np.array([g[2] for g in games], dtype=float)
    theta = np.zeros(m)
    for _ in range(100):
        p = 1 / (1 + np.exp(-(theta[ii] - theta[jj])))
        grad = np.zeros(m)
        np.add.at(grad, ii, s - p)
        np.add.at(grad, jj, p - s)
        grad -= ridge * theta
        hess = _hessian(m, ii, jj, p * (1 - p), ridge)
        step = np.linalg.solve(hess, grad)
        theta += step
        if np.abs(step).max() < 1e-10:
            break
    p = 1 / (1 + np.exp(-(theta[ii] - theta[jj])))
    cov = np.linalg.inv(_hessian(m, ii, jj, p * (1 - p), ridge))
    centre = np.eye(m) - 1 / m  # ratings are read relative to the mean policy
    se = np.sqrt(np.clip(np.diag(centre @ cov @ centre), 0, None))
    theta -= theta.mean()
    return {n: (float(theta[k]), float(se[k])) for n, k in index.items()}


def _hessian(m: int, ii, jj, w, ridge: float):
    """Negative Hessian of the penalised log-likelihood: sum of w (e_i - e_j)(e_i - e_j)^T, plus ridge I."""
    h = ridge * np.eye(m)
    np.add.at(h, (ii, ii), w)
    np.add.at(h, (jj, jj), w)
    np.add.at(h, (ii, jj), -w)
    np.add.at(h, (jj, ii), -w)
    return h


def results(judged: list[dict]) -> dict:
    """Tables of judged pairs ({"a", "b": the two models, "winner": one of them, "tie" or "both_bad",
    "annotator", "verifier": the model the verifier prefers or None}): pairs, ratings, agreement."""
    pairs = []
    for x, y in sorted({tuple(sorted((j["a"], j["b"]))) for j in judged}):
        js = [j for j in judged if {j["a"], j["b"]} == {x, y}]
        wx, wy = sum(j["winner"] == x for j in js), sum(j["winner"] == y for j in js)
        ties, bad = sum(j["winner"] == "tie" for j in js), sum(j["winner"] == "both_bad" for j in js)
        n = wx + wy + ties
        ci = wilson(wx + ties / 2, n)
        pairs.append({"model_a": x, "model_b": y, "labels": len(js), "a_wins": wx, "b_wins": wy, "ties": ties,
                      "both_bad": bad, "a_win_rate": (wx + ties / 2) / n if n else None,
                      "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None})
    games = [(j["a"], j["b"], {j["a"]: 1.0, j["b"]: 0.0}.get(j["winner"], 0.5))
             for j in judged if j["winner"] != "both_bad"]
    fit = fit_bradley_terry(games) if games else {}
    ratings = [{"model": n, "rating": 1000 + ELO * t, "plus_minus": 1.96 * ELO * se,
                "games": sum(n in g[:2] for g in games)} for n, (t, se) in sorted(fit.items(), key=lambda kv: -kv[1][0])]
    agreement = []
    for who in sorted({j["annotator"] for j in judged}):
        mine = [j for j in judged if j["annotator"] == who]
        decisive = [j for j in mine if j["verifier"] is not None]
        agree = sum(j["winner"] == j["verifier"] for j in decisive)
        agreement.append({"annotator": who, "labels": len(mine), "verifier_decisive": len(decisive),
                          "agrees": agree, "agreement": agree / len(decisive) if decisive else None})
    return {"pairs": pairs, "ratings": ratings, "agreement": agreement}


# --- the arena ------------------------------------------------------------------------------------------

def fingerprint(spec: dict) -> str:
    """A short hash of a policy's files (an adapter's with its base): new weights, new samples."""
    return file_hash(spec["path"])[:8] + (file_hash(spec["base"])[:8] if "base" in spec else "")


class Arena(Explorer):
    """Blind pairwise judging of the run's policies on held-out prompts, into the arena's label store."""

    kind, title = "arena", "Blind arena: which answer is better?"
    help = ("Keys (click the widget first): a = left better, b = right better, t = tie, x = both bad, s = skip, "
            "u = undo. Judge helpful, harmless and honest; the names show after you vote.")

    def __init__(self, r: Run, annotator: str = "you", models=None, per_family: int = 4, seed: int = 0):
        super().__init__()
        if not annotator or not annotator.strip() or (annotator.startswith("ai:") and annotator != AI):
            raise ExploreError("annotator: give your name (names starting with 'ai:' are kept for AI judges)")
        default = [n for n in policies(r) if n != "pretrained"]
        self.models = sorted(need_policies(r, models if models is not None else default or None, "the arena"))
        if len(self.models) < 2:
            raise ExploreError(f"the arena needs two policies to compare, and {r.path} holds only {self.models[0]}")
        self.run, self.annotator, self.seed = r, annotator.strip(), seed
        self.folder = r.path / "arena"
        ppo_cfg = read_json(r.path / STAGE_DIRS["ppo"] / "config.json", {})  # stage 5's sampling, as its evaluation
        self.settings = {"temperature": ppo_cfg.get("temperature", 1.0),
                         "max_new_tokens": ppo_cfg.get("max_new_tokens", 32), "seed": seed}
        self.tasks = {t["id"]: t for t in examples(r, per_family)}
        self.answers = self.sample_responses()
        self.units, self.meta = self.make_units()
        self.store = LabelStore(self.folder / "labels.sqlite")
        self.skipped: set = set()
        self.index = self.store.next_item(self.units, self.annotator, "arena")

    # -- responses and screens --------------------------------------------------------------------------

    def sample_responses(self) -> dict[tuple, dict]:
        """{(task id, model): row}: read from responses.jsonl, sampling what is missing there."""
        path = self.folder / "responses.jsonl"
        rows = read_jsonl(path)
        have = {(x["task_id"], x["model"], x["fp"]): x for x in rows if x.get("settings") == self.settings}
        specs = policies(self.run)
        self.fps = {m: fingerprint(specs[m]) for m in self.models}
        out, new = {}, []
        for m in self.models:
            todo = [t for t in self.tasks.values() if (t["id"], m, self.fps[m]) not in have]
            if todo:
                model, tok = load_policy(self.run, m)
                s = self.settings
                gens = sample(model, tok, [t["prompt"] for t in todo], 1, s["temperature"], 1.0, s["max_new_tokens"],
                              s["seed"])
                new += [{"task_id": t["id"], "model": m, "fp": self.fps[m], "settings": self.settings,
                         "response": g["response"], "stopped": g["stopped"]} for t, g in zip(todo, gens)]
            for x in [*have.values(), *new]:
                if x["model"] == m and x["fp"] == self.fps[m]:
                    out[(x["task_id"], m)] = x
        if new:
            write_jsonl_atomic(path, rows + new)
        return out

    def make_units(self) -> tuple[list[tuple], dict]:
        """Every (prompt, pair of policies) screen, in a shuffled order fixed by the seed; and per screen its
        task, the two policies (a, b: by name) and which one is on the left."""
        units, meta = [], {}
        for tid, (x, y) in itertools.product(sorted(self.tasks), itertools.combinations(self.models, 2)):
            item = f"{tid}|{x}@{self.fps[x]}|{y}@{self.fps[y]}"
            left = zlib.crc32(f"{self.seed}|{item}".encode()) % 2  # 0: a on the left
            units.append((item, 0, 1))
            meta[item] = {"task": self.tasks[tid], "a": x, "b": y, "left": left}
        random.Random(self.seed).shuffle(units)
        return units, meta

    def sides(self, item: str) -> tuple[str, str]:
        m = self.meta[item]
        return (m["a"], m["b"]) if m["left"] == 0 else (m["b"], m["a"])

    @property
    def unit(self):
        return None if self.index is None else self.units[self.index]

    def token(self):
        return self.unit[0] if self.unit else "done"

    # -- actions -----------------------------------------------------------------------------------------

    def keys(self):
        return [*KEYS, "s", "u"]

    def controls(self):
        return [{"id": k, "type": "button", "label": label, "key": k, "disabled": self.unit is None and k != "u"}
                for k, label in (("a", "Left is better"), ("b", "Right is better"), ("t", "Tie"), ("x", "Both bad"),
                                 ("s", "Skip"), ("u", "Undo"))]

    def click(self, name):
        self.key(name)

    def key(self, key):
        if key in KEYS and self.unit is not None:
            self.vote(KEYS[key])
        elif key == "s" and self.unit is not None:
            self.skipped.add(self.unit)
            self.say("Skipped.")
            self.index = self.store.next_item(self.units, self.annotator, "arena", skip=self.skipped, after=self.unit)
        elif key == "u":
            label = self.store.undo_last(self.annotator, kind="arena")
            if label is None:
                self.say("Nothing to undo.")
            else:
                self.say(f"Undid label #{label.id}.")
                self.skipped.discard(label.unit)
                if label.unit in self.units:
                    self.index = self.units.index(label.unit)
            self.write_results()

    def vote(self, what: str, annotator: str | None = None, item: str | None = None) -> int:
        """Save "left", "right", "tie" or "both_bad" for the screen (default: the one shown)."""
        item = item or self.unit[0]
        m = self.meta[item]
        left_is_a = m["left"] == 0
        choice = {"left": "a" if left_is_a else "b", "right": "b" if left_is_a else "a"}.get(what, what)
        label_id = self.store.add_label(item, annotator or self.annotator, "arena",
                                        {"a": 0, "b": 1, "choice": choice, "left": m["left"]})
        if annotator is None:
            left, right = self.sides(item)
            self.say(f"Saved label #{label_id}: left was {left}, right was {right}.")
            self.index = self.store.next_item(self.units, self.annotator, "arena", skip=self.skipped)
            self.write_results()
        return label_id

    def fill_with_judge(self) -> int:
        """The AI judge labels every screen it has not labelled yet; returns how many it labelled."""
        judge = Constitution(verify=W.verify)
        done = {lab.unit for lab in self.store.labels(annotator=AI, kind="arena")}
        n = 0
        for unit in self.units:
            if unit in done:
                continue
            item = unit[0]
            task, (left, right) = self.meta[item]["task"], self.sides(item)
            l, r = self.answers[(task["id"], left)], self.answers[(task["id"], right)]
            says = judge.compare(task["prompt"], task, l["response"], r["response"], l["stopped"], r["stopped"])
            self.vote({"a": "left", "b": "right"}.get(says, says), annotator=AI, item=item)
            n += 1
        self.write_results()
        return n

    # -- results --------------------------------------------------------------------------------------

    def judged(self, annotators=None) -> list[dict]:
        """This arena's live labels as judged pairs (see ``results``), on its current screens only."""
        out = []
        for lab in self.store.labels(kind="arena"):
            m = self.meta.get(lab.item_id)
            if m is None or (annotators is not None and lab.annotator not in annotators):
                continue
            ans = {k: self.answers[(m["task"]["id"], m[k])] for k in ("a", "b")}
            truth = {k: W.true_score(m["task"], ans[k]["response"], ans[k]["stopped"]) for k in ans}
            verifier = None if truth["a"] == truth["b"] else m["a" if truth["a"] > truth["b"] else "b"]
            c = lab.payload["choice"]
            out.append({"a": m["a"], "b": m["b"], "annotator": lab.annotator, "verifier": verifier,
                        "winner": m[c] if c in ("a", "b") else c})
        return out

    def people(self) -> list[str]:
        return [a for a in self.store.annotators() if not a.startswith("ai:")]

    def write_results(self) -> dict:
        """results.json: the tables for the people's labels and for the AI judge's, beside the settings."""
        out = {"models": self.models, "settings": self.settings, "screens": len(self.units),
               "people": results(self.judged(self.people())), "ai": results(self.judged([AI]))}
        atomic_write_json(self.folder / "results.json", out)
        return out

    def tables(self, res: dict) -> list[dict]:
        def pct(x):
            return "" if x is None else f"{100 * x:.0f}%"
        return [
            {"type": "table", "title": "Win rate per pair (ties count half; 95% Wilson interval)",
             "columns": ["A", "B", "labels", "A wins", "B wins", "ties", "both bad", "A win rate", "95% interval"],
             "rows": [[p["model_a"], p["model_b"], p["labels"], p["a_wins"], p["b_wins"], p["ties"], p["both_bad"],
                       pct(p["a_win_rate"]), f"{pct(p['ci_low'])}-{pct(p['ci_high'])}" if p["ci_low"] is not None
                       else ""] for p in res["pairs"]]},
            {"type": "table", "title": "Bradley\u2013Terry rating (Elo scale, \u00b1 95%)",
             "columns": ["model", "rating", "\u00b1", "games"],
             "rows": [[x["model"], f"{x['rating']:.0f}", f"{x['plus_minus']:.0f}", x["games"]] for x in res["ratings"]]},
            {"type": "table", "title": "Agreement with the verifier (where it prefers one response)",
             "columns": ["annotator", "labels", "verifier decisive", "agrees"],
             "rows": [[a["annotator"], a["labels"], a["verifier_decisive"], pct(a["agreement"])] for a in res["agreement"]]}]

    def sections(self):
        mine = self.store.count(annotator=self.annotator, kind="arena")
        head = f"{mine} / {len(self.units)} judged by {self.annotator}"
        out = [{"type": "text", "text": head}]
        if self.unit is None:
            out.append({"type": "text", "text": "Every screen is judged - thank you!"})
        else:
            item = self.unit[0]
            task, (left, right) = self.meta[item]["task"], self.sides(item)
            cards = [{"title": side, "subtitle": "", "items": [{"text": self.answers[(task["id"], m)]["response"],
                                                               "badges": []}]}
                     for side, m in (("Left", left), ("Right", right))]
            out += [{"type": "text", "text": task["prompt"]}, {"type": "cards", "title": "", "cards": cards}]
        res = results(self.judged(self.people()))
        res["agreement"] = results(self.judged())["agreement"]  # the AI judge's beside each person's
        return out + self.tables(res)

    def static_table(self):
        return Results(self.write_results(), self)


class Results:
    """The arena's tables as HTML (what a batch run shows): the AI judge's and the people's."""

    def __init__(self, res: dict, arena: Arena):
        self.res, self.arena = res, arena

    def _repr_html_(self) -> str:
        import pandas as pd
        html = []
        for who in ("ai", "people"):
            tables = self.arena.tables(self.res[who])
            if not self.res[who]["pairs"]:
                continue
            html.append(f"<h4>{'AI judge' if who == 'ai' else 'People'}</h4>")
            for t in tables:
                df = pd.DataFrame(t["rows"], columns=t["columns"])
                html.append(f"<p><b>{t['title']}</b></p>" + df.to_html(index=False, escape=True))
        return "\n".join(html) or "<p>No arena labels yet.</p>"


def arena(run="demo", runs_dir="runs", annotator: str | None = None, models=None, per_family: int = 4,
          interactive: bool | None = None):
    """The blind arena over run ``run``'s policies (all but the pretrained model, or ``models``).

    ``annotator``: your name; "ai" lets the AI judge fill every screen and shows the tables; None is
    "you" when a person is at the notebook, else "ai" (so a batch run leaves results.json behind)."""
    person = has_front_end() if interactive is None else interactive
    who = annotator or ("you" if person else "ai")
    if who == "ai":
        with few_threads():
            try:
                a = Arena(open_run(run, runs_dir), AI, models, per_family)
            except ExploreError as e:
                return Notice("arena", str(e)).static_table()
            a.fill_with_judge()
            return Results(a.write_results(), a)
    return launch("arena", lambda: Arena(open_run(run, runs_dir), who, models, per_family), interactive)
