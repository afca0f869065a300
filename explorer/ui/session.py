"""State and caching of the app: loaded models, calibration runs, and results derived from them.

- Models: ``st.cache_resource`` keyed by the model source and device.
- Runs: a small process-wide LRU store keyed by :class:`Settings` (a run is computed with a
  progress bar, which a cached function could not show), and the session's current run in
  ``st.session_state`` so it survives eviction.
- Derived results (summaries, histograms, facts, the error table, accuracy), all read from the
  run's per-point statistics: ``st.cache_data``
  keyed by the run id plus plain values; the unhashable run/model are leading-underscore args.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from torch import nn

from explorer.analysis import (
    DistributionFacts,
    ExplorerRun,
    ObserverResult,
    ObserverSummary,
    distribution_facts,
    error_table,
    histogram,
    log2_histogram,
    observer_results,
    point_summary,
    quantized_model,
    run_calibration,
)
from explorer.analysis.evaluation import AccuracyReport, evaluate_quantized
from explorer.config import PointConfig, QuantConfig
from explorer.data import batched, calibration_bounds, model_input_config
from explorer.ui.sources import Holdout, ModelSource, Settings, holdout_images, load_images, load_model

RUN_STORE_SIZE = 2
HISTOGRAM_BINS = 200


@dataclass(frozen=True)
class Loaded:
    """A finished calibration: its settings, the model, the run, its duration and the accuracy images.

    A run opened from a file (``file``) may lack the model and images; ``needs`` then says what is missing.
    """

    settings: Settings
    model: nn.Module | None
    run: ExplorerRun
    seconds: float  # calibrating, or opening the file
    images_used: int
    holdout: Holdout | None
    file: str = ""
    needs: str = ""


class RunStore:
    """The last few calibrations of this process, most recent last (shared by sessions)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._runs: OrderedDict[Settings, Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, settings: Settings) -> Loaded | None:
        with self._lock:
            loaded = self._runs.get(settings)
            if loaded is not None:
                self._runs.move_to_end(settings)
            return loaded

    def put(self, loaded: Loaded) -> None:
        with self._lock:
            self._runs[loaded.settings] = loaded
            self._runs.move_to_end(loaded.settings)
            while len(self._runs) > self.size:
                self._runs.popitem(last=False)


@st.cache_resource(show_spinner=False)
def run_store() -> RunStore:
    """The process-wide run store."""
    return RunStore(RUN_STORE_SIZE)


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def cached_model(source_id: str, device: str, _source: ModelSource) -> nn.Module:
    """The model of ``_source`` (identified by ``source_id``, its repr) on ``device``."""
    return load_model(_source, device)


def calibrate(settings: Settings, progress: Callable[[int, int], None]) -> Loaded:
    """Load model and data of ``settings`` and run one calibration feeding all four observers.

    ``progress(done, total)`` is called after each batch. Errors of the library (bad model,
    data or config) propagate unchanged for the caller to show.
    """
    cached = run_store().get(settings)
    if cached is not None:
        return cached
    model = cached_model(repr(settings.model), settings.device, settings.model)
    calibration_bounds(model).check(settings.batch_size, settings.num_batches)  # before any image is read
    input_config = model_input_config(model)
    images = load_images(settings.data, input_config, settings.num_batches * settings.batch_size)
    batches = batched(images, settings.batch_size, settings.num_batches)
    used = sum(len(b) for b in batches)
    start = time.perf_counter()
    run = run_calibration(
        model,
        [b.to(settings.device) for b in batches],
        settings.config,
        alpha_floor=settings.alpha_floor,
        progress=lambda done: progress(done, len(batches)),
    )
    seconds = time.perf_counter() - start
    holdout = holdout_images(settings.data, input_config, images, used, getattr(model, "num_classes", None))
    loaded = Loaded(settings, model, run, seconds, used, holdout)
    run_store().put(loaded)
    return loaded


@st.cache_data(max_entries=64, show_spinner=False)
def calibrated_summaries(_run: ExplorerRun, run_id: str, block: int, point: str) -> dict[str, ObserverResult]:
    """Each observer type's summary on one point with the run's config (or why it failed)."""
    return observer_results(_run, (block, point))


@st.cache_data(max_entries=64, show_spinner=False)
def tuned_summary(_run: ExplorerRun, run_id: str, block: int, point: str, config: PointConfig) -> ObserverSummary:
    """The summary of ``config`` on one point, fitted from the point's statistics."""
    return point_summary(_run, (block, point), config)


@st.cache_data(max_entries=64, show_spinner=False)
def point_facts(_run: ExplorerRun, run_id: str, block: int, point: str) -> DistributionFacts:
    """:func:`distribution_facts` of one point (ValueError when its data was refused)."""
    return distribution_facts(_run.stats((block, point)))


@st.cache_data(max_entries=64, show_spinner=False)
def point_histogram(
    _run: ExplorerRun, run_id: str, block: int, point: str, channel: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(edges, counts)`` of all values of a point (``channel`` negative) or of one of its channels."""
    return histogram(_run.stats((block, point)), channel, bins=HISTOGRAM_BINS)


@st.cache_data(max_entries=64, show_spinner=False)
def point_log2_histogram(
    _run: ExplorerRun, run_id: str, block: int, point: str, channel: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(edges, counts)`` of a point's positive values on log2 bins (see :func:`log2_histogram`)."""
    return log2_histogram(_run.stats((block, point)), channel)


@st.cache_data(max_entries=8, show_spinner="Scoring the four observers on every point…")
def cached_error_table(_run: ExplorerRun, run_id: str) -> pd.DataFrame:
    """:func:`error_table` of the run."""
    return error_table(_run)


@st.cache_data(max_entries=16, show_spinner="Evaluating FP32 and quantized models…")
def accuracy(_loaded: Loaded, run_id: str, config_yaml: str, _config: QuantConfig) -> AccuracyReport:
    """FP32 vs ``_config``-quantized model on the run's held-out images (``config_yaml`` is its cache key)."""
    if _loaded.model is None or _loaded.holdout is None:
        raise ValueError(f"accuracy needs {_loaded.needs}")
    qvit = quantized_model(_loaded.model, _loaded.run, _config)
    return evaluate_quantized(qvit, _loaded.holdout.images, _loaded.holdout.labels)


def reset_when_changed(marker: str, value: Hashable, values: Mapping[str, Any]) -> None:
    """Write ``values`` into the session state when ``value`` differs from what ``marker`` saw last,
    or when some of those keys are gone (Streamlit drops the state of widgets a run did not draw).

    Used to load widgets with the settings of a newly selected point (before they are drawn)
    while keeping the user's unsaved edits as long as the selection stays the same.
    """
    if st.session_state.get(marker) != value or any(key not in st.session_state for key in values):
        st.session_state.update(values)
        st.session_state[marker] = value
