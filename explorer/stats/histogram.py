"""Sign-magnitude histograms on power-of-two bin widths: exact to merge, exact to coarsen.

Each row (a channel, or a whole point) counts negative and positive values separately,
``half_bins`` bins per side, by magnitude: with ``w = 2**e`` (``e`` that side's exponent),
positive bin ``k`` covers ``[k w, (k + 1) w)`` and negative bin ``k`` covers ``[-(k + 1) w, -k w)``
(the bins of ``floor(x / w)``). Exact zeros are counted apart. Because every width is a power
of two and every grid starts at zero, a coarser grid is obtained by shifting bin indices
(``k >> s``): counts stay integers, nothing is interpolated, and a histogram built batch by
batch equals one built from the merged parts in any grouping. The exponent of a side is the
smallest that keeps the largest magnitude seen inside ``half_bins`` bins, so it depends only on
that magnitude, not on the order of the batches.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from explorer.stats.layout import outer_chunks, row_blocks

# The finest bin width is 2**EXP_MIN: scaling by 2**-EXP_MIN stays finite in float32, and any
# magnitude below it (subnormals) lands in the first bin.
EXP_MIN = -126
# Shifts beyond this collapse every bin into bin 0 (int64 shifts must stay below 64).
_MAX_SHIFT = 62
# Bin indices are computed in float32 while they stay exact there.
_FLOAT_EXACT = 1 << 24


def needed_exponent(reach: Tensor, half_bins: int) -> Tensor:
    """Smallest ``e`` (int64) with ``reach < half_bins * 2**e``, at least :data:`EXP_MIN`."""
    _, p = torch.frexp(reach.double())  # reach = m * 2**p, m in [0.5, 1)
    e = p.long() - (half_bins.bit_length() - 1)
    return torch.where(reach > 0, e, torch.full_like(e, EXP_MIN)).clamp_min(EXP_MIN)


def shift_bins(counts: Tensor, shift: Tensor) -> Tensor:
    """Coarsen ``counts [..., H]`` by ``2**shift`` (one shift per leading index): bin k → k >> shift."""
    if not bool((shift > 0).any()):
        return counts
    half = counts.shape[-1]
    index = torch.arange(half, device=counts.device) >> shift.clamp(0, _MAX_SHIFT).unsqueeze(-1)
    return torch.zeros_like(counts).scatter_add_(-1, index.expand_as(counts), counts)


@dataclass
class AscendingBins:
    """A histogram's bins from the most negative to the most positive (exact zeros not included):
    ``counts [R, M]``, ``edges [R, M + 1]``, and, computed once when first read, the tables every
    observer's metrics on a point read (read-only)."""

    counts: Tensor
    edges: Tensor
    widths: Tensor | None = None  # [R, 2] the sides' bin widths, when these are a SignedHistogram's grids

    def searchsorted(self, x: Tensor, right: bool = False) -> Tensor:
        """``torch.searchsorted(edges, x, right=right)`` for queries ``x [R, K]``. On a
        :class:`SignedHistogram`'s grids (edge ``i`` is ``(i - H) w`` of its side, ``w`` a power of two)
        by arithmetic, exact and a few times faster than the binary search."""
        if self.widths is None:
            return torch.searchsorted(self.edges.contiguous(), x.contiguous(), right=right)
        half = self.counts.shape[1] // 2
        steps = (x / torch.where(x < 0, self.widths[:, :1], self.widths[:, 1:])).clamp_(-half - 1, half + 1)
        steps = steps.floor_().add_(1) if right else steps.ceil_()  # edges at or below x / below x
        return steps.add_(half).clamp_(0, 2 * half + 1).long()

    @functools.cached_property
    def density(self) -> Tensor:
        """``[R, M]`` float64 counts per unit of width (0 in bins of no width)."""
        widths = torch.diff(self.edges, dim=1)
        return torch.where(widths > 0, self.counts.double() / widths.clamp_min(1e-300), torch.zeros_like(widths))

    @functools.cached_property
    def running(self) -> Tensor:
        """``[R, M + 1]`` float64 counts below each edge."""
        return torch.nn.functional.pad(self.counts.double().cumsum(dim=1), (1, 0))


