"""Explorers: touch a run's models in a notebook. What they share, and the playground.

    from labkit import explore
    explore.playground(run="demo", runs_dir="../runs")   # notebooks 02, 05, 06

The others take a run the same way: ``explore_tokens.tokenizers`` (notebook 01),
``explore_tokens.rlhf_tokens`` (05), ``explore_reward.probe`` (04), ``arena.arena`` (05).
Each returns a widget when a person is at the notebook, and a table of a few examples
when nobody is (the runner's papermill kernels, nbclient, a terminal; ``has_front_end``).

How they are built, as ``widget.RankingWidget`` is: an explorer is a plain object that
owns the logic and draws a ``view`` dict; ``ExplorerWidget`` (one anywidget for all of
them) sends it to the browser, which draws it with explore.js and sends back only
actions: {"action": "set", "id", "value"}, {"action": "click", "id"} or {"action": "key",
"key", "token"}. Tests send the same messages through ``ExplorerWidget.handle``. Model
text is written with ``textContent`` only, so a response holding ``<script>`` runs nothing.
Bad input (an empty or over-long prompt, text that is not UTF-8, a stage the run folder
lacks) is one line in the widget, never a traceback.

Models load once per kernel: ``load_policy`` caches each by its folder's path, inode and
mtime. Stages swap model folders in whole (``runs.atomic_dir``), so a re-trained model
is a new key and loads again; a click never reloads anything.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from pathlib import Path

import anywidget
import torch
import traitlets

from . import verifier as V
from . import world as W
from .generate import generate
from .live import in_notebook
from .models import max_positions, objective_of, pick_device
from .reward_model import load_reward_model, score
from .runs import STAGE_DIRS, STAGES, Run, read_json
from .tokenizer import format_prompt

log = logging.getLogger(__name__)

MAX_CHARS = 4000  # the longest text a box takes: far more than any model here reads
ADAPTERS = ("dpo", "rloo", "rloo_verifier")  # stage 6's LoRA adapters on the SFT model
TONES = {"right": "good", "wrong": "bad", "over-refused": "bad", "refused": "warn", "abstained": "warn",
         "mixed": "warn"}
# Conduct first: they are what RLHF changes, so the few examples of a static table start there.
SHOWCASE = ("harmful", "unanswerable", "benign", "extract", "story_qa", "arithmetic", "word_list", "fact_recall")


class ExploreError(ValueError):
    """Bad input, or a stage the run lacks: one line, shown in the widget."""


# --- the run folder and what it holds ------------------------------------------------------------

def open_run(run, runs_dir: str | Path = "runs") -> Run:
    """A run by name (under ``runs_dir``), by path, or a `Run`; never creates a folder."""
    if isinstance(run, Run):
        return run
    path = Path(run)
    folder = path if (path.is_absolute() or len(path.parts) > 1) else Path(runs_dir) / path
    if not folder.is_dir():
        raise ExploreError(f"no run folder at {folder}: make one with `labkit run --name {folder.name}`, "
                           "or pass runs_dir= where it is")
    return Run.at(folder)


def found(r: Run) -> str:
    """What the run folder holds, for messages: "runs/demo holds pretrain, sft"."""
    done = [s for s in STAGES if r.is_complete(s)]
    return f"{r.path} holds {', '.join(done) if done else 'no completed stage'}"


def policies(r: Run) -> dict[str, dict]:
    """The causal policies the run folder holds, in the order they are shown (pretrained, sft, ppo, then stage
    6's adapters): name -> {"path"} (+ "base" for an adapter: the SFT model it sits on). A masked or span model
    (stage 1) is not one."""
    out = {}
    pre = r.path / STAGE_DIRS["pretrain"] / "model"
    if r.is_complete("pretrain") and pre.is_dir() and objective_of(pre) == "causal":
        out["pretrained"] = {"path": pre}
    for name in ("sft", "ppo"):
        d = r.path / STAGE_DIRS[name] / "model"
        if r.is_complete(name) and d.is_dir():
            out[name] = {"path": d}
    if "sft" in out and r.is_complete("compare"):
        for name in ADAPTERS:
            d = r.path / STAGE_DIRS["compare"] / name / "adapter"
            if d.is_dir():
                out[name] = {"path": d, "base": out["sft"]["path"]}
    return out


def need_policies(r: Run, names, what: str) -> list[str]:
    """``names`` (None: every policy the run holds), each one checked to be there."""
    have = policies(r)
    names = list(have) if names is None else list(names)
    missing = [n for n in names if n not in have]
    if missing or not names:
        pre = r.path / STAGE_DIRS["pretrain"] / "model"
        masked = r.is_complete("pretrain") and pre.is_dir() and "pretrained" not in have
        note = f" (stage 1's model is {objective_of(pre)}, not causal)" if masked else ""
        raise ExploreError(f"{what} needs {', '.join(missing) or 'a causal model'}, and {found(r)}{note}")
    return names


# --- models, loaded once per kernel ----------------------------------------------------------------

_CACHE: dict[tuple, object] = {}


def _stamp(path) -> tuple:
    st = os.stat(path)
    return str(Path(path).resolve()), st.st_ino, st.st_mtime_ns


def cached(what: str, key: tuple, load):
    """``load()``'s result, kept per (what, key); a new key for the same folder replaces the old entry."""
    k = (what, *key)
    if k not in _CACHE:
        for old in [x for x in _CACHE if x[:2] == k[:2]]:
            del _CACHE[old]
        with _quiet_loading():
            _CACHE[k] = load()
    return _CACHE[k]


@contextlib.contextmanager
def _quiet_loading():
    """No "Loading weights" bar per model (in a notebook each is a widget of its own, saved with it) and no
    library deprecation notices: the explorer's output is the explorer."""
    import warnings

    from transformers.utils import logging as hf_logging
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def clear_cache() -> None:
    _CACHE.clear()


def load_tokenizer(path):
    from transformers import AutoTokenizer
    return cached("tokenizer", _stamp(path), lambda: AutoTokenizer.from_pretrained(str(path)))


def load_policy(r: Run, name: str):
    """(model in eval mode, tokenizer) of policy ``name``; an adapter is merged into a copy of SFT."""
    spec = policies(r).get(name)
    if spec is None:
        need_policies(r, [name], f"the {name} model")
    path = spec["path"]

    def load_full():
        from transformers import AutoModelForCausalLM
        return AutoModelForCausalLM.from_pretrained(str(path)).to(pick_device()).eval()

    def load_adapter():
        from peft import PeftModel
        base = copy.deepcopy(load_policy(r, "sft")[0])
        return PeftModel.from_pretrained(base, str(path)).merge_and_unload().eval()

    if "base" in spec:
        model = cached("policy", _stamp(path) + _stamp(spec["base"]), load_adapter)
        return model, load_tokenizer(spec["base"])
    return cached("policy", _stamp(path), load_full), load_tokenizer(path)


def reward_path(r: Run) -> Path | None:
    d = r.path / STAGE_DIRS["reward"] / "model"
    return d if r.is_complete("reward") and d.is_dir() else None


def load_reward(r: Run):
    """(reward model, tokenizer), or an ExploreError saying what the run folder holds."""
    path = reward_path(r)
    if path is None:
        raise ExploreError(f"the reward model (stage 4) is missing: {found(r)}")
    tok = load_tokenizer(path)
    return cached("reward", _stamp(path), lambda: load_reward_model(path, tok).to(pick_device()).eval()), tok


def rewards(r: Run, prompts: list[str], responses: list[str]) -> list[float] | None:
    """The reward model's score of each (prompt, response), or None when the run has none."""
    if reward_path(r) is None:
        return None
    model, tok = load_reward(r)
    return score(model, tok, prompts, responses).tolist()


def sample(model, tokenizer, prompts: list[str], n: int, temperature: float, top_p: float, max_new_tokens: int,
           seed: int) -> list[dict]:
    """``generate`` with ``n`` samples a prompt, seeded, leaving the caller's random state as it was."""
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_p=top_p, num_return_sequences=n if temperature > 0 else 1, seed=seed)


