"""``report.html``: one offline page with every completed stage's headline numbers and plots.

Each stage module exposes ``CHART`` (metric groups to plot from its
``metrics.jsonl``); the headline numbers come from ``run.json``. plotly.js is
embedded once, so the page opens without a network.
"""

from __future__ import annotations

import html
import json

from .live import metrics_figure
from .runs import STAGE_DIRS, STAGES, Run, atomic_write_text, read_json


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def write_report(run: Run) -> str:
    import importlib

    m = run.manifest()
    parts = [f"<h1>LLM Training Lab — run <code>{html.escape(run.name)}</code></h1>",
             f"<p>preset <b>{_fmt(m.get('preset'))}</b> · versions {_fmt(json.dumps(m.get('versions', {})))}</p>"]
    first_plot = True
    for stage in STAGES:
        info = m.get("stages", {}).get(stage)
        if not info:
            continue
        d = run.path / STAGE_DIRS[stage]
        parts.append(f"<h2>{STAGE_DIRS[stage]}</h2><p>{info['seconds']:.0f} s, finished {info.get('finished', '')}</p>")
        rows = "".join(f"<tr><td>{_fmt(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in info["headline"].items())
        parts.append(f"<table>{rows}</table>")
        try:
            chart = importlib.import_module(f"labkit.{stage}").CHART
        except (ImportError, AttributeError):
            chart = None
        if chart and (d / "metrics.jsonl").exists():
            fig = metrics_figure(d / "metrics.jsonl", chart, title=stage)
            parts.append(fig.to_html(full_html=False, include_plotlyjs=first_plot))
            first_plot = False
        extra = read_json(d / "eval.json", {})
        tables = {k: v for k, v in extra.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        for name, rows_ in tables.items():
            cols = list(rows_[0])
            head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
            body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>"
                           for r in rows_[:20])
            parts.append(f"<h3>{html.escape(name)}</h3><table><tr>{head}</tr>{body}</table>")
    style = ("<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}"
             "</style>")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(run.name)}</title>{style}" \
           f"</head><body>{''.join(parts)}</body></html>"
    path = run.path / "report.html"
    atomic_write_text(path, page)
    return str(path)
