"""Per-point statistics: one mergeable sketch per quantization point that every observer fits from
and every error metric is read from, so nothing of the activations has to be kept."""

from explorer.stats.histogram import SignedHistogram
from explorer.stats.metrics import ErrorBreakdown, error_from_stats, error_from_values
from explorer.stats.point_stats import DEFAULT_ALPHA_FLOOR, BatchEnds, PointStats, StatsView

__all__ = [
    "DEFAULT_ALPHA_FLOOR",
    "BatchEnds",
    "ErrorBreakdown",
    "PointStats",
    "SignedHistogram",
    "StatsView",
    "error_from_stats",
    "error_from_values",
]
