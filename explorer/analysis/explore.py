"""The explorer's computations, free of any UI: one calibration pass feeding all four
observers, refits of a point with tuned settings from the kept tensors, per-point summaries,
distribution facts and the all-layer error table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from explorer.config import ACTIVATION_POINTS, WEIGHT_POINTS, PointConfig, QuantConfig, module_type_of
from explorer.observers import Observer, build_observer
from explorer.observers.base import channel_rows
from explorer.observers.quantile import row_quantile
from explorer.quant_ops import quant_error
from explorer.vit import CaptureResult, PointKey, QuantViT, StatsCapture, vit_blocks

OBSERVER_TYPES: tuple[str, ...] = ("MinmaxObserver", "PercentileObserver", "OmseObserver", "KLObserver")
OBSERVER_LABELS: dict[str, str] = {
    "MinmaxObserver": "MinMax",
    "PercentileObserver": "Percentile",
    "OmseObserver": "OMSE",
    "KLObserver": "KL",
}
POINTS: tuple[str, ...] = (*WEIGHT_POINTS, *ACTIVATION_POINTS)
DEFAULT_KEEP_BYTES = 384 * 2**20


def as_observer_type(point: PointConfig, observer_type: str) -> PointConfig:
    """``point`` with another observer; KL (symmetric only) drops an asymmetric override."""
    if observer_type == "KLObserver" and point.symmetric is False:
        return point.replace(observer_type=observer_type, symmetric=None)
    return point.replace(observer_type=observer_type)


@dataclass
class ExplorerRun:
    """One calibration pass: the four observers of every point and the tensors kept for refits."""

    config: QuantConfig
    num_blocks: int
    capture: CaptureResult

    @property
    def points(self) -> list[PointKey]:
        """Every ``(block, point)`` in model order."""
        return [(b, p) for b in range(self.num_blocks) for p in POINTS]

    def tensors(self, key: PointKey) -> list[Tensor]:
        """The tensors kept for a point (weights: the weight; activations: kept batches)."""
        return self.capture.tensors.get(key, [])

    def observer(self, observer_type: str, key: PointKey) -> Observer | None:
        """The observer of that type fed during calibration (None if it failed on this point)."""
        return self.capture.observers[observer_type].get(key)

    def error(self, observer_type: str, key: PointKey) -> str | None:
        """Why that observer failed on this point, if it did."""
        return self.capture.errors.get(observer_type, {}).get(key)

    @property
    def complete(self) -> bool:
        """Whether every calibration batch was kept, so refits see exactly what calibration saw."""
        return self.capture.kept_batches == self.capture.batches


def run_calibration(
    model: nn.Module,
    batches: Sequence[Tensor],
    config: QuantConfig,
    keep_bytes: int = DEFAULT_KEEP_BYTES,
    progress: Callable[[int], None] | None = None,
) -> ExplorerRun:
    """Calibrate all four observer types on every point with one float pass per batch."""
    for i, batch in enumerate(batches):
        if not torch.isfinite(batch).all():
            bad = int((~torch.isfinite(batch)).sum())
            raise ValueError(f"calibration batch {i} has {bad} NaN/Inf value(s); fix the input data")
    variants = {t: (lambda block, point, t=t: as_observer_type(config.point(point, block), t)) for t in OBSERVER_TYPES}
    capture = StatsCapture(model, config, variants, keep_bytes=keep_bytes)
    try:
        result = capture.run(batches, progress)
    finally:
        capture.close()
    return ExplorerRun(config, len(vit_blocks(model)), result)


def fit_observer(tensors: Sequence[Tensor], point: PointConfig, module_type: str) -> Observer:
    """A fresh observer for ``point`` fed with the kept tensors (no model run)."""
    if not tensors:
        raise ValueError("no tensors kept for this point; recalibrate with a larger keep budget")
    observer = build_observer(point, module_type)
    for tensor in tensors:
        observer.update(tensor)
    return observer


def observer_for(run: ExplorerRun, key: PointKey, point: PointConfig) -> Observer:
    """The calibration's own observer when ``point`` is what it was fed with, else a refit."""
    block, name = key
    captured = run.observer(point.observer_type, key)
    if captured is not None and as_observer_type(run.config.point(name, block), point.observer_type) == point:
        return captured
    return fit_observer(run.tensors(key), point, module_type_of(name))


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

    @property
    def label(self) -> str:
        return OBSERVER_LABELS.get(self.observer_type, self.observer_type)


