"""The scorecard and report.html on a hand-made run folder (the smoke pipeline's report is checked in
tests/test_runner.py and, in a real browser, in tests/test_browser.py)."""
import re

import nbformat
import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from labkit import report
from labkit.runs import NOTEBOOKS, STAGES, Run, append_jsonl


@pytest.fixture
def run(tmp_path):
    """pretrain complete with its executed notebook (a figure, a widget output); sft complete, no notebook."""
    r = Run("hand", tmp_path)
    with r.lock():
        r.update_manifest(preset="smoke")
        r.complete("pretrain", 12.0, {"pretrain/val_ppl": 2.5, "pretrain/unigram_ppl": 170.0, "pretrain/params": 164160})
        r.annotate("pretrain", notebook_seconds=20.0)
        r.complete("sft", 30.0, {"sft/accuracy": 55.0, "sft/base_accuracy": 0.0, "sft/task_accuracy": 60.0})
    append_jsonl(r.stage_dir("sft") / "metrics.jsonl", {"step": 2, "sft/loss": 3.0, "sft/lr": 1e-3})
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 1], name="pretrain/loss")).to_plotly_json()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 1 · Tokenizer and pretraining\n\ntext"),
                nbformat.v4.new_markdown_cell("## Pretrain\n\nThe loop is nanoGPT's."),
                nbformat.v4.new_code_cell("chart", outputs=[
                    nbformat.v4.new_output("display_data", {report.WIDGET_MIME: {"model_id": "x"},
                                                            "text/plain": "FigureWidget({...})"}),
                    nbformat.v4.new_output("display_data", {report.PLOTLY_MIME: fig, "text/plain": "fig"})])]
    nb.metadata["widgets"] = {"state": {}}
    (r.path / "notebooks").mkdir()
    nbformat.write(nb, r.path / "notebooks" / NOTEBOOKS["pretrain"])
    return r


def test_scorecard_lists_every_stage_against_its_targets(run):
    rows = report.scorecard(run)
    assert [r.stage for r in rows if r.stage] == list(STAGES)
    by = {r.metric: r for r in rows}
    assert (by["val_ppl"].target, by["val_ppl"].verdict) == ("< unigram_ppl (170)", "met")
    assert (by["val_ppl"].seconds, by["accuracy"].seconds) == (20.0, 30.0)  # the notebook's time when measured
    assert (by["task_accuracy"].value, by["task_accuracy"].verdict) == ("60", "not met")
    assert [r.verdict for r in rows if r.stage in ("preferences", "reward", "ppo")] == ["not run"] * 3
    text = report.format_scorecard(rows)
    assert re.search(r"^pretrain +20s +val_ppl +2\.5 +< unigram_ppl \(170\) +met$", text, re.M)
    assert re.search(r"^ppo +- +- +not run$", text, re.M)


def test_a_target_whose_metric_is_missing_shows_a_dash(run):
    with run.lock():
        run.complete("ppo", 1.0, {"ppo/harmful_refused_before": 30.0})
    rows = {r.metric: r for r in report.scorecard(run)}
    assert (rows["harmful_refused_after"].value, rows["harmful_refused_after"].verdict) == ("-", "-")
    assert rows["harmful_refused_after"].target == ">= 85 and >= harmful_refused_before + 40 (70)"
    assert report.Target(">=", 10, of="ppo/true_score_before").met(81.0, {"ppo/true_score_before": 70.0})


def test_both_parts_of_a_combined_target_must_hold():
    t = report.TARGETS["ppo/harmful_refused_after"]
    assert t.verdict(90.0, {"ppo/harmful_refused_before": 30.0}) == "met"
    assert t.verdict(90.0, {"ppo/harmful_refused_before": 60.0}) == "not met"  # +30 only
    assert t.verdict(80.0, {"ppo/harmful_refused_before": 10.0}) == "not met"  # below 85
    assert t.verdict(90.0, {}) == "-"


def test_reading_prints_missing_numbers_as_a_dash():
    text = report.reading("sft", {"sft/task_accuracy": 71.25, "sft/stop_rate": None})
    assert "accepts 71.2% of the answers" in text and "against -% for the pretrained model" in text
    assert report.reading("no_such_stage", {"x": 1.0}) == ""
    text = report.reading("compare", {"compare/dpo_harmful_refused": 96.43, "compare/rloo_task_accuracy": 70.69})
    assert "DPO reached 96% and -%" in text and "(task accuracy 71%)" in text


