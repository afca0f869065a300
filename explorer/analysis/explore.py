"""The explorer's computations, free of any UI: one calibration pass that gathers every point's
statistics, observers fitted from them with any settings, per-point summaries with their error
breakdown, distribution facts, display histograms and the all-layer error table.

Nothing here keeps an activation tensor: everything is read from the points'
:class:`~explorer.stats.PointStats`, so it works the same on the demo and on ViT-B.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from explorer.allocator import retain_freed_memory
from explorer.analysis.provenance import RunSource
from explorer.config import ACTIVATION_POINTS, WEIGHT_POINTS, PointConfig, QuantConfig, module_type_of
from explorer.observers import Observer, build_observer, observer_label, observer_names
from explorer.stats import DEFAULT_ALPHA_FLOOR, PointStats, error_from_stats
from explorer.stats.log_metrics import log_error_from_stats
from explorer.vit import CaptureResult, PointKey, QuantViT, StatsCapture, vit_blocks

POINTS: tuple[str, ...] = (*WEIGHT_POINTS, *ACTIVATION_POINTS)


def as_observer_type(point: PointConfig, observer_type: str) -> PointConfig:
    """``point`` with another observer; KL (symmetric only) drops an asymmetric override."""
    if observer_type == "KLObserver" and point.symmetric is False:
        return point.replace(observer_type=observer_type, symmetric=None)
    return point.replace(observer_type=observer_type)


@dataclass
class ExplorerRun:
    """One calibration pass: the statistics of every point, from which any observer is fitted."""

    config: QuantConfig
    num_blocks: int
    capture: CaptureResult
    alpha_floor: float = DEFAULT_ALPHA_FLOOR
    source: RunSource | None = None  # model and data, when known (saved with the run)

    def __post_init__(self) -> None:
        # A loaded run's analyses allocate and free tens of MB per point: keep that memory (explorer.allocator).
        retain_freed_memory()

    def save(self, path: str | Path) -> Path:
        """Write the run to one safetensors file (see :mod:`explorer.analysis.runfile`); returns its path."""
        from explorer.analysis.runfile import save_run  # runfile builds on this module

        return save_run(self, path)

    @classmethod
    def load(cls, path: str | Path) -> ExplorerRun:
        """The run saved at ``path``; :class:`~explorer.analysis.runfile.RunFileError` when it is not a readable run."""
        from explorer.analysis.runfile import load_run

        return load_run(path)

    @property
    def points(self) -> list[PointKey]:
        """Every ``(block, point)`` in model order."""
        return [(b, p) for b in range(self.num_blocks) for p in POINTS]

    @property
    def batches(self) -> int:
        """Calibration batches seen."""
        return self.capture.batches

    def stats(self, key: PointKey) -> PointStats:
        """The statistics of a point; ValueError (with the reason) when its data was refused."""
        stats = self.capture.stats.get(key)
        if stats is None:
            why = self.capture.errors.get(key, "it is not a point of this model")
            raise ValueError(f"block {key[0]} {key[1]} has no statistics: {why}")
        return stats

    def point_config(self, observer_type: str, key: PointKey) -> PointConfig:
        """The run's config for a point with ``observer_type`` as its observer."""
        block, name = key
        return as_observer_type(self.config.point(name, block), observer_type)

    @property
    def nbytes(self) -> int:
        """Bytes held by all the statistics."""
        return sum(s.nbytes() for s in self.capture.stats.values())


