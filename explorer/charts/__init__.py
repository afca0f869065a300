"""Plotly figure builders for the explorer app: pure functions of plain data (arrays, mappings)."""

from explorer.charts.analysis import convergence_figure, pareto_figure, pareto_front, sensitivity_figure
from explorer.charts.compare import error_heatmap, wins_figure
from explorer.charts.layer import ClipRange, channel_range_figure, channel_scale_figure, histogram_figure
from explorer.charts.style import color_of, observer_colors

__all__ = [
    "ClipRange",
    "channel_range_figure",
    "channel_scale_figure",
    "color_of",
    "observer_colors",
    "error_heatmap",
    "histogram_figure",
    "wins_figure",
    "convergence_figure",
    "pareto_figure",
    "pareto_front",
    "sensitivity_figure",
]
