"""KL: TensorRT's entropy calibration on a histogram of ``|x|``.

For each candidate threshold (a bin edge, from the number of quantization levels up to the
histogram's end) the distribution below it, with the tail folded into its last bin, is
compared with its requantization to the available levels; the threshold of least KL
divergence wins. The search is vectorised over candidates with prefix sums, so it costs
``candidates × levels`` per channel instead of ``candidates × bins``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from explorer.bit_type import BitType
from explorer.observers.base import Observer, flat_in_memory_order
from explorer.observers.params import KL_BINS, ParamSpec
from explorer.observers.registry import register_observer

# Largest number of (channel, level, candidate) terms evaluated at once.
_CHUNK_TERMS = 1_000_000
# Channel-wise searches over more terms than this keep to thresholds of finite divergence;
# if those are still too many, they scan about ``_COARSE_CANDIDATES`` of them, then refine
# around the best with a stride ``_REFINE_FACTOR`` times finer per round.
_EXHAUSTIVE_BUDGET = 8_000_000
_COARSE_CANDIDATES = 32
_REFINE_FACTOR = 8
# A channel's histogram may grow to this many times kl_bins; beyond, bins are merged.
_GROWTH_LIMIT = 16


def _xlogx(t: Tensor) -> Tensor:
    """``t * log(t)`` with ``0 log 0 = 0``."""
    return torch.where(t > 0, t * torch.log(t.clamp_min(1e-300)), torch.zeros_like(t))


@register_observer("KLObserver")
class KLObserver(Observer):
    """Entropy (KL-divergence) calibration; symmetric only.

    Histogram counts are int64. The bin width is fixed by the first batch (its ``|x|`` max
    over ``kl_bins``); later batches that reach further add bins of the same width, so
    nothing already counted is ever rebinned. As in NVIDIA's calibrator, the first bin's
    count is replaced by the second's before the search, so a spike of exact zeros does not
    dominate the divergence.
    """

    label: ClassVar[str] = "KL"
    color: ClassVar[str] = "#9467bd"
    params: ClassVar[tuple[ParamSpec, ...]] = (KL_BINS,)
    symmetric_only: ClassVar[bool] = True

    def __init__(
        self,
        bit_type: BitType,
        module_type: str,
        calibration_mode: str = "channel_wise",
        kl_bins: int = 2048,
        symmetric: bool | None = None,
    ) -> None:
        super().__init__(bit_type, module_type, calibration_mode, symmetric)
        if symmetric is False:
            raise ValueError("KLObserver supports symmetric quantization only; remove symmetric: false")
        if isinstance(kl_bins, bool) or not isinstance(kl_bins, int):
            raise TypeError(f"KLObserver: kl_bins must be an int, got {kl_bins!r}")
        if kl_bins < bit_type.levels:
            raise ValueError(
                f"KLObserver: kl_bins={kl_bins} is below the {bit_type.levels} quantization levels "
                f"of {bit_type.name}; use at least {bit_type.levels} (2048 is the default)"
            )
        self.kl_bins = kl_bins
        self.hist: Tensor | None = None  # [C, L] int64 counts of |x|
        self.bin_width: Tensor | None = None  # [C] float64; 0 until a non-zero value is seen
        self.num_bins: Tensor | None = None  # [C] int64, bins in use per channel (≤ L)
        self.divergence: Tensor | None = None  # [C, L + 1] KL per threshold bin of the last search

    def _check_values(self, lo: Tensor, hi: Tensor) -> None:
        if not self.bit_type.signed and bool((lo < 0).any()):
            raise ValueError(
                f"KLObserver: negative values (min {float(lo.min()):.4g}) with unsigned type "
                f"{self.bit_type.name}; KL calibration is symmetric, so use a signed bit type"
            )

    # ----- statistics -------------------------------------------------------------------
    def _observe(self, rows: Tensor, lo: Tensor, hi: Tensor) -> None:
        channels, device = rows.shape[0], rows.device
        reach = torch.maximum(lo.abs(), hi.abs()).double()
        if self.hist is None or self.bin_width is None or self.num_bins is None:
            self.hist = torch.zeros(channels, self.kl_bins, dtype=torch.int64, device=device)
            self.bin_width = torch.zeros(channels, dtype=torch.float64, device=device)
            self.num_bins = torch.full((channels,), self.kl_bins, dtype=torch.int64, device=device)
        unset = self.bin_width == 0
        self.bin_width = torch.where(unset & (reach > 0), reach / self.kl_bins, self.bin_width)
        safe_width = torch.where(self.bin_width > 0, self.bin_width, torch.ones_like(self.bin_width))
        needed = torch.ceil(reach / safe_width)
        if bool((needed > self.max_bins).any()):
            self._coarsen(torch.exp2(torch.ceil(torch.log2(needed / self.max_bins))).clamp_min(1))
            safe_width = torch.where(self.bin_width > 0, self.bin_width, torch.ones_like(self.bin_width))
            needed = torch.ceil(reach / safe_width)
        self.num_bins = torch.maximum(self.num_bins, needed.long())
        extra = int(self.num_bins.max()) - self.hist.shape[1]
        if extra > 0:
            self.hist = torch.cat([self.hist, torch.zeros(channels, extra, dtype=torch.int64, device=device)], dim=1)
        width = self.hist.shape[1]  # after a merge, wider than every channel needs

        last = (self.num_bins - 1).unsqueeze(1).to(rows.dtype)
        index = torch.minimum(torch.floor(rows.abs() / safe_width.float().unsqueeze(1)), last)
        index += torch.arange(channels, device=device, dtype=index.dtype).unsqueeze(1) * width
        counts = torch.bincount(flat_in_memory_order(index).long(), minlength=channels * width)
        self.hist += counts.view(channels, width)

    @property
    def max_bins(self) -> int:
        """Most bins a channel's histogram may grow to before bins are merged (see ``_coarsen``)."""
        return _GROWTH_LIMIT * self.kl_bins

    def _coarsen(self, factor: Tensor) -> None:
        """Merge each channel's bins in groups of ``factor`` (a power of two, per channel).

        Only for a range that grows more than ``_GROWTH_LIMIT``× beyond the first batch's:
        counts stay exact, the bins get wider.
        """
        assert self.hist is not None and self.bin_width is not None and self.num_bins is not None
        positions = torch.arange(self.hist.shape[1], dtype=torch.float64, device=self.hist.device)
        index = torch.floor(positions.unsqueeze(0) / factor.unsqueeze(1)).long()
        self.hist = torch.zeros_like(self.hist).scatter_add_(1, index, self.hist)
        self.bin_width = self.bin_width * factor
        self.num_bins = torch.ceil(self.num_bins / factor).long().clamp_min(1)

    # ----- search -----------------------------------------------------------------------
    def _clip_range(self) -> tuple[Tensor, Tensor]:
        assert self.hist is not None and self.bin_width is not None and self.num_bins is not None
        threshold_bin = self._search()
        amax = threshold_bin.double() * self.bin_width
        low = -amax if self.bit_type.signed else torch.zeros_like(amax)
        return low, amax

    def _search(self) -> Tensor:
        """Index ``i`` of the best threshold edge per channel (threshold = ``i * bin_width``)."""
        assert self.hist is not None and self.num_bins is not None
        channels, length = self.hist.shape
        levels = self.bit_type.levels
        candidates = torch.arange(levels, length + 1, device=self.hist.device)
        tables = self._prefix_tables()
        if channels * (levels + 1) * candidates.numel() <= _EXHAUSTIVE_BUDGET or channels == 1:
            # Layer-wise is always exhaustive, as TensorRT's calibrator.
            divergence = self._divergences(candidates.expand(channels, -1), tables)
        else:
            divergence = self._search_finite(candidates, tables)
        self.divergence = torch.full(
            (channels, length + 1), float("nan"), dtype=torch.float64, device=divergence.device
        )
        self.divergence[:, levels:] = divergence
        # The last of equal minima, as NVIDIA's calibrator picks.
        flipped = divergence.flip(1).argmin(dim=1)
        best = candidates[candidates.numel() - 1 - flipped]
        return torch.where(self.bin_width > 0, best, torch.zeros_like(best))  # type: ignore[operator]

    def _search_finite(self, candidates: Tensor, tables: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        """Many channels: search only thresholds whose divergence is finite (a threshold whose last
        bin is empty while mass lies beyond it can never win), all of them when that fits the
        budget, else coarse-to-fine over them. Thresholds not evaluated stay ``inf``."""
        assert self.num_bins is not None
        bins, mass = tables[0], tables[1]
        channels, levels, first = bins.shape[0], self.bit_type.levels, int(candidates[0])
        tail = mass[:, -1:] - mass[:, candidates]
        finite = ((bins[:, candidates - 1] > 0) | (tail == 0)) & (candidates <= self.num_bins.unsqueeze(1))
        last_rank = (finite.sum(dim=1, keepdim=True) - 1).clamp_min(0)
        ranked = candidates[torch.argsort((~finite).to(torch.int8), dim=1, stable=True)]  # finite ones first
        widest = int(last_rank.max()) + 1
        divergence = torch.full(
            (channels, candidates.numel()), float("inf"), dtype=torch.float64, device=candidates.device
        )
        stride = 1
        if channels * (levels + 1) * widest > _EXHAUSTIVE_BUDGET:
            stride = max(1, math.ceil(widest / _COARSE_CANDIDATES))
        rank = torch.arange(0, widest, stride, device=candidates.device).expand(channels, -1).minimum(last_rank)
        while True:
            tried = ranked.gather(1, rank)
            values = self._divergences(tried, tables)
            divergence.scatter_(1, tried - first, values)
            if stride == 1:
                return divergence
            best = rank.gather(1, values.argmin(dim=1, keepdim=True))
            finer = max(1, stride // _REFINE_FACTOR)
            offsets = torch.arange(-stride + finer, stride, finer, device=best.device)
            rank = (best + offsets).clamp(min=0).minimum(last_rank)
            stride = finer

    def _prefix_tables(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The searched histogram and its prefix sums of mass, non-zero bins and ``h log h``."""
        assert self.hist is not None
        bins = self.hist.double()
        bins[:, 0] = bins[:, 1]
        pad = torch.zeros(bins.shape[0], 1, dtype=torch.float64, device=bins.device)
        mass = torch.cat([pad, bins.cumsum(1)], dim=1)  # mass[:, i] = sum of bins[:, :i]
        nonzero = torch.cat([pad, (bins > 0).double().cumsum(1)], dim=1)
        plogp = torch.cat([pad, _xlogx(bins).cumsum(1)], dim=1)
        return bins, mass, nonzero, plogp

    def _divergences(self, candidates: Tensor, tables: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        """KL(P || Q) for each channel and each of its candidate threshold bin counts ``[C, K]``."""
        assert self.num_bins is not None
        bins, mass, nonzero, plogp = tables
        num_bins = self.num_bins
        channels = bins.shape[0]
        levels = self.bit_type.levels
        total = mass[:, -1:]

        # Group k of candidate i spans bins [ceil(k i / n), ceil((k + 1) i / n)).
        k = torch.arange(levels + 1, device=bins.device).unsqueeze(1)
        count = candidates.shape[1]
        out = torch.empty(channels, count, dtype=torch.float64, device=bins.device)
        step = max(1, _CHUNK_TERMS // max(1, (levels + 1) * count))
        for c0 in range(0, channels, step):
            sl = slice(c0, c0 + step)
            cand = candidates[sl]
            idx = (k.unsqueeze(0) * cand.unsqueeze(1) + levels - 1) // levels  # [c, n + 1, K]
            m = mass[sl].unsqueeze(2).expand(-1, -1, count)
            nz = nonzero[sl].unsqueeze(2).expand(-1, -1, count)
            group_mass = torch.diff(m.gather(1, idx), dim=1)  # [c, n, K]
            group_nonzero = torch.diff(nz.gather(1, idx), dim=1)
            ratio = group_mass / group_nonzero.clamp_min(1)
            q_term = torch.where(
                group_mass > 0, group_mass * torch.log(ratio.clamp_min(1e-300)), torch.zeros_like(group_mass)
            ).sum(1)
            last_mass, last_nonzero = group_mass[:, -1], group_nonzero[:, -1]
            below = mass[sl].gather(1, cand)  # mass under the threshold
            tail = total[sl] - below
            last_bin = bins[sl].gather(1, cand - 1)
            p_log_p = plogp[sl].gather(1, cand - 1) + _xlogx(last_bin + tail)
            tail_term = torch.where(
                tail > 0,
                tail * torch.log((last_mass / last_nonzero.clamp_min(1)).clamp_min(1e-300)),
                torch.zeros_like(tail),
            )
            kl = p_log_p - _xlogx(total[sl]) - q_term - tail_term + total[sl] * torch.log(below.clamp_min(1e-300))
            kl = kl / total[sl]
            impossible = ((tail > 0) & (last_bin == 0)) | (cand > num_bins[sl].unsqueeze(1))
            out[sl] = torch.where(impossible, torch.full_like(kl, float("inf")), kl)
        return out

    def _extra_repr(self) -> dict[str, Any]:
        return {"kl_bins": self.kl_bins}