def run_calibration(
    model: nn.Module,
    batches: Sequence[Tensor],
    config: QuantConfig,
    alpha_floor: float = DEFAULT_ALPHA_FLOOR,
    progress: Callable[[int], None] | None = None,
) -> ExplorerRun:
    """Gather the statistics of every point with one float pass per batch (no tensor is kept).

    ``alpha_floor`` is the lowest ``percentile_alpha`` that can be explored afterwards. The statistics
    are built where the model runs (e.g. on the GPU) and handed back on the CPU, where runs are saved,
    merged and explored.
    """
    for i, batch in enumerate(batches):
        if not torch.isfinite(batch).all():
            bad = int((~torch.isfinite(batch)).sum())
            raise ValueError(f"calibration batch {i} has {bad} NaN/Inf value(s); fix the input data")
    capture = StatsCapture(model, config, alpha_floor)
    try:
        result = capture.run(batches, progress)
    finally:
        capture.close()
    return ExplorerRun(config, len(vit_blocks(model)), result.to("cpu"), alpha_floor)


def observer_for(run: ExplorerRun, key: PointKey, point: PointConfig) -> Observer:
    """An observer configured by ``point``, fitted from the point's statistics over all batches."""
    return build_observer(point, module_type_of(key[1])).fit(run.stats(key))


@dataclass(frozen=True)
class ObserverSummary:
    """What one observer chose on one point and what that costs."""

    observer_type: str
    clip_min: np.ndarray  # per channel (one value when layer-wise)
    clip_max: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    mse: float
    sqnr_db: float
    clipped_fraction: float
    clip_mse: float  # the part of the MSE from values beyond the end levels
    round_mse: float  # the part from values inside
    quantizer: str = "uniform"  # the grid: uniform, or log2 / log_sqrt2 below clip_max

    @property
    def label(self) -> str:
        return observer_label(self.observer_type)


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().ravel()


def summarize(observer: Observer, observer_type: str, stats: PointStats) -> ObserverSummary:
    """Clip range, parameters and error breakdown of ``observer`` on the point of ``stats``."""
    scale, zero_point = observer.get_quantization_params()
    view = stats.view(observer.calibration_mode)
    if observer.quantizer == "uniform":
        err = error_from_stats(view, scale, zero_point, observer.bit_type)
    else:
        err = log_error_from_stats(view, scale, zero_point, observer.bit_type, observer.quantizer)
    return ObserverSummary(
        observer_type=observer_type,
        clip_min=_numpy(observer.clip_min),
        clip_max=_numpy(observer.clip_max),
        scale=_numpy(scale),
        zero_point=_numpy(zero_point),
        mse=err.mse,
        sqnr_db=err.sqnr_db,
        clipped_fraction=err.clipped_fraction,
        clip_mse=err.clip_mse,
        round_mse=err.round_mse,
        quantizer=observer.quantizer,
    )


def point_summary(run: ExplorerRun, key: PointKey, point: PointConfig) -> ObserverSummary:
    """The summary of the observer ``point`` describes, fitted on ``key``'s statistics."""
    return summarize(observer_for(run, key, point), point.observer_type, run.stats(key))


@dataclass(frozen=True)
class DistributionFacts:
    """The shape of a point's data that explains the observers' choices."""

    numel: int
    min: float
    max: float
    p9999_abs: float  # 99.99th percentile of |x| (read off the histogram, within one of its bins)
    outlier_ratio: float  # max|x| / p99.99|x|: large means a few values stretch MinMax's range
    channel_min: np.ndarray
    channel_max: np.ndarray
    extreme_channels: list[tuple[int, float]] = field(default_factory=list)  # (channel, range / median range)


EXTREME_CHANNEL_RATIO = 5.0


def _magnitude_quantile(stats: PointStats, q: float) -> float:
    """Quantile ``q`` of ``|x|`` over all values of the point, from its whole-point histogram
    (linear inside the bin it falls in)."""
    counts, width = stats.view("layer_wise").hist.magnitude()
    cumulative = counts[0].double().cumsum(0)
    total = float(cumulative[-1])
    rank = q * (total - 1)
    index = int(torch.searchsorted(cumulative, cumulative.new_tensor([rank]), right=True))
    index = min(index, counts.shape[1] - 1)
    before = float(cumulative[index - 1]) if index > 0 else 0.0
    inside = (rank - before + 0.5) / max(1.0, float(counts[0, index]))
    return float(width[0]) * (index + min(max(inside, 0.0), 1.0))


