"""Analysis without UI: the explorer's calibration runs, refits, summaries and accuracy."""

from explorer.analysis.evaluation import AccuracyReport, calibrate_and_evaluate, evaluate_quantized
from explorer.analysis.explore import (
    POINTS,
    DistributionFacts,
    ExplorerRun,
    ObserverSummary,
    as_observer_type,
    distribution_facts,
    error_table,
    histogram,
    log2_histogram,
    observer_for,
    point_summary,
    quantized_model,
    run_calibration,
    summarize,
)

__all__ = [
    "AccuracyReport",
    "calibrate_and_evaluate",
    "evaluate_quantized",
    "POINTS",
    "DistributionFacts",
    "ExplorerRun",
    "ObserverSummary",
    "as_observer_type",
    "distribution_facts",
    "error_table",
    "histogram",
    "log2_histogram",
    "observer_for",
    "point_summary",
    "quantized_model",
    "run_calibration",
    "summarize",
]
