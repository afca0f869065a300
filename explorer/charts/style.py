"""Shared look of the explorer's figures: one colour per observer, compact layout."""

from __future__ import annotations

import plotly.graph_objects as go

from explorer.observers import observer_color, observer_label, observer_names
from explorer.observers.registry import FALLBACK_COLOR

TUNED = "Tuned"
"""Label of the tuned observer; ``"Tuned (KL)"`` and the like are drawn like it."""
TUNED_COLOR = "#111111"
DATA_COLOR = "#aab4c0"
_MODEBAR_REMOVE = ["zoom", "pan", "select", "lasso2d", "zoomIn", "zoomOut", "autoScale", "resetScale"]
"""Mode bar buttons left out: dragging still zooms and a double click resets, and the one button
left (download as PNG) no longer covers the title of a small chart."""


def observer_colors() -> dict[str, str]:
    """Colour of each observer label: every registered observer's declared colour, and the tuned one's."""
    return {**{observer_label(name): observer_color(name) for name in observer_names()}, TUNED: TUNED_COLOR}


def color_of(label: str) -> str:
    """The colour of an observer label; a tuned label such as ``"Tuned (KL)"`` is drawn like ``"Tuned"``."""
    if label.startswith(TUNED):
        return TUNED_COLOR
    return observer_colors().get(label, FALLBACK_COLOR)


def dash_of(label: str) -> str:
    """Line style: dashed for the tuned observer, so it stands apart from the calibrated ones."""
    return "dash" if label.startswith(TUNED) else "solid"


def base_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    """Apply the common margins, title (left, clear of the mode bar), legend (below the plot) and font."""
    fig.update_layout(
        title={"text": title, "font": {"size": 14}, "x": 0, "xanchor": "left", "xref": "container", "pad": {"l": 10}},
        height=height,
        margin={"l": 10, "r": 10, "t": 36 if title else 10, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.12, "xanchor": "left", "x": 0},
        modebar={"remove": _MODEBAR_REMOVE},
        template="plotly_white",
        bargap=0,
    )
    return fig
