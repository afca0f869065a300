"""Figures across all quantization points: error heatmap and which observer wins where."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from explorer.charts.style import base_layout, color_of


def error_heatmap(
    values: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[str],
    colorbar_title: str,
    higher_is_better: bool,
    title: str = "",
) -> go.Figure:
    """A points × observers heatmap of ``values`` (``[len(rows), len(columns)]``), each cell labelled.

    Green is good: the colour scale is reversed when lower values are better (MSE, clipping).
    """
    z = np.asarray(values, dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(columns),
            y=list(rows),
            colorscale="RdYlGn" if higher_is_better else "RdYlGn_r",
            colorbar={"title": {"text": colorbar_title}},
            texttemplate="%{z:.3g}",
            hovertemplate="%{y} · %{x}<br>" + colorbar_title + " %{z:.4g}<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    fig.update_yaxes(autorange="reversed", title_text="block · point", type="category")
    fig.update_xaxes(side="top", title_text="observer", type="category")
    return base_layout(fig, title, height=max(260, 60 + 22 * len(rows)))


def wins_figure(wins: Mapping[str, int], title: str = "", height: int = 260) -> go.Figure:
    """A bar per observer: on how many points it has the least error."""
    labels = list(wins)
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=[wins[label] for label in labels],
            marker={"color": [color_of(label) for label in labels]},
            text=[wins[label] for label in labels],
            textposition="outside",
            hovertemplate="%{x}: least MSE on %{y} point(s)<extra></extra>",
            showlegend=False,
        )
    )
    fig.update_yaxes(title_text="points won", rangemode="tozero")
    return base_layout(fig, title, height)
