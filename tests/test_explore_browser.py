"""The explorers in a real browser: JupyterLab and Debian's chromium, driven by playwright.

One notebook per explorer, each one cell calling it on a copy of a smoke run with every stage
(tests/conftest.py's ``explore_run``). Each test runs the notebook from the Run menu, then types,
clicks, hovers or presses keys in the widget and checks what appears: the playground's cards and
verdicts, the token view's hover details, the tokenizer chips and counts, the reward probe's
swap and mix, and the arena's votes read back from its SQLite store. Typed `<script>` text must
show as text and run nothing; the arena's keys must not reach JupyterLab.

Each test saves a screenshot of its widget: into the folder named by LABKIT_SCREENSHOTS when set
(``LABKIT_SCREENSHOTS=docs/explore`` refreshes the README's pictures), else into the test's temp
folder. Needs /usr/bin/chromium and playwright (tests/browser_setup.sh): skipped without them, a
failure in CI (conftest.require_browser). Run:  python -m pytest tests/test_explore_browser.py -m browser
"""

import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import require_browser

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module", autouse=True)
def browser_here():
    """First, before JupyterLab starts: is there a browser to test with?"""
    require_browser()


# JupyterLab and the page, as the preference widget's browser test runs them (imported only once the check
# above has passed: that module needs playwright).
from test_browser import XSS, assert_nothing_ran, cell_kinds, lab, page, run_all  # noqa: E402,F401

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - browser_here has skipped (or failed) the module
    expect = None


@pytest.fixture(scope="module")
def run_path(lab, explore_run):
    """A copy of the smoke run inside the served folder (the arena and the tokenizers write into it)."""
    dst = lab[2] / "runs" / "explore"
    shutil.copytree(explore_run, dst)
    return dst


def notebook(root: Path, name: str, source: str) -> str:
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, root / name)
    return name


def open_explorer(page, lab, run_path: Path, call: str, kind: str, extra: str = ""):
    """Run a one-cell notebook calling ``call`` ("module.function") on the run; return its widget."""
    base, token, root = lab
    module, function = call.split(".")
    source = f"from labkit import {module}\n{module}.{function}(run={str(run_path)!r}{extra})"
    run_all(page, base, token, notebook(root, f"{kind}.ipynb", source), 1, timeout=180_000)
    widget = page.locator(f".lx-kind-{kind}")
    expect(widget).to_have_count(1)
    return widget


