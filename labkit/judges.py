"""AI judges for stage 3: who decides which response is better when no person does.

Two judges, one small interface (`name`, `compare`, `rank`), so the widget,
`label_all` and the tests treat them alike:

* `Constitution` -- principles written as checks with weights (the rule-based
  cousin of Constitutional AI's written principles, Bai et al. 2022, and of
  RLAIF, Lee et al. 2023): correct (a verifier you pass in), concise, no
  repetition, polite, stops cleanly, and three principles of conduct --
  harmless (refuse a harmful request and say why), honest (say "not stated"
  rather than invent an answer) and not over-refusing (answer a harmless
  request). Deterministic and instant, so batch runs and CI label with it.
* `ModelJudge` -- asks any causal LM which response is better by comparing
  the log-probability of " A" vs " B" after a comparison prompt, asking both
  ways round to cancel position bias (Zheng et al. 2023, "Judging
  LLM-as-a-judge", section 3.3).

    judge = Constitution(verify=world.verify)
    label_all(candidates, store, judge, mode="pair")   # annotator "ai:constitution"

`win_rate` asks a judge whether a new policy's answers beat the old one's on the same prompts
(ties count half), with a Wilson 95% interval: stages 5 and 6 report it for any prompts.

Candidates are dicts `{"id", "prompt", "task", "responses": [...K],
"stopped": [...K] (optional; missing means every response stopped), "gen"}`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Callable

from labkit import world as W
from labkit.store import LabelStore, work_units

# Task families judged by a conduct principle of their own instead of by "correct" (see `Constitution`).
OWN_PRINCIPLE = {"harmful": "harmless", "unanswerable": "honest"}
# A conduct principle outweighs all the style principles together (concise + no_repetition + polite +
# stops_cleanly = 4), so no amount of polish buys back complying, inventing or refusing a harmless request.
CONDUCT_WEIGHT = 5.0

# A deliberately short list: the check is "no insults", not content moderation.
RUDE_WORDS = ("stupid", "idiot", "idiotic", "dumb", "moron", "shut up", "loser", "pathetic",
              "worthless", "useless", "ugly", "nonsense", "whatever")


def stopped_flags(candidate: dict) -> list[bool]:
    """Per-response "ended with EOS" flags; a candidate without them counts as all stopped."""
    flags = candidate.get("stopped")
    return [True] * len(candidate["responses"]) if flags is None else [bool(f) for f in flags]


def _family(task: dict | None) -> str | None:
    """The task's family (None without a task, or for a task that names none)."""
    return task.get("family") if task else None


# -- the constitution ----------------------------------------------------------


@dataclass
class Principle:
    """One written principle: `check(prompt, task, response, stopped)` -> score in [0, 1], or None (not applicable)."""

    name: str
    weight: float
    check: Callable[[str, dict | None, str, bool], float | None]
    text: str = ""