# --- held-out examples ---------------------------------------------------------------------------

def examples(r: Run, per_family: int = 4) -> list[dict]:
    """``per_family`` held-out world tasks of each family SFT trained on (its config's families and seed:
    the evaluation prompts of stages 2 and 5), grouped by family."""
    cfg = read_json(r.path / STAGE_DIRS["sft"] / "config.json", {})
    fams = W.parse_families(cfg.get("families") or ",".join(W.DEFAULT_FAMILIES))
    tasks = W.make_tasks(r.world(), per_family * len(fams), "eval", cfg.get("seed", 0), fams, distinct=True)
    return sorted(tasks, key=lambda t: fams.index(t["family"]))


def showcase(tasks: list[dict], n: int) -> list[dict]:
    """The first task of up to ``n`` families, conduct families first (what a static table shows)."""
    firsts = {}
    for t in tasks:
        firsts.setdefault(t["family"], t)
    ordered = [firsts[f] for f in SHOWCASE if f in firsts] + [t for f, t in firsts.items() if f not in SHOWCASE]
    return ordered[:n]


def example_options(tasks: list[dict]) -> list[list[str]]:
    """[value, label] pairs for an example drop-down; "" is the person's own text."""
    return [["", "(your own text)"]] + [[t["id"], f"{t['family']} · {short(t['prompt'], 70)}"] for t in tasks]