def distribution_facts(stats: PointStats) -> DistributionFacts:
    """Min/max, tail percentile, outlier ratio and channels whose range dwarfs the median."""
    view = stats.view("channel_wise")
    channel_min, channel_max = view.min.cpu(), view.max.cpu()
    tail = _magnitude_quantile(stats, 0.9999)
    peak = float(torch.maximum(channel_min.abs(), channel_max.abs()).max())
    ranges = (channel_max - channel_min).double()
    median = float(ranges.median())
    extreme: list[tuple[int, float]] = []
    if median > 0:
        ratio = ranges / median
        order = torch.argsort(ratio, descending=True)
        extreme = [(int(c), float(ratio[c])) for c in order[:8] if ratio[c] >= EXTREME_CHANNEL_RATIO]
    return DistributionFacts(
        numel=view.count * channel_min.numel(),
        min=float(channel_min.min()),
        max=float(channel_max.max()),
        p9999_abs=tail,
        outlier_ratio=peak / tail if tail > 0 else float("inf"),
        channel_min=channel_min.numpy(),
        channel_max=channel_max.numpy(),
        extreme_channels=extreme,
    )


def histogram(stats: PointStats, channel: int = -1, bins: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``(edges, counts)`` of all values of a point (``channel`` negative) or of one channel, for
    display: the statistics' bins merged down to about ``bins`` over the data's range (exact zeros
    drawn in the bin just above zero)."""
    hist = stats.view("layer_wise" if channel < 0 else "channel_wise").hist
    if channel >= 0:
        if channel >= hist.rows:
            raise ValueError(f"channel {channel} does not exist; the point has {hist.rows} channels")
        hist = hist.select(channel)
    sides = torch.arange(1, hist.half_bins + 1, device=hist.counts.device)
    used = torch.where(hist.counts[0] > 0, sides, 0).amax(dim=1)  # per side
    half = hist.half_bins
    while half > 2 and int(used.max()) * half // hist.half_bins > bins // 2:
        half //= 2
    hist = hist.coarsened(half)
    counts, edges = (t[0].cpu() for t in hist.ascending())
    counts = counts.double()
    counts[half] += float(hist.zeros[0])
    nonzero = torch.nonzero(counts).flatten()
    first, last = (int(nonzero[0]), int(nonzero[-1])) if nonzero.numel() else (half - 1, half)
    return edges[first : last + 2].numpy(), counts[first : last + 1].numpy()


def log2_histogram(stats: PointStats, channel: int = -1, per_octave: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """``(edges, counts)`` of the positive values of a point (or of one channel) on log2 bins,
    ``per_octave`` per power of two, for display on a log2 axis: each bin of the statistics lands in
    the log bin of its centre, so values below the statistics' resolution (its first bin) are drawn
    at half that bin's width. Exact zeros and negative values are left out."""
    hist = stats.view("layer_wise" if channel < 0 else "channel_wise").hist
    if channel >= 0:
        if channel >= hist.rows:
            raise ValueError(f"channel {channel} does not exist; the point has {hist.rows} channels")
        hist = hist.select(channel)
    counts = hist.counts[0, 1].double().cpu()
    used = torch.nonzero(counts).flatten()
    if used.numel() == 0:
        raise ValueError("the point has no positive values to draw on a log axis")
    centers = (used.double() + 0.5) * float(hist.width[0, 1])
    index = torch.floor(torch.log2(centers) * per_octave).long()
    first = int(index.min())
    binned = torch.zeros(int(index.max()) - first + 1, dtype=torch.float64).index_add_(0, index - first, counts[used])
    edges = 2.0 ** (torch.arange(first, first + binned.numel() + 1, dtype=torch.float64) / per_octave)
    return edges.numpy(), binned.numpy()


@dataclass(frozen=True)
class FitFailure:
    """Why an observer gave no parameters on a point: its settings are invalid there, or the point's
    data refuses them (e.g. KL on an unsigned type with negative values). Kept as a value, not raised,
    so one failing observer leaves the others' results standing."""

    reason: str

    def __str__(self) -> str:
        return self.reason


ObserverResult = ObserverSummary | FitFailure
"""What an observer did on a point, or why it failed there."""


def observer_results(run: ExplorerRun, key: PointKey) -> dict[str, ObserverResult]:
    """Each registered observer's summary on ``key`` with the run's config, or why it failed there."""
    results: dict[str, ObserverResult] = {}
    for observer_type in observer_names():
        try:
            results[observer_type] = point_summary(run, key, run.point_config(observer_type, key))
        except (ValueError, RuntimeError) as exc:
            results[observer_type] = FitFailure(str(exc))
    return results


@dataclass(frozen=True)
class ErrorRow:
    """One row of :func:`error_table`: one registered observer on one point.

    The metrics are NaN and ``failure`` says why when the observer failed there.
    """

    block: int
    point: str
    kind: str  # module type: "linear_weight" or "activation"
    observer: str  # registry name, e.g. "MinmaxObserver"
    label: str  # its display name, e.g. "MinMax"
    mse: float
    sqnr_db: float
    clipped_fraction: float
    best: bool  # least MSE on its point
    failure: str = ""


ERROR_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ErrorRow))
"""The columns of :func:`error_table`, in order."""


