"""Live training charts and progress bars, shared by every stage.

``LiveChart`` shows ONE plotly ``FigureWidget`` and extends its traces in
place as metrics arrive (a new figure per step would flood the notebook and
its saved file). Outside a Jupyter kernel — a terminal, or a papermill batch
run with no browser attached — it does nothing, and the notebook draws a
static figure from ``metrics.jsonl`` afterwards (``metrics_figure``), which
survives export to HTML.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from .runs import read_jsonl


def in_notebook() -> bool:
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
    rows = read_jsonl(path)
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
    """A tqdm bar: a widget in notebooks, text in a terminal."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, initial=initial, disable=disable, dynamic_ncols=True, mininterval=1.0)
