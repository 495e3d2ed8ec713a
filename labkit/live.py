"""Live training charts and progress bars, shared by every stage.

``LiveChart`` shows ONE plotly ``FigureWidget`` and extends its traces in
place as metrics arrive (a new figure per step would flood the notebook and
its saved file). Outside a Jupyter kernel — a terminal, or the runner's
papermill batch run with no browser attached — it does nothing, and the
notebook draws a static figure from ``metrics.jsonl`` afterwards
(``metrics_figure``), which survives export to HTML.

The runner (``labkit run``) executes notebooks with papermill, which shows
none of the kernel's output. To still show each stage's progress in the
terminal, it sets ``LABKIT_PROGRESS_FILE`` for the kernel: ``progress()`` bars
then mirror their count there, and ``watch_stage`` reads that file, the
stage's ``metrics.jsonl`` and ``config.json`` into one ``StageLine``.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .runs import atomic_write_json, read_json, read_jsonl

PROGRESS_ENV = "LABKIT_PROGRESS_FILE"


def in_notebook() -> bool:
    """A kernel with a browser attached: not the runner's batch kernels, which it marks with PROGRESS_ENV
    (a widget there has nobody to watch it, and its saved state would put plotly.js into the notebook)."""
    if PROGRESS_ENV in os.environ:
        return False
    try:
        from IPython import get_ipython
        ip = get_ipython()
        return ip is not None and ip.__class__.__name__ == "ZMQInteractiveShell" and hasattr(ip, "kernel")
    except ImportError:
        return False


class LiveChart:
    """One figure, one subplot per group of metric keys, updated at most every ``every_s`` seconds."""

    def __init__(self, groups: dict[str, list[str]], title: str = "", enabled: bool | None = None,
                 every_s: float = 1.0):
        self.groups, self.every_s, self._last = groups, every_s, 0.0
        self.data: dict[str, tuple[list, list]] = {k: ([], []) for keys in groups.values() for k in keys}
        self.fig = None
        if enabled is None:
            enabled = in_notebook()
        if not enabled:
            return
        try:
            import plotly.graph_objects as go
            from IPython.display import display
            from plotly.subplots import make_subplots
            fig = make_subplots(rows=1, cols=len(groups), subplot_titles=list(groups))
            for col, keys in enumerate(groups.values(), start=1):
                for k in keys:
                    fig.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name=k, marker={"size": 4}),
                                  row=1, col=col)
            fig.update_layout(title=title, height=320, margin={"t": 60, "b": 30})
            self.fig = go.FigureWidget(fig)
            display(self.fig)
        except Exception:  # no widget frontend: charts are a nicety, never a reason to fail training
            self.fig = None

    def update(self, step: int, metrics: dict, force: bool = False) -> None:
        for k, v in metrics.items():
            if k in self.data and v is not None and math.isfinite(float(v)):
                self.data[k][0].append(step)
                self.data[k][1].append(float(v))
        if self.fig is None or (not force and time.monotonic() - self._last < self.every_s):
            return
        self._last = time.monotonic()
        with self.fig.batch_update():
            for trace in self.fig.data:
                xs, ys = self.data[trace.name]
                trace.x, trace.y = xs, ys


def metrics_figure(path: str | Path, groups: dict[str, list[str]], title: str = "", x: str = "step"):
    """A static plotly figure of ``metrics.jsonl`` (one subplot per group), for notebooks and the report."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    rows = read_jsonl(path, on_error="skip")
    fig = make_subplots(rows=1, cols=len(groups), subplot_titles=list(groups))
    for col, keys in enumerate(groups.values(), start=1):
        for k in keys:
            pts = [(r[x], r[k]) for r in rows if k in r and r[k] is not None and x in r]
            if pts:
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name=k),
                              row=1, col=col)
    fig.update_layout(title=title, height=340, margin={"t": 60, "b": 30})
    return fig


def progress(total: int, desc: str, initial: int = 0, disable: bool = False):
    """A tqdm bar: a widget in notebooks, text in a terminal; mirrored to ``$LABKIT_PROGRESS_FILE`` when set."""
    from tqdm.auto import tqdm
    path = os.environ.get(PROGRESS_ENV)
    cls = _mirrored(tqdm, path) if path and not disable else tqdm
    return cls(total=total, desc=desc, initial=initial, disable=disable, dynamic_ncols=True, mininterval=1.0)


def _mirrored(base, path: str):
    class Mirrored(base):
        """Also writes ``{desc, n, total}`` to ``path`` (at most twice a second, and when full) for the runner."""
        _mirrored_at = 0.0

        def update(self, n=1):
            out = super().update(n)
            if time.monotonic() - self._mirrored_at >= 0.5 or self.n == self.total:
                self._mirrored_at = time.monotonic()
                atomic_write_json(path, {"desc": self.desc, "n": self.n, "total": self.total})
            return out

    return Mirrored


# --- the runner's terminal line for a running stage ---------------------------------

