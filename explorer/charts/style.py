"""Shared look of the explorer's figures: one colour per observer, compact layout."""

from __future__ import annotations

import plotly.graph_objects as go

OBSERVER_COLORS: dict[str, str] = {
    "MinMax": "#d62728",
    "Percentile": "#1f77b4",
    "OMSE": "#2ca02c",
    "KL": "#9467bd",
    "Tuned": "#111111",
}
"""Colour of each observer label (the app's labels: MinMax, Percentile, OMSE, KL, and the tuned one)."""
FALLBACK_COLOR = "#7f7f7f"
DATA_COLOR = "#aab4c0"


def color_of(label: str) -> str:
    """The colour of an observer label; a tuned label such as ``"Tuned (KL)"`` is drawn like ``"Tuned"``."""
    return OBSERVER_COLORS.get(label.split(" ")[0], FALLBACK_COLOR)


def dash_of(label: str) -> str:
    """Line style: dashed for the tuned observer, so it stands apart from the calibrated four."""
    return "dash" if label.startswith("Tuned") else "solid"


def base_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    """Apply the common margins, legend (below the plot, clear of the title) and font to ``fig``."""
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=height,
        margin={"l": 10, "r": 10, "t": 36 if title else 10, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.12, "xanchor": "left", "x": 0},
        template="plotly_white",
        bargap=0,
    )
    return fig