# The histograms last laid out by :meth:`SignedHistogram.ascending_bins`, with their tensors' versions
# (an in-place change of the counts invalidates an entry). Two entries: a point's own histogram stays
# while an observer lays out a coarsened copy of it; the bound keeps the memory bounded.
_ASCENDING_KEPT = 2
_last_ascending: list[tuple[SignedHistogram, tuple[int, int], AscendingBins]] = []


@dataclass
class SignedHistogram:
    """Per-row sign-magnitude counts (see the module docstring).

    ``counts [R, 2, H]`` int64 (side 0: negative values, side 1: positive); ``exponent [R, 2]``
    int64 (bin width of each side is ``2**exponent``); ``zeros [R]`` int64.
    """

    counts: Tensor
    exponent: Tensor
    zeros: Tensor

    @classmethod
    def empty(cls, rows: int, half_bins: int, device: torch.device | str = "cpu") -> SignedHistogram:
        """A histogram of ``rows`` rows with no values."""
        if half_bins < 2 or half_bins & (half_bins - 1):
            raise ValueError(f"half_bins must be a power of two ≥ 2, got {half_bins}")
        return cls(
            torch.zeros(rows, 2, half_bins, dtype=torch.int64, device=device),
            torch.full((rows, 2), EXP_MIN, dtype=torch.int64, device=device),
            torch.zeros(rows, dtype=torch.int64, device=device),
        )

    @property
    def rows(self) -> int:
        return self.counts.shape[0]

    @property
    def half_bins(self) -> int:
        return self.counts.shape[2]

    @property
    def width(self) -> Tensor:
        """``[R, 2]`` float64 bin width of each side."""
        return torch.ldexp(torch.ones_like(self.exponent, dtype=torch.float64), self.exponent)

    def total(self) -> Tensor:
        """``[R]`` values counted per row (zeros included)."""
        return self.counts.sum(dim=(1, 2)) + self.zeros

    def clone(self) -> SignedHistogram:
        return SignedHistogram(self.counts.clone(), self.exponent.clone(), self.zeros.clone())

    def with_exponent(self, exponent: Tensor) -> SignedHistogram:
        """The same counts on coarser (or equal) grids ``exponent [R, 2]``."""
        shift = exponent - self.exponent
        if bool((shift < 0).any()):
            raise ValueError("with_exponent can only coarsen a histogram")
        if not bool((shift > 0).any()):
            return self
        return SignedHistogram(shift_bins(self.counts, shift), exponent.clone(), self.zeros)

    def grown_for(self, lo: Tensor, hi: Tensor) -> SignedHistogram:
        """This histogram on grids wide enough for rows whose extremes are ``lo``/``hi``."""
        reach = torch.stack([(-lo).clamp_min(0), hi.clamp_min(0)], dim=1)
        return self.with_exponent(torch.maximum(self.exponent, needed_exponent(reach, self.half_bins)))

    def binned(self, values: Tensor, lo: Tensor, hi: Tensor, zeros: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(counts [R, 2, H], zeros [R])`` of ``values`` alone on this histogram's grids (which must
        cover them: see :meth:`grown_for`), exact zeros counted apart: by the caller when ``zeros`` is
        given, else here (in a bin of their own, in the same pass).

        ``values`` is rows ``[R, n]`` or blocks ``[outer, R, inner]``
        (:func:`~explorer.stats.layout.channel_blocks`); ``lo``/``hi`` are the rows' extremes. Few
        passes, in memory order and a few MB at a time: scale by each row's power-of-two factor, floor
        and offset in float32 (exact while the indices stay below 2**24), one conversion and one
        ``bincount``; the rows' totals check that every value fell inside its own row's grid.
        """
        blocks = values if values.dim() == 3 else row_blocks(values)
        half, count = self.half_bins, self.rows
        shape = (1, count, 1)
        inverse = torch.ldexp(torch.ones_like(self.exponent, dtype=torch.float32), -self.exponent)  # exact powers of 2
        neg, pos = inverse[:, 0], inverse[:, 1]
        has_neg, has_pos = lo < 0, hi > 0
        # A row with values on one side only (or the same grid on both) needs one factor for all its values.
        one_factor = bool(((self.exponent[:, 0] == self.exponent[:, 1]) | ~has_neg | ~has_pos).all())
        factor = torch.where(has_neg & ~has_pos, neg, pos).view(shape)
        # Else, of x * neg and x * pos, the factor of x's own side gives the larger product when the negative
        # grid is the coarser (neg < pos), the smaller otherwise: a max under the sign ``s`` picks it (the
        # other product may overflow; the max discards it).
        s = torch.where(neg < pos, 1.0, -1.0).view(shape)
        neg_s, pos_s = s * neg.view(shape), s * pos.view(shape)
        count_zeros = zeros is None and bool(((lo <= 0) & (hi >= 0)).any())
        # Each row's slots, in ascending order: its negative bins, one slot more, zeros' slot at H + 1, its
        # positive bins. Counting zeros apart adds sign(x) to floor(x / w): negative bin m goes to -(m + 2),
        # zero to 0, positive bin k to k + 1 (two cheap passes, where a comparison and a masked fill cost
        # as much as the rest of the pass together). A negative x whose x / w underflows to -0 goes to -1,
        # the slot just above its side's bin 0, and is added to it. Without zeros, floor(x / w) alone:
        # -(m + 1) and k.
        shift = int(count_zeros)
        per_row = 2 * half + 2
        offset = (torch.arange(count, device=blocks.device) * per_row + half + 1).view(shape)
        # Every value's flat slot, then one bincount: counting per chunk would clear and add all the bins each time.
        small = count * per_row < _FLOAT_EXACT
        flat = torch.empty(blocks.numel(), dtype=torch.int32 if small else torch.int64, device=blocks.device)
        stride = blocks.shape[1] * blocks.shape[2]
        for start, part in outer_chunks(blocks):
            if one_factor:
                index = part * factor
            else:
                index = part * neg_s
                torch.maximum(index, part * pos_s, out=index)
                index.mul_(s)
            sign = torch.sign(part) if count_zeros else None  # of x: x / w may underflow
            index.floor_()
            if sign is not None:
                index.add_(sign)
            dest = flat[start * stride : start * stride + part.numel()].view(part.shape)
            if small:
                dest.copy_(index.add_(offset.to(index.dtype)))  # exact integers in float32: converted as they are
            else:
                dest.copy_(index).add_(offset)
        outside = ValueError("SignedHistogram.binned: values outside the histogram's grids (see grown_for)")
        try:
            slots = torch.bincount(flat, minlength=count * per_row)
        except RuntimeError as exc:  # a negative index (below the first row's grid)
            raise outside from exc
        if slots.numel() != count * per_row:  # an index past the last row's grid
            raise outside
        slots = slots.view(count, per_row)
        # Every value in its own row (row totals) and none in a slot no bin owns.
        if bool((slots.sum(dim=1) != blocks.shape[0] * blocks.shape[2]).any()) or (
            not count_zeros and bool(slots[:, [0, per_row - 1]].any())
        ):
            raise outside
        negative = slots[:, 1 - shift : 1 - shift + half]
        positive = slots[:, half + 1 + shift : half + 1 + shift + half]
        if count_zeros:
            negative[:, -1] += slots[:, half]  # underflowed negative values: negative bin 0
        counts = torch.stack([negative.flip(1), positive], dim=1)
        if zeros is None:
            zeros = slots[:, half + 1].clone() if count_zeros else torch.zeros_like(lo, dtype=torch.int64)
        else:
            counts[:, 1, 0] -= zeros.to(counts.dtype)  # zeros fell in the first positive bin
        return counts, zeros

    def counted(self, values: Tensor, lo: Tensor, hi: Tensor) -> SignedHistogram:
        """This histogram plus ``values`` (float32 rows ``[R, n]`` or blocks ``[outer, R, inner]``;
        ``lo``/``hi`` their row extremes).

        Returns a new histogram: ``self`` is unchanged, so a failure leaves no half-counted state.
        """
        grown = self.grown_for(lo, hi)
        counts, zeros = grown.binned(values, lo, hi)
        counts += grown.counts
        return SignedHistogram(counts, grown.exponent, grown.zeros + zeros)

    def merged(self, other: SignedHistogram) -> SignedHistogram:
        """The sum of two histograms of the same rows (exact)."""
        if other.counts.shape != self.counts.shape:
            raise ValueError(
                f"cannot merge histograms of shapes {tuple(self.counts.shape)} and {tuple(other.counts.shape)}"
            )
        exponent = torch.maximum(self.exponent, other.exponent)
        a, b = self.with_exponent(exponent), other.with_exponent(exponent)
        return SignedHistogram(a.counts + b.counts, exponent, a.zeros + b.zeros)

    def coarsened(self, half_bins: int) -> SignedHistogram:
        """At most ``half_bins`` bins per side covering the same range (fewer bins, wider)."""
        if half_bins >= self.half_bins:
            return self
        factor = self.half_bins // half_bins
        counts = self.counts.view(self.rows, 2, half_bins, factor).sum(dim=3)
        return SignedHistogram(counts, self.exponent + (factor.bit_length() - 1), self.zeros.clone())

    def reduced(self) -> SignedHistogram:
        """All rows summed into one (on the coarsest grid of each side)."""
        exponent = self.exponent.amax(dim=0, keepdim=True)
        grown = self.with_exponent(exponent.expand_as(self.exponent))
        return SignedHistogram(grown.counts.sum(dim=0, keepdim=True), exponent, grown.zeros.sum().reshape(1))

    def select(self, index: int) -> SignedHistogram:
        """Row ``index`` alone."""
        sl = slice(index, index + 1)
        return SignedHistogram(self.counts[sl], self.exponent[sl], self.zeros[sl])

    def ascending(self) -> tuple[Tensor, Tensor]:
        """``(counts [R, 2H], edges [R, 2H + 1])`` from the most negative bin to the most positive
        (read-only, see :meth:`ascending_bins`). Exact zeros are not included."""
        bins = self.ascending_bins()
        return bins.counts, bins.edges

    def ascending_bins(self) -> AscendingBins:
        """This histogram laid out in ascending order, with its derived tables (read-only: the last
        histograms' are reused, since every observer's metrics on a point read them)."""
        versions = (self.counts._version, self.exponent._version)
        for hist, seen, bins in _last_ascending:
            if hist is self and seen == versions:
                return bins
        counts = torch.cat([self.counts[:, 0].flip(1), self.counts[:, 1]], dim=1)
        steps = torch.arange(-self.half_bins, self.half_bins + 1, dtype=torch.float64, device=self.counts.device)
        width = self.width
        edges = steps.unsqueeze(0) * torch.where(steps < 0, width[:, :1], width[:, 1:])
        bins = AscendingBins(counts, edges, width)
        _last_ascending[:] = [(self, versions, bins), *_last_ascending[: _ASCENDING_KEPT - 1]]
        return bins

    def magnitude(self) -> tuple[Tensor, Tensor]:
        """``(counts [R, H], width [R])``: the histogram of ``|x|`` (zeros in bin 0), on the
        coarser of the two sides' grids (a negative value exactly on a bin edge counts one bin lower)."""
        exponent = self.exponent.amax(dim=1, keepdim=True).expand(-1, 2)
        grown = self.with_exponent(exponent)
        counts = grown.counts.sum(dim=1)
        counts[:, 0] += grown.zeros
        return counts, grown.width[:, 0]

    def state(self, prefix: str) -> dict[str, Tensor]:
        """Plain tensors for a state dict."""
        return {f"{prefix}.counts": self.counts, f"{prefix}.exponent": self.exponent, f"{prefix}.zeros": self.zeros}

    @classmethod
    def from_state(cls, state: dict[str, Tensor], prefix: str) -> SignedHistogram:
        """Inverse of :meth:`state` (shapes and dtypes checked)."""
        counts, exponent, zeros = (state[f"{prefix}.{n}"] for n in ("counts", "exponent", "zeros"))
        rows = counts.shape[0] if counts.dim() == 3 else -1
        if (
            counts.dim() != 3
            or counts.shape[1] != 2
            or tuple(exponent.shape) != (rows, 2)
            or tuple(zeros.shape) != (rows,)
            or any(t.dtype != torch.int64 for t in (counts, exponent, zeros))
        ):
            raise ValueError(f"{prefix}: not a histogram state (counts [R, 2, H], exponent [R, 2], zeros [R], int64)")
        return cls(counts, exponent, zeros)
