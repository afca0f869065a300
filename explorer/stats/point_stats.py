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

from dataclasses import dataclass

import torch
from torch import Tensor

from explorer.limits import STATS_CHANNEL_BIN_BUDGET, STATS_CHANNEL_HALF_BINS, STATS_POINT_HALF_BINS, STATS_RAW_VALUES
from explorer.stats.histogram import SignedHistogram
from explorer.stats.layout import CALIBRATION_MODES, channel_rows, checked_tensor
from explorer.stats.quantile import row_ends, tail_length, tail_quantile

DEFAULT_ALPHA_FLOOR = 0.999
# Sizes are fixed per point, whatever the data or the number of batches (see explorer.limits).
POINT_HALF_BINS = STATS_POINT_HALF_BINS
CHANNEL_BIN_BUDGET = STATS_CHANNEL_BIN_BUDGET
CHANNEL_HALF_BINS_MIN, CHANNEL_HALF_BINS_MAX = STATS_CHANNEL_HALF_BINS
RAW_LIMIT = STATS_RAW_VALUES


def channel_half_bins(channels: int) -> int:
    """Bins per side of each channel's histogram: a power of two within the budget and bounds."""
    share = max(1, CHANNEL_BIN_BUDGET // (2 * max(1, channels)))
    return min(CHANNEL_HALF_BINS_MAX, max(CHANNEL_HALF_BINS_MIN, 1 << (share.bit_length() - 1)))


def kept_raw(raw: list[Tensor] | None, rows: Tensor, count: int) -> list[Tensor] | None:
    """The raw values kept after one more batch ``rows [C, n]`` (``count`` values per row before it):
    kept while a point has seen at most :data:`RAW_LIMIT` values in all, then never again.
    One rule for the statistics and the observers, so fitting from one equals feeding the other."""
    if raw is None or (count + rows.shape[1]) * rows.shape[0] > RAW_LIMIT:
        return None
    return [*raw, rows.clone()]


def half_bins_for(calibration_mode: str, channels: int) -> int:
    """Bins per side of the histogram behind a layer-wise or channel-wise view."""
    return POINT_HALF_BINS if calibration_mode == "layer_wise" else channel_half_bins(channels)


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
            f"{prefix}.lengths": torch.tensor(self.lengths, dtype=torch.int64),
        }

    @classmethod
    def from_state(cls, state: dict[str, Tensor], prefix: str) -> BatchEnds:
        top, bottom = state[f"{prefix}.top"], state[f"{prefix}.bottom"]
        kept, lengths = state[f"{prefix}.kept"].tolist(), state[f"{prefix}.lengths"].tolist()
        if top.shape != bottom.shape or top.dim() != 2 or sum(kept) != top.shape[1] or len(kept) != len(lengths):
            raise ValueError(f"{prefix}: inconsistent tail state (kept {sum(kept)} values, tensors {tuple(top.shape)})")
        if any(k > n or k < 1 for k, n in zip(kept, lengths, strict=True)):
            raise ValueError(f"{prefix}: a batch keeps more values than it had, or none")
        return cls(list(top.split(kept, dim=1)), list(bottom.split(kept, dim=1)), lengths)


