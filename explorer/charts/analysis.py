"""Figures of the "what should I use" analyses: sensitivity per point, agreement against average
bits with the Pareto front, and an observer's clip range against batches seen."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from explorer.charts.style import base_layout, color_of

SENSITIVITY_COLUMNS = {
    "only_sqnr_db": "Logit SQNR with only this point quantized (dB)",
    "all_but_sqnr_db": "Logit SQNR with all but this point quantized (dB)",
    "only_agreement": "Agreement with only this point quantized",
    "all_but_agreement": "Agreement with all but this point quantized",
}
"""Sensitivity column → axis title. Low "only" = the point hurts by itself; high "all but" = leaving
it in float recovers the most."""


def sensitivity_figure(table: pd.DataFrame, column: str, title: str = "") -> go.Figure:
    """A horizontal bar per point, the most harmful on top: ascending for ``only_*``, descending for ``all_but_*``."""
    harmful_first = table.sort_values(column, ascending=column.startswith("only"))
    labels = [f"{b} · {p}" for b, p in zip(harmful_first["block"], harmful_first["point"], strict=True)]
    fig = go.Figure(
        go.Bar(
            x=harmful_first[column],
            y=labels,
            orientation="h",
            marker={"color": "#d62728" if column.startswith("only") else "#1f77b4"},
            hovertemplate="%{y}: %{x:.4g}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category", title_text="block · point")
    fig.update_xaxes(title_text=SENSITIVITY_COLUMNS[column])
    return base_layout(fig, title, height=max(260, 60 + 18 * len(labels)))


def pareto_front(tried: pd.DataFrame) -> pd.DataFrame:
    """The rows no other row beats on both fewer average bits and higher agreement, by average bits."""
    ordered = tried.sort_values(["average_bits", "agreement"], ascending=[True, False])
    best = -1.0
    keep = []
    for index, row in ordered.iterrows():
        if row["agreement"] > best:
            keep.append(index)
            best = row["agreement"]
    return ordered.loc[keep]


def pareto_figure(tried: pd.DataFrame, budget: float, title: str = "") -> go.Figure:
    """Agreement against average bits for every assignment tried; the Pareto front joined, the
    chosen assignment ringed, the budget a vertical line."""
    front = pareto_front(tried)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=tried["average_bits"],
            y=100 * tried["agreement"],
            mode="markers",
            name="assignments tried",
            text=tried["label"],
            marker={"color": "#7f7f7f", "size": 8},
            hovertemplate="%{text}<br>%{x:.2f} bits · %{y:.2f} %<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=front["average_bits"],
            y=100 * front["agreement"],
            mode="lines+markers",
            name="Pareto front",
            line={"color": "#2ca02c"},
            hoverinfo="skip",
        )
    )
    chosen = tried[tried["chosen"]]
    fig.add_trace(
        go.Scatter(
            x=chosen["average_bits"],
            y=100 * chosen["agreement"],
            mode="markers",
            name="chosen",
            marker={"color": "rgba(0,0,0,0)", "size": 16, "line": {"color": "#d62728", "width": 2}},
            hoverinfo="skip",
        )
    )
    fig.add_vline(x=budget, line_dash="dot", line_color="#d62728")
    fig.update_xaxes(title_text="element-weighted average bits")
    fig.update_yaxes(title_text="top-1 agreement with FP32 (%)")
    return base_layout(fig, title, height=320)


CONVERGENCE_FOOT = 96
"""Pixels below the convergence plot: tick labels, axis title and a legend of up to two rows."""


def convergence_figure(table: pd.DataFrame, labels: dict[str, str], title: str = "", height: int = 300) -> go.Figure:
    """Each observer's clip min and max (widest over channels) against batches seen; ``labels``
    maps the table's ``observer_type`` to the name drawn."""
    fig = go.Figure()
    for observer_type, rows in table.groupby("observer_type", sort=False):
        label = labels[str(observer_type)]
        for end, dash in (("clip_max", "solid"), ("clip_min", "dot")):
            fig.add_trace(
                go.Scatter(
                    x=rows["batches"],
                    y=rows[end],
                    mode="lines+markers",
                    name=f"{label} {end.removeprefix('clip_')}",
                    line={"color": color_of(label), "dash": dash},
                )
            )
    fig.update_xaxes(title_text="batches seen", dtick=1)
    fig.update_yaxes(title_text="clip range")
    base_layout(fig, title, height)
    # the legend at the figure's foot: a short plot's legend placed by plot height covers the axis below
    return fig.update_layout(legend={"yref": "container", "y": 0, "yanchor": "bottom"}, margin={"b": CONVERGENCE_FOOT})
