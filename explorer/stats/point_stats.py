"""One statistics object per quantization point, built in one pass per batch and shared by every
observer and every metric of that point (SPEC §8).

What it keeps, per channel and over the whole point:
- running min/max, the value count and the sum of squares (signal power);
- a sign-magnitude histogram on power-of-two bin widths (:mod:`explorer.stats.histogram`);
- per batch, the exact ends of each row: enough of the largest and smallest values that every
  per-batch ``numpy.quantile`` at ``alpha >= alpha_floor`` is exact (Percentile's statistic);
- while the point is small (weights of small layers, the demo), its raw values, so errors and
  OMSE's search are exact where a histogram would be coarse.

``merge`` is exact (batch order: this object's batches, then the other's), and the state is plain
tensors (``state_dict``/``load_state_dict``), so a run can be saved, loaded and combined.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from explorer.limits import STATS_CHANNEL_BIN_BUDGET, STATS_CHANNEL_HALF_BINS, STATS_POINT_HALF_BINS, STATS_RAW_VALUES
from explorer.stats.histogram import SignedHistogram
from explorer.stats.layout import (
    CALIBRATION_MODES,
    blocks_as_rows,
    channel_blocks,
    channel_extremes,
    checked_tensor,
    outer_chunks,
    true_positions,
)
from explorer.stats.quantile import row_ends, row_largest, row_smallest, tail_length, tail_quantile

DEFAULT_ALPHA_FLOOR = 0.999
# Sizes are fixed per point, whatever the data or the number of batches (see explorer.limits).
POINT_HALF_BINS = STATS_POINT_HALF_BINS
CHANNEL_BIN_BUDGET = STATS_CHANNEL_BIN_BUDGET
CHANNEL_HALF_BINS_MIN, CHANNEL_HALF_BINS_MAX = STATS_CHANNEL_HALF_BINS
RAW_LIMIT = STATS_RAW_VALUES
# Above this share of a row kept at each end (a low alpha floor), plain top-k selections are cheaper
# than sorting the candidates found by histogram thresholds.
_THRESHOLD_SHARE = 1 / 32


def channel_half_bins(channels: int) -> int:
    """Bins per side of each channel's histogram: a power of two within the budget and bounds."""
    share = max(1, CHANNEL_BIN_BUDGET // (2 * max(1, channels)))
    return min(CHANNEL_HALF_BINS_MAX, max(CHANNEL_HALF_BINS_MIN, 1 << (share.bit_length() - 1)))


def kept_raw(raw: list[Tensor] | None, blocks: Tensor, count: int) -> list[Tensor] | None:
    """The raw values kept (as rows ``[C, n]``) after one more batch ``blocks [outer, C, inner]``
    (``count`` values per row before it): kept while a point has seen at most :data:`RAW_LIMIT`
    values in all, then never again. One rule for the statistics and the observers, so fitting from
    one equals feeding the other."""
    if raw is None or (count + blocks.shape[0] * blocks.shape[2]) * blocks.shape[1] > RAW_LIMIT:
        return None
    return [*raw, blocks_as_rows(blocks).clone()]


def half_bins_for(calibration_mode: str, channels: int) -> int:
    """Bins per side of the histogram behind a layer-wise or channel-wise view."""
    return POINT_HALF_BINS if calibration_mode == "layer_wise" else channel_half_bins(channels)


def folded(
    hist: SignedHistogram | None,
    raw: list[Tensor] | None,
    count: int,
    blocks: Tensor,
    lo: Tensor,
    hi: Tensor,
    calibration_mode: str,
) -> tuple[SignedHistogram | None, list[Tensor] | None, int]:
    """A histogram observer's ``(hist, raw, count)`` after one more batch ``blocks [outer, C, inner]``
    (``lo``/``hi`` its channels' extremes): the rules of the view it would be fitted from, so that
    fitting from the statistics equals feeding the batches.

    While the raw values are kept there is no histogram (``hist`` stays None): an observer scores on
    the values themselves, and :func:`histogram_of` makes one from them when asked. So small points
    (every weight, the demo) pay for no bins; the histogram starts from the kept values when they
    are dropped, the same counts as if every batch had been binned (merging is exact)."""
    values = count + blocks.shape[0] * blocks.shape[2]
    kept = kept_raw(raw, blocks, count)
    if kept is not None:
        return None, kept, values
    start = histogram_of(hist, raw, blocks.shape[1], calibration_mode, blocks.device)
    return start.counted(blocks, lo, hi), None, values


def histogram_of(
    hist: SignedHistogram | None,
    raw: list[Tensor] | None,
    channels: int,
    calibration_mode: str,
    device: torch.device | str,
) -> SignedHistogram:
    """``hist``, or (while the raw values are kept, see :func:`folded`) the histogram of ``raw``, on
    ``device``."""
    if hist is not None:
        return hist
    empty = SignedHistogram.empty(channels, half_bins_for(calibration_mode, channels), device)
    if not raw:
        return empty
    rows = torch.cat(raw, dim=1)
    return empty.counted(rows, rows.amin(dim=1), rows.amax(dim=1))


@dataclass
class BatchEnds:
    """Per batch: the ``k`` largest values of each row (descending), the ``k`` smallest (ascending),
    and the row length ``n`` they were taken from."""

    top: list[Tensor]
    bottom: list[Tensor]
    lengths: list[int]

    def quantiles(self, q: float) -> Tensor:
        """``[batches, R]`` per-batch quantile ``q`` of each row, in float64 (exact)."""
        return torch.stack(
            [tail_quantile(t, b, n, q) for t, b, n in zip(self.top, self.bottom, self.lengths, strict=True)]
        )

    def merged(self, other: BatchEnds) -> BatchEnds:
        return BatchEnds(self.top + other.top, self.bottom + other.bottom, self.lengths + other.lengths)

    def reordered(self, order: list[int]) -> BatchEnds:
        """The same batches in ``order`` (positions into this object's batches)."""
        return BatchEnds(
            [self.top[i] for i in order], [self.bottom[i] for i in order], [self.lengths[i] for i in order]
        )

    def count_beyond(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
        """``(counts, exact)`` per row: values ``< low`` or ``> high`` over all batches, and whether
        the kept ends were long enough for that count to be exact in every batch."""
        count = torch.zeros_like(low, dtype=torch.int64)
        exact = torch.ones_like(low, dtype=torch.bool)
        for top, bottom, n in zip(self.top, self.bottom, self.lengths, strict=True):
            count += (top > high.unsqueeze(1)).sum(dim=1) + (bottom < low.unsqueeze(1)).sum(dim=1)
            if top.shape[1] < n:
                exact &= (high >= top[:, -1]) & (low <= bottom[:, -1])
        return count, exact

    def state(self, prefix: str) -> dict[str, Tensor]:
        rows = self.top[0].shape[0] if self.top else 0
        empty = torch.zeros(rows, 0)
        return {
            f"{prefix}.top": torch.cat(self.top, dim=1) if self.top else empty,
            f"{prefix}.bottom": torch.cat(self.bottom, dim=1) if self.bottom else empty,
            f"{prefix}.kept": torch.tensor([t.shape[1] for t in self.top], dtype=torch.int64),
            f"{prefix}.kept_bottom": torch.tensor([b.shape[1] for b in self.bottom], dtype=torch.int64),
            f"{prefix}.lengths": torch.tensor(self.lengths, dtype=torch.int64),
        }

    @classmethod
    def from_state(cls, state: dict[str, Tensor], prefix: str) -> BatchEnds:
        top, bottom = state[f"{prefix}.top"], state[f"{prefix}.bottom"]
        kept, kept_bottom = state[f"{prefix}.kept"].tolist(), state[f"{prefix}.kept_bottom"].tolist()
        lengths = state[f"{prefix}.lengths"].tolist()
        if (
            top.dim() != 2
            or bottom.dim() != 2
            or top.shape[0] != bottom.shape[0]
            or (sum(kept), sum(kept_bottom)) != (top.shape[1], bottom.shape[1])
            or not len(kept) == len(kept_bottom) == len(lengths)
        ):
            raise ValueError(
                f"{prefix}: inconsistent tail state (kept {sum(kept)} + {sum(kept_bottom)} values, "
                f"tensors {tuple(top.shape)} and {tuple(bottom.shape)})"
            )
        if any(not 0 <= k <= n for k, n in zip(kept + kept_bottom, lengths + lengths, strict=True)):
            raise ValueError(f"{prefix}: a batch keeps more values than it had")
        return cls(list(top.split(kept, dim=1)), list(bottom.split(kept_bottom, dim=1)), lengths)


def _end_thresholds(hist: SignedHistogram, k: int) -> tuple[Tensor, Tensor]:
    """``(lower, upper)`` float32 ``[R]`` for one batch's histogram ``hist``: every row has at least ``k``
    values ``>= lower`` and at least ``k`` values ``< upper``, read off its bins (so a comparison
    finds the few candidates for the row's ``k`` largest and smallest values)."""
    half = hist.half_bins
    ascending = torch.cat([hist.counts[:, 0].flip(1), hist.zeros.unsqueeze(1), hist.counts[:, 1]], dim=1)  # zeros at H
    width = hist.width
    # Bin i covers [lower, upper): negative bin m = H-1-i is [-(m+1) w, -m w), bin H is {0}, positive bin i-H-1.
    reached = ascending.cumsum(dim=1)  # values in each bin and all below it
    total = reached[:, -1:]
    bottom = torch.searchsorted(reached, torch.full_like(total, k)).squeeze(1)  # first bin where k are reached
    top = torch.searchsorted(reached, total - k, right=True).squeeze(1)  # last bin with k at or above it
    lower = torch.where(top < half, -(half - top) * width[:, 0], (top - half - 1).clamp_min(0) * width[:, 1])
    upper = torch.where(bottom < half, -(half - 1 - bottom) * width[:, 0], (bottom - half) * width[:, 1])
    # Values below the smallest positive float are those <= 0: the bottom bin is the zeros'.
    upper = torch.where(bottom == half, torch.finfo(torch.float32).smallest_normal * 2.0**-23, upper)
    return lower.float(), upper.float()


def _ends_of_rows(values: Tensor, rows: Tensor, count: int, k: int, descending: bool) -> Tensor:
    """``[count, k]``: the first ``k`` of each row's candidates ``values`` (row index ``rows``), in
    order (``descending`` or ascending); every row has at least ``k`` candidates."""
    # One sort by (row, value): the float32 bits as an integer ordered as the values (negative values'
    # bits reversed), below each row's index shifted past every key.
    bits = values.view(torch.int32).long()
    key = torch.where(bits >= 0, bits, -(2**31) - 1 - bits)
    if descending:
        key = -1 - key
    order = torch.sort(rows * 2**32 + key).indices
    per_row = torch.bincount(rows, minlength=count)
    starts = per_row.cumsum(0) - per_row
    return values[order][starts.unsqueeze(1) + torch.arange(k, device=values.device)]


def _beyond_channel_ends(values: Tensor, rows: Tensor, k: int, channel_top: Tensor) -> Tensor:
    """``[1, e]`` (in no particular order): the values of the whole point's ``k`` largest (found among the
    candidates ``values`` of channels ``rows``) that are not among their own channel's kept largest
    ``channel_top [C, m]``. With the channels' ends they rebuild the point's ``k`` largest exactly
    (see :func:`point_ends_from`), so those are not stored twice. No sort: one selection finds the
    cutoff; copies of a channel's last kept value count as beyond it only past the copies it keeps."""
    cutoff = torch.kthvalue(values, values.numel() - k + 1).values  # the k-th largest
    chosen = values > cutoff
    ties = (values == cutoff).nonzero().squeeze(1)[: k - int(chosen.sum())]  # any copies of the cutoff will do
    chosen[ties] = True
    top, row = values[chosen], rows[chosen]
    last = channel_top[:, -1]  # each channel's smallest kept value: everything above it is kept
    at_last = torch.bincount(row[top == last[row]], minlength=last.numel())
    kept_at_last = (channel_top == last.unsqueeze(1)).sum(dim=1)
    extra = torch.cat([top[top < last[row]], last.repeat_interleave((at_last - kept_at_last).clamp_min(0))])
    return extra.unsqueeze(0)


def _batch_ends(
    blocks: Tensor, channels: SignedHistogram, k: int, point: SignedHistogram, point_k: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One batch's exact ends: the ``k`` largest and smallest values of each channel of ``blocks
    [outer, C, inner]`` (``[C, k]``, outwards-in), and of the whole point's ``point_k`` largest and
    smallest, those its channels' ends do not hold (``[1, e]``; see :func:`_beyond_channel_ends`).
    The thresholds come from the batch's own histograms (``channels``, ``point``), so one comparison
    pass and a sort of the few candidates replace top-k selections over everything. At a low floor
    (ends a large share of each row) the channels' coarse histograms find too many candidates, and
    their ends come from plain top-k selections instead."""
    rows = blocks.shape[1]
    by_topk = k > blocks.shape[0] * blocks.shape[2] * _THRESHOLD_SHARE
    point_lower, point_upper = _end_thresholds(point, point_k)
    if by_topk:
        lower = point_lower.new_full((rows,), float("inf"))  # no channel candidates: only the point's
        upper = point_upper.new_full((rows,), -float("inf"))
    else:
        lower, upper = _end_thresholds(channels, k)
    shape = (1, rows, 1)
    high_enough = torch.minimum(lower, point_lower).view(shape)
    low_enough = torch.maximum(upper, point_upper).view(shape)
    found, where = [], []
    for start, part in outer_chunks(blocks):
        mask = part >= high_enough
        mask |= part < low_enough
        at = true_positions(mask)
        found.append(part.reshape(-1)[at])
        where.append(at + start * rows * blocks.shape[2])
    values, at = torch.cat(found), torch.cat(where)
    row = (at // blocks.shape[2]) % rows
    point_high, point_low = values >= point_lower, values < point_upper
    if by_topk:
        top, bottom = row_ends(blocks_as_rows(blocks), k)
    else:
        high, low = values >= lower[row], values < upper[row]
        top = _ends_of_rows(values[high], row[high], rows, k, descending=True)
        bottom = _ends_of_rows(values[low], row[low], rows, k, descending=False)
    return (
        top,
        bottom,
        _beyond_channel_ends(values[point_high], row[point_high], point_k, top),
        -_beyond_channel_ends(-values[point_low], row[point_low], point_k, -bottom),
    )


def point_ends_from(channel_ends: BatchEnds, extra: BatchEnds, channels: int, alpha_floor: float) -> BatchEnds:
    """The whole point's per-batch ends, rebuilt from its channels' ends and the values beyond them
    (``extra``): each batch's ``k`` most extreme of their union are exactly the point's."""
    tops, bottoms, lengths = [], [], []
    for top, bottom, extra_top, extra_bottom, n in zip(
        channel_ends.top, channel_ends.bottom, extra.top, extra.bottom, channel_ends.lengths, strict=True
    ):
        k = tail_length(n * channels, alpha_floor)
        tops.append(row_largest(torch.cat([top.reshape(1, -1), extra_top], dim=1), k))
        bottoms.append(row_smallest(torch.cat([bottom.reshape(1, -1), extra_bottom], dim=1), k))
        lengths.append(n * channels)
    return BatchEnds(tops, bottoms, lengths)


# The last rebuilt point ends, keyed by the statistics' version: a refit and its summary read the same
# view twice, and one entry keeps the memory bounded (the ends are not stored whole on purpose).
_VERSIONS = itertools.count()
_last_point_ends: tuple[int, BatchEnds] | None = None


@dataclass(frozen=True)
class StatsView:
    """A point's statistics seen at one granularity: rows are its channels (channel-wise) or one
    row for the whole point (layer-wise). This is what observers fit from and metrics read."""

    calibration_mode: str
    num_batches: int
    ndim: int
    min: Tensor  # [R] float32
    max: Tensor
    count: int  # values per row
    sumsq: Tensor  # [R] float64
    hist: SignedHistogram
    ends: BatchEnds
    alpha_floor: float
    raw: Tensor | None  # [R, M] float32 while the point is small, else None


class PointStats:
    """The mergeable statistics of one quantization point (see the module docstring)."""

    def __init__(self, module_type: str, alpha_floor: float = DEFAULT_ALPHA_FLOOR) -> None:
        if isinstance(alpha_floor, bool) or not isinstance(alpha_floor, (int, float)) or not 0.5 < alpha_floor <= 1:
            raise ValueError(f"alpha_floor must be a number in (0.5, 1], got {alpha_floor!r}")
        checked_tensor(torch.zeros(1, 1), module_type, None, "PointStats")  # validates module_type
        self.module_type = module_type
        self.alpha_floor = float(alpha_floor)
        self.num_batches = 0
        self.ndim: int | None = None
        self.count = 0  # values per channel
        self.min: Tensor | None = None  # [C] float32
        self.max: Tensor | None = None
        self.sumsq: Tensor | None = None  # [C] float64
        self.channel_hist: SignedHistogram | None = None
        self.point_hist: SignedHistogram | None = None
        self.channel_ends = BatchEnds([], [], [])
        self.point_extra = BatchEnds([], [], [])  # per batch, the point's ends its channels' ends lack
        self.raw: list[Tensor] | None = []  # [C, n] per batch while small
        self.version = next(_VERSIONS)  # changes with every change of the statistics

    @property
    def channels(self) -> int | None:
        return None if self.min is None else self.min.numel()

    @property
    def device(self) -> torch.device:
        """Where the statistics live: the device of the tensors they were built from."""
        return torch.device("cpu") if self.min is None else self.min.device

    def to(self, device: torch.device | str) -> PointStats:
        """These statistics on ``device``: ``self`` when they are there already, else a copy."""
        if torch.device(device) == self.device:
            return self
        moved = PointStats(self.module_type, self.alpha_floor)
        moved.load_state_dict({name: t.to(device) for name, t in self.state_dict().items()})
        return moved

    # ----- building ---------------------------------------------------------------------
    @torch.no_grad()
    def update(self, v: Tensor) -> None:
        """Fold one batch in. Bad input raises and leaves the statistics as they were."""
        v = checked_tensor(v, self.module_type, self.ndim, "PointStats.update")
        blocks = channel_blocks(v, self.module_type)  # [outer, C, inner], in memory order
        channels, n = blocks.shape[1], blocks.shape[0] * blocks.shape[2]
        if self.min is not None and channels != self.min.numel():
            raise ValueError(f"PointStats.update: got {channels} channels after {self.min.numel()}")
        lo, hi = channel_extremes(blocks, "PointStats.update")
        grown_channels = self.channel_hist or SignedHistogram.empty(channels, channel_half_bins(channels), v.device)
        grown_channels = grown_channels.grown_for(lo, hi)
        channel_counts, zeros = grown_channels.binned(blocks, lo, hi)
        channel_batch = SignedHistogram(channel_counts, grown_channels.exponent, zeros)
        point_lo, point_hi, point_zeros = lo.amin().reshape(1), hi.amax().reshape(1), zeros.sum().reshape(1)
        grown = (self.point_hist or SignedHistogram.empty(1, POINT_HALF_BINS, v.device)).grown_for(point_lo, point_hi)
        point_counts, _ = grown.binned(blocks.reshape(-1, 1, 1), point_lo, point_hi, point_zeros)
        point_batch = SignedHistogram(point_counts, grown.exponent, point_zeros)
        top, bottom, extra_top, extra_bottom = _batch_ends(
            blocks,
            channel_batch,
            tail_length(n, self.alpha_floor),
            point_batch,
            tail_length(blocks.numel(), self.alpha_floor),
        )
        channel_hist = SignedHistogram(
            channel_counts + grown_channels.counts, grown_channels.exponent, grown_channels.zeros + zeros
        )
        point_hist = SignedHistogram(point_counts + grown.counts, grown.exponent, grown.zeros + point_zeros)
        sumsq = torch.stack([(part * part).sum(dim=(0, 2)).double() for _, part in outer_chunks(blocks)]).sum(0)
        raw = kept_raw(self.raw, blocks, self.count)
        # commit
        self.channel_hist, self.point_hist = channel_hist, point_hist
        self.channel_ends.top.append(top)
        self.channel_ends.bottom.append(bottom)
        self.channel_ends.lengths.append(n)
        self.point_extra.top.append(extra_top)
        self.point_extra.bottom.append(extra_bottom)
        self.point_extra.lengths.append(blocks.numel())
        if self.min is None or self.max is None or self.sumsq is None:
            self.min, self.max, self.sumsq = lo, hi, sumsq
        else:
            self.min, self.max, self.sumsq = (
                torch.minimum(self.min, lo),
                torch.maximum(self.max, hi),
                self.sumsq + sumsq,
            )
        self.raw = raw
        self.count += n
        self.ndim = v.dim()
        self.num_batches += 1
        self.version = next(_VERSIONS)

    def merge(self, other: PointStats) -> PointStats:
        """Fold ``other`` (the same point, later batches) into this one, exactly; returns ``self``."""
        if other.num_batches == 0:
            return self
        if self.num_batches == 0:
            self.load_state_dict(other.state_dict())
            return self
        if (other.module_type, other.alpha_floor, other.ndim, other.channels) != (
            self.module_type,
            self.alpha_floor,
            self.ndim,
            self.channels,
        ):
            raise ValueError(
                "PointStats.merge: the statistics are of different points "
                f"({self.module_type}, floor {self.alpha_floor}, {self.ndim}-D, {self.channels} channels vs "
                f"{other.module_type}, floor {other.alpha_floor}, {other.ndim}-D, {other.channels} channels)"
            )
        other = other.to(self.device)
        assert self.channel_hist and other.channel_hist and self.point_hist and other.point_hist
        assert self.min is not None and self.max is not None and self.sumsq is not None
        self.channel_hist = self.channel_hist.merged(other.channel_hist)
        self.point_hist = self.point_hist.merged(other.point_hist)
        self.channel_ends = self.channel_ends.merged(other.channel_ends)
        self.point_extra = self.point_extra.merged(other.point_extra)
        self.min = torch.minimum(self.min, other.min)  # type: ignore[arg-type]
        self.max = torch.maximum(self.max, other.max)  # type: ignore[arg-type]
        self.sumsq = self.sumsq + other.sumsq  # type: ignore[operator]
        both = self.raw is not None and other.raw is not None
        self.raw = self.raw + other.raw if both and (self.count + other.count) * self.channels <= RAW_LIMIT else None  # type: ignore[operator]
        self.count += other.count
        self.num_batches += other.num_batches
        self.version = next(_VERSIONS)
        return self

    def reorder_batches(self, order: list[int]) -> None:
        """Put the per-batch parts (ends, raw values) in ``order`` (positions into the batches as
        merged); everything else is order-free."""
        self.channel_ends = self.channel_ends.reordered(order)
        self.point_extra = self.point_extra.reordered(order)
        if self.raw is not None:
            self.raw = [self.raw[i] for i in order]
        self.version = next(_VERSIONS)

    # ----- reading ----------------------------------------------------------------------
    def view(self, calibration_mode: str) -> StatsView:
        """The statistics as channel rows (``channel_wise``) or one whole-point row (``layer_wise``)."""
        if calibration_mode not in CALIBRATION_MODES:
            raise ValueError(f"calibration_mode {calibration_mode!r} is not one of {', '.join(CALIBRATION_MODES)}")
        if self.num_batches == 0 or self.min is None or self.max is None or self.sumsq is None:
            raise RuntimeError("PointStats: no statistics yet; update() it with calibration data first")
        assert self.ndim is not None and self.channel_hist is not None and self.point_hist is not None
        raw = torch.cat(self.raw, dim=1) if self.raw else None
        if calibration_mode == "channel_wise":
            return StatsView(
                calibration_mode, self.num_batches, self.ndim, self.min, self.max, self.count, self.sumsq,
                self.channel_hist, self.channel_ends, self.alpha_floor, raw,
            )  # fmt: skip
        return StatsView(
            calibration_mode, self.num_batches, self.ndim, self.min.amin().reshape(1), self.max.amax().reshape(1),
            self.count * self.min.numel(), self.sumsq.sum().reshape(1), self.point_hist,
            self._point_ends(),
            self.alpha_floor, None if raw is None else raw.reshape(1, -1),
        )  # fmt: skip

    def _point_ends(self) -> BatchEnds:
        """The whole point's per-batch ends (rebuilt; the last one rebuilt is reused)."""
        global _last_point_ends
        last = _last_point_ends
        if last is not None and last[0] == self.version:
            return last[1]
        assert self.min is not None
        ends = point_ends_from(self.channel_ends, self.point_extra, self.min.numel(), self.alpha_floor)
        _last_point_ends = (self.version, ends)
        return ends

    def nbytes(self) -> int:
        """Bytes held by the statistics."""
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())

    # ----- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """Plain tensors (and the settings as tensors) that :meth:`load_state_dict` restores."""
        if self.num_batches == 0:
            return {"meta": torch.tensor([0, 0, 0], dtype=torch.int64), "alpha_floor": torch.tensor(self.alpha_floor)}
        assert self.channel_hist and self.point_hist and self.ndim is not None
        state = {
            "meta": torch.tensor([self.num_batches, self.ndim, self.count], dtype=torch.int64),
            "alpha_floor": torch.tensor(self.alpha_floor, dtype=torch.float64),
            "min": self.min,
            "max": self.max,
            "sumsq": self.sumsq,
            **self.channel_hist.state("channel_hist"),
            **self.point_hist.state("point_hist"),
            **self.channel_ends.state("channel_ends"),
            **self.point_extra.state("point_extra"),
        }
        if self.raw:
            state["raw"] = torch.cat(self.raw, dim=1)
            state["raw_lengths"] = torch.tensor([r.shape[1] for r in self.raw], dtype=torch.int64)
        return state  # type: ignore[return-value]

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore from :meth:`state_dict`; a state that does not fit together is a ValueError and
        changes nothing."""
        try:
            num_batches, ndim, count = (int(x) for x in state["meta"].tolist())
            alpha_floor = float(state["alpha_floor"])
            if num_batches == 0:
                fresh = PointStats(self.module_type, alpha_floor)
                self.__dict__.update(fresh.__dict__)
                return
            lo, hi, sumsq = state["min"], state["max"], state["sumsq"]
            channels = lo.numel()
            channel_hist = SignedHistogram.from_state(state, "channel_hist")
            point_hist = SignedHistogram.from_state(state, "point_hist")
            channel_ends = BatchEnds.from_state(state, "channel_ends")
            point_extra = BatchEnds.from_state(state, "point_extra")
            raw = list(state["raw"].split(state["raw_lengths"].tolist(), dim=1)) if "raw" in state else None
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise ValueError(f"not a PointStats state: {exc}") from exc
        checks = {
            "min/max/sumsq shapes": hi.shape == lo.shape == sumsq.shape == (channels,),
            "channel histogram rows": channel_hist.rows == channels,
            "point histogram rows": point_hist.rows == 1,
            "batches in the tails": len(channel_ends.lengths) == len(point_extra.lengths) == num_batches,
            "channel tails kept": all(t.shape[1] >= 1 for t in channel_ends.top + channel_ends.bottom),
            "channel tails rows": all(t.shape[0] == channels for t in channel_ends.top),
            "value count": sum(channel_ends.lengths) == count and ndim in (2, 3, 4, 5),
            "histogram totals": bool((channel_hist.total() == count).all())
            and int(point_hist.total()) == count * channels,
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise ValueError(f"not a consistent PointStats state: {', '.join(wrong)} do not match")
        self.alpha_floor, self.num_batches, self.ndim, self.count = alpha_floor, num_batches, ndim, count
        self.min, self.max, self.sumsq = lo, hi, sumsq
        self.channel_hist, self.point_hist = channel_hist, point_hist
        self.channel_ends, self.point_extra, self.raw = channel_ends, point_extra, raw
        self.version = next(_VERSIONS)