def error_table(
    run: ExplorerRun, results: Mapping[PointKey, Mapping[str, ObserverResult]] | None = None
) -> pd.DataFrame:
    """Every point × registered observer in long format (one :class:`ErrorRow` per row, points in
    model order, observers in registration order): MSE, SQNR, clipped fraction, and whether the
    observer wins its point (least MSE).

    ``results`` are the :func:`observer_results` of every point when the caller has them already.
    """
    rows = []
    for key in run.points:
        block, name = key
        point_results = observer_results(run, key) if results is None else results[key]
        fitted = {t: s for t, s in point_results.items() if isinstance(s, ObserverSummary)}
        best = min(fitted, key=lambda t: fitted[t].mse, default=None)
        for observer_type in observer_names():
            s = point_results[observer_type]
            metrics = (s.mse, s.sqnr_db, s.clipped_fraction) if isinstance(s, ObserverSummary) else (np.nan,) * 3
            rows.append(
                ErrorRow(
                    block,
                    name,
                    module_type_of(name),
                    observer_type,
                    observer_label(observer_type),
                    *metrics,
                    best=observer_type == best,
                    failure="" if isinstance(s, ObserverSummary) else str(s),
                )
            )
    return pd.DataFrame([astuple(row) for row in rows], columns=list(ERROR_COLUMNS))


def metric_matrix(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """One metric ``column`` of an :func:`error_table` as a points × observers matrix: rows indexed by
    ``(block, point)`` in the table's order, columns by observer label in registration order."""
    wide = table.pivot(index=["block", "point"], columns="label", values=column)
    points = pd.MultiIndex.from_frame(table[["block", "point"]].drop_duplicates())
    return wide.reindex(index=points, columns=table["label"].drop_duplicates())


def wins(table: pd.DataFrame) -> dict[str, int]:
    """How many points each observer of an :func:`error_table` wins (least MSE), by label."""
    counts = table.loc[table["best"], "label"].value_counts()
    return {label: int(counts.get(label, 0)) for label in table["label"].drop_duplicates()}


def quantized_model(model: nn.Module, run: ExplorerRun, config: QuantConfig) -> QuantViT:
    """A :class:`QuantViT` for ``config`` whose observers are fitted from the run's statistics,
    with parameters computed: no calibration pass needed."""
    qvit = QuantViT(model, config)
    for block, name in run.points:
        qvit.set_observer(block, name, observer_for(run, (block, name), config.point(name, block)))
    qvit.compute_quant_params()
    return qvit