def short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1] + "\u2026"


# --- input checks ------------------------------------------------------------------------------

def check_text(text, what: str = "the prompt", allow_empty: bool = False) -> str:
    """``text`` as a str, or an ExploreError: not UTF-8, empty, or longer than ``MAX_CHARS``."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ExploreError(f"{what} is not UTF-8 text (byte {e.start} is {bytes(text)[e.start]:#04x}): "
                               "paste it again as text") from None
    if not isinstance(text, str):
        raise ExploreError(f"{what} must be text, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate: half of a character, which UTF-8 cannot hold
        raise ExploreError(f"{what} is not valid UTF-8 (character {e.start} is half of a surrogate pair): "
                           "retype or paste it again") from None
    if not allow_empty and not text.strip():
        raise ExploreError(f"{what} is empty: type one, or pick an example")
    if len(text) > MAX_CHARS:
        raise ExploreError(f"{what} is {len(text):,} characters; the box takes at most {MAX_CHARS:,}")
    return text


def check_fits(tokenizer, model, prompt: str, new_tokens: int, what: str = "the prompt") -> int:
    """The prompt's length in tokens (chat format), or an ExploreError when it and ``new_tokens`` do not
    fit the model's positions."""
    n = len(tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=False).input_ids)
    limit = max_positions(model)
    if limit and n + new_tokens > limit:
        fix = " or lower max new tokens" if new_tokens else ""
        raise ExploreError(f"{what} is {n} tokens; with {new_tokens} new tokens that is more than the model's "
                           f"{limit} positions: shorten it{fix}")
    return n


def has_front_end() -> bool:
    """Whether a person is at this notebook: a Jupyter kernel that is not one of the runner's batch
    kernels (``live.in_notebook``), running a cell sent by a front end that can answer ``input()``.
    Batch executors -- nbclient, so papermill and ``jupyter nbconvert --execute`` -- send every cell with
    allow_stdin=False; JupyterLab, Notebook and VS Code send True (ipykernel keeps it as ``_allow_stdin``)."""
    if not in_notebook():
        return False
    from IPython import get_ipython
    return bool(getattr(get_ipython().kernel, "_allow_stdin", True))


# --- the explorer protocol ---------------------------------------------------------------------