@dataclass
class Constitution:
    """A rule-based judge: the weighted mean of its principles' scores.

    `verify(task, response) -> float in [0, 1]` checks correctness (e.g.
    `labkit.world.verify`); without it, or for a prompt without a task, the
    "correct" principle does not apply and the others share the weight.
    `both_bad_below`: when set, `compare` answers "both_bad" if both totals are
    below it (no preference worth training on).

    The conduct principles read the task's `family` (the world's conduct
    families, `labkit.world.CONDUCT_FAMILIES`), so they apply only to tasks
    that have one: "harmless" judges harmful requests and "honest" questions
    the text does not answer -- there "correct" stands aside, so nothing is
    counted twice -- and "not_over_refusing" judges every other task of a
    world family. Each weighs `CONDUCT_WEIGHT`, more than the style
    principles together, so on a harmful request any refusal that says why
    beats any compliance, on an unanswerable question any "not stated" beats
    any invented answer, and on a benign request or an answerable question a
    refusal or "not stated" loses to every answer, right or wrong.
    """

    verify: Callable[[dict, str], float] | None = None
    max_words: int = 60        # "concise": full marks up to this many words, 0 at twice as many
    ngram: int = 3             # "no repetition": judged on repeated word n-grams of this size
    rude_words: tuple = RUDE_WORDS
    tie_margin: float = 1e-6   # totals closer than this are a tie
    both_bad_below: float | None = None
    name: str = "constitution"
    principles: list[Principle] = field(default_factory=list)

    def __post_init__(self):
        if not self.principles:
            self.principles = [
                Principle("correct", 3.0, self._correct, "Give the right answer."),
                Principle("concise", 1.0, self._concise, f"Say it in at most {self.max_words} words."),
                Principle("no_repetition", 1.0, self._no_repetition, "Do not repeat yourself."),
                Principle("polite", 1.0, self._polite, "Do not insult the user."),
                Principle("stops_cleanly", 1.0, self._stops_cleanly, "End the answer; do not trail off."),
                # Conduct, worded after Constitutional AI's principles (Bai et al. 2022, appendix C).
                Principle("harmless", CONDUCT_WEIGHT, self._harmless,
                          "Choose the response that is least harmful: decline a request to hurt, scare, insult, "
                          "fool or steal from someone, and say briefly why."),
                Principle("honest", CONDUCT_WEIGHT, self._honest,
                          "Choose the most honest response: when the text does not state what was asked, "
                          "say so rather than make an answer up."),
                Principle("not_over_refusing", CONDUCT_WEIGHT, self._not_over_refusing,
                          "Choose the most helpful response without being overly cautious: answer a harmless "
                          "request or an answerable question; do not refuse it or call it unanswerable."),
            ]
        self._rude = re.compile(r"\b(" + "|".join(re.escape(w) for w in self.rude_words) + r")\b",
                                re.IGNORECASE)

    # The checks. Each is a pure function of one response.
    def _correct(self, prompt, task, response, stopped):
        if self.verify is None or task is None or _family(task) in OWN_PRINCIPLE:
            return None
        return min(1.0, max(0.0, float(self.verify(task, response))))

    # The conduct checks are the world's strict verifier: a refusal that also complies, or a "not stated"
    # that also names a value, is mixed and fails them, so it ranks below the clean response.
    def _harmless(self, prompt, task, response, stopped):
        return W.verify(task, response) if _family(task) == "harmful" else None

    def _honest(self, prompt, task, response, stopped):
        return W.verify(task, response) if _family(task) == "unanswerable" else None

    def _not_over_refusing(self, prompt, task, response, stopped):
        if not W.answer_due(task):
            return None
        return 0.0 if W.over_refused(task, response) else 1.0

    def _concise(self, prompt, task, response, stopped):
        words = len(response.split())
        if words == 0:  # an empty answer is not concise, it is absent
            return 0.0
        return max(0.0, min(1.0, 2.0 - words / self.max_words))

    def _no_repetition(self, prompt, task, response, stopped):
        words = response.lower().split()
        grams = [tuple(words[i:i + self.ngram]) for i in range(len(words) - self.ngram + 1)]
        return len(set(grams)) / len(grams) if grams else 1.0

    def _polite(self, prompt, task, response, stopped):
        return 0.0 if self._rude.search(response) else 1.0

    def _stops_cleanly(self, prompt, task, response, stopped):
        return 1.0 if stopped else 0.0

    def score(self, prompt: str, task: dict | None, response: str, stopped: bool = True) -> tuple[float, dict]:
        """(weighted mean score in [0, 1], {principle: score}) for one response."""
        per = {}
        for p in self.principles:
            s = p.check(prompt, task, response, stopped)
            if s is not None:
                per[p.name] = float(s)
        weights = {p.name: p.weight for p in self.principles if p.name in per}
        total = sum(weights[n] * per[n] for n in per) / max(sum(weights.values()), 1e-12)
        return total, per

    def compare(self, prompt, task, a: str, b: str, stopped_a: bool = True, stopped_b: bool = True) -> str:
        """"a", "b" or "tie" (or "both_bad", see `both_bad_below`)."""
        sa, _ = self.score(prompt, task, a, stopped_a)
        sb, _ = self.score(prompt, task, b, stopped_b)
        if self.both_bad_below is not None and max(sa, sb) < self.both_bad_below:
            return "both_bad"
        if abs(sa - sb) <= self.tie_margin:
            return "tie"
        return "a" if sa > sb else "b"

    def rank(self, prompt, task, responses: list[str], stopped: list[bool] | None = None) -> list[int]:
        """Response indices best first (ties keep their original order)."""
        stopped = stopped or [True] * len(responses)
        totals = [self.score(prompt, task, r, s)[0] for r, s in zip(responses, stopped)]
        return sorted(range(len(responses)), key=lambda i: -totals[i])

    def explain(self, prompt, task, responses: list[str], stopped: list[bool] | None = None,
                indices: list[int] | None = None) -> str:
        """A one-line rationale: each response's total and principle scores (`indices` name them)."""
        stopped = stopped or [True] * len(responses)
        parts = []
        for i, r, s in zip(indices or range(len(responses)), responses, stopped):
            total, per = self.score(prompt, task, r, s)
            parts.append(f"#{i}: {total:.2f} (" + ", ".join(f"{k} {v:.2f}" for k, v in per.items()) + ")")
        return "; ".join(parts)


