"""The runner's live terminal line: the kernel's bars mirrored to a file, the stage's files read back,
and what the line prints on a terminal and in a log."""
import io
import json
import os
import re

from labkit import live
from labkit.runs import append_jsonl, atomic_write_json


def test_progress_mirrors_its_bar_only_for_the_runner(tmp_path, monkeypatch):
    mirror = tmp_path / "progress.json"
    monkeypatch.delenv(live.PROGRESS_ENV, raising=False)
    bar = live.progress(5, "pretrain", disable=False)
    bar.update(5)
    bar.close()
    assert not mirror.exists()

    monkeypatch.setenv(live.PROGRESS_ENV, str(mirror))
    bar = live.progress(5, "pretrain", initial=2)
    bar.update(1)  # the first update is written at once, the last one (full bar) too; those between wait 0.5 s
    assert json.loads(mirror.read_text()) == {"desc": "pretrain", "n": 3, "total": 5}
    bar.update(1)
    bar.update(1)
    bar.close()
    assert json.loads(mirror.read_text())["n"] == 5


def test_snapshot_follows_the_bar_else_metrics_and_config(tmp_path):
    stage, bar = tmp_path / "01_pretrain", tmp_path / ".progress.json"
    stage.mkdir()
    atomic_write_json(stage / "config.json", {"max_steps": 30})
    for step, loss in ((5, 5.9), (10, 5.4)):
        append_jsonl(stage / "metrics.jsonl", {"step": step, "pretrain/loss": loss, "pretrain/lr": 1e-3})
    append_jsonl(stage / "metrics.jsonl", {"step": 10, "pretrain/val_loss": 5.5})  # eval line: no train loss
    assert live.stage_snapshot(stage, bar, "pretrain/loss", since=0) == ("", 10, 30, ("pretrain/loss", 5.4))

    atomic_write_json(bar, {"desc": "pretrain", "n": 12, "total": 30})
    assert live.stage_snapshot(stage, bar, "pretrain/loss", since=0) == ("pretrain", 12, 30, ("pretrain/loss", 5.4))

    for p in (bar, stage / "config.json", stage / "metrics.jsonl"):  # left by an earlier attempt: ignored
        os.utime(p, (1000, 1000))
    assert live.stage_snapshot(stage, bar, "pretrain/loss", since=2000) == ("", None, None, None)


def test_log_lines_one_per_tenth_and_a_heartbeat():
    lines = []
    line = live.StageLine("pretrain", tty=False, log=lines.append)
    for n in range(101):
        line.show("pretrain", n, 100, ("pretrain/loss", 3.21))
    assert len(lines) == 11  # 0/100, 10/100, … 100/100
    assert lines[5].startswith("[labkit] pretrain: 50/100  loss 3.21  0s elapsed")
    line.show("pretrain", 100, 100, None)
    assert len(lines) == 11  # nothing new, and the last line is recent

    quiet = []
    line = live.StageLine("preferences", tty=False, log=quiet.append, every_s=0)
    line.show("candidates", None, None, None)
    line.show("candidates", 3, None, None)
    assert quiet == ["[labkit] preferences · candidates: 0s elapsed",
                     "[labkit] preferences · candidates: step 3  0s elapsed"]


def test_eta_leaves_out_start_up_time(monkeypatch):
    clock = iter([100.0, 160.0, 170.0])  # created at 100 s; first step seen at 160 s, 10 steps later at 170 s
    monkeypatch.setattr(live.time, "monotonic", lambda: next(clock))
    lines = []
    line = live.StageLine("sft", tty=False, log=lines.append, every_s=0)
    line.show("", 10, 100, None)
    line.show("", 20, 100, None)
    assert lines == ["[labkit] sft: 10/100  1m00s elapsed", "[labkit] sft: 20/100  1m10s elapsed  ETA 1m20s"]


