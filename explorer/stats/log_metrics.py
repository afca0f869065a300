"""Quantization error on the log2 / log√2 grids, from a point's statistics or from raw values.

A log grid with clip max ``c`` has the levels ``c · base^-k`` (``k = 0 .. 2^bits - 2``) and 0.
As a function of ``x ≥ 0`` the quantizer is piecewise constant between the rounding boundaries
``c · base^-(k ± 1/2)``: values below the last boundary are flushed to 0 and values above
``c · √base`` saturate at ``c`` (both counted as clipping, the rest as rounding). On any ascending
bins, assuming values spread evenly inside a bin, the squared error is integrated exactly piece by
piece, as :mod:`explorer.stats.metrics` does for uniform grids.

The statistics' histogram has linear bins (``2^e`` wide), which are coarse near 0 where the log
levels are dense; :class:`LogHistogram` is a mergeable log-spaced sketch of non-negative values
for that region (measured in ``benchmarks/log_quantizer.py``, not yet part of ``PointStats``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from explorer.bit_type import BitType
from explorer.quant_ops import LOG_BASES, check_log_data, fake_quantize_log, log_bounds, log_levels, representable_range
from explorer.stats.histogram import AscendingBins
from explorer.stats.metrics import ErrorBreakdown, mass_beyond, ratio_db
from explorer.stats.point_stats import StatsView

# float32 magnitudes span 2**-149 .. 2**128: the octaves a LogHistogram row covers.
_EXP_LOW, _EXP_HIGH = -149, 128


def _pieces(clip_max: Tensor, bits: int, quantizer: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(bounds [R, J], levels [R, J], clipping [J])``: piece ``j`` starts at ``bounds[:, j]``
    (the last one is unbounded above), outputs ``levels[:, j]`` and is clipping or rounding."""
    top = clip_max.double().reshape(-1, 1)
    ascending = log_levels(top.squeeze(1), bits, quantizer).flip(1)  # k = 2^bits - 2 .. 0
    low, high = log_bounds(top, bits, quantizer)
    boundaries = ascending[:, 1:] / LOG_BASES[quantizer] ** 0.5  # between level k and k - 1
    bounds = torch.cat([torch.zeros_like(top), low, boundaries, high], dim=1)
    levels = torch.cat([torch.zeros_like(top), ascending, top], dim=1)
    clipping = torch.zeros(levels.shape[1], dtype=torch.bool)
    clipping[[0, -1]] = True
    return bounds, levels, clipping


def _antiderivatives(x: Tensor, clip_max: Tensor, bits: int, quantizer: str) -> tuple[Tensor, Tensor]:
    """``(rounding, clipping)`` parts of ``H(x) = ∫_0^x (t - q(t))² dt`` at ``x [R, N]`` (x ≥ 0)."""
    bounds, levels, clipping = _pieces(clip_max, bits, quantizer)
    x = x.double().clamp_min(0)
    ends = torch.cat([bounds[:, 1:], bounds[:, -1:]], dim=1)  # the last piece's integral is never summed
    whole = ((ends - levels) ** 3 - (bounds - levels) ** 3) / 3
    before_round = torch.nn.functional.pad(torch.where(clipping, 0.0, whole).cumsum(dim=1), (1, 0))[:, :-1]
    before_clip = torch.nn.functional.pad(torch.where(clipping, whole, 0.0).cumsum(dim=1), (1, 0))[:, :-1]
    piece = (torch.searchsorted(bounds.contiguous(), x.contiguous(), right=True) - 1).clamp_min(0)
    start, level = bounds.gather(1, piece), levels.gather(1, piece)
    partial = ((x - level) ** 3 - (start - level) ** 3) / 3
    in_clip = clipping[piece]
    rounding = before_round.gather(1, piece) + torch.where(in_clip, 0.0, partial)
    clipped = before_clip.gather(1, piece) + torch.where(in_clip, partial, 0.0)
    return rounding, clipped


def binned_log_sse(counts: Tensor, edges: Tensor, clip_max: Tensor, bits: int, quantizer: str) -> tuple[Tensor, Tensor]:
    """``(rounding, clipping)`` summed squared error per row ``[R]`` of histograms on non-negative
    ascending bins (``counts [R, M]``, ``edges [R, M + 1]``), values spread evenly inside each bin."""
    rounding, clipping = _antiderivatives(edges, clip_max, bits, quantizer)
    density = AscendingBins(counts, edges.double()).density
    return (density * torch.diff(rounding, dim=1)).sum(dim=1), (density * torch.diff(clipping, dim=1)).sum(dim=1)


def _top(scale: Tensor, zero_point: Tensor, bit_type: BitType, rows: int) -> Tensor:
    """``[R]`` clip max (the top of the uniform grid the observer chose), one per row."""
    top = representable_range(scale.double().cpu(), zero_point.double().cpu(), bit_type)[1].reshape(-1)
    return top.expand(rows) if top.numel() == 1 else top


def log_error_from_values(
    rows: Tensor, scale: Tensor, zero_point: Tensor, bit_type: BitType, quantizer: str
) -> ErrorBreakdown:
    """The exact breakdown of the log grid whose top is the uniform grid's, on raw values ``rows [R, M]``."""
    x = rows.double().cpu()
    check_log_data(x.amin(dim=1), f"quantizer {quantizer}")
    top = _top(scale, zero_point, bit_type, x.shape[0]).unsqueeze(1)
    error = (x - fake_quantize_log(x, top, bit_type.bits, quantizer)) ** 2
    low, high = log_bounds(top, bit_type.bits, quantizer)
    clipped = ((x > 0) & (x < low)) | (x > high)
    total, clip = float(error.sum()), float(error[clipped].sum())
    n = x.numel()
    return ErrorBreakdown(
        total / n, ratio_db(float((x * x).sum()), total), int(clipped.sum()) / n, clip / n, (total - clip) / n
    )


