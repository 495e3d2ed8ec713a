"""The preference widget in a real browser: JupyterLab + Debian chromium, driven by playwright.

Starts `jupyter lab` on a free loopback port, opens a notebook that shows a
RankingWidget in rank mode and one in pair mode, runs all cells from the Run
menu, labels with clicks and with the keyboard, undoes one label, and then
reads exactly those labels back from the SQLite store. It also checks that a
response containing `<script>` / `<img onerror>` shows as text and runs
nothing, and that the widget's keys did not reach JupyterLab ("a" and "b"
would insert cells).

Needs /usr/bin/chromium and `pip install playwright` (tests/browser_setup.sh);
skipped otherwise. Run:  python -m pytest tests/test_browser.py -m browser
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
# Flags from DESIGN.md: no sandbox (root in a container), and nothing that phones home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (run tests/browser_setup.sh)"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (run tests/browser_setup.sh)"),
]

# The notebook under test. Kept tiny; notebooks/03_preferences.ipynb can replace it later.
SETUP = """\
from labkit.judges import Constitution
from labkit.store import LabelStore
from labkit.widget import RankingWidget
candidates = [
    {"id": "p0", "prompt": "Which tag runs code?", "task": None, "gen": {},
     "responses": ["<script>alert(1)</script>", '<img src=x onerror="window.__xss=1">', "neither, if escaped"]},
    {"id": "p1", "prompt": "Say hello.", "task": None, "gen": {}, "responses": ["hello", "hi", "hey there"]},
    {"id": "p2", "prompt": "Count to three.", "task": None, "gen": {}, "responses": ["1 2 3", "one two three", "3"]},
    {"id": "p3", "prompt": "Name a colour.", "task": None, "gen": {}, "responses": ["red", "blue", "green"]},
]
store = LabelStore("labels.sqlite")"""
RANK_CELL = 'RankingWidget(candidates, store, "ranker", mode="rank", judge=Constitution())'
PAIR_CELL = 'RankingWidget(candidates, store, "pairer", mode="pair")'


def write_notebook(path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (SETUP, RANK_CELL, PAIR_CELL)]
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
    """A JupyterLab server in a temp folder; yields (base_url, token, folder). Stopped by PID."""
    root = tmp_path_factory.mktemp("lab")
    settings = root / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # No "news" / update pop-up over the notebook.
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port, token = free_port(), os.urandom(16).hex()
    env = dict(os.environ,
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),  # the kernel imports labkit
               JUPYTERLAB_SETTINGS_DIR=str(root / ".settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(root / ".workspaces"),
               JUPYTER_RUNTIME_DIR=str(root / ".runtime"),
               JUPYTER_CONFIG_DIR=str(root / ".config"),
               OMP_NUM_THREADS="1")
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
        try:
            for session in api(base, token, "/api/sessions") or []:
                api(base, token, f"/api/sessions/{session['id']}", method="DELETE")
        except OSError:
            pass
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # the group we started: the server and its kernels
            server.wait()
        log.close()


@pytest.fixture
def page(lab):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.dialogs = []
        page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
        yield page
        browser.close()


def open_and_run_all(page, base, token, name):
    page.goto(f"{base}/lab/tree/{name}?token={token}")
    # The toolbar says idle before the kernel connects; the status bar waits for it.
    expect(page.locator(".jp-StatusBar-Widget").filter(has_text=re.compile(r"\| Idle"))).to_be_visible(timeout=60_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.locator('[data-command="runmenu:run-all"]').click()


def test_label_in_jupyterlab_with_clicks_and_keys(lab, page):
    base, token, root = lab
    write_notebook(root / "prefs.ipynb")
    open_and_run_all(page, base, token, "prefs.ipynb")
    widgets = page.locator(".labkit-rank")
    expect(widgets).to_have_count(2, timeout=60_000)
    rank, pair = widgets.nth(0), widgets.nth(1)
    cells = page.locator(".jp-Notebook .jp-Cell").count()
    count = rank.locator(".labkit-count")
    expect(count).to_have_text("0 / 4 labelled")

    # Model text is text: the characters show, no element is made, nothing runs.
    texts = rank.locator(".labkit-text")
    expect(texts.nth(0)).to_have_text("<script>alert(1)</script>")
    expect(texts.nth(1)).to_have_text('<img src=x onerror="window.__xss=1">')
    assert rank.locator("script, img").count() == 0

    # Item p0 with clicks (and a rationale): response 2 best, then 1; 3 is placed by itself.
    rank.locator(".labkit-why").fill("2 is the honest one")
    rank.get_by_role("button", name="Pick 2").click()
    expect(rank.locator(".labkit-card").nth(1)).to_contain_text("ranked 1")
    rank.get_by_role("button", name="Pick 1").click()
    expect(count).to_have_text("1 / 4 labelled")
    expect(rank.locator(".labkit-prompt")).to_have_text("Say hello.")

    # Item p1 with the keyboard: click the prompt to give the widget the keys.
    rank.locator(".labkit-prompt").click()
    page.keyboard.press("3")
    page.keyboard.press("1")
    expect(count).to_have_text("2 / 4 labelled")
    expect(rank.locator(".labkit-msg")).to_contain_text("AI judge (constitution) ranked")
    # Item p2 by keyboard, then undo it with "u" and rank it again.
    page.keyboard.press("2")
    page.keyboard.press("3")
    expect(count).to_have_text("3 / 4 labelled")
    page.keyboard.press("u")
    expect(count).to_have_text("2 / 4 labelled")
    expect(rank.locator(".labkit-prompt")).to_have_text("Count to three.")
    page.keyboard.press("1")
    page.keyboard.press("Backspace")   # take back a pick
    page.keyboard.press("1")
    page.keyboard.press("2")
    expect(count).to_have_text("3 / 4 labelled")
    expect(rank.locator(".labkit-prompt")).to_have_text("Name a colour.")

    # Pair mode: a button, then keys ("a" and "b" are notebook shortcuts for "insert cell").
    pair_count = pair.locator(".labkit-count")
    pair.get_by_role("button", name="A is better").click()
    expect(pair_count).to_have_text("1 / 12 labelled")
    page.keyboard.press("b")
    expect(pair_count).to_have_text("2 / 12 labelled")
    page.keyboard.press("t")
    expect(pair_count).to_have_text("3 / 12 labelled")
    page.keyboard.press("s")
    expect(pair.locator(".labkit-msg")).to_have_text("Skipped.")
    page.keyboard.press("a")
    expect(pair_count).to_have_text("4 / 12 labelled")

    # None of those keys reached JupyterLab, and no script ran.
    assert page.locator(".jp-Notebook .jp-Cell").count() == cells
    assert page.evaluate("window.__xss") is None and page.dialogs == []

    from labkit.store import LabelStore

    with LabelStore(root / "labels.sqlite") as store:
        ranked = [(lab.item_id, lab.payload["order"], lab.rationale) for lab in store.labels(annotator="ranker")]
        assert ranked == [("p0", [1, 0, 2], "2 is the honest one"), ("p1", [2, 0, 1], None), ("p2", [0, 1, 2], None)]
        undone = [lab for lab in store.labels(annotator="ranker", include_undone=True) if lab.undone_at]
        assert [(lab.item_id, lab.payload["order"]) for lab in undone] == [("p2", [1, 2, 0])]
        pairs = [(lab.item_id, lab.payload["a"], lab.payload["b"], lab.payload["choice"])
                 for lab in store.labels(annotator="pairer")]
        assert pairs == [("p0", 0, 1, "a"), ("p0", 0, 2, "b"), ("p0", 1, 2, "tie"), ("p1", 0, 2, "a")]
