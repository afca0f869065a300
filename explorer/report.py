"""A saved run as one self-contained HTML page (plotly inlined, opens offline) to attach to a ticket:
the run's provenance, the all-points comparison (error heatmap, wins, where MinMax falls behind)
and, for every point, its histogram with every observer's clip range and their errors.

Every observer summary is computed once and shared by the table, the charts and the point sections.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go

from explorer.analysis import (
    ExplorerRun,
    FitFailure,
    ObserverResult,
    ObserverSummary,
    error_table,
    histogram,
    metric_matrix,
    observer_results,
    wins,
)
from explorer.charts import ClipRange, error_heatmap, histogram_figure, wins_figure
from explorer.observers import observer_label
from explorer.ui.explain import POINT_DESCRIPTIONS, minmax_gaps
from explorer.vit import PointKey

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}"
    "th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.err{color:#b00}"
)


def _markdown(text: str) -> str:
    """The small markdown :func:`minmax_gaps` writes (bold, one list) as HTML."""
    lines = [re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(line)) for line in text.splitlines()]
    items = [f"<li>{line[2:]}</li>" for line in lines if line.startswith("- ")]
    paragraphs = [f"<p>{line}</p>" for line in lines if line and not line.startswith("- ")]
    return "".join(paragraphs) + (f"<ul>{''.join(items)}</ul>" if items else "")


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _provenance(run: ExplorerRun, header: Mapping[str, Any]) -> str:
    source = run.source
    rows = [
        ["model", source.model.describe() if source else "not recorded"],
        ["data", source.data.description if source else "not recorded"],
        ["batches × batch size", f"{run.batches} × {source.batch_size if source else '?'}"],
        ["blocks", str(run.num_blocks)],
        ["lowest percentile_alpha", f"{run.alpha_floor:g}"],
        ["calibrated", str(header.get("created", "?"))],
        ["versions", ", ".join(f"{k} {v}" for k, v in header.get("versions", {}).items())],
    ]
    refused = "".join(
        f"<li class='err'>block {b} {p}: {html.escape(why)}</li>" for (b, p), why in run.capture.errors.items()
    )
    return _table(["", ""], rows) + (f"<p>Points without statistics:</p><ul>{refused}</ul>" if refused else "")


def _point_section(
    run: ExplorerRun, key: PointKey, results: Mapping[str, ObserverResult]
) -> tuple[str, go.Figure | None]:
    """The heading, metrics table and histogram (with clip lines) of one point."""
    block, name = key
    title = f"Block {block} · {name} — {POINT_DESCRIPTIONS[name]}"
    heading = f"<h3 id='b{block}-{name}'>{html.escape(title)}</h3>"
    if key not in run.capture.stats:
        return heading + f"<p class='err'>No statistics: {html.escape(run.capture.errors.get(key, ''))}</p>", None
    summaries = {t: r for t, r in results.items() if isinstance(r, ObserverSummary)}
    rows = [
        [s.label, f"[{float(np.min(s.clip_min)):.4g}, {float(np.max(s.clip_max)):.4g}]", f"{s.mse:.4g}",
         f"{s.sqnr_db:.2f}", f"{100 * s.clipped_fraction:.4f}"]
        for s in summaries.values()
    ]  # fmt: skip
    rows += [[observer_label(t), f"failed: {r}", "", "", ""] for t, r in results.items() if isinstance(r, FitFailure)]
    table = _table(["observer", "clip range (widest over channels)", "MSE", "SQNR dB", "clipped %"], rows)
    edges, counts = histogram(run.stats(key))
    clips = [ClipRange(s.label, float(np.min(s.clip_min)), float(np.max(s.clip_max))) for s in summaries.values()]
    return heading + table, histogram_figure(edges, counts, clips, log_y=True, height=300)


def report_html(
    run: ExplorerRun, title: str, header: Mapping[str, Any], progress: Callable[[int, int], None] | None = None
) -> str:
    """The whole report page; ``header`` is the run file's metadata (creation time, versions),
    ``progress(done, total)`` is called after each point's summaries."""
    results: dict[PointKey, dict[str, ObserverResult]] = {}
    for i, key in enumerate(run.points):
        results[key] = observer_results(run, key)  # a point without statistics: every observer's failure says so
        if progress is not None:
            progress(i + 1, len(run.points))
    table = error_table(run, results)
    sqnr = metric_matrix(table, "sqnr_db")
    rows = [f"{b} · {p}" for b, p in sqnr.index]
    parts: list[str | go.Figure] = [
        f"<h1>{html.escape(title)}</h1>",
        _provenance(run, header),
        "<h2>All points</h2>",
        _markdown(minmax_gaps(sqnr)),
        error_heatmap(
            sqnr.to_numpy(dtype=float),
            rows,
            list(sqnr.columns),
            "SQNR dB",
            True,
            "SQNR per point and observer (higher is better)",
        ),
        wins_figure(wins(table), "Least MSE: points won"),
        "<h2>Every point</h2>",
    ]
    for key in run.points:
        section, figure = _point_section(run, key, results[key])
        parts.append(section)
        if figure is not None:
            parts.append(figure)
    body, first = [], True
    for part in parts:
        if isinstance(part, go.Figure):
            body.append(part.to_html(full_html=False, include_plotlyjs=first, config={"displaylogo": False}))
            first = False
        else:
            body.append(part)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
