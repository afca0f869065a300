"""OMSE: pick, from 100 shrunk versions of the observed range, the one of least MSE.

FQ-ViT evaluates each candidate with a full fake-quantization pass over the last batch only
(cost: data × candidates). Here every batch is folded into a sign-magnitude histogram per channel
on power-of-two bins (cost: data; see :mod:`explorer.stats.histogram`), and the candidates are
scored on it: the squared error of the quantizer is integrated exactly over each bin, assuming
values spread evenly inside a bin (:func:`explorer.stats.metrics.binned_sse`). Exact zeros are
counted apart (they are always representable). The error therefore covers all calibration data,
and the scoring cost does not grow with the data. While the point is small, the raw values are
kept and every candidate is scored exactly on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from explorer.bit_type import BitType
from explorer.observers.base import Observer
from explorer.observers.params import ParamSpec
from explorer.observers.registry import register_observer
from explorer.quant_ops import qparams_from_range
from explorer.stats.histogram import AscendingBins, SignedHistogram
from explorer.stats.metrics import binned_sse
from explorer.stats.point_stats import folded

if TYPE_CHECKING:
    from explorer.stats.point_stats import StatsView

NUM_CANDIDATES = 100
# Candidates are scored on at most this many bins per side (coarser histograms are merged down).
SCORING_HALF_BINS = 2048
# Above this many (channel, candidate, bin) terms, candidates are screened with a cheap
# moment-based estimate first and only a window around the best is scored exactly.
_EXACT_BUDGET = 500_000
_REFINE_RADIUS = 2
# Raw values are scored in chunks of at most this many (channel, candidate, value) terms: 2 MB float32
# buffers stay in cache (16 MB ones, page-faulted afresh, made the weights' search twice as slow).
_RAW_CHUNK = 500_000


@register_observer("OmseObserver")
class OmseObserver(Observer):
    """Grid search over ``range * (1 - i/100)``, ``i = 0..99``, minimising the L2 error on all data."""

    label: ClassVar[str] = "OMSE"
    color: ClassVar[str] = "#2ca02c"
    params: ClassVar[tuple[ParamSpec, ...]] = ()

    def __init__(
        self,
        bit_type: BitType,
        module_type: str,
        calibration_mode: str = "channel_wise",
        symmetric: bool | None = None,
    ) -> None:
        super().__init__(bit_type, module_type, calibration_mode, symmetric)
        self.hist: SignedHistogram | None = None  # None while the raw values are kept (see point_stats.folded)
        self.shrink_factors = 1.0 - torch.arange(NUM_CANDIDATES, dtype=torch.float64) / 100.0
        self.candidate_mse: Tensor | None = None  # [C, 100] scores of the last search (NaN: not scored)
        self._raw: list[Tensor] | None = []  # values seen while the point is small (see kept_raw)
        self._count = 0  # values seen per row

    # ----- statistics -------------------------------------------------------------------
    def _observe(self, blocks: Tensor, lo: Tensor, hi: Tensor) -> None:
        self.hist, self._raw, self._count = folded(
            self.hist, self._raw, self._count, blocks, lo, hi, self.calibration_mode
        )

    def _fit(self, view: StatsView) -> None:
        self.hist = view.hist
        self._raw = None if view.raw is None else [view.raw]
        self._count = view.count

    # ----- search -----------------------------------------------------------------------
    def _clip_range(self) -> tuple[Tensor, Tensor]:
        assert self.data_min is not None and self.data_max is not None
        device = self.data_min.device
        lo = self.data_min.double().unsqueeze(1) * self.shrink_factors.to(device)
        hi = self.data_max.double().unsqueeze(1) * self.shrink_factors.to(device)
        scale, zero_point = qparams_from_range(lo, hi, self.bit_type, self.symmetric)
        channels = lo.shape[0]
        every = torch.arange(NUM_CANDIDATES, device=device).expand(channels, -1)
        if self._raw is not None:
            return self._pick(every, self._raw_sse(scale, zero_point))
        assert self.hist is not None  # raw values dropped: the histogram took them over
        bins = self.hist.coarsened(SCORING_HALF_BINS).ascending_bins()
        if channels * NUM_CANDIDATES * bins.edges.shape[1] <= _EXACT_BUDGET:
            chosen = every
        else:
            best = _screening_sse(bins, scale, zero_point, self.bit_type).argmin(dim=1, keepdim=True)
            window = torch.arange(-_REFINE_RADIUS, _REFINE_RADIUS + 1, device=device)
            chosen = (best + window).clamp(0, NUM_CANDIDATES - 1)
        rounding, clipping = binned_sse(
            bins.density, bins.edges, scale.gather(1, chosen), zero_point.gather(1, chosen), self.bit_type
        )
        return self._pick(chosen, rounding + clipping)

    def _pick(self, chosen: Tensor, sse: Tensor) -> tuple[Tensor, Tensor]:
        """Record the scores of the ``chosen`` candidates and return the best clip range."""
        assert self.data_min is not None and self.data_max is not None
        self.candidate_mse = torch.full(
            (chosen.shape[0], NUM_CANDIDATES), float("nan"), dtype=torch.float64, device=chosen.device
        ).scatter_(1, chosen, sse / max(1, self._count))
        pick = chosen.gather(1, sse.argmin(dim=1, keepdim=True)).squeeze(1)
        factor = self.shrink_factors.to(chosen.device)[pick]
        return self.data_min.double() * factor, self.data_max.double() * factor

    def _raw_sse(self, scale: Tensor, zero_point: Tensor) -> Tensor:
        """Exact summed squared error of every candidate on the kept raw values."""
        assert self._raw is not None
        x = torch.cat(self._raw, dim=1).unsqueeze(1)  # [C, 1, M] float32, as the tensors were quantized
        qmin, qmax = self.bit_type.lower_bound, self.bit_type.upper_bound
        shifted = bool(zero_point.any())  # symmetric types have zero points of 0: two passes fewer
        out = []
        step = max(1, _RAW_CHUNK // max(1, x.numel()))
        for k in range(0, NUM_CANDIDATES, step):
            s = scale[:, k : k + step].unsqueeze(2).float()
            levels = torch.div(x, s).round_()  # in place from here on: one buffer
            if shifted:
                zp = zero_point[:, k : k + step].unsqueeze(2).float()
                levels.add_(zp).clamp_(qmin, qmax).sub_(zp)
            else:
                levels.clamp_(qmin, qmax)
            out.append(levels.mul_(s).sub_(x).square_().sum(dim=2).double())
        return torch.cat(out, dim=1)


def _screening_sse(bins: AscendingBins, scale: Tensor, zero_point: Tensor, bit_type: BitType) -> Tensor:
    """A cheap estimate of every candidate's error ``[C, K]``: exact clipping terms from bin moments,
    rounding noise as ``scale^2 / 12`` per unclipped value."""
    qmin, qmax = bit_type.lower_bound, bit_type.upper_bound
    counts, edges, count = bins.counts.double(), bins.edges, bins.running
    widths = torch.diff(edges, dim=1)
    centers = edges[:, :-1] + 0.5 * widths
    pad = torch.zeros(counts.shape[0], 1, dtype=torch.float64, device=counts.device)
    first = torch.cat([pad, (counts * centers).cumsum(1)], dim=1)
    second = torch.cat([pad, (counts * (centers**2 + widths**2 / 12.0)).cumsum(1)], dim=1)
    zp = zero_point.double()
    low_edge, high_edge = (qmin - zp - 0.5) * scale, (qmax - zp + 0.5) * scale
    low_level, high_level = (qmin - zp) * scale, (qmax - zp) * scale
    # Bins wholly below the low edge / from the first bin wholly above the high edge.
    below_end = bins.searchsorted(low_edge, right=True).sub(1).clamp(0, counts.shape[1])
    above_start = bins.searchsorted(high_edge, right=False).clamp(0, counts.shape[1])

    def upto(table: Tensor, index: Tensor) -> Tensor:
        """Sum of the first ``index`` bins."""
        return table.gather(1, index)

    n_low, s1_low, s2_low = upto(count, below_end), upto(first, below_end), upto(second, below_end)
    n_high = count[:, -1:] - upto(count, above_start)
    s1_high = first[:, -1:] - upto(first, above_start)
    s2_high = second[:, -1:] - upto(second, above_start)
    clip_low = s2_low - 2 * low_level * s1_low + low_level**2 * n_low
    clip_high = s2_high - 2 * high_level * s1_high + high_level**2 * n_high
    inside = upto(count, above_start) - n_low
    return clip_low + clip_high + inside * scale**2 / 12.0