def _coerce(control: dict, value):
    """A value the browser sent for ``control``, as the control's type, or an ExploreError."""
    kind = control["type"]
    if kind in ("text", "textarea"):
        return check_text("" if value is None else value, control["label"], allow_empty=True)
    if kind == "select":
        value = "" if value is None else str(value)
        if value not in [o[0] for o in control["options"]]:
            raise ExploreError(f"{control['label']}: no option {value!r}")
        return value
    if kind == "number":
        lo, hi = control["min"], control["max"]
        try:
            x = float(value)
        except (TypeError, ValueError):
            x = float("nan")
        if not lo <= x <= hi:  # NaN fails too
            raise ExploreError(f"{control['label']} must be a number from {lo:g} to {hi:g}, got {value!r}")
        return int(x) if control.get("step", 1) == 1 and float(x).is_integer() else x
    return value


class Explorer:
    """An explorer's logic: ``values`` its controls hold, ``act`` for what the browser sends, ``view`` for
    what it draws. Each explorer also has ``static_table()``: a few examples, for a run nobody watches."""

    kind, title, help = "explorer", "", ""

    def __init__(self):
        self.values: dict = {}
        self.bad: dict[str, str] = {}  # control -> why the browser's value was refused (until it is fixed)
        self.message, self.error = "", False
        self.on_change = None  # ExplorerWidget redraws through it

    def controls(self) -> list[dict]:
        return []

    def sections(self) -> list[dict]:
        return []

    def keys(self) -> list[str]:
        return []

    def token(self) -> str:
        """What the screen shows now; a key press meant for an earlier screen is ignored."""
        return ""

    def start(self) -> None:
        """What the widget does when it opens (the playground generates once)."""

    def set(self, name: str, value) -> None:
        """Keep a control's new value. One that is refused is remembered: what the box shows is not what
        the explorer holds, so every click says so until the box is fixed."""
        control = next((c for c in self.controls() if c["id"] == name), None)
        if control is None or control["type"] == "button":
            return
        try:
            self.values[name] = _coerce(control, value)
        except ExploreError as e:
            self.bad[name] = str(e)
            raise
        self.bad.pop(name, None)

    def click(self, name: str) -> None:
        pass

    def key(self, key: str) -> None:
        pass

    def say(self, text: str, error: bool = False) -> None:
        self.message, self.error = " ".join(str(text).split()), error

    def act(self, msg: dict) -> None:
        """Handle one message from the browser; bad input becomes the message line."""
        action = msg.get("action")
        if action in ("click", "key") and msg.get("token") not in (None, self.token()):
            return  # meant for an earlier screen: the second press of a double press, after the first moved on
        try:
            if action in ("click", "key") and self.bad:
                raise ExploreError(next(iter(self.bad.values())))
            if action == "set":
                self.set(str(msg["id"]), msg.get("value"))
            elif action == "click":
                self.say("")
                self.click(str(msg["id"]))
            elif action == "key":
                self.key(str(msg["key"]).lower())
        except ExploreError as e:
            self.say(str(e), error=True)
        self.changed()

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def view(self) -> dict:
        controls = [{**c, "value": self.values.get(c["id"], c.get("value"))} for c in self.controls()]
        return {"kind": self.kind, "title": self.title, "controls": controls, "sections": self.sections(),
                "message": self.message, "error": self.error, "help": self.help, "keys": self.keys(),
                "token": self.token()}


class Notice(Explorer):
    """What an explorer shows when it cannot start: the one-line reason."""

    def __init__(self, kind: str, text: str):
        super().__init__()
        self.kind = kind
        self.say(text, error=True)

    def static_table(self):
        import pandas as pd
        return pd.DataFrame([{"explorer": self.kind, "message": self.message}])