def test_the_trust_reading_names_only_numbers_stage_7_writes():
    import re

    from labkit import trust

    def curve(form, golds):
        pts = [{"d": 0.5 * i, "gold": g, "proxy": 0.3 * i, "mixed": float(i)} for i, g in enumerate(golds)]
        return {"kl_coef": 0.1, **trust.with_gains(pts, form)}
    result = {"best_of_n": curve("best_of_n", [50, 58, 61, 57]),
              "rl": {"leash": curve("rl", [50, 60, 66, 70]), "nokl": curve("rl", [50, 62, 55, 40])}}
    h = trust.headline(result)
    keys = set(re.findall(r"\{(trust/[^:}]+)", report.READINGS["trust"]))
    assert keys <= set(h) and all(h[k] is not None for k in keys)
    text = report.reading("trust", h)
    assert "by at most +11.0 points" in text and "without the KL leash -10.0 at d 1.50" in text


def test_report_shows_each_stage_with_its_figures_and_an_offline_notebook(run):
    page = open(report.write_report(run), encoding="utf-8").read()
    for stage in STAGES:
        assert f"<section class='stage' id='{stage}'>" in page
    assert "<h2>1 · Tokenizer and pretraining</h2>" in page and "perplexity 2.50" in page
    assert "<figcaption>Pretrain</figcaption>" in page  # the notebook's figure, under its section's heading
    assert "<figcaption>training curves</figcaption>" in page  # sft: no notebook, its metrics.jsonl instead
    assert page.count("Plotly.newPlot(") == 2 and len(get_plotlyjs()) < len(page) < 2 * len(get_plotlyjs())
    assert "href='notebooks/01_pretrain.html'" in page and "Not run yet" in page

    exported = (run.path / "notebooks" / "01_pretrain.html").read_text(encoding="utf-8")
    assert "Plotly.newPlot(" in exported and "FigureWidget" not in exported
    # plotly.js whole, once, in the page's head (it goes in after nbconvert), and no stand-in left for it
    assert exported.count(get_plotlyjs()) == 1 and exported.index(get_plotlyjs()) < exported.index("<body")
    assert report._PLOTLY_MARK not in exported
    assert not re.search(r"<script[^>]+src=", exported)  # nothing from a CDN: the page works offline


def test_readings_without_a_verifier_say_what_was_measured_and_what_was_not(tmp_path):
    from labkit.runs import atomic_write_json
    own = {"ppo/rm_score_before": -0.5, "ppo/rm_score_after": 0.25, "ppo/kl_after": 0.5, "ppo/judge_win_rate": 62.4,
           "ppo/judge_low": 40.9, "ppo/judge_high": 80.0, "ppo/length_before": 8.0, "ppo/length_after": 6.5,
           "ppo/eval_prompts": 16}
    text = report.reading("ppo", own, own=True)
    assert "learned reward from -0.50 to 0.25" in text and "62% of the prompts (95% interval 41-80%" in text
    assert "Not measured: conduct rates and task accuracy" in text and "harmful" not in text
    world = report.reading("ppo", {**own, "ppo/true_score_before": 50.0, "ppo/harmful_refused_before": 30.0})
    assert world.startswith("On held-out prompts, names and templates") and "from 30.0%" in world
    assert "Not measured" in report.reading("sft", {"sft/train_examples": 60, "sft/task_accuracy": 0.0}, own=True)
    # Which stages ran on a person's own data: read from the configs the stage folders record.
    r = Run("mine", tmp_path)
    atomic_write_json(r.stage_dir("sft") / "config.json", {"data": "/home/me/alpaca.json"})
    atomic_write_json(r.stage_dir("preferences") / "config.json", {"prompts": "world"})
    atomic_write_json(r.stage_dir("reward") / "config.json", {"data": "pairs"})
    atomic_write_json(r.stage_dir("ppo") / "config.json", {"prompts": "/home/me/prompts.jsonl"})
    assert [report.own_data(r, s) for s in STAGES] == [False, True, False, False, True, True, True]
