"""The preference widget and the run report in a real browser: Debian chromium, driven by playwright.

Starts `jupyter lab` on a free loopback port and opens the real
notebooks/03_preferences.ipynb on a smoke-preset run folder (stages 1-2 done
here first, one candidate response replaced by `<script>` / `<img onerror>`).
It runs all cells from the Run menu, ranks four items in the notebook's widget
with clicks and with the keyboard, undoes one ranking, and then reads exactly
those labels back from the run's SQLite store (next to the AI judge's labels
that the notebook's last cells add). The HTML response must show as text and
run nothing, and the widget's keys must not reach JupyterLab (digits would
turn cells into headings). A second test does the same for pair mode, whose
keys "a" and "b" would insert cells. The last test opens a smoke run's report.html from disk.

Needs /usr/bin/chromium and `pip install playwright` (tests/browser_setup.sh);
skipped otherwise, except in CI (CI=true), where a missing browser fails. Run:
python -m pytest tests/test_browser.py -m browser
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import CHROMIUM, require_browser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = "notebooks/03_preferences.ipynb"
RUN = "browser"
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
# No sandbox (root in a container), and nothing that phones home (docs/architecture.md, "Testing notes").
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _browser():
    require_browser()  # skipped where the browser is missing, failed in CI

# JupyterLab settings: no "news" / update pop-up over the notebook, and every cell kept in the
# DOM (no windowing), so the test can see all cells' prompts and count them.
LAB_SETTINGS = {
    "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "notebook-extension/tracker": {"windowingMode": "none"},
}


def prepare_run(runs_dir):
    """Stages 1-2 on the smoke preset, then candidates with one HTML/script response (item 0, response 1).

    The candidates keep their "gen" settings, so the notebook's make_candidates reuses the file.
    """
    from labkit import preferences, pretrain, sft
    from labkit.runs import Run, read_jsonl, write_jsonl_atomic

    pretrain.run(pretrain.config("smoke"), run=RUN, runs_dir=str(runs_dir), preset="smoke", progress_bar=False)
    sft.run(sft.config("smoke"), run=RUN, runs_dir=str(runs_dir), preset="smoke", progress_bar=False)
    preferences.make_candidates(preferences.config("smoke"), run=RUN, runs_dir=str(runs_dir))
    path = Run(RUN, str(runs_dir)).stage_dir("preferences") / "candidates.jsonl"
    cands = read_jsonl(path)
    cands[0]["responses"][0] = XSS
    write_jsonl_atomic(path, cands)
    return cands


def write_pair_notebook(path):
    """A tiny notebook for pair mode, which notebook 03 does not show (it ranks)."""
    import nbformat

    setup = f"""\
