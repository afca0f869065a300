"""Analysis without UI: the explorer's calibration runs, refits, summaries and accuracy."""

from explorer.analysis.explore import (
    OBSERVER_LABELS,
    OBSERVER_TYPES,
    POINTS,
    DistributionFacts,
    ExplorerRun,
    ObserverSummary,
    as_observer_type,
    distribution_facts,
    error_table,
    fit_observer,
    histogram,
    observer_for,
    quantized_model,
    run_calibration,
    summarize,
)

__all__ = [
    "OBSERVER_LABELS",
    "OBSERVER_TYPES",
    "POINTS",
    "DistributionFacts",
    "ExplorerRun",
    "ObserverSummary",
    "as_observer_type",
    "distribution_facts",
    "error_table",
    "fit_observer",
    "histogram",
    "observer_for",
    "quantized_model",
    "run_calibration",
    "summarize",
]
