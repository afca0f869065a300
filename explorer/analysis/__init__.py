"""Analysis without UI: the explorer's calibration runs, refits, summaries and accuracy."""

from explorer.analysis.evaluation import AccuracyReport, calibrate_and_evaluate, evaluate_quantized
from explorer.analysis.explore import (
    POINTS,
    DistributionFacts,
    ExplorerRun,
    ObserverResult,
    ObserverSummary,
    as_observer_type,
    distribution_facts,
    error_table,
    histogram,
    log2_histogram,
    observer_for,
    observer_results,
    point_summary,
    quantized_model,
    run_calibration,
    summarize,
)
from explorer.analysis.provenance import DataIdentity, ModelIdentity, RunSource
from explorer.analysis.runfile import RunFileError, load_run, save_run

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
    "ObserverResult",
    "observer_for",
    "observer_results",
    "point_summary",
    "quantized_model",
    "run_calibration",
    "summarize",
    "DataIdentity",
    "ModelIdentity",
    "RunSource",
    "RunFileError",
    "load_run",
    "save_run",
]