def screenshot(widget, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("LABKIT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    widget.screenshot(path=str(folder / f"{name}.png"))
    assert (folder / f"{name}.png").stat().st_size > 1000


def test_playground(lab, run_path, page, tmp_path):
    w = open_explorer(page, lab, run_path, "explore.playground", "playground")
    cards = w.locator(".lx-card")
    expect(cards).to_have_count(6)
    expect(cards.nth(0).locator(".lx-item")).to_have_count(4)
    assert [cards.nth(i).locator(".lx-card-head b").text_content() for i in range(6)] == \
        ["pretrained", "sft", "ppo", "dpo", "rloo", "rloo_verifier"]
    verdicts = {"right", "wrong", "refused", "abstained", "mixed", "over-refused"}
    first = w.locator(".lx-item").first.locator(".lx-badge")
    assert first.nth(0).text_content() in verdicts and first.nth(1).text_content().startswith("reward ")
    expect(w.locator(".lx-table")).to_contain_text("over-refused")     # the verdict rates per model

    # Fewer samples and a prompt of my own: two answers per model, and no verdicts off the world's tasks.
    w.locator('input[data-id="samples"]').fill("2")
    w.locator('input[data-id="samples"]').press("Tab")
    w.locator('textarea[data-id="prompt"]').fill("What is 2 plus 3?")
    w.get_by_role("button", name="Generate").click()
    expect(w.locator(".lx-msg")).to_contain_text("free text: no verifier verdict")
    expect(cards.nth(0).locator(".lx-item")).to_have_count(2)
    expect(w.locator(".lx-table")).to_have_count(0)

    # Bad input: one line in the widget, no traceback.
    w.locator('textarea[data-id="prompt"]').fill("")
    w.get_by_role("button", name="Generate").click()
    expect(w.locator(".lx-msg.lx-error")).to_have_text("the prompt is empty: type one, or pick an example")
    assert page.locator(".jp-OutputArea-output").filter(has_text="Traceback").count() == 0

    # A held-out example from the drop-down fills the prompt; its answers get verdicts again.
    select = w.locator('select[data-id="example"]')
    harmful = select.locator("option").filter(has_text="harmful").first.get_attribute("value")
    select.select_option(harmful)
    expect(w.locator('textarea[data-id="prompt"]')).not_to_have_value("")
    w.get_by_role("button", name="Generate").click()
    expect(w.locator(".lx-msg")).to_contain_text("world task (harmful)")
    expect(w.locator(".lx-table")).to_have_count(1)
    screenshot(w, "playground", tmp_path)


def test_token_view(lab, run_path, page, tmp_path):
    w = open_explorer(page, lab, run_path, "explore_tokens.rlhf_tokens", "rlhf_tokens")
    chips = w.locator(".lx-chip")
    expect(chips.first).to_be_visible()
    expect(w.locator(".lx-row-head")).to_contain_text("\u03a3 KL")
    chips.nth(1).hover()
    detail = w.locator(".lx-detail")
    expect(detail).to_contain_text("position 1")
    expect(detail).to_contain_text("ppo top-5:")
    expect(detail).to_contain_text("SFT top-5:")

    # A typed response is cut into tokens and shown as text.
    w.locator('textarea[data-id="response"]').fill(XSS)
    w.get_by_role("button", name="Show tokens").click()
    expect(w.locator(".lx-chips")).to_contain_text("<script>")
    assert w.locator("script, img").count() == 0
    assert_nothing_ran(page)
    w.get_by_role("button", name="Sample from SFT").click()
    expect(w.locator('textarea[data-id="response"]')).not_to_have_value(XSS)
    screenshot(w, "rlhf_tokens", tmp_path)


def test_tokenizer_explorer(lab, run_path, page, tmp_path):
    w = open_explorer(page, lab, run_path, "explore_tokens.tokenizers", "tokenizers")
    text = w.locator('textarea[data-id="text"]')
    text.fill("Mara met Tobin \u2615")
    rows = w.locator(".lx-token-row")
    expect(rows).to_have_count(3)
    counts = w.locator(".lx-table").first.locator("tbody tr")
    expect(counts.nth(0).locator("td").nth(2)).to_have_text("16")  # the kernel's answer to the new text is in
    for i in range(3):  # each tokenizer's chips are as many as its count says
        n = int(counts.nth(i).locator("td").nth(1).text_content())
        expect(rows.nth(i).locator(".lx-chip")).to_have_count(n)
    expect(rows.nth(1).locator(".lx-chips")).to_contain_text("<unk>")   # WordPiece never saw the cup
    rows.nth(0).locator(".lx-chip").first.hover()
    expect(rows.nth(0).locator(".lx-detail")).to_contain_text(re.compile(r"^id \d+ \u00b7 token 'M"))
    w.locator('input[data-id="prefix"]').fill("One morning, Mara")
    probe = w.locator(".lx-table").nth(1)
    expect(probe.locator("tbody tr")).to_have_count(10)
    expect(w.locator(".lx-section-title").nth(2)).to_contain_text("'One morning, Mara'")
    screenshot(w, "tokenizers", tmp_path)


def test_reward_probe(lab, run_path, page, tmp_path):
    w = open_explorer(page, lab, run_path, "explore_reward.probe", "reward_probe")
    texts = w.locator(".lx-card .lx-text")
    expect(texts).to_have_count(2)
    a, b = texts.nth(0).text_content(), texts.nth(1).text_content()
    expect(w.locator(".lx-card").nth(0)).to_contain_text("right")   # the aligned refusal, by the verifier
    w.get_by_role("button", name="Swap A and B").click()
    expect(texts.nth(0)).to_have_text(b)
    expect(texts.nth(1)).to_have_text(a)
    w.get_by_role("button", name="Make A mixed (A + B)").click()
    expect(texts.nth(0)).to_have_text(f"{b} {a}")
    expect(w.locator('textarea[data-id="a"]')).to_have_value(f"{b} {a}")
    expect(w.locator(".lx-table td").nth(3)).to_contain_text("%")
    screenshot(w, "reward_probe", tmp_path)
    w.locator('textarea[data-id="b"]').fill(XSS)
    expect(texts.nth(1)).to_have_text(XSS)
    assert w.locator("script, img").count() == 0
    assert_nothing_ran(page)


def test_arena_with_keys(lab, run_path, page, tmp_path):
    w = open_explorer(page, lab, run_path, "arena.arena", "arena", extra=", annotator='me', models=['sft', 'ppo']")
    progress = w.locator(".lx-para").first
    expect(progress).to_have_text("0 / 28 judged by me")
    expect(w.locator(".lx-card-head b")).to_have_text(["Left", "Right"])  # no model names before the vote
    kinds = cell_kinds(page)
    w.locator(".lx-para").nth(1).click()          # the prompt: gives the widget the keyboard
    shown = []
    for n, key in enumerate("abtx", start=1):
        page.keyboard.press(key)
        expect(progress).to_have_text(f"{n} / 28 judged by me")
        said = re.search(r"left was (\w+), right was (\w+)\.", w.locator(".lx-msg").text_content())
        shown.append(said.groups())
    page.keyboard.press("u")
    expect(progress).to_have_text("3 / 28 judged by me")
    w.get_by_role("button", name="Both bad (x)").click()
    expect(progress).to_have_text("4 / 28 judged by me")
    assert cell_kinds(page) == kinds               # "a" and "b" did not insert cells
    expect(w.locator(".lx-table").first).to_contain_text("ppo")
    screenshot(w, "arena", tmp_path)

    from labkit.store import LabelStore
    with LabelStore(run_path / "arena" / "labels.sqlite") as store:
        labels = store.labels(annotator="me", kind="arena")
        undone = [lab_ for lab_ in store.labels(annotator="me", include_undone=True) if lab_.undone_at]
    assert len(labels) == 4 and len(undone) == 1
    for label, (left, right), key in zip(labels[:3], shown, "abt"):
        a, b = label.item_id.split("|")[1:]
        names = {"a": a.split("@")[0], "b": b.split("@")[0]}
        c = label.payload["choice"]
        assert (names[c] if c in names else c) == {"a": left, "b": right, "t": "tie"}[key]
    assert labels[3].payload["choice"] == "both_bad"