class Timer:
    """Wall seconds per part of a stage, summed over its calls: ``with timer("generate"): ...``. A stage
    writes ``timer.seconds`` into its eval.json (``timings``), which benchmarks/profile.py tabulates:
    where each stage's time goes (training, generation, evaluation, scoring, loading, saving)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, part: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - t

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in self.seconds.items()}


def format_seconds(s: float) -> str:
    """12s, 3m05s, 1h02m: short enough for a table column."""
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class StageLine:
    """What the terminal shows while a stage runs: step / total, its headline metric, elapsed and ETA.

    On a terminal: one line redrawn in place, with a tqdm bar. Elsewhere (CI logs, ``> file``): plain
    lines, one per tenth of the stage and otherwise one every ``every_s`` seconds, so logs stay short
    but a long evaluation never looks like a hang.
    """

    def __init__(self, stage: str, tty: bool, log=print, stream=None, every_s: float = 30.0):
        self.stage, self.tty, self.log, self.every_s = stage, tty, log, every_s
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()
        self.n = self.total = None
        self._first = None  # (time, n) of the first count seen: the ETA's rate leaves out start-up time
        self._printed_at, self._decile = self.t0, -1

    def show(self, desc: str, n: int | None, total: int | None, metric: tuple[str, float] | None) -> None:
        now = time.monotonic()
        if n is not None and self._first is None:
            self._first = (now, n)
        self.n, self.total = n, total
        label = self.stage if desc in ("", self.stage) else f"{self.stage} · {desc}"
        info = [] if n is None else [f"{n}/{total}" if total else f"step {n}"]
        if metric:
            info.append(f"{metric[0].split('/', 1)[-1]} {metric[1]:.4g}")
        info.append(f"{format_seconds(now - self.t0)} elapsed")
        eta = self._eta(now)
        if eta is not None:
            info.append(f"ETA {format_seconds(eta)}")
        rest = "  ".join(info)
        if self.tty:
            from tqdm import tqdm
            width = shutil.get_terminal_size().columns - 1
            line = (tqdm.format_meter(n, total, now - self.t0, ncols=width, prefix=f"[labkit] {label}",
                                      bar_format="{desc}: {percentage:3.0f}%|{bar}| {rest}", rest=rest)
                    if n is not None and total else f"[labkit] {label}: {rest}"[:width])
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
            return
        decile = int(10 * n / total) if n is not None and total else -1
        if decile > self._decile or now - self._printed_at >= self.every_s:
            self._decile, self._printed_at = max(decile, self._decile), now
            self.log(f"[labkit] {label}: {rest}")

    def _eta(self, now: float) -> float | None:
        if self._first is None or not self.total or self.n is None or not self._first[1] < self.n < self.total:
            return None
        rate = (self.n - self._first[1]) / (now - self._first[0])
        return max(0.0, (self.total - self.n) / rate)

    def say(self, message: str, final: bool = False) -> None:
        """A message in the stage's place: on a terminal it stands in the live line (``final``: for good)."""
        if not self.tty:
            self.log(message)
            return
        self.stream.write("\r" + message + "\x1b[K" + ("\n" if final else ""))
        self.stream.flush()

    def close(self) -> None:
        """End the live line, so what is printed next (an error, Ctrl-C's message) starts on its own line."""
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fresh(path: Path, since: float) -> bool:
    """Written during this stage (a file left by an earlier attempt would show stale numbers)."""
    try:
        return path.stat().st_mtime >= since
    except OSError:
        return False


def stage_snapshot(stage_dir: Path, progress_file: Path, metric: str | None, since: float):
    """``(desc, n, total, (metric, value))`` of a running stage, from the files it wrote after ``since``.

    The mirrored bar knows the step and total exactly; stages whose trainer draws its own bar (SFT)
    are followed through ``metrics.jsonl`` and the ``max_steps`` of ``config.json``.
    """
    bar = read_json(progress_file) if _fresh(progress_file, since) else None
    rows = read_jsonl(stage_dir / "metrics.jsonl", on_error="skip") if _fresh(stage_dir / "metrics.jsonl", since) else []
    value = next(((metric, r[metric]) for r in reversed(rows) if r.get(metric) is not None), None)
    if bar:
        return bar["desc"], bar["n"], bar["total"], value
    cfg = read_json(stage_dir / "config.json", {}) if _fresh(stage_dir / "config.json", since) else {}
    steps = [r["step"] for r in rows if "step" in r]
    return "", steps[-1] if steps else None, cfg.get("max_steps"), value


@contextmanager
def watch_stage(line: StageLine, stage_dir: Path, progress_file: Path, metric: str | None, every_s: float = 0.5):
    """Refresh ``line`` from the stage's files every ``every_s`` seconds while the body runs."""
    since, stop = time.time(), threading.Event()

    def poll():
        while not stop.wait(every_s):
            line.show(*stage_snapshot(stage_dir, progress_file, metric, since))

    thread = threading.Thread(target=poll, name=f"labkit-watch-{line.stage}", daemon=True)
    thread.start()
    try:
        yield line
    finally:
        stop.set()
        thread.join()
