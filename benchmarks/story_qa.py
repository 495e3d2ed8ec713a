"""What an SFT model misses in story questions: the held-out names, the held-out phrasing, or the question.

    .venv/bin/python benchmarks/story_qa.py --runs runs/seeds/seed-0,runs/order/seed-0 --out benchmarks/results/story_qa.json

Story QA is the family where SFT's held-out accuracy swings most with the seed, the data order and the
CPU's rounding (docs/how-it-works.md, "Why SFT's accuracy moves from seed to seed"). A held-out story
question differs from a training one in two ways at once: its characters are the evaluation half of the
story names, which no stage that trains ever asks about, and it is asked in evaluation's own template. This
asks the same stories in both halves of the names (the same draw with the other half's names, so only the
names differ) and in every template of each role (SFT's "train", the RLHF stages' "rl", evaluation's
"eval"), per question (place, object, color, receiver), greedily as SFT's evaluation does, and sorts each
wrong answer: another of the story's own facts (the giver for the receiver, the object for its colour), a
word of the kind asked that the story does not hold, or something else. It also measures each answer's loss
as SFT trains it: on training names in SFT's phrasings, that is the validation loss of SFT's own distribution,
split by question. And it counts what SFT's token-mean loss weighs: each family's share of the examples and of
the answer tokens. A diagnosis: nothing is chosen on it. Reads the run folders ``benchmarks/seeds.py`` made.
"""
import argparse
import dataclasses
import datetime
import random
import shlex
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds import commit, machine  # noqa: E402  (the same machine record as the runs it reads)

from labkit import world as W  # noqa: E402
from labkit.config import set_threads  # noqa: E402
from labkit.generate import generate  # noqa: E402
from labkit.runs import STAGE_DIRS, Run, atomic_write_json, read_json  # noqa: E402
from labkit.tokenizer import to_prompt_completion  # noqa: E402
from labkit.verifier import normalize, true_score  # noqa: E402

ROLES = ("train", "rl", "eval")
NAMES = ("train", "eval")
# The words each question's answer is drawn from: a wrong answer of that kind is a confusion, not noise.
KINDS = {"place": W.PLACES, "object": W.OBJECTS, "color": W.COLORS}


def stories(world: W.World, n: int, seed: int) -> dict:
    """``n`` stories per half of the names, the same draws: story i of both halves differs in its names alone
    (the halves are the same size, so ``rng.sample`` picks the same positions in each)."""
    if len(world.story_names["train"]) != len(world.story_names["eval"]):
        raise SystemExit("the story-name halves differ in size; the paired draw needs equal halves")
    return {half: [W.story(world.story_names[half], random.Random(f"story-qa-{seed}-{i}")) for i in range(n)]
            for half in NAMES}


def questions(told: list, role: str) -> list[dict]:
    """Every story asked every question in every template of ``role``, as world tasks the verifier scores."""
    out = []
    for text, facts in told:
        for key, roles in W._STORY_Q.items():
            for template in roles[role]:
                q = template.format(a=facts["who"], o=facts["object"])
                out.append({"family": "story_qa", "prompt": f"{text}\nQuestion: {q}", "answer": facts[key],
                            "key": key, "template": template, "facts": facts})
    return out


def wrong_kind(task: dict, response: str) -> str:
    """What a wrong answer said: another of the story's own facts ("story"), a word of the kind asked that the
    story does not hold ("elsewhere"), or neither ("other")."""
    said = normalize(response)
    facts, key = task["facts"], task["key"]
    if key == "receiver":
        if said == facts["who"].lower():
            return "story"
        return "elsewhere" if said.capitalize() in W.NAME_POOL else "other"
    story_words = {facts[k].lower() for k in KINDS} | {facts["feeling"].lower()}
    if said in story_words:
        return "story"
    return "elsewhere" if said in {w.lower() for w in KINDS[key]} else "other"


# Settings that observe or place training without changing what it computes: not part of a model's name.
OBSERVERS = {"seed", "threads", "n_val", "eval_interval", "log_interval", "report_to", "device", "eval_samples",
             "eval_max_new_tokens"}


def settings(sft_config: dict) -> list[str]:
    """The SFT settings a run trained with that are not the cpu preset's (``data_seed=100``, say), observers aside."""
    from labkit import sft
    preset = dataclasses.asdict(sft.config("cpu"))
    return [f"{k}={v}" for k, v in sft_config.items() if k not in OBSERVERS and preset.get(k, "(absent)") != v]


def story_key(task: dict) -> str:
    """A story task's question (place, object, color, receiver), from its template."""
    return next(k for k, roles in W._STORY_Q.items() if any(task["template"] in ts for ts in roles.values()))