def summarize(observer: Observer, observer_type: str, tensors: Sequence[Tensor]) -> ObserverSummary:
    """Clip range, parameters and error of ``observer`` measured on ``tensors``."""
    scale, zero_point = (t.cpu() for t in observer.get_quantization_params())  # kept tensors are on the CPU
    err = quant_error(tensors, scale, zero_point, observer.bit_type)
    return ObserverSummary(
        observer_type=observer_type,
        clip_min=observer.clip_min.detach().cpu().numpy().ravel(),
        clip_max=observer.clip_max.detach().cpu().numpy().ravel(),
        scale=scale.detach().cpu().numpy().ravel(),
        zero_point=zero_point.detach().cpu().numpy().ravel(),
        mse=err.mse,
        sqnr_db=err.sqnr_db,
        clipped_fraction=err.clipped_fraction,
    )


@dataclass(frozen=True)
class DistributionFacts:
    """The shape of a point's data that explains the observers' choices."""

    numel: int
    min: float
    max: float
    p9999_abs: float  # 99.99th percentile of |x|
    outlier_ratio: float  # max|x| / p99.99|x|: large means a few values stretch MinMax's range
    channel_min: np.ndarray
    channel_max: np.ndarray
    extreme_channels: list[tuple[int, float]] = field(default_factory=list)  # (channel, range / median range)


EXTREME_CHANNEL_RATIO = 5.0


def distribution_facts(tensors: Sequence[Tensor], module_type: str) -> DistributionFacts:
    """Min/max, tail percentile, outlier ratio and channels whose range dwarfs the median."""
    rows = torch.cat([channel_rows(t.float(), module_type) for t in tensors], dim=1)
    channel_min, channel_max = rows.amin(dim=1), rows.amax(dim=1)
    magnitudes = rows.abs().reshape(1, -1)
    tail = float(row_quantile(magnitudes, 0.9999))  # exact at any size, cheap this close to the top
    peak = float(magnitudes.max())
    ranges = (channel_max - channel_min).double()
    median = float(ranges.median())
    extreme: list[tuple[int, float]] = []
    if median > 0:
        ratio = ranges / median
        order = torch.argsort(ratio, descending=True)
        extreme = [(int(c), float(ratio[c])) for c in order[:8] if ratio[c] >= EXTREME_CHANNEL_RATIO]
    return DistributionFacts(
        numel=int(rows.numel()),
        min=float(channel_min.min()),
        max=float(channel_max.max()),
        p9999_abs=tail,
        outlier_ratio=peak / tail if tail > 0 else float("inf"),
        channel_min=channel_min.numpy(),
        channel_max=channel_max.numpy(),
        extreme_channels=extreme,
    )


def histogram(tensors: Sequence[Tensor], bins: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``(edges, counts)`` of all values of a point over its full range."""
    lo = min(float(t.min()) for t in tensors)
    hi = max(float(t.max()) for t in tensors)
    if hi <= lo:
        hi = lo + 1e-6
    counts = sum(torch.histc(t.float(), bins=bins, min=lo, max=hi).double() for t in tensors)
    return np.linspace(lo, hi, bins + 1), counts.numpy()  # type: ignore[union-attr]


def error_table(run: ExplorerRun) -> pd.DataFrame:
    """Every point × observer: MSE, SQNR, clipped fraction, and which observer wins (least MSE)."""
    rows = []
    for key in run.points:
        block, name = key
        tensors = run.tensors(key)
        row: dict[str, object] = {"block": block, "point": name, "kind": module_type_of(name)}
        best, best_mse = None, float("inf")
        for observer_type in OBSERVER_TYPES:
            label = OBSERVER_LABELS[observer_type]
            observer = run.observer(observer_type, key)
            if observer is None or not tensors:
                row[f"{label} MSE"] = row[f"{label} SQNR dB"] = row[f"{label} clipped %"] = float("nan")
                continue
            s = summarize(observer, observer_type, tensors)
            row[f"{label} MSE"], row[f"{label} SQNR dB"], row[f"{label} clipped %"] = (
                s.mse,
                s.sqnr_db,
                100 * s.clipped_fraction,
            )
            if s.mse < best_mse:
                best, best_mse = label, s.mse
        row["winner"] = best or "—"
        rows.append(row)
    return pd.DataFrame(rows)


def quantized_model(model: nn.Module, run: ExplorerRun, config: QuantConfig) -> QuantViT:
    """A :class:`QuantViT` for ``config`` whose observers come from the run (reused or refit),
    with parameters computed: no calibration pass needed."""
    qvit = QuantViT(model, config)
    for block, name in run.points:
        qvit.set_observer(block, name, observer_for(run, (block, name), config.point(name, block)))
    qvit.compute_quant_params()
    return qvit