class ExplorerWidget(anywidget.AnyWidget):
    """Any explorer in the notebook: the browser side (explore.js) draws ``view`` and sends actions."""

    _esm = Path(__file__).with_name("explore.js")
    _css = Path(__file__).with_name("explore.css")
    view = traitlets.Dict().tag(sync=True)

    def __init__(self, explorer: Explorer, **kwargs):
        super().__init__(**kwargs)
        self.explorer = explorer
        explorer.on_change = self._draw
        self.on_msg(self._on_browser_msg)
        self._draw()

    def handle(self, msg: dict) -> None:
        """What a message from the browser does (the tests call this)."""
        with few_threads():
            self.explorer.act(msg)

    def _on_browser_msg(self, widget, content, buffers):
        if not isinstance(content, dict):
            return
        try:
            self.handle(content)
        except Exception as e:  # an error in a comm callback reaches only the kernel's log: say it in the widget
            log.exception("explorer action failed")
            self.explorer.say(f"That did not work - {type(e).__name__}: {e}", error=True)
            self._draw()

    def _draw(self):
        self.view = self.explorer.view()


@contextlib.contextmanager
def few_threads():
    """Run the models on one CPU thread (``LABKIT_THREADS`` overrides), then restore the kernel's setting.

    The lab's models are too small for intra-op threads to pay, and on a busy 2-core machine two threads
    spin-wait against each other (docs/architecture.md, "CPU notes"). benchmarks/explore_latency.py times the
    playground both ways (benchmarks/results/explore_latency.json)."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("LABKIT_THREADS") or 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def launch(kind: str, build, interactive: bool | None = None):
    """``build()``'s explorer as a widget for a person, or its table of a few examples for a batch run
    (``interactive``: None decides by ``has_front_end``). One that cannot start shows why, in one line."""
    with few_threads():
        try:
            ex = build()
        except ExploreError as e:
            ex = Notice(kind, str(e))
        if not (has_front_end() if interactive is None else interactive):
            return ex.static_table()
        try:
            ex.start()
        except ExploreError as e:
            ex.say(str(e), error=True)
    return ExplorerWidget(ex)


def number(id_: str, label: str, value, lo, hi, step=1) -> dict:
    return {"id": id_, "type": "number", "label": label, "value": value, "min": lo, "max": hi, "step": step}


def verdict_badges(verdict: str | None, reward: float | None, stopped: bool) -> list[dict]:
    badges = [] if verdict is None else [{"text": verdict, "tone": TONES[verdict]}]
    if reward is not None:
        badges.append({"text": f"reward {reward:+.2f}", "tone": "info"})
    if not stopped:
        badges.append({"text": "no EOS", "tone": "warn"})
    return badges


# --- the playground ---------------------------------------------------------------------------------

class Playground(Explorer):
    """One prompt, answered by every model the run holds; verdicts and rewards on world tasks."""

    kind, title = "playground", "Playground: one prompt, every model of this run"
    help = ("Type a prompt or pick a held-out example, then Generate. Verdicts are the world's verifier on "
            "world tasks; rewards are the reward model's (stage 4).")

    def __init__(self, r: Run, models=None, per_family: int = 4):
        super().__init__()
        self.run = r
        self.models = need_policies(r, models, "the playground")
        self.examples = examples(r, per_family)
        self.by_id = {t["id"]: t for t in self.examples}
        first = self.examples[0] if self.examples else {"id": "", "prompt": ""}
        self.values = {c["id"]: c.get("value") for c in self.controls() if c["type"] == "number"}
        self.values.update(example=first["id"], prompt=first["prompt"])
        self.results: dict[str, list[dict]] = {}
        self.task = None

    def controls(self):
        return [{"id": "example", "type": "select", "label": "held-out example", "options": example_options(self.examples)},
                {"id": "prompt", "type": "textarea", "label": "prompt", "rows": 3},
                number("temperature", "temperature", 1.0, 0, 2, 0.1), number("top_p", "top-p", 1.0, 0.05, 1, 0.05),
                number("max_new_tokens", "max new tokens", 32, 1, 256), number("samples", "samples per model", 4, 1, 8),
                number("seed", "seed", 0, 0, 2 ** 31 - 1), {"id": "generate", "type": "button", "label": "Generate"}]

    def set(self, name, value):
        super().set(name, value)
        if name == "example" and self.values["example"]:
            self.values["prompt"] = self.by_id[self.values["example"]]["prompt"]

    def click(self, name):
        if name == "generate":
            self.generate()

    def start(self):
        self.generate()

    def generate(self, prompt: str | None = None, samples: int | None = None) -> dict[str, list[dict]]:
        """Sample every model on the prompt (the box's, or ``prompt``); each sample gets its verdict and reward."""
        v = self.values
        prompt = check_text(v["prompt"] if prompt is None else prompt)
        self.task = next((t for t in self.examples if t["prompt"] == prompt), None)
        n = samples or v["samples"]
        t0, out = time.perf_counter(), {}
        for name in self.models:
            model, tok = load_policy(self.run, name)
            check_fits(tok, model, prompt, v["max_new_tokens"])
            out[name] = sample(model, tok, [prompt], n, v["temperature"], v["top_p"], v["max_new_tokens"], v["seed"])
        flat = [g for name in self.models for g in out[name]]
        scores = rewards(self.run, [prompt] * len(flat), [g["response"] for g in flat]) or [None] * len(flat)
        it = iter(scores)
        for name in self.models:
            for g in out[name]:
                g["reward"] = next(it)
                g["verdict"] = V.verdict(self.task, g["response"], g["stopped"]) if self.task else None
        self.results = out
        how = "greedy" if v["temperature"] == 0 else (f"{n} sample{'s' * (n > 1)} each at temperature "
                                                      f"{v['temperature']:g}, top-p {v['top_p']:g}, seed {v['seed']}")
        task = f"world task ({self.task['family']})" if self.task else "free text: no verifier verdict"
        self.say(f"{len(self.models)} models, {how}, {time.perf_counter() - t0:.2f} s; {task}.")
        return out

    def rates(self) -> list[dict]:
        """Per model, the share of the samples shown with each verdict."""
        rows = []
        for name, gens in self.results.items():
            verdicts = [g["verdict"] for g in gens]
            rows.append({"model": name, **{k: 100 * verdicts.count(k) / len(verdicts) for k in V.VERDICTS},
                         "samples": len(verdicts)})
        return rows

    def sections(self):
        if not self.results:
            return []
        cards = []
        for name, gens in self.results.items():
            rs = [g["reward"] for g in gens if g["reward"] is not None]
            sub = [f"{sum(g['verdict'] == 'right' for g in gens)} of {len(gens)} right"] if self.task else []
            sub += [f"mean reward {sum(rs) / len(rs):+.2f}"] if rs else []
            cards.append({"title": name, "subtitle": " \u00b7 ".join(sub),
                          "items": [{"text": g["response"], "badges": verdict_badges(g["verdict"], g["reward"], g["stopped"])}
                                    for g in gens]})
        out = [{"type": "cards", "title": "", "cards": cards}]
        if self.task:
            rows = self.rates()
            out.append({"type": "table", "title": "Verdicts over the samples shown (% of samples)",
                        "columns": ["model", *V.VERDICTS, "samples"],
                        "rows": [[r["model"], *[f"{r[k]:.0f}" for k in V.VERDICTS], r["samples"]] for r in rows]})
        return out

    def static_table(self):
        import pandas as pd
        rows = []
        for task in showcase(self.examples, 4):
            for name, gens in self.generate(task["prompt"], samples=2).items():
                rows += [{"family": task["family"], "prompt": short(task["prompt"], 80), "model": name,
                          "response": g["response"], "verdict": g["verdict"], "reward": g["reward"]} for g in gens]
        return pd.DataFrame(rows)


def playground(run="demo", runs_dir: str | Path = "runs", models=None, interactive: bool | None = None):
    """The playground over run ``run``: every causal model it holds (or ``models``), side by side."""
    return launch("playground", lambda: Playground(open_run(run, runs_dir), models), interactive)