from labkit.store import LabelStore
from labkit.widget import RankingWidget
candidates = [
    {{"id": "p0", "prompt": "Which tag runs code?", "task": None, "responses": [{XSS!r}, "plain", "neither"]}},
    {{"id": "p1", "prompt": "Say hello.", "task": None, "responses": ["hello", "hi", "hey there"]}},
]
store = LabelStore("pairs.sqlite")"""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(setup),
                nbformat.v4.new_code_cell('RankingWidget(candidates, store, "pairer", mode="pair")')]
    nbformat.write(nb, path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base, token, path, method="GET"):
    req = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        body = r.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a temp folder with notebooks/03_preferences.ipynb and runs/<RUN>.

    Yields (base_url, token, folder). The kernels see LABKIT_PRESET/RUNS_DIR/RUN, which
    notebook 03's parameters cell reads. Stopped by PID.
    """
    root = tmp_path_factory.mktemp("lab")
    for name, value in LAB_SETTINGS.items():
        path = root / ".settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    (root / "notebooks").mkdir()
    shutil.copy(os.path.join(REPO, NOTEBOOK), root / NOTEBOOK)
    port, token = free_port(), os.urandom(16).hex()
    env = dict(os.environ,
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),  # the kernel imports labkit
               JUPYTERLAB_SETTINGS_DIR=str(root / ".settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(root / ".workspaces"),
               JUPYTER_RUNTIME_DIR=str(root / ".runtime"),
               JUPYTER_CONFIG_DIR=str(root / ".config"),
               LABKIT_PRESET="smoke", LABKIT_RUNS_DIR=str(root / "runs"), LABKIT_RUN=RUN,
               LABKIT_THREADS="1", OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    log = open(root / "jupyter.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", "--ip", "127.0.0.1",
         f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                api(base, token, "/api/status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("jupyter lab did not start:\n" + (root / "jupyter.log").read_text()) from None
                time.sleep(0.3)
        yield base, token, root
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # the group we started: the server and its kernels
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def prefs_run(lab):
    """The run folder notebook 03 reads (LABKIT_RUNS_DIR/LABKIT_RUN); returns its candidates."""
    return prepare_run(lab[2] / "runs")


@pytest.fixture
def page(lab):
    base, token, _ = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.dialogs = []
        page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
        yield page
        browser.close()
    try:  # shut this test's kernel down before the next test opens its notebook
        for session in api(base, token, "/api/sessions") or []:
            api(base, token, f"/api/sessions/{session['id']}", method="DELETE")
    except OSError:
        pass


# Resolves to "done" once every code cell has an execution count, or to the first traceback.
_RUN_STATE = """(n) => {
  for (const out of document.querySelectorAll('.jp-Notebook [data-mime-type="application/vnd.jupyter.stderr"]'))
    if (out.textContent.includes("Traceback")) return out.textContent;
  const prompts = [...document.querySelectorAll(".jp-Notebook .jp-CodeCell .jp-InputPrompt")];
  return prompts.length === n && prompts.every((p) => /\\[\\d+\\]/.test(p.textContent)) ? "done" : false;
}"""


def run_all(page, base, token, name, n_code_cells, timeout=90_000):
    """Open `name`, wait for its kernel, run all cells from the Run menu and wait until they finished."""
    # A workspace of its own: the default one would reopen the previous test's notebook next to this one.
    workspace = re.sub(r"\W", "-", name)
    page.goto(f"{base}/lab/workspaces/{workspace}/tree/{name}?token={token}")
    # The toolbar says idle before the kernel connects; the status bar waits for it.
    expect(page.locator(".jp-StatusBar-Widget").filter(has_text=re.compile(r"\| Idle"))).to_be_visible(timeout=60_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.locator('[data-command="runmenu:run-all"]').click()
    state = page.wait_for_function(_RUN_STATE, arg=n_code_cells, timeout=timeout).json_value()
    assert state == "done", f"{name} failed in the browser:\n{state}"


def cell_kinds(page):
    return [page.locator(f".jp-Notebook .jp-{kind}Cell").count() for kind in ("Code", "Markdown")]


def assert_nothing_ran(page):
    """No element from model text anywhere on the page, no script ran, no alert."""
    assert page.locator('img[src="x"]').count() == 0
    assert page.evaluate("window.__xss") is None and page.dialogs == []


def test_notebook_03_rank_with_clicks_and_keys(lab, prefs_run, page):
    base, token, root = lab
    cands = prefs_run
    with open(root / NOTEBOOK) as f:
        n_code = sum(c["cell_type"] == "code" for c in json.load(f)["cells"])
    run_all(page, base, token, NOTEBOOK, n_code)

    rank = page.locator(".labkit-rank")
    expect(rank).to_have_count(1)
    kinds = cell_kinds(page)
    count, prompt = rank.locator(".labkit-count"), rank.locator(".labkit-prompt")
    expect(count).to_have_text(f"0 / {len(cands)} labelled")
    expect(rank).to_contain_text("Annotator: me")
    expect(prompt).to_have_text(cands[0]["prompt"])

    # Model text is text: the characters show (in the widget and in the notebook's table), nothing runs.
    expect(rank.locator(".labkit-text").nth(0)).to_have_text(XSS)
    assert rank.locator("script, img").count() == 0
    # (the candidates and example-pairs tables; pandas shortens long cells, so match the start)
    expect(page.locator(".jp-OutputArea-output td").filter(has_text=XSS[:40]).first).to_be_visible()
    assert_nothing_ran(page)

    # Item 0 with clicks (and a rationale): response 2 best, then 1; 3 is placed by itself.
    rank.locator(".labkit-why").fill("2 is the honest one")
    rank.get_by_role("button", name="Pick 2").click()
    expect(rank.locator(".labkit-card").nth(1)).to_contain_text("ranked 1")
    rank.get_by_role("button", name="Pick 1").click()
    expect(count).to_have_text(f"1 / {len(cands)} labelled")
    expect(prompt).to_have_text(cands[1]["prompt"])
    expect(rank.locator(".labkit-msg")).to_contain_text("AI judge (constitution) ranked")

    # Item 1 with the keyboard: click the prompt to give the widget the keys.
    prompt.click()
    page.keyboard.press("3")
    page.keyboard.press("1")
    expect(count).to_have_text(f"2 / {len(cands)} labelled")
    expect(prompt).to_have_text(cands[2]["prompt"])
    # Item 2 by keyboard, then undo it with "u" and rank it again (taking back one pick on the way).
    page.keyboard.press("2")
    page.keyboard.press("3")
    expect(count).to_have_text(f"3 / {len(cands)} labelled")
    page.keyboard.press("u")
    expect(count).to_have_text(f"2 / {len(cands)} labelled")
    expect(prompt).to_have_text(cands[2]["prompt"])
    page.keyboard.press("1")
    page.keyboard.press("Backspace")
    page.keyboard.press("1")
    page.keyboard.press("2")
    expect(count).to_have_text(f"3 / {len(cands)} labelled")
    expect(prompt).to_have_text(cands[3]["prompt"])
    # Item 3 mixed: a click, then a key.
    rank.get_by_role("button", name="Pick 3").click()
    expect(rank.locator(".labkit-card").nth(2)).to_contain_text("ranked 1")
    page.keyboard.press("2")
    expect(count).to_have_text(f"4 / {len(cands)} labelled")

    # The digits did not reach JupyterLab (in command mode they turn cells into headings).
    assert cell_kinds(page) == kinds
    assert_nothing_ran(page)

    from labkit.store import LabelStore

    ids = [c["id"] for c in cands]
    with LabelStore(root / "runs" / RUN / "03_preferences" / "labels.sqlite") as store:
        ranked = [(lab.item_id, lab.kind, lab.payload["order"], lab.rationale) for lab in store.labels(annotator="me")]
        assert ranked == [(ids[0], "rank", [1, 0, 2], "2 is the honest one"), (ids[1], "rank", [2, 0, 1], None),
                          (ids[2], "rank", [0, 1, 2], None), (ids[3], "rank", [2, 1, 0], None)]
        undone = [lab for lab in store.labels(annotator="me", include_undone=True) if lab.undone_at]
        assert [(lab.item_id, lab.payload["order"]) for lab in undone] == [(ids[2], [1, 2, 0])]
        # The notebook's "Label and export pairs" cell labelled every item as the AI judge, in the same store.
        assert store.annotators() == ["ai:constitution", "me"]
        # The judge compares every pair of each item's K responses.
        assert sorted({lab.item_id for lab in store.labels(annotator="ai:constitution")}) == sorted(ids)
        assert {lab.kind for lab in store.labels(annotator="ai:constitution")} == {"pair"}


def test_pair_mode_keys_stay_in_the_widget(lab, page):
    base, token, root = lab
    write_pair_notebook(root / "pairs.ipynb")
    run_all(page, base, token, "pairs.ipynb", 2)
    pair = page.locator(".labkit-rank")
    expect(pair).to_have_count(1)
    kinds = cell_kinds(page)
    count = pair.locator(".labkit-count")
    expect(count).to_have_text("0 / 6 labelled")
    expect(pair.locator(".labkit-text").nth(0)).to_have_text(XSS)
    assert pair.locator("script, img").count() == 0

    # A button, then keys ("a" and "b" are notebook shortcuts for "insert cell").
    pair.get_by_role("button", name="A is better").click()
    expect(count).to_have_text("1 / 6 labelled")
    page.keyboard.press("b")
    expect(count).to_have_text("2 / 6 labelled")
    page.keyboard.press("t")
    expect(count).to_have_text("3 / 6 labelled")
    page.keyboard.press("s")
    expect(pair.locator(".labkit-msg")).to_have_text("Skipped.")
    page.keyboard.press("a")
    expect(count).to_have_text("4 / 6 labelled")

    assert cell_kinds(page) == kinds
    assert_nothing_ran(page)

    from labkit.store import LabelStore

    with LabelStore(root / "pairs.sqlite") as store:
        pairs = [(lab.item_id, lab.payload["a"], lab.payload["b"], lab.payload["choice"])
                 for lab in store.labels(annotator="pairer")]
        assert pairs == [("p0", 0, 1, "a"), ("p0", 0, 2, "b"), ("p0", 1, 2, "tie"), ("p1", 0, 2, "a")]


@pytest.mark.slow  # the smoke pipeline of tests/test_runner.py, when that has not run it yet
def test_report_renders_every_stage_offline(tmp_path_factory):
    """report.html of the smoke pipeline, opened from disk with no network: every stage's section with
    its reading and each figure of its notebook drawn, then one exported notebook; no console errors."""
    import nbformat
    from test_runner import smoke_pipeline  # the smoke run tests/test_runner.py makes (once a session)

    from labkit.report import notebook_figures
    from labkit.runs import NOTEBOOKS, STAGES

    path, _ = smoke_pipeline(tmp_path_factory)
    notebooks = {s: path / "notebooks" / NOTEBOOKS[s] for s in STAGES}
    figures = {s: len(notebook_figures(nbformat.read(nb, as_version=4))) if nb.exists() else 0
               for s, nb in notebooks.items()}
    assert sum(n > 0 for n in figures.values()) >= 4  # pretrain, SFT, reward model and PPO draw curves
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        problems = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("requestfailed", lambda r: problems.append(f"{r.url}: {r.failure}"))
        page.goto((path / "report.html").as_uri())
        expect(page.locator("table.scorecard a")).to_have_count(len(STAGES))  # a row per stage, linked
        for stage in STAGES:
            section = page.locator(f"section#{stage}")
            expect(section.locator("h2")).to_be_visible()
            expect(section.locator(".js-plotly-plot")).to_have_count(figures[stage])
            if notebooks[stage].exists():
                expect(section.locator("p.reading")).to_contain_text(re.compile(r"\d"))
        section = page.locator("section#ppo")
        section.get_by_role("link", name="the executed notebook").click()
        expect(page).to_have_url(notebooks["ppo"].with_suffix(".html").as_uri())
        expect(page.locator(".jp-Cell").first).to_be_visible()
        expect(page.locator(".js-plotly-plot")).to_have_count(figures["ppo"])
        browser.close()
    assert problems == []