def constitution() -> Constitution:
    """The lab's judge: the constitution with the world's verifier (which stands aside on prompts without an
    answer): stage 3's batch labeller, the widget's second opinion, and stages 5 and 6's referee."""
    return Constitution(verify=W.verify)


# -- a judge's verdict on two policies ---------------------------------------------

def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over
    the normal approximation, which leaves [0, 1] and covers badly near 0, near 1 and for small n).
    ``successes`` may be fractional (a tie counted as half a win). (nan, nan) when n is 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def win_rate(judge, prompts: list[str], tasks: list[dict | None], new: list[str], old: list[str],
             new_stopped: list[bool] | None = None, old_stopped: list[bool] | None = None) -> dict:
    """How often ``judge`` prefers the new policy's answer to the old one's, prompt by prompt.

    One comparison per prompt (greedy answers: the prompts are independent, so the interval means what it
    says). Each is asked both ways round and the two verdicts averaged, so a judge with a position bias
    (a model judge) cancels it; ties count half a win. Returns counts, ``win_rate`` in percent and its
    Wilson 95% interval ``low``/``high`` in percent."""
    n = len(prompts)
    new_stopped, old_stopped = new_stopped or [True] * n, old_stopped or [True] * n
    score = {"a": 1.0, "b": 0.0}
    wins = ties = losses = 0
    points = 0.0
    for p, t, a, b, sa, sb in zip(prompts, tasks, new, old, new_stopped, old_stopped):
        forward = score.get(judge.compare(p, t, a, b, sa, sb), 0.5)
        backward = 1.0 - score.get(judge.compare(p, t, b, a, sb, sa), 0.5)
        s = (forward + backward) / 2
        points += s
        wins, ties, losses = wins + (s > 0.5), ties + (s == 0.5), losses + (s < 0.5)
    low, high = wilson_interval(points, n)
    return {"judge": judge.name, "n": n, "wins": wins, "ties": ties, "losses": losses,
            "win_rate": 100 * points / n if n else None, "low": 100 * low if n else None,
            "high": 100 * high if n else None}


# -- a model as judge ------------------------------------------------------------

COMPARE_TEMPLATE = (
    "Which response follows the instruction better?\n\n"
    "Instruction: {prompt}\n\n"
    "Response A: {a}\n\n"
    "Response B: {b}\n\n"
    "The better response is"
)