def _ends_by_threshold(values: Tensor, counts: Tensor, exponent: Tensor, zeros: int, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest and ``k`` smallest of ``values`` (as ``[1, k]``, sorted outwards-in), found by
    reading thresholds off their own histogram (``counts [2, H]`` on grids ``exponent [2]``) and
    selecting only the values beyond them: two cheap passes instead of a top-k over everything."""
    half = counts.shape[1]
    width = torch.ldexp(torch.ones(2, dtype=torch.float64), exponent.cpu())
    ascending = torch.cat([counts[0].flip(0), counts.new_tensor([zeros]), counts[1]]).cpu()  # [2H + 1]; zeros at H
    # Bin i covers [lower_i, upper_i): negative bin m = H-1-i is [-(m+1) w, -m w), bin H is {0}, positive k = i-H-1.
    index = torch.arange(2 * half + 1, dtype=torch.float64)
    lower = torch.where(index < half, -(half - index) * width[0], (index - half - 1) * width[1])
    upper = torch.where(index < half, -(half - 1 - index) * width[0], (index - half) * width[1])
    lower[half] = upper[half] = 0.0
    first_top = int(torch.nonzero(ascending.flip(0).cumsum(0) >= k)[0])
    top_bin = 2 * half - first_top
    high = values[values >= lower[top_bin].item()]
    bottom_bin = int(torch.nonzero(ascending.cumsum(0) >= k)[0])
    low = values[values <= 0] if bottom_bin == half else values[values < upper[bottom_bin].item()]
    top = torch.topk(high, k, largest=True, sorted=True).values.unsqueeze(0)
    bottom = torch.topk(low, k, largest=False, sorted=True).values.unsqueeze(0)
    return top, bottom


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
        self.point_ends = BatchEnds([], [], [])
        self.raw: list[Tensor] | None = []  # [C, n] per batch while small

    @property
    def channels(self) -> int | None:
        return None if self.min is None else self.min.numel()

    # ----- building ---------------------------------------------------------------------
    @torch.no_grad()
    def update(self, v: Tensor) -> None:
        """Fold one batch in. Bad input raises and leaves the statistics as they were."""
        v = checked_tensor(v, self.module_type, self.ndim, "PointStats.update")
        rows = channel_rows(v, self.module_type)
        channels, n = rows.shape
        if self.min is not None and channels != self.min.numel():
            raise ValueError(f"PointStats.update: got {channels} channels after {self.min.numel()}")
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
            bad = int((~torch.isfinite(rows)).sum())
            raise ValueError(
                f"PointStats.update: the tensor has {bad} NaN/Inf value(s) of {rows.numel()}; "
                "statistics were left unchanged"
            )
        flat = v.reshape(1, -1)
        zeros = (rows == 0).sum(dim=1)
        point_zeros = zeros.sum().reshape(1)
        channel_hist = self.channel_hist or SignedHistogram.empty(channels, channel_half_bins(channels), v.device)
        channel_hist = channel_hist.counted(rows, lo, hi, zeros)
        point_lo, point_hi = lo.amin().reshape(1), hi.amax().reshape(1)
        grown = (self.point_hist or SignedHistogram.empty(1, POINT_HALF_BINS, v.device)).grown_for(point_lo, point_hi)
        batch_counts = grown.binned(flat, point_lo, point_hi, point_zeros)
        point_hist = SignedHistogram(batch_counts + grown.counts, grown.exponent, grown.zeros + point_zeros)
        top, bottom = row_ends(rows, tail_length(n, self.alpha_floor))
        point_top, point_bottom = _ends_by_threshold(
            flat.view(-1),
            batch_counts[0],
            grown.exponent[0],
            int(point_zeros),
            tail_length(flat.shape[1], self.alpha_floor),
        )
        sumsq = torch.linalg.vector_norm(rows, dim=1).double().square()
        # commit
        self.channel_hist, self.point_hist = channel_hist, point_hist
        self.channel_ends.top.append(top)
        self.channel_ends.bottom.append(bottom)
        self.channel_ends.lengths.append(n)
        self.point_ends.top.append(point_top)
        self.point_ends.bottom.append(point_bottom)
        self.point_ends.lengths.append(flat.shape[1])
        if self.min is None or self.max is None or self.sumsq is None:
            self.min, self.max, self.sumsq = lo, hi, sumsq
        else:
            self.min, self.max, self.sumsq = (
                torch.minimum(self.min, lo),
                torch.maximum(self.max, hi),
                self.sumsq + sumsq,
            )
        self.raw = kept_raw(self.raw, rows, self.count)
        self.count += n
        self.ndim = v.dim()
        self.num_batches += 1

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
        assert self.channel_hist and other.channel_hist and self.point_hist and other.point_hist
        assert self.min is not None and self.max is not None and self.sumsq is not None
        self.channel_hist = self.channel_hist.merged(other.channel_hist)
        self.point_hist = self.point_hist.merged(other.point_hist)
        self.channel_ends = self.channel_ends.merged(other.channel_ends)
        self.point_ends = self.point_ends.merged(other.point_ends)
        self.min = torch.minimum(self.min, other.min)  # type: ignore[arg-type]
        self.max = torch.maximum(self.max, other.max)  # type: ignore[arg-type]
        self.sumsq = self.sumsq + other.sumsq  # type: ignore[operator]
        both = self.raw is not None and other.raw is not None
        self.raw = self.raw + other.raw if both and (self.count + other.count) * self.channels <= RAW_LIMIT else None  # type: ignore[operator]
        self.count += other.count
        self.num_batches += other.num_batches
        return self

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
            self.count * self.min.numel(), self.sumsq.sum().reshape(1), self.point_hist, self.point_ends,
            self.alpha_floor, None if raw is None else raw.reshape(1, -1),
        )  # fmt: skip

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
            **self.point_ends.state("point_ends"),
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
            point_ends = BatchEnds.from_state(state, "point_ends")
            raw = list(state["raw"].split(state["raw_lengths"].tolist(), dim=1)) if "raw" in state else None
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise ValueError(f"not a PointStats state: {exc}") from exc
        checks = {
            "min/max/sumsq shapes": hi.shape == lo.shape == sumsq.shape == (channels,),
            "channel histogram rows": channel_hist.rows == channels,
            "point histogram rows": point_hist.rows == 1,
            "batches in the tails": len(channel_ends.lengths) == len(point_ends.lengths) == num_batches,
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
        self.channel_ends, self.point_ends, self.raw = channel_ends, point_ends, raw
