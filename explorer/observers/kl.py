"""KL: TensorRT's entropy calibration on a histogram of ``|x|``.

For each candidate threshold (a bin edge, from the number of quantization levels up to the
histogram's end) the distribution below it, with the tail folded into its last bin, is
compared with its requantization to the available levels; the threshold of least KL
divergence wins. The search is vectorised over candidates with prefix sums, so it costs
``candidates × levels`` per channel instead of ``candidates × bins``.

The statistics are the point's sign-magnitude histogram on power-of-two bins
(:mod:`explorer.stats.histogram`: exact to merge, a fixed size per channel) plus the first batch's
``max |x|``. The histogram searched is NVIDIA's: bins of width ``first max / kl_bins``, extended with
the same width as later batches reach further (merged by powers of two beyond
``_GROWTH_LIMIT × kl_bins`` bins), each fine bin counted in the search bin holding its centre.
That needs the statistics to be several times finer than the search bins (always so layer-wise);
a coarser per-channel histogram is searched on its own grid instead, merged down to at most
``kl_bins`` bins.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from explorer.bit_type import BitType
from explorer.observers.base import Observer
from explorer.observers.params import KL_BINS, ParamSpec, check_observer_params, check_symmetric
from explorer.observers.registry import register_observer
from explorer.stats.histogram import SignedHistogram
from explorer.stats.point_stats import folded, histogram_of

if TYPE_CHECKING:
    from explorer.stats.point_stats import StatsView

# Largest number of (channel, level, candidate) terms evaluated at once: each of the dozen temporaries
# stays at 2 MB, in cache (about 20% faster than 8 MB ones on the CPU).
_CHUNK_TERMS = 250_000
# Channel-wise searches over more terms than this keep to thresholds of finite divergence;
# if those are still too many, they scan about ``_COARSE_CANDIDATES`` of them, then refine
# around the best with a stride ``_REFINE_FACTOR`` times finer per round.
_EXHAUSTIVE_BUDGET = 8_000_000
_COARSE_CANDIDATES = 32
_REFINE_FACTOR = 8
# Channels whose four prefix tables are built at once hold about this many values per table (1 MB of
# float64): small tables are reused from freed memory, where [768, 2049] ones (12.6 MB) were
# page-faulted afresh on every search, and cost twice as much.
_TABLE_VALUES = 131_072
# The search histogram may grow to this many times kl_bins; beyond, its bins are merged.
_GROWTH_LIMIT = 16
# Statistics bins per search bin needed to rebuild NVIDIA's grid from them.
_FINER_BY = 4
# Divergences this close to the least are equal: rounding (about 1e-15) must not pick among thresholds
# whose divergence is the same in exact arithmetic (e.g. 0 for every threshold past a few repeated values).
_TIE = 1e-12


@register_observer("KLObserver")
class KLObserver(Observer):
    """Entropy (KL-divergence) calibration; symmetric only.

    As in NVIDIA's calibrator, the first bin's count is replaced by the second's before the
    search, so a spike of exact zeros does not dominate the divergence. After a search,
    ``bin_width`` / ``num_bins`` describe the histogram that was searched; ``hist`` and
    ``divergence`` (the KL of every threshold) rebuild it and its search on access, since keeping
    them would cost ``[C, kl_bins]`` float64 per point (700 MB on a channel-wise vit_tiny).
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
        check_symmetric(self._name, self.symmetric_only, symmetric)
        kl_bins = check_observer_params(self._name, self.params, bit_type, {"kl_bins": kl_bins})["kl_bins"]
        self.kl_bins = kl_bins
        # The statistics (sign-magnitude, power-of-two bins); None while the raw values are kept.
        self.stats_hist: SignedHistogram | None = None
        self.first_reach: Tensor | None = None  # [C] float64 max |x| of the first batch with a non-zero value
        self._raw: list[Tensor] | None = []  # values seen while the point is small (see kept_raw)
        self._count = 0  # values seen per row
        self.bin_width: Tensor | None = None  # [C] float64; 0 for a channel of zeros only
        self.num_bins: Tensor | None = None  # [C] int64, bins in use per channel (≤ L)

    @property
    def hist(self) -> Tensor | None:
        """``[C, L]`` float64 counts of ``|x|`` on the search grid (None before any statistics)."""
        return None if self.num_batches == 0 else self._searched_histogram()

    @property
    def divergence(self) -> Tensor | None:
        """``[C, L + 1]`` KL of every threshold bin (NaN below the number of levels; ``inf`` where a
        threshold cannot win and was not evaluated); None before any statistics."""
        hist = self.hist
        if hist is None:
            return None
        every = torch.full((hist.shape[0], hist.shape[1] + 1), float("nan"), dtype=torch.float64, device=hist.device)
        searched = self._search(hist, keep_divergence=True)[1]
        assert searched is not None
        every[:, self.bit_type.levels :] = searched
        return every

    def _check_values(self, lo: Tensor, hi: Tensor) -> None:
        if not self.bit_type.signed and bool((lo < 0).any()):
            raise ValueError(
                f"KLObserver: negative values (min {float(lo.min()):.4g}) with unsigned type "
                f"{self.bit_type.name}; KL calibration is symmetric, so use a signed bit type"
            )

    # ----- statistics -------------------------------------------------------------------
    def _observe(self, blocks: Tensor, lo: Tensor, hi: Tensor) -> None:
        self.stats_hist, self._raw, self._count = folded(
            self.stats_hist, self._raw, self._count, blocks, lo, hi, self.calibration_mode
        )
        reach = torch.maximum(lo.abs(), hi.abs()).double()
        first = self.first_reach
        self.first_reach = reach if first is None else torch.where(first > 0, first, reach)

    def _fit(self, view: StatsView) -> None:
        self.stats_hist = view.hist
        self._raw = None if view.raw is None else [view.raw]
        self._count = view.count
        reaches = torch.stack(
            [torch.maximum(t[:, 0].abs(), b[:, 0].abs()) for t, b in zip(view.ends.top, view.ends.bottom, strict=True)]
        ).double()  # [B, C]
        first_nonzero = (reaches > 0).double().argmax(dim=0, keepdim=True)  # 0 when every batch is all zeros
        self.first_reach = reaches.gather(0, first_nonzero).squeeze(0)

    def _searched_histogram(self) -> Tensor:
        """The ``|x|`` histogram to search ``[C, L]``, per channel: NVIDIA's grid where the statistics
        are fine enough to rebuild it, else the statistics' own grid merged down to at most ``kl_bins``
        bins (its grid goes to ``bin_width`` / ``num_bins``)."""
        assert self.first_reach is not None and self.data_min is not None and self.data_max is not None
        stats = histogram_of(
            self.stats_hist, self._raw, self.data_min.numel(), self.calibration_mode, self.data_min.device
        )
        counts, width = stats.magnitude()
        channels, length = counts.shape
        reach = torch.maximum(self.data_min.abs(), self.data_max.abs()).double().to(counts.device)
        # NVIDIA's grid: first max / kl_bins, extended; merged by powers of two past the growth limit.
        nvidia_width = self.first_reach.to(counts.device) / self.kl_bins
        # Raw values (small points) give NVIDIA's counts exactly; else the statistics must be fine enough.
        nvidia = (nvidia_width > 0) & ((width * _FINER_BY <= nvidia_width) | (self._raw is not None))
        safe = torch.where(nvidia, nvidia_width, torch.ones_like(nvidia_width))
        needed = torch.ceil(reach / safe - 1e-9).clamp_min(1)
        growth = torch.exp2(torch.ceil(torch.log2((needed / (_GROWTH_LIMIT * self.kl_bins)).clamp_min(1.0))))
        nvidia_width, needed = nvidia_width * growth, torch.ceil(needed / growth - 1e-9).clamp_min(1)
        # The statistics' own grid, merged down to at most kl_bins bins in use.
        positions = torch.arange(1, length + 1, device=counts.device)
        used = torch.where(counts > 0, positions, torch.zeros_like(positions)).amax(dim=1)
        shift = torch.ceil(torch.log2((used.double() / self.kl_bins).clamp_min(1.0))).long()
        own_bins = torch.div(used + (1 << shift) - 1, 1 << shift, rounding_mode="floor").clamp_min(1)
        self.num_bins = torch.where(nvidia, needed.long(), own_bins)
        self.bin_width = torch.where(
            used > 0, torch.where(nvidia, nvidia_width, width * torch.exp2(shift.double())), torch.zeros_like(width)
        )
        keep = max(int(self.num_bins.max()), self.bit_type.levels)
        if self._raw is not None:
            return self._raw_histogram(keep)
        # Counts below each search edge, read off the statistics' cumulative counts (linear inside a bin).
        cumulative = torch.nn.functional.pad(counts.double().cumsum(dim=1), (1, 0))  # [C, H + 1]
        edges = torch.arange(keep + 1, device=counts.device, dtype=torch.float64) * self.bin_width.unsqueeze(1)
        position = (edges / width.unsqueeze(1)).clamp(0, length)
        below = position.floor().long().clamp(max=length - 1)
        below_edge = cumulative.gather(1, below) + counts.double().gather(1, below) * (position - below)
        # Each channel's last bin in use takes everything beyond it (its maximum lies in it).
        past_end = torch.arange(keep + 1, device=counts.device) >= self.num_bins.unsqueeze(1)
        below_edge = torch.where(past_end, cumulative[:, -1:], below_edge)
        hist = torch.diff(below_edge, dim=1)
        hist[hist < 1e-9] = 0.0  # rounding residue is no count
        return hist

    def _raw_histogram(self, keep: int) -> Tensor:
        """NVIDIA's counts of the kept raw values on the search grid (last bin in use takes the rest)."""
        assert self._raw is not None and self.bin_width is not None and self.num_bins is not None
        magnitude = torch.cat(self._raw, dim=1).abs().double()
        width = torch.where(self.bin_width > 0, self.bin_width, torch.ones_like(self.bin_width)).unsqueeze(1)
        index = torch.minimum(torch.floor(magnitude / width).long(), (self.num_bins - 1).unsqueeze(1))
        return torch.zeros(index.shape[0], keep, dtype=torch.float64, device=index.device).scatter_add_(
            1, index, torch.ones_like(magnitude)
        )

    # ----- search -----------------------------------------------------------------------
    def _clip_range(self) -> tuple[Tensor, Tensor]:
        hist = self._searched_histogram()
        assert self.bin_width is not None
        threshold_bin, _ = self._search(hist)
        amax = threshold_bin.double() * self.bin_width
        low = -amax if self.bit_type.signed else torch.zeros_like(amax)
        return low, amax

    def _search(self, hist: Tensor, keep_divergence: bool = False) -> tuple[Tensor, Tensor | None]:
        """Index ``i`` of the best threshold edge per channel (threshold = ``i * bin_width``) in the
        searched histogram ``hist [C, L]``, and, when ``keep_divergence``, the divergence of every
        candidate edge (from the number of levels up to ``L``).

        Channels are searched a slice at a time, so the prefix tables stay at about a MB each; what is
        searched (every candidate, the finite ones, or coarse-to-fine) is decided for the whole point."""
        assert self.num_bins is not None and self.bin_width is not None
        channels, length = hist.shape
        levels = self.bit_type.levels
        candidates = torch.arange(levels, length + 1, device=hist.device)
        # Layer-wise is always exhaustive, as TensorRT's calibrator.
        exhaustive = channels == 1 or channels * (levels + 1) * candidates.numel() <= _EXHAUSTIVE_BUDGET
        finite = None if exhaustive else _finite_candidates(hist, self.num_bins, levels)
        # (A bool sum would first copy the mask to int64: 12 MB for a [768, 1921] one.)
        widest = 0 if finite is None else int(finite.view(torch.uint8).sum(dim=1, dtype=torch.int32).max().clamp_min(1))
        stride = 1
        if channels * (levels + 1) * widest > _EXHAUSTIVE_BUDGET:
            stride = max(1, math.ceil(widest / _COARSE_CANDIDATES))
        step = max(1, _TABLE_VALUES // (length + 1))
        best, divergences = [], []
        for c0 in range(0, channels, step):
            rows = slice(c0, c0 + step)
            tables, num_bins = _prefix_tables(hist[rows]), self.num_bins[rows]
            if finite is None:
                divergence = self._divergences(candidates.expand(tables[0].shape[0], -1), tables, num_bins)
            else:
                divergence = self._search_finite(candidates, tables, num_bins, finite[rows], widest, stride)
            best.append(candidates[_last_minimum(divergence)])
            if keep_divergence:
                divergences.append(divergence)
        chosen = torch.cat(best)
        # Fewer bins in use than levels: every value is resolved, so the threshold is the top edge.
        chosen = torch.where(self.num_bins < levels, self.num_bins, chosen)
        chosen = torch.where(self.bin_width > 0, chosen, torch.zeros_like(chosen))
        return chosen, torch.cat(divergences) if keep_divergence else None

    def _search_finite(
        self,
        candidates: Tensor,
        tables: tuple[Tensor, Tensor, Tensor, Tensor],
        num_bins: Tensor,
        finite: Tensor,
        widest: int,
        stride: int,
    ) -> Tensor:
        """Many channels: search only the ``finite`` thresholds (:func:`_finite_candidates`), all of
        them when ``stride`` is 1, else coarse-to-fine over each row's first ``widest`` of them.
        Thresholds not evaluated stay ``inf``."""
        channels, first, count = finite.shape[0], int(candidates[0]), candidates.numel()
        ahead = finite.cumsum(dim=1)  # finite candidates up to each
        last_rank = (ahead[:, -1:] - 1).clamp_min(0)
        # Each row's finite candidates first, in order (a row with none starts with the first candidate);
        # ranks past a row's last finite one are never read.
        ranked = candidates[:1].repeat(channels, count + 1)
        ranked.scatter_(1, torch.where(finite, ahead - 1, count), candidates.expand(channels, -1))
        ranked = ranked[:, :count]
        divergence = torch.full((channels, count), float("inf"), dtype=torch.float64, device=candidates.device)
        rank = torch.arange(0, widest, stride, device=candidates.device).expand(channels, -1).minimum(last_rank)
        while True:
            tried = ranked.gather(1, rank)
            values = self._divergences(tried, tables, num_bins)
            divergence.scatter_(1, tried - first, values)
            if stride == 1:
                return divergence
            best = rank.gather(1, values.argmin(dim=1, keepdim=True))
            finer = max(1, stride // _REFINE_FACTOR)
            offsets = torch.arange(-stride + finer, stride, finer, device=best.device)
            rank = (best + offsets).clamp(min=0).minimum(last_rank)
            stride = finer

    def _divergences(
        self, candidates: Tensor, tables: tuple[Tensor, Tensor, Tensor, Tensor], num_bins: Tensor
    ) -> Tensor:
        """KL(P || Q) for each channel and each of its candidate threshold bin counts ``[C, K]``
        (``tables`` and ``num_bins`` of those channels)."""
        bins, mass, nonzero, plogp = tables
        channels = bins.shape[0]
        levels = self.bit_type.levels
        total = mass[:, -1:]
        total_log_total = torch.special.xlogy(total, total)

        # Group k of candidate i spans bins [ceil(k i / n), ceil((k + 1) i / n)); n = levels is a power of two.
        k = torch.arange(levels + 1, device=bins.device)
        shift = levels.bit_length() - 1
        count = candidates.shape[1]
        out = torch.empty(channels, count, dtype=torch.float64, device=bins.device)
        step = max(1, _CHUNK_TERMS // max(1, (levels + 1) * count))
        # The same candidates for every channel (an exhaustive search): their groups are computed once.
        shared_idx = None
        if candidates.stride(0) == 0:
            shared_idx = ((candidates[0].unsqueeze(1) * k + (levels - 1)) >> shift).expand(step, -1, -1)
        for c0 in range(0, channels, step):
            sl = slice(c0, c0 + step)
            cand = candidates[sl]
            if shared_idx is not None:
                idx = shared_idx[: cand.shape[0]]
            else:
                idx = (cand.unsqueeze(2) * k + (levels - 1)) >> shift  # [c, K, n + 1]
            group_mass = torch.diff(mass[sl].unsqueeze(1).expand(-1, count, -1).gather(2, idx), dim=2)  # [c, K, n]
            group_nonzero = torch.diff(nonzero[sl].unsqueeze(1).expand(-1, count, -1).gather(2, idx), dim=2)
            group_nonzero.clamp_min_(1)  # a group of no mass: m log(m / z) is 0 all the same
            # Sum of m log(m / z) over the groups (m = 0 gives 0), in place: a vectorised log (xlogy is 3x slower).
            q_term = torch.div(group_mass, group_nonzero).clamp_min_(1e-300).log_().mul_(group_mass).sum(2)
            last_mass, last_nonzero = group_mass[:, :, -1], group_nonzero[:, :, -1]
            below = mass[sl].gather(1, cand)  # mass under the threshold
            tail = total[sl] - below
            last_bin = bins[sl].gather(1, cand - 1)
            folded_last = last_bin + tail
            p_log_p = plogp[sl].gather(1, cand - 1) + torch.special.xlogy(folded_last, folded_last)
            tail_term = torch.special.xlogy(tail, (last_mass / last_nonzero).clamp_min(1e-300))
            kl = p_log_p - total_log_total[sl] - q_term - tail_term + total[sl] * torch.log(below.clamp_min(1e-300))
            kl = kl / total[sl]
            impossible = ((tail > 0) & (last_bin == 0)) | (cand > num_bins[sl].unsqueeze(1))
            out[sl] = torch.where(impossible, torch.full_like(kl, float("inf")), kl)
        return out

    def _extra_repr(self) -> dict[str, Any]:
        return {"kl_bins": self.kl_bins}


def _last_minimum(divergence: Tensor) -> Tensor:
    """``[C]`` index of each row's least divergence ``[C, K]``, the last of equal ones (within
    :data:`_TIE`), as NVIDIA's calibrator picks."""
    lowest = divergence.min(dim=1, keepdim=True).values
    tied = (divergence <= lowest + _TIE).flip(1).to(torch.uint8)
    return divergence.shape[1] - 1 - tied.argmax(dim=1)


def _finite_candidates(hist: Tensor, num_bins: Tensor, levels: int) -> Tensor:
    """``[C, K]``: whether each candidate threshold ``i = levels .. L`` of ``hist [C, L]`` can have a
    finite divergence: it is within the bins in use, and its last bin holds mass or nothing lies beyond
    it (else P has mass where Q has none). Read off the counts alone (as searched: the first bin takes
    the second's count), so the whole point's candidates are known before any table is built."""
    occupied = hist > 0
    occupied[:, 0] = occupied[:, 1]
    length = hist.shape[1]
    # The last occupied bin (-1: none): the first maximum of the reversed row, in bytes (not int64 positions).
    found, first = occupied.flip(1).to(torch.uint8).max(dim=1, keepdim=True)
    last = torch.where(found > 0, length - 1 - first, -1)
    candidates = torch.arange(levels, length + 1, device=hist.device)
    return (occupied[:, levels - 1 :] | (candidates > last)) & (candidates <= num_bins.unsqueeze(1))


def _prefix_tables(hist: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The searched histogram and its prefix sums of mass, non-zero bins and ``h log h``
    (``xlogy`` and ``sign`` rather than masked logs and comparisons: a few passes fewer over tables
    of ``[C, L]`` float64)."""
    bins = hist.to(torch.float64, copy=True)  # the first bin is replaced below; keep the recorded one
    bins[:, 0] = bins[:, 1]

    def prefix(t: Tensor) -> Tensor:
        """``[C, L + 1]``: column ``i`` sums ``t[:, :i]``."""
        return torch.nn.functional.pad(t.cumsum_(1), (1, 0))

    mass = prefix(bins.clone())
    nonzero = prefix(torch.sign(bins))  # counts are ≥ 0
    plogp = prefix(torch.special.xlogy(bins, bins))
    return bins, mass, nonzero, plogp