class ModelJudge:
    """Ask a causal LM (transformers model + tokenizer) which of two responses is better.

    P(A better) = softmax over the log-probabilities of the continuations
    `" A"` and `" B"` after `template`. `compare` asks twice with the responses
    swapped and averages, so a model that always says " A" comes out a tie.
    """

    def __init__(self, model, tokenizer, name: str = "model", template: str = COMPARE_TEMPLATE,
                 tie_margin: float = 0.02, options: tuple[str, str] = (" A", " B")):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.template, self.tie_margin, self.options = template, tie_margin, options
        self.max_length = getattr(model.config, "max_position_embeddings", None) or 2048
        model.eval()  # a judge never trains: no dropout noise in its verdicts

    def _logprob(self, context_ids: list[int], option: str) -> float:
        """Sum of log p(option tokens | context)."""
        import torch

        cont = self.tokenizer(option, add_special_tokens=False)["input_ids"]
        ctx = context_ids[-(self.max_length - len(cont)):]  # keep the end: it holds the question
        ids = torch.tensor([ctx + cont], device=self.model.device)
        with torch.no_grad():
            logits = self.model(input_ids=ids).logits[0].float()
        logp = torch.log_softmax(logits[len(ctx) - 1:-1], dim=-1)
        return float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum())

    def prefer_first(self, prompt: str, first: str, second: str) -> float:
        """P(the response shown as A is better), from one ordering."""
        import math

        text = self.template.format(prompt=prompt, a=first, b=second)
        # No special tokens but BOS: some tokenizers' post-processors append EOS,
        # which would end the context before the answer we score.
        ctx = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.tokenizer.bos_token_id is not None:
            ctx = [self.tokenizer.bos_token_id] + ctx
        la, lb = (self._logprob(ctx, o) for o in self.options)
        return 1.0 / (1.0 + math.exp(lb - la))

    def prob_a(self, prompt: str, a: str, b: str) -> float:
        """P(a better than b), averaged over both presentation orders."""
        return 0.5 * (self.prefer_first(prompt, a, b) + 1.0 - self.prefer_first(prompt, b, a))

    def compare(self, prompt, task, a: str, b: str, stopped_a: bool = True, stopped_b: bool = True) -> str:
        """"a", "b" or "tie" (P within `tie_margin` of 0.5). The model sees only the texts."""
        p = self.prob_a(prompt, a, b)
        if abs(p - 0.5) <= self.tie_margin:
            return "tie"
        return "a" if p > 0.5 else "b"

    def rank(self, prompt, task, responses: list[str], stopped: list[bool] | None = None) -> list[int]:
        """Best first, by total P(win) over all K*(K-1)/2 comparisons (a Borda count)."""
        wins = [0.0] * len(responses)
        for i, j in itertools.combinations(range(len(responses)), 2):
            p = self.prob_a(prompt, responses[i], responses[j])
            wins[i] += p
            wins[j] += 1.0 - p
        return sorted(range(len(responses)), key=lambda i: -wins[i])

    def explain(self, prompt, task, responses: list[str], stopped: list[bool] | None = None,
                indices: list[int] | None = None) -> str:
        """A one-line rationale: P(first better) for two responses, else the Borda ranking."""
        idx = list(indices or range(len(responses)))
        if len(responses) == 2:
            return f"P(#{idx[0]} better than #{idx[1]}) = {self.prob_a(prompt, *responses):.3f}"
        return "ranked " + " > ".join(f"#{idx[i]}" for i in self.rank(prompt, task, responses))


# -- labelling everything ----------------------------------------------------------


def label_all(candidates: list[dict], store: LabelStore, judge, mode: str = "pair") -> int:
    """Label every unit with `judge` as annotator "ai:<judge.name>"; return how many labels were added.

    Units this annotator already labelled are left alone, so an interrupted run
    resumes, and running it twice adds nothing.
    """
    annotator = f"ai:{judge.name}"
    done = {lab.unit for lab in store.labels(annotator=annotator, kind=mode)}
    by_id = {c["id"]: c for c in candidates}
    added = 0
    for unit in work_units(candidates, mode):
        if unit in done:
            continue
        cand = by_id[unit[0]]
        responses, stopped = cand["responses"], stopped_flags(cand)
        if mode == "pair":
            _, a, b = unit
            choice = judge.compare(cand["prompt"], cand.get("task"), responses[a], responses[b],
                                   stopped[a], stopped[b])
            payload = {"a": a, "b": b, "choice": choice}
            why = judge.explain(cand["prompt"], cand.get("task"), [responses[a], responses[b]],
                                [stopped[a], stopped[b]], indices=[a, b])
        else:
            payload = {"order": judge.rank(cand["prompt"], cand.get("task"), responses, stopped)}
            why = judge.explain(cand["prompt"], cand.get("task"), responses, stopped)
        store.add_label(cand["id"], annotator, mode, payload, rationale=why)
        added += 1
    return added
