"""Analysis without UI: the explorer's calibration runs, refits, summaries and accuracy, and what to
use: sensitivity per point, a recommended config, mixed precision and calibration convergence."""

from explorer.analysis.convergence import convergence
from explorer.analysis.evaluation import AccuracyReport, calibrate_and_evaluate, evaluate_quantized
from explorer.analysis.explore import (
    ERROR_COLUMNS,
    POINTS,
    DistributionFacts,
    ErrorRow,
    ExplorerRun,
    FitFailure,
    ObserverResult,
    ObserverSummary,
    as_observer_type,
    distribution_facts,
    error_table,
    histogram,
    log2_histogram,
    metric_matrix,
    observer_for,
    observer_results,
    point_summary,
    quantized_model,
    run_calibration,
    summarize,
    wins,
)
from explorer.analysis.mixed_precision import mixed_precision, search_mixed_precision
from explorer.analysis.provenance import DataIdentity, ModelIdentity, RunSource
from explorer.analysis.recommend import recommend, recommend_config
from explorer.analysis.runfile import RunFileError, load_run, save_run
from explorer.analysis.sensitivity import sensitivity

__all__ = [
    "AccuracyReport",
    "calibrate_and_evaluate",
    "evaluate_quantized",
    "ERROR_COLUMNS",
    "POINTS",
    "DistributionFacts",
    "ErrorRow",
    "ExplorerRun",
    "FitFailure",
    "ObserverSummary",
    "as_observer_type",
    "distribution_facts",
    "error_table",
    "histogram",
    "log2_histogram",
    "metric_matrix",
    "ObserverResult",
    "observer_for",
    "observer_results",
    "point_summary",
    "quantized_model",
    "run_calibration",
    "summarize",
    "wins",
    "DataIdentity",
    "ModelIdentity",
    "RunSource",
    "RunFileError",
    "load_run",
    "save_run",
    "sensitivity",
    "recommend",
    "recommend_config",
    "mixed_precision",
    "search_mixed_precision",
    "convergence",
]