def log_error_from_stats(
    view: StatsView, scale: Tensor, zero_point: Tensor, bit_type: BitType, quantizer: str
) -> ErrorBreakdown:
    """The breakdown of a log grid from a point's statistics: exact on raw values when they were
    kept; else integrated over the histogram's positive bins, with the saturated count exact where
    the kept tails cover it (values flushed to 0 are counted off the histogram)."""
    if view.raw is not None:
        return log_error_from_values(view.raw, scale, zero_point, bit_type, quantizer)
    check_log_data(view.min, f"quantizer {quantizer}")
    rows = view.hist.rows
    top = _top(scale, zero_point, bit_type, rows)
    counts, edges = (t.cpu() for t in view.hist.ascending())
    half = view.hist.half_bins
    # The positive side (exact zeros are exact on the grid); contiguous for the binary searches below.
    counts, edges = counts[:, half:], edges[:, half:].contiguous()
    bins = AscendingBins(counts, edges)
    rounding, clipping = binned_log_sse(counts, edges, top, bit_type.bits, quantizer)
    low, high = log_bounds(top, bit_type.bits, quantizer)
    exact_count, exact = view.ends.count_beyond(torch.zeros_like(view.min), high.to(view.min.device).float())
    above = torch.where(exact.cpu(), exact_count.cpu().double(), mass_beyond(bins, torch.zeros_like(high), high))
    flushed = mass_beyond(bins, low, torch.full_like(low, float("inf")))
    n = view.count * rows
    round_sse, clip_sse = float(rounding.sum()), float(clipping.sum())
    return ErrorBreakdown(
        (round_sse + clip_sse) / n,
        ratio_db(float(view.sumsq.sum()), round_sse + clip_sse),
        float((above + flushed).sum()) / n,
        clip_sse / n,
        round_sse / n,
    )


@dataclass
class LogHistogram:
    """A mergeable log-spaced histogram of non-negative values, per row: each octave
    ``[2^(p-1), 2^p)`` of float32 split into ``sub_bins`` equal bins, exact zeros apart.

    Bin edges are relative, so values near 0 are resolved as finely as large ones (the linear
    statistics histogram puts everything below its bin width in one bin). Counts are integers
    and adding two histograms of the same rows is exact, like :class:`SignedHistogram`.
    """

    counts: Tensor  # [R, octaves * sub_bins] int64
    zeros: Tensor  # [R] int64
    sub_bins: int

    @classmethod
    def empty(cls, rows: int, sub_bins: int = 16) -> LogHistogram:
        """A histogram of ``rows`` rows with no values."""
        if sub_bins < 1:
            raise ValueError(f"sub_bins must be at least 1, got {sub_bins}")
        octaves = _EXP_HIGH - _EXP_LOW + 1
        return cls(
            torch.zeros(rows, octaves * sub_bins, dtype=torch.int64), torch.zeros(rows, dtype=torch.int64), sub_bins
        )

    def counted(self, rows: Tensor) -> LogHistogram:
        """This histogram with the values ``rows [R, N]`` (all ≥ 0) added."""
        x = rows.detach().float().cpu()
        check_log_data(x.amin(dim=1), "LogHistogram")
        mantissa, exponent = torch.frexp(x)  # x = m · 2^p, m in [0.5, 1)
        sub = ((2 * mantissa.double() - 1) * self.sub_bins).floor().long().clamp(0, self.sub_bins - 1)
        index = (exponent.long() - _EXP_LOW) * self.sub_bins + sub
        positive = x > 0
        counts = self.counts.clone()
        counts.scatter_add_(1, torch.where(positive, index, 0), positive.long())
        return LogHistogram(counts, self.zeros + (~positive).sum(dim=1), self.sub_bins)

    def merged(self, other: LogHistogram) -> LogHistogram:
        """Both histograms' values together (exact)."""
        if other.sub_bins != self.sub_bins or other.counts.shape != self.counts.shape:
            raise ValueError("LogHistogram.merged: the histograms have different rows or bins")
        return LogHistogram(self.counts + other.counts, self.zeros + other.zeros, self.sub_bins)

    def edges(self) -> Tensor:
        """``[octaves * sub_bins + 1]`` float64 ascending bin edges (the same for every row)."""
        octave = 2.0 ** torch.arange(_EXP_LOW - 1, _EXP_HIGH, dtype=torch.float64)  # [2^(p-1)] per octave p
        fraction = 1 + torch.arange(self.sub_bins, dtype=torch.float64) / self.sub_bins
        return torch.cat(
            [(octave.unsqueeze(1) * fraction).flatten(), torch.tensor([2.0**_EXP_HIGH], dtype=torch.float64)]
        )

    def log_sse(self, clip_max: Tensor, bits: int, quantizer: str) -> tuple[Tensor, Tensor]:
        """``(rounding, clipping)`` summed squared error per row of the log grid topped at ``clip_max``."""
        edges = self.edges().expand(self.counts.shape[0], -1)
        return binned_log_sse(
            self.counts, edges, clip_max.reshape(-1).double().expand(self.counts.shape[0]), bits, quantizer
        )
