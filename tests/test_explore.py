"""Tests for labkit.explore: finding and caching a run's models, input checks, the widget protocol and the
playground, driven through the messages the browser sends (ExplorerWidget.handle)."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import labkit.explore
from labkit import explore
from labkit import world as W
from labkit.explore import ExplorerWidget, ExploreError, Playground
from labkit.runs import STAGE_DIRS, Run, atomic_dir

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


def partial_run(src: Path, dst: Path, stages) -> Path:
    """A copy of run folder ``src`` holding only ``stages`` (folders and completion marks)."""
    dst.mkdir(parents=True)
    manifest = json.loads((src / "run.json").read_text())
    manifest["stages"] = {s: v for s, v in manifest["stages"].items() if s in stages}
    (dst / "run.json").write_text(json.dumps(manifest))
    for s in stages:
        shutil.copytree(src / STAGE_DIRS[s], dst / STAGE_DIRS[s])
    return dst


def widget(explorer) -> ExplorerWidget:
    explorer.start()
    return ExplorerWidget(explorer)


def section(view, kind):
    return [s for s in view["sections"] if s["type"] == kind]


def test_finds_every_model_the_run_holds(explore_run):
    r = Run.at(explore_run)
    assert list(explore.policies(r)) == ["pretrained", "sft", "ppo", "dpo", "rloo", "rloo_verifier"]
    assert explore.policies(r)["dpo"]["base"] == explore_run / "02_sft" / "model"
    assert explore.reward_path(r) == explore_run / "04_reward" / "model"
    assert explore.open_run("explore", explore_run.parent).path == explore_run  # by name, or by path
    assert explore.open_run(str(explore_run)).path == explore_run


def test_a_missing_stage_is_one_line_listing_what_was_found(explore_run, tmp_path):
    early = partial_run(explore_run, tmp_path / "early", ["pretrain", "sft"])
    w = explore.playground(run=early, interactive=True)   # pretrained and SFT are enough for the playground
    assert list(w.explorer.results) == ["pretrained", "sft"] and not w.view["error"]
    msg = explore.playground(run=early, models=["ppo"], interactive=True).view["message"]
    assert msg == f"the playground needs ppo, and {early} holds pretrain, sft"
    nothing = explore.playground(run="nope", runs_dir=tmp_path, interactive=True).view
    assert nothing["error"] and nothing["message"].startswith(f"no run folder at {tmp_path / 'nope'}")
    assert nothing["sections"] == [] and "\n" not in nothing["message"]
    # Without a front end the same line is the table.
    table = explore.playground(run=early, models=["ppo"], interactive=False)
    assert table.to_dict("records") == [{"explorer": "playground", "message": msg}]


def test_a_masked_pretrained_model_is_named_as_not_causal(tmp_path):
    from labkit import pretrain
    pretrain.run(pretrain.config("smoke", objective="masked", max_steps=2), run="m", runs_dir=str(tmp_path),
                 progress_bar=False, live=False)
    view = explore.playground(run="m", runs_dir=tmp_path, interactive=True).view
    assert view["message"] == (f"the playground needs a causal model, and {tmp_path / 'm'} holds pretrain "
                               "(stage 1's model is masked, not causal)")


def test_models_load_once_and_reload_when_a_stage_rewrites_them(explore_run, tmp_path, monkeypatch):
    run = partial_run(explore_run, tmp_path / "r", ["pretrain", "sft"])
    r = Run.at(run)
    explore.clear_cache()
    loads = []
    import transformers
    original = transformers.AutoModelForCausalLM.from_pretrained

    def counting(*args, **kwargs):
        loads.append(str(args[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", counting)
    w = widget(Playground(Run.at(run)))
    assert len(loads) == 2                         # pretrained and SFT, once each
    for _ in range(3):
        w.handle({"action": "click", "id": "generate"})
    assert len(loads) == 2 and explore.load_policy(r, "sft")[0] is explore.load_policy(r, "sft")[0]
    sft = run / "02_sft" / "model"
    with atomic_dir(sft) as d:                    # what a re-run of stage 2 does: a new folder, swapped in whole
        for f in (run / "01_pretrain" / "model").iterdir():
            shutil.copy(f, d / f.name)
    w.handle({"action": "click", "id": "generate"})
    assert loads[2:] == [str(sft)]                 # only the rewritten model loads again
    assert sum(k[0] == "policy" for k in labkit.explore._CACHE) == 2  # the old SFT model is dropped


def test_playground_answers_with_every_model_and_marks_verdicts(explore_run):
    r = Run.at(explore_run)
    w = widget(Playground(r))
    v = w.view
    names = ["pretrained", "sft", "ppo", "dpo", "rloo", "rloo_verifier"]
    assert [c["title"] for c in section(v, "cards")[0]["cards"]] == names
    assert [c["id"] for c in v["controls"]] == ["example", "prompt", "temperature", "top_p", "max_new_tokens",
                                                "samples", "seed", "generate"]
    task = w.explorer.by_id[v["controls"][0]["value"]]
    assert v["controls"][1]["value"] == task["prompt"]
    for name, gens in w.explorer.results.items():
        assert len(gens) == 4
        for g in gens:
            assert g["verdict"] == W.verdict(task, g["response"], g["stopped"])
    for card in section(v, "cards")[0]["cards"]:
        for item, g in zip(card["items"], w.explorer.results[card["title"]]):
            assert item["text"] == g["response"]
            assert item["badges"][0] == {"text": g["verdict"], "tone": explore.TONES[g["verdict"]]}
            assert item["badges"][1]["text"] == f"reward {g['reward']:+.2f}"
    rates = section(v, "table")[0]
    assert rates["columns"] == ["model", *W.VERDICTS, "samples"]
    for row in rates["rows"]:
        assert sum(float(x) for x in row[1:-1]) == pytest.approx(100) and row[-1] == 4
    # The rewards are the reward model's, through the one scoring function.
    from labkit.reward_model import score
    rm, tok = explore.load_reward(r)
    first = w.explorer.results["sft"][0]
    assert first["reward"] == pytest.approx(score(rm, tok, [task["prompt"]], [first["response"]])[0].item(), abs=1e-5)


def test_playground_controls(explore_run):
    w = widget(Playground(Run.at(explore_run), models=["sft", "ppo"]))
    harmful = next(t for t in w.explorer.examples if t["family"] == "harmful")
    w.handle({"action": "set", "id": "example", "value": harmful["id"]})
    assert w.view["controls"][1]["value"] == harmful["prompt"]
    for name, value in (("samples", "2"), ("temperature", "0.7"), ("top_p", "0.9"), ("max_new_tokens", "6"), ("seed", "3")):
        w.handle({"action": "set", "id": name, "value": value})
    w.handle({"action": "click", "id": "generate"})
    first = {n: [g["response"] for g in gens] for n, gens in w.explorer.results.items()}
    assert all(len(g) == 2 for g in first.values()) and all(g["n_tokens"] <= 6 for gs in w.explorer.results.values()
                                                              for g in gs)
    assert "2 samples each at temperature 0.7, top-p 0.9, seed 3" in w.view["message"]
    assert "world task (harmful)" in w.view["message"]
    before = torch.get_rng_state()
    w.handle({"action": "click", "id": "generate"})     # same seed: same samples, and the kernel's RNG untouched
    assert {n: [g["response"] for g in gens] for n, gens in w.explorer.results.items()} == first
    assert torch.equal(torch.get_rng_state(), before)
    w.handle({"action": "set", "id": "temperature", "value": 0})    # greedy: one response per model
    w.handle({"action": "click", "id": "generate"})
    assert all(len(g) == 1 for g in w.explorer.results.values()) and "greedy" in w.view["message"]
    # Free text: no verdict, and no verdict table.
    w.handle({"action": "set", "id": "example", "value": ""})
    w.handle({"action": "set", "id": "prompt", "value": "Say something."})
    w.handle({"action": "click", "id": "generate"})
    assert all(g["verdict"] is None for gs in w.explorer.results.values() for g in gs)
    assert section(w.view, "table") == [] and "free text: no verifier verdict" in w.view["message"]


@pytest.mark.parametrize("name,value,says", [
    ("prompt", "   ", "the prompt is empty: type one, or pick an example"),
    ("prompt", "x" * (explore.MAX_CHARS + 1), f"prompt is {explore.MAX_CHARS + 1:,} characters; the box takes at most"),
    ("prompt", "word " * 300, "positions: shorten it or lower max new tokens"),
    ("prompt", "caf\udce9", "prompt is not valid UTF-8 (character 3 is half of a surrogate pair)"),
    ("samples", "9", "samples per model must be a number from 1 to 8, got '9'"),
    ("temperature", "hot", "temperature must be a number from 0 to 2, got 'hot'"),
])
def test_bad_input_is_one_line_in_the_widget(explore_run, name, value, says):
    w = widget(Playground(Run.at(explore_run), models=["sft"]))
    shown = w.explorer.results
    w.handle({"action": "set", "id": name, "value": value})
    w.handle({"action": "click", "id": "generate"})
    v = w.view
    assert v["error"] and says in v["message"] and "\n" not in v["message"] and "Traceback" not in v["message"]
    assert w.explorer.results is shown   # what was on screen stays


def test_text_checks():
    assert explore.check_text("café".encode()) == "café"
    with pytest.raises(ExploreError, match=r"not UTF-8 text \(byte 3 is 0xff\)"):
        explore.check_text(b"caf\xff")
    with pytest.raises(ExploreError, match="must be text, got int"):
        explore.check_text(3)


def test_model_text_is_passed_as_text_never_html(explore_run, monkeypatch):
    w = widget(Playground(Run.at(explore_run), models=["sft"]))
    monkeypatch.setattr(labkit.explore, "generate", lambda *a, **k: [{"response": XSS, "stopped": True,
                                                                     "n_tokens": 3, "instruction": ""}])
    w.handle({"action": "click", "id": "generate"})
    assert section(w.view, "cards")[0]["cards"][0]["items"][0]["text"] == XSS
    esm = w._esm  # the trait the browser receives: explore.js's text
    assert esm == (Path(labkit.explore.__file__).parent / "explore.js").read_text()
    assert "export default { render }" in esm and ".lx-card" in w._css and "textContent" in esm
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment", esm)
    assert "data-lm-suppress-shortcuts" in esm


def test_an_unexpected_error_is_shown_not_raised(explore_run, monkeypatch):
    w = widget(Playground(Run.at(explore_run), models=["sft"]))

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(w.explorer, "generate", boom)
    w._on_browser_msg(w, {"action": "click", "id": "generate"}, [])   # what a browser click runs
    assert w.view["message"] == "That did not work - RuntimeError: disk full" and w.view["error"]


def test_static_table_when_nobody_is_at_the_notebook(explore_run):
    table = explore.playground(run=explore_run, models=["sft", "ppo"], interactive=False)
    assert list(table.columns) == ["family", "prompt", "model", "response", "verdict", "reward"]
    assert list(table["family"].unique()) == ["harmful", "unanswerable", "benign", "extract"]
    assert len(table) == 4 * 2 * 2 and set(table["verdict"]) <= set(W.VERDICTS)


class _Kernel:
    def __init__(self, allow_stdin):
        self._allow_stdin = allow_stdin


def test_front_end_detection(monkeypatch):
    import IPython

    def shell(allow_stdin):
        cls = type("ZMQInteractiveShell", (), {})
        sh = cls()
        sh.kernel = _Kernel(allow_stdin)
        return sh

    monkeypatch.delenv("LABKIT_PROGRESS_FILE", raising=False)
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell(True))
    assert explore.has_front_end()                 # JupyterLab: a cell that may ask for input
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell(False))
    assert not explore.has_front_end()             # nbclient (papermill, nbconvert --execute)
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell(True))
    monkeypatch.setenv("LABKIT_PROGRESS_FILE", "x")
    assert not explore.has_front_end()             # the runner's kernels
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    monkeypatch.delenv("LABKIT_PROGRESS_FILE")
    assert not explore.has_front_end()             # a terminal


def test_papermill_run_shows_the_table_not_a_widget(explore_run, tmp_path, monkeypatch):
    """A real notebook executed by papermill (nbclient), outside the runner: the cell's output is the table."""
    import nbformat
    import papermill as pm
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"from labkit import explore\n"
                                          f"explore.playground(run={str(explore_run)!r}, models=['sft'])")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    repo = str(Path(labkit.explore.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", repo)  # the kernel imports this labkit
    monkeypatch.delenv("LABKIT_PROGRESS_FILE", raising=False)  # not the runner: plain papermill
    pm.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                        progress_bar=False, cwd=str(tmp_path))
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs
    data = [o["data"] for o in out if o.get("output_type") == "execute_result"][0]
    assert "application/vnd.jupyter.widget-view+json" not in data
    assert "<table" in data["text/html"] and "unanswerable" in data["text/html"]