def answer_tokens(world: W.World, tok, sft_config: dict) -> dict:
    """Of SFT's training examples (the run's own config), per family and per story question: the % of examples
    and the % of answer tokens. TRL's loss is the mean over answer tokens, so the second is each one's weight."""
    from labkit import sft
    cfg = sft.SFTConfig(**{k: v for k, v in sft_config.items() if k in {f.name for f in dataclasses.fields(sft.SFTConfig)}})
    train, _ = sft.world_tasks(world, cfg)
    groups = [t["family"] + (f"/{story_key(t)}" if t["family"] == "story_qa" else "") for t in train]
    n_tokens = [len(tok(r["completion"], add_special_tokens=False)["input_ids"]) for r in to_prompt_completion(tok, train)]
    total = sum(n_tokens)
    return {g: {"examples": 100 * groups.count(g) / len(groups),
                "tokens": 100 * sum(n for x, n in zip(groups, n_tokens) if x == g) / total} for g in sorted(set(groups))}


@torch.no_grad()
def answer_loss(model, tok, tasks: list[dict]) -> list[float]:
    """Per task, the mean cross-entropy of its demonstrated answer's tokens (EOS included) after its prompt, as SFT
    trains them (``to_prompt_completion``: the chat format, loss on the completion only). On training names in
    SFT's phrasings this is the validation loss of SFT's own distribution, per question."""
    out = []
    for row in to_prompt_completion(tok, tasks):
        p = tok(row["prompt"], add_special_tokens=False)["input_ids"]
        c = tok(row["completion"], add_special_tokens=False)["input_ids"]
        logits = model(torch.tensor([p + c])).logits[0, len(p) - 1:-1]
        out.append(torch.nn.functional.cross_entropy(logits.float(), torch.tensor(c)).item())
    return out


def rates(model, tok, world: W.World, n: int, seed: int, max_new_tokens: int) -> dict:
    """Per half of the names and role: per question, accuracy, what the wrong answers said (% of asked) and the
    answer's loss."""
    told = stories(world, n, seed)
    out = {}
    for half in NAMES:
        for role in ROLES:
            todo = questions(told[half], role)
            gens = generate(model, tok, [t["prompt"] for t in todo], max_new_tokens=max_new_tokens)
            losses = answer_loss(model, tok, todo)
            cell = {}
            for key in W._STORY_Q:
                rows = [(t, g) for t, g in zip(todo, gens) if t["key"] == key]
                loss = [x for t, x in zip(todo, losses) if t["key"] == key]
                right = [bool(true_score(t, g["response"], g["stopped"])) for t, g in rows]
                kinds = [wrong_kind(t, g["response"]) for (t, g), ok in zip(rows, right) if not ok]
                cell[key] = {"accuracy": 100 * sum(right) / len(rows), "asked": len(rows), "loss": sum(loss) / len(loss),
                             **{f"wrong_{k}": 100 * kinds.count(k) / len(rows) for k in ("story", "elsewhere", "other")},
                             "examples": [g["response"] for (t, g), ok in zip(rows, right) if not ok][:5]}
            cell["all"] = {"accuracy": sum(c["accuracy"] for c in cell.values()) / len(W._STORY_Q)}
            out[f"{half} names, {role} templates"] = cell
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, help="comma-separated seed folders of benchmarks/seeds.py runs")
    ap.add_argument("--stories", type=int, default=60, help="stories per half of the names")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    set_threads(args.threads)
    result = {"command": shlex.join(["benchmarks/story_qa.py"] + sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "commit": commit(), "machine": machine(),
              "stories": args.stories, "runs": {}}
    for folder in args.runs.split(","):
        run = Run.at(Path(folder))
        stage = run.path / STAGE_DIRS["sft"]
        cfg = read_json(stage / "config.json")
        tok = AutoTokenizer.from_pretrained(stage / "model")
        model = AutoModelForCausalLM.from_pretrained(stage / "model")
        evald, world = read_json(stage / "eval.json"), run.world()
        result["runs"][folder] = {"seed": cfg["seed"], "data_seed": cfg.get("data_seed"), "settings": settings(cfg),
                                  "sft/accuracy_story_qa": evald.get("sft/accuracy_story_qa"),
                                  "sft/task_accuracy": evald.get("sft/task_accuracy"),
                                  "answer_tokens": answer_tokens(world, tok, cfg),
                                  "cells": rates(model, tok, world, args.stories, cfg["seed"], cfg["eval_max_new_tokens"])}
        print(folder, {k: round(v["all"]["accuracy"], 1) for k, v in result["runs"][folder]["cells"].items()},
              flush=True)
        atomic_write_json(Path(args.out), result)  # after each run: an interrupted diagnosis keeps what it did


if __name__ == "__main__":
    main()