def test_terminal_line_is_redrawn_in_place():
    out = io.StringIO()
    line = live.StageLine("pretrain", tty=True, stream=out)
    line.say("[labkit] pretrain: running 01_pretrain.ipynb ...")
    for n in (3, 15, 30):
        line.show("pretrain", n, 30, ("pretrain/loss", 4.5))
    line.say("[labkit] pretrain: done in 20s", final=True)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("done in 20s\x1b[K\n")
    assert re.search(r"\r\[labkit\] pretrain:  50%\|.+\| 15/30  loss 4\.5  0s elapsed", text)


def test_format_seconds():
    assert [live.format_seconds(s) for s in (4.4, 65, 3725)] == ["4s", "1m05s", "1h02m"]


def test_chart_is_off_outside_a_notebook_and_keeps_finite_values(monkeypatch):
    monkeypatch.delenv(live.PROGRESS_ENV, raising=False)
    assert not live.in_notebook()  # pytest is no kernel with a browser
    chart = live.LiveChart({"loss": ["train/loss", "val/loss"]})
    assert chart.fig is None
    chart.update(1, {"train/loss": 2.0, "val/loss": float("nan"), "other": 1.0})
    chart.update(2, {"train/loss": 1.5, "val/loss": None})
    assert chart.data == {"train/loss": ([1, 2], [2.0, 1.5]), "val/loss": ([], [])}


def test_chart_draws_in_place_at_most_every_interval(monkeypatch):
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    clock = iter([10.0, 10.0, 10.2, 11.5, 11.5])
    monkeypatch.setattr(live.time, "monotonic", lambda: next(clock))
    chart = live.LiveChart({"loss": ["a"], "lr": ["b"]}, enabled=True, every_s=1.0)
    assert [t.name for t in chart.fig.data] == ["a", "b"]
    chart.update(1, {"a": 3.0, "b": 0.1})        # 10.0 s: drawn
    chart.update(2, {"a": 2.0})                  # 10.2 s: too soon, kept for the next draw
    assert chart.fig.data[0].y == (3.0,)
    chart.update(3, {"a": 1.0})                  # 11.5 s: drawn with everything so far
    assert chart.fig.data[0].x == (1, 2, 3) and chart.fig.data[0].y == (3.0, 2.0, 1.0)
    assert chart.fig.data[1].y == (0.1,)


def test_metrics_figure_one_subplot_per_group(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for row in ({"step": 1, "loss": 3.0, "lr": 1e-3}, {"step": 2, "loss": None, "lr": 5e-4}, {"step": 3, "loss": 2.0}):
        append_jsonl(path, row)
    with open(path, "a") as f:
        f.write("{not json\n")  # a line cut off by a crash: skipped
    fig = live.metrics_figure(path, {"loss": ["loss", "val_loss"], "lr": ["lr"]}, title="t")
    traces = {t.name: (list(t.x), list(t.y), t.xaxis) for t in fig.data}
    assert traces == {"loss": ([1, 3], [3.0, 2.0], "x"), "lr": ([1, 2], [1e-3, 5e-4], "x2")}  # no val_loss: no trace
    assert [a.text for a in fig.layout.annotations] == ["loss", "lr"] and fig.layout.title.text == "t"


def test_watch_stage_shows_the_stage_while_it_runs(tmp_path):
    import time

    stage, bar = tmp_path / "01_pretrain", tmp_path / ".progress.json"
    stage.mkdir()
    lines = []
    line = live.StageLine("pretrain", tty=False, log=lines.append, every_s=0)
    with live.watch_stage(line, stage, bar, "pretrain/loss", every_s=0.01):
        atomic_write_json(bar, {"desc": "pretrain", "n": 4, "total": 8})
        append_jsonl(stage / "metrics.jsonl", {"step": 4, "pretrain/loss": 2.5})
        deadline = time.monotonic() + 5
        while not any("4/8" in x and "loss 2.5" in x for x in lines) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert any(x.startswith("[labkit] pretrain: 4/8  loss 2.5") for x in lines), lines
    n = len(lines)
    time.sleep(0.05)
    assert len(lines) == n  # the watcher stopped with the block
