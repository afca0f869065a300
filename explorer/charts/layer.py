"""Figures of one quantization point: value histogram with clip lines, per-channel ranges and scales."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from explorer.charts.style import DATA_COLOR, base_layout, color_of, dash_of

LEVEL_COLOR = "#6b7a8f"
"""Colour of the quantization grid's level lines."""


@dataclass(frozen=True)
class ClipRange:
    """The clip range ``[lo, hi]`` one observer chose, as drawn on a histogram."""

    label: str
    lo: float
    hi: float


def histogram_figure(
    edges: np.ndarray,
    counts: np.ndarray,
    clips: Sequence[ClipRange],
    log_y: bool = False,
    title: str = "",
    height: int = 360,
    legend: bool = True,
    log2_x: bool = False,
    levels: Sequence[float] = (),
) -> go.Figure:
    """Bars of ``counts`` over bins ``edges`` and two vertical lines (lo, hi) per observer.

    The lines are shapes spanning the plot's height (so they work on a log axis too); each
    observer's pair shares a legend entry that names its range and toggles both lines
    (``legend=False`` leaves the legend out, for small multiples). ``log2_x`` draws the x axis as
    ``log2(value)`` (for positive data: bins, lines and ``levels`` at or below 0 are left out), and
    ``levels`` are the quantization grid's levels, drawn as thin dotted lines.
    """
    edges = np.asarray(edges, dtype=float)
    counts = np.asarray(counts, dtype=float)
    if log2_x:
        keep = edges[:-1] > 0
        edges, counts = np.log2(edges[np.concatenate([keep, [True]])]), counts[keep]
    centers = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure(
        go.Bar(
            x=centers,
            y=counts,
            width=np.diff(edges),
            marker={"color": DATA_COLOR, "line": {"width": 0}},
            name="values",
            hovertemplate="x≈%{x:.4g}<br>count %{y:,}<extra></extra>",
        )
    )
    shown = [float(v) for v in levels if not log2_x or v > 0]
    for i, level in enumerate(shown):
        fig.add_shape(
            type="line",
            x0=np.log2(level) if log2_x else level,
            x1=np.log2(level) if log2_x else level,
            y0=0,
            y1=1,
            yref="paper",
            line={"color": LEVEL_COLOR, "width": 1, "dash": "dot"},
            name=f"grid levels ({len(shown)})",
            legendgroup="levels",
            showlegend=i == 0,
        )
    for clip in clips:
        lines = [x for x in (clip.lo, clip.hi) if not log2_x or x > 0]
        for i, x in enumerate(np.log2(lines) if log2_x else lines):
            fig.add_shape(
                type="line",
                x0=x,
                x1=x,
                y0=0,
                y1=1,
                yref="paper",
                line={"color": color_of(clip.label), "width": 2, "dash": dash_of(clip.label)},
                name=f"{clip.label} [{clip.lo:.4g}, {clip.hi:.4g}]",
                legendgroup=clip.label,
                showlegend=i == 0,
            )
    fig.update_yaxes(type="log" if log_y else "linear", title_text="count (log)" if log_y else "count")
    if log2_x:
        fig.update_xaxes(title_text="log2(value)")
    return base_layout(fig, title, height).update_layout(showlegend=legend)


def _per_channel(values: np.ndarray, channels: int) -> np.ndarray:
    """One value per channel: a layer-wise observer's single value repeated across the channels."""
    values = np.asarray(values, dtype=float).ravel()
    return np.full(channels, values[0]) if values.size == 1 else values


def channel_range_figure(
    data_min: np.ndarray,
    data_max: np.ndarray,
    ranges: Mapping[str, tuple[np.ndarray, np.ndarray]],
    title: str = "",
    height: int = 320,
) -> go.Figure:
    """The data's per-channel [min, max] as a grey band and each observer's clip range per channel.

    ``ranges`` maps an observer label to ``(clip_min, clip_max)``, one value per channel
    (or one value for a layer-wise observer, drawn flat across all channels).
    """
    data_min = np.asarray(data_min, dtype=float).ravel()
    data_max = np.asarray(data_max, dtype=float).ravel()
    channels = np.arange(data_min.size)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=channels, y=data_max, mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip")
    )
    fig.add_trace(
        go.Scatter(
            x=channels,
            y=data_min,
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(170,180,192,0.45)",
            name="data min–max",
            hoverinfo="skip",
        )
    )
    mode = "lines+markers" if channels.size <= 32 else "lines"
    for label, (lo, hi) in ranges.items():
        style = {"color": color_of(label), "width": 1.5, "dash": dash_of(label)}
        for i, (edge, values) in enumerate((("clip max", hi), ("clip min", lo))):
            fig.add_trace(
                go.Scatter(
                    x=channels,
                    y=_per_channel(values, channels.size),
                    mode=mode,
                    line=style,
                    marker={"size": 5},
                    name=label,
                    legendgroup=label,
                    showlegend=i == 0,
                    hovertemplate=f"{label} {edge}<br>channel %{{x}}: %{{y:.4g}}<extra></extra>",
                )
            )
    fig.update_yaxes(title_text="value")
    return base_layout(fig, title, height)


def channel_scale_figure(
    scales: Mapping[str, np.ndarray], channels: int, log_y: bool = False, title: str = "", height: int = 320
) -> go.Figure:
    """Each observer's quantization step (scale) per channel; layer-wise scales are drawn flat."""
    x = np.arange(channels)
    mode = "lines+markers" if channels <= 32 else "lines"
    fig = go.Figure()
    for label, values in scales.items():
        fig.add_trace(
            go.Scatter(
                x=x,
                y=_per_channel(values, channels),
                mode=mode,
                line={"color": color_of(label), "width": 1.5, "dash": dash_of(label)},
                marker={"size": 5},
                name=label,
                hovertemplate=f"{label}<br>channel %{{x}}: scale %{{y:.4g}}<extra></extra>",
            )
        )
    fig.update_yaxes(type="log" if log_y else "linear", title_text="scale (step)")
    return base_layout(fig, title, height)
