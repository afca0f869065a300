"""Quantization error from a point's statistics, for any scale / zero point / bit type.

On a histogram the squared error of the quantizer is integrated exactly over each bin, assuming
values spread evenly inside a bin. In units of the step (``t = x / scale``) the error has the
antiderivative ``scale^3 * h(t)``, which splits into rounding noise between the end levels and
the distance to the end level beyond them (clipping). Where the raw values were kept (small
points) or the kept tails cover the clip thresholds, the figures are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from explorer.bit_type import BitType
from explorer.quant_ops import fake_quantize, ratio_db, representable_range
from explorer.stats.histogram import AscendingBins
from explorer.stats.point_stats import StatsView

# Largest number of (row, candidate, edge) terms integrated at once: 1 MB float32 temporaries, which
# stay in cache and are reused from freed memory (4 MB ones made OMSE's search of a vit_tiny
# activation about 35% slower, and DeiT-S's error table 10-30%, side by side on the CPU).
_CHUNK_TERMS = 250_000
_FLOAT32_MAX = float(torch.finfo(torch.float32).max) / 2


def _split_antiderivative(t: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """``(rounding, clipping)`` parts of the antiderivative of the squared error at ``t`` (step units).

    ``low``/``high`` are the outer edges of the end levels' rounding intervals (level ∓ 0.5).
    Both parts are non-decreasing in ``t``, so their differences between bin edges carry no
    cancellation and float32 is enough.
    """
    inner = torch.minimum(torch.maximum(t, low), high)
    nearest = torch.round(inner)
    frac = inner.sub_(nearest)
    rounding = nearest.div_(12.0).add_(frac.pow_(3).add_(0.125).div_(3.0))
    below = torch.clamp(t - low, max=0.0).sub_(0.5).pow_(3).add_(0.125)
    above = torch.clamp(t - high, min=0.0).add_(0.5).pow_(3).sub_(0.125)
    return rounding, below.add_(above).div_(3.0)


def binned_sse(
    density: Tensor, edges: Tensor, scale: Tensor, zero_point: Tensor, bit_type: BitType
) -> tuple[Tensor, Tensor]:
    """``(rounding, clipping)`` summed squared error per row and candidate ``[R, K]`` (float64).

    ``density [R, M]`` (counts per unit width) and ``edges [R, M + 1]`` describe each row's histogram
    (ascending, :class:`~explorer.stats.histogram.AscendingBins`); ``scale``/``zero_point`` are
    ``[R, K]`` candidates for each row. A bin's error is ``density * scale^3 * (h(right) - h(left))``
    in step units ``t = x / scale``.
    """
    qmin, qmax = bit_type.lower_bound, bit_type.upper_bound
    rows, candidates = scale.shape
    step = max(1, _CHUNK_TERMS // max(1, candidates * edges.shape[1]))
    parts: list[tuple[Tensor, Tensor]] = []
    for r in range(0, rows, step):
        sl = slice(r, r + step)
        s = scale[sl].double().unsqueeze(2)  # [r, K, 1]
        zp = zero_point[sl].double().unsqueeze(2)
        t = (edges[sl].unsqueeze(1) / s).float()  # [r, K, M + 1]
        rounding, clipping = _split_antiderivative(t, (qmin - zp - 0.5).float(), (qmax - zp + 0.5).float())
        # Bins of subnormal width can hold densities beyond float32: their error is ~0 anyway.
        weight = density[sl].clamp_max(_FLOAT32_MAX).float().unsqueeze(2)  # [r, M, 1]
        cube = s.squeeze(2) ** 3
        parts.append(
            (
                cube * torch.bmm(torch.diff(rounding, dim=2), weight).squeeze(2).double(),
                cube * torch.bmm(torch.diff(clipping, dim=2), weight).squeeze(2).double(),
            )
        )
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def mass_beyond(bins: AscendingBins, low: Tensor, high: Tensor) -> Tensor:
    """``[R]`` counts of values below ``low`` or above ``high``, read off the histogram's running
    counts (the boundary bins split in proportion to the part beyond): a lookup of the two boundary
    bins (:meth:`AscendingBins.searchsorted`), instead of a pass over every bin for each end."""
    running, edges = bins.running, bins.edges
    last = running.shape[1] - 2

    def below(x: Tensor) -> Tensor:
        """Counts below ``x [R]``."""
        at = bins.searchsorted(x.double().unsqueeze(1), right=True).sub_(1).clamp_(0, last)  # x's bin
        left, right = edges.gather(1, at), edges.gather(1, at + 1)
        inside = ((x.unsqueeze(1) - left) / (right - left).clamp_min(1e-300)).clamp(0, 1)
        start = running.gather(1, at)
        return (start + (running.gather(1, at + 1) - start) * inside).squeeze(1)

    return below(low) + (running[:, -1] - below(high))


@dataclass(frozen=True)
class ErrorBreakdown:
    """What fake quantization does to a point's data: mean squared error, SQNR, the share of
    values clipped, and the MSE split into clipping (values beyond the end levels' rounding
    intervals) and rounding (values inside)."""

    mse: float
    sqnr_db: float
    clipped_fraction: float
    clip_mse: float
    round_mse: float


def _per_row(t: Tensor, rows: int) -> Tensor:
    return t.reshape(-1).double().cpu().expand(rows) if t.numel() == 1 else t.reshape(-1).double().cpu()


def error_from_values(rows: Tensor, scale: Tensor, zero_point: Tensor, bit_type: BitType) -> ErrorBreakdown:
    """The exact breakdown on raw values ``rows [R, M]`` with per-row (or one) parameters."""
    s = _per_row(scale, rows.shape[0]).unsqueeze(1)
    zp = _per_row(zero_point, rows.shape[0]).unsqueeze(1)
    x = rows.double().cpu()
    error = (x - fake_quantize(x, s, zp, bit_type)) ** 2
    lo, hi = representable_range(s, zp, bit_type)
    clipped = (x < lo - s / 2) | (x > hi + s / 2)
    total, clip = float(error.sum()), float(error[clipped].sum())
    n = x.numel()
    return ErrorBreakdown(
        total / n, ratio_db(float((x * x).sum()), total), int(clipped.sum()) / n, clip / n, (total - clip) / n
    )


def error_from_stats(view: StatsView, scale: Tensor, zero_point: Tensor, bit_type: BitType) -> ErrorBreakdown:
    """The breakdown of fake-quantizing a point with ``scale``/``zero_point`` (one per row of
    ``view``, or one for all), from its statistics; exact on raw values when they were kept."""
    if view.raw is not None:
        return error_from_values(view.raw, scale, zero_point, bit_type)
    rows = view.hist.rows
    s, zp = _per_row(scale, rows), _per_row(zero_point, rows)
    bins = view.hist.ascending_bins()
    rounding, clipping = binned_sse(bins.density.cpu(), bins.edges.cpu(), s.unsqueeze(1), zp.unsqueeze(1), bit_type)
    low = (bit_type.lower_bound - zp - 0.5) * s
    high = (bit_type.upper_bound - zp + 0.5) * s
    device = view.min.device
    exact_count, exact = view.ends.count_beyond(low.to(device).float(), high.to(device).float())
    binned_count = mass_beyond(bins, low.to(device), high.to(device)).cpu()
    clipped = torch.where(exact.cpu(), exact_count.cpu().double(), binned_count)
    n = view.count * rows
    round_sse, clip_sse = float(rounding.sum()), float(clipping.sum())
    return ErrorBreakdown(
        (round_sse + clip_sse) / n,
        ratio_db(float(view.sumsq.sum()), round_sse + clip_sse),
        float(clipped.sum()) / n,
        clip_sse / n,
        round_sse / n,
    )
