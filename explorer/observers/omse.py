"""OMSE: pick, from 100 shrunk versions of the observed range, the one of least MSE.

FQ-ViT evaluates each candidate with a full fake-quantization pass over the last batch only
(cost: data × candidates). Here every batch is folded into a fixed-size histogram per channel
(cost: data), and the candidates are scored on it: the squared error of the quantizer is
integrated exactly over each bin, assuming values spread evenly inside a bin. Exact zeros are
counted apart (they are always representable, so they add no error). The error therefore
covers all calibration data, and the scoring cost does not grow with the data.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from explorer.bit_type import BitType
from explorer.observers.base import Observer, flat_in_memory_order
from explorer.observers.params import ParamSpec
from explorer.observers.registry import register_observer
from explorer.quant_ops import qparams_from_range

NUM_CANDIDATES = 100
# Histogram bins on each side of zero, per channel.
_HALF_BINS = {"layer_wise": 1024, "channel_wise": 128}
# Above this many (channel, candidate, bin) terms, candidates are screened with a cheap
# moment-based estimate first and only a window around the best is scored exactly.
_EXACT_BUDGET = 4_000_000
_REFINE_RADIUS = 2
# Up to this many values in all (weights, small layers) the raw values are kept and every
# candidate is scored exactly on them; beyond it only the histogram is kept.
_RAW_LIMIT = 262_144
# Both sides of zero share one bin width when the first batch reaches at least this share as
# far below zero as above it (or the reverse); otherwise each side gets its own width.
_ONE_WIDTH_RATIO = 0.25


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
        self.half_bins = _HALF_BINS[calibration_mode]
        self.hist: Tensor | None = None  # [C, 2B] counts of non-zero values, float64
        self.zeros: Tensor | None = None  # [C] count of exact zeros
        # [C, 2]: bin widths below and above zero. Bin j covers [(j - B) w, (j - B + 1) w) with
        # the width of its side, so lopsided data (GELU, softmax) gets all its resolution.
        self.bin_width: Tensor | None = None
        self.shrink_factors = 1.0 - torch.arange(NUM_CANDIDATES, dtype=torch.float64) / 100.0
        self.candidate_mse: Tensor | None = None  # [C, 100] scores of the last search (NaN: not scored)
        self._raw: list[Tensor] | None = []  # values seen, while they fit in _RAW_LIMIT
        self._one_width = False  # both sides share one bin width (decided on the first batch)

    # ----- statistics -------------------------------------------------------------------
    def _observe(self, rows: Tensor, lo: Tensor, hi: Tensor) -> None:
        channels, device = rows.shape[0], rows.device
        half = self.half_bins
        reach = torch.stack([(-lo).clamp_min(0), hi.clamp_min(0)], dim=1).double()  # [C, 2]
        if self.hist is None or self.zeros is None or self.bin_width is None:
            self.hist = torch.zeros(channels, 2 * half, dtype=torch.float64, device=device)
            self.zeros = torch.zeros(channels, dtype=torch.float64, device=device)
            self.bin_width = torch.ones(channels, 2, dtype=torch.float64, device=device)
            # Data reaching about as far on both sides gains nothing from two widths: one is cheaper.
            self._one_width = bool((reach.amin(dim=1) >= _ONE_WIDTH_RATIO * reach.amax(dim=1)).all())
        if self._one_width:
            reach = reach.amax(dim=1, keepdim=True).expand(-1, 2)
            empty = (self.hist.sum(dim=1, keepdim=True) == 0).expand(-1, 2)
        else:
            empty = self.hist.view(channels, 2, half).sum(dim=2) == 0
        self.bin_width = torch.where(empty & (reach > 0), reach / half, self.bin_width)
        self._widen_to(reach)

        inverse = (1.0 / self.bin_width).float()
        scaled = rows * (inverse[:, :1] if self._one_width else torch.where(rows < 0, inverse[:, :1], inverse[:, 1:]))
        index = torch.floor_(scaled).clamp_(-half, half - 1) + half
        index += torch.arange(channels, device=device, dtype=index.dtype).unsqueeze(1) * (2 * half)
        counts = torch.bincount(flat_in_memory_order(index).long(), minlength=channels * 2 * half)
        zeros = (rows == 0).sum(dim=1).double()
        self.hist += counts.view(channels, 2 * half).double()
        self.hist[:, half] -= zeros  # zeros fell in bin [0, w); they are kept apart
        self.zeros += zeros
        if self._raw is not None:
            if sum(r.numel() for r in self._raw) + rows.numel() <= _RAW_LIMIT:
                self._raw.append(rows.clone())
            else:
                self._raw = None

    def _widen_to(self, reach: Tensor) -> None:
        """Merge bins by powers of two (exact for counts) until each side covers ``reach``."""
        assert self.hist is not None and self.bin_width is not None
        half = self.half_bins
        ratio = reach / (self.bin_width * half)
        factor = torch.where(ratio > 1, torch.exp2(torch.ceil(torch.log2(ratio))), torch.ones_like(ratio))
        if not bool((factor > 1).any()):
            return
        offsets = torch.arange(-half, half, dtype=torch.float64, device=self.hist.device).unsqueeze(0)
        side_factor = torch.where(offsets < 0, factor[:, :1], factor[:, 1:])
        new_index = torch.floor(offsets / side_factor) + half
        self.hist = torch.zeros_like(self.hist).scatter_add_(1, new_index.long(), self.hist)
        self.bin_width = self.bin_width * factor

    # ----- search -----------------------------------------------------------------------
    def _clip_range(self) -> tuple[Tensor, Tensor]:
        assert self.min_val is not None and self.max_val is not None
        lo = self.min_val.double().unsqueeze(1) * self.shrink_factors.to(self.min_val.device)
        hi = self.max_val.double().unsqueeze(1) * self.shrink_factors.to(self.max_val.device)
        scale, zero_point = qparams_from_range(lo, hi, self.bit_type, self.symmetric)
        channels = lo.shape[0]
        bins = 2 * self.half_bins + 1
        every = torch.arange(NUM_CANDIDATES, device=lo.device).expand(channels, -1)
        if self._raw is not None:
            return self._pick(every, self._raw_sse(scale, zero_point))
        if channels * NUM_CANDIDATES * bins <= _EXACT_BUDGET:
            chosen = every
        else:
            screen = self._screening_sse(scale, zero_point)
            best = screen.argmin(dim=1, keepdim=True)
            window = torch.arange(-_REFINE_RADIUS, _REFINE_RADIUS + 1, device=lo.device)
            chosen = (best + window).clamp(0, NUM_CANDIDATES - 1)
        step = max(1, _EXACT_BUDGET // (chosen.shape[1] * bins))
        sse = torch.cat(
            [
                self._exact_sse(
                    slice(c, c + step),
                    scale.gather(1, chosen)[c : c + step],
                    zero_point.gather(1, chosen)[c : c + step],
                )
                for c in range(0, channels, step)
            ]
        )
        return self._pick(chosen, sse)

    def _pick(self, chosen: Tensor, sse: Tensor) -> tuple[Tensor, Tensor]:
        """Record the scores of the ``chosen`` candidates and return the best clip range."""
        assert self.min_val is not None and self.max_val is not None
        total = self.hist.sum(dim=1, keepdim=True) + self.zeros.unsqueeze(1)  # type: ignore[union-attr]
        self.candidate_mse = torch.full(
            (chosen.shape[0], NUM_CANDIDATES), float("nan"), dtype=torch.float64, device=chosen.device
        ).scatter_(1, chosen, sse / total)
        pick = chosen.gather(1, sse.argmin(dim=1, keepdim=True)).squeeze(1)
        factor = self.shrink_factors.to(chosen.device)[pick]
        return self.min_val.double() * factor, self.max_val.double() * factor

    def _raw_sse(self, scale: Tensor, zero_point: Tensor) -> Tensor:
        """Exact summed squared error of every candidate on the kept raw values."""
        assert self._raw is not None
        x = torch.cat(self._raw, dim=1).double().unsqueeze(1)  # [C, 1, M]
        qmin, qmax = self.bit_type.lower_bound, self.bit_type.upper_bound
        out = []
        step = max(1, _EXACT_BUDGET // max(1, x.numel()))
        for k in range(0, NUM_CANDIDATES, step):
            s = scale[:, k : k + step].unsqueeze(2)
            zp = zero_point[:, k : k + step].unsqueeze(2).double()
            x_hat = (torch.clamp(torch.round(x / s) + zp, qmin, qmax) - zp) * s
            out.append(((x - x_hat) ** 2).sum(dim=2))
        return torch.cat(out, dim=1)

    def _bin_edges(self) -> Tensor:
        """``[C, 2B + 1]`` bin edges, each side with its own width."""
        assert self.bin_width is not None
        steps = torch.arange(-self.half_bins, self.half_bins + 1, dtype=torch.float64, device=self.bin_width.device)
        steps = steps.unsqueeze(0)
        return steps * torch.where(steps < 0, self.bin_width[:, :1], self.bin_width[:, 1:])

    def _bin_widths(self) -> Tensor:
        """``[C, 2B]`` width of every bin."""
        assert self.bin_width is not None
        return self.bin_width.repeat_interleave(self.half_bins, dim=1)

    def _exact_sse(self, channels: slice, scale: Tensor, zero_point: Tensor) -> Tensor:
        """Summed squared error per (channel, candidate) for a slice of channels,
        integrating the error over each bin exactly.

        In units of the step (``t = x / scale``) the squared error has the antiderivative
        ``scale^3 * h(t)``: rounding noise between the end levels, the distance to the end
        level beyond them. A bin's error is ``density * scale^3 * (h(right) - h(left))``.
        """
        assert self.hist is not None and self.bin_width is not None
        qmin, qmax = self.bit_type.lower_bound, self.bit_type.upper_bound
        s = scale.unsqueeze(2)  # [C, K, 1]
        zp = zero_point.double().unsqueeze(2)
        t = self._bin_edges()[channels].unsqueeze(1) / s  # [C, K, 2B + 1]
        low, high = qmin - zp - 0.5, qmax - zp + 0.5
        inner = torch.minimum(torch.maximum(t, low), high)
        nearest = torch.round(inner)
        h = nearest / 12.0 + ((inner - nearest) ** 3 + 0.125) / 3.0
        h += ((torch.clamp(t - low, max=0.0) - 0.5) ** 3 + 0.125) / 3.0
        h += ((torch.clamp(t - high, min=0.0) + 0.5) ** 3 - 0.125) / 3.0
        density = self.hist[channels] / self._bin_widths()[channels]  # [C, 2B]
        # sum_m density_m (h_{m+1} - h_m) == sum_m h_m (density_{m-1} - density_m)
        weights = torch.diff(torch.nn.functional.pad(density, (1, 1)), dim=1).neg()  # [C, 2B + 1]
        return scale**3 * torch.bmm(h, weights.unsqueeze(2)).squeeze(2)

    def _screening_sse(self, scale: Tensor, zero_point: Tensor) -> Tensor:
        """A cheap estimate of every candidate's error: exact clipping terms from bin moments,
        rounding noise as ``scale^2 / 12`` per unclipped value."""
        assert self.hist is not None and self.bin_width is not None
        qmin, qmax = self.bit_type.lower_bound, self.bit_type.upper_bound
        half, widths, edges = self.half_bins, self._bin_widths(), self._bin_edges()
        centers = edges[:, :-1] + 0.5 * widths
        pad = torch.zeros(self.hist.shape[0], 1, dtype=torch.float64, device=self.hist.device)
        count = torch.cat([pad, self.hist.cumsum(1)], dim=1)
        first = torch.cat([pad, (self.hist * centers).cumsum(1)], dim=1)
        second = torch.cat([pad, (self.hist * (centers**2 + widths**2 / 12.0)).cumsum(1)], dim=1)
        zp = zero_point.double()
        low_edge, high_edge = (qmin - zp - 0.5) * scale, (qmax - zp + 0.5) * scale
        low_level, high_level = (qmin - zp) * scale, (qmax - zp) * scale
        below_end = torch.ceil(self._bin_position(low_edge) - 0.5).clamp(0, 2 * half).long()
        above_start = (torch.floor(self._bin_position(high_edge) - 0.5) + 1).clamp(0, 2 * half).long()

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

    def _bin_position(self, value: Tensor) -> Tensor:
        """Where per-channel values ``[C, K]`` fall in bin-index units (bin j spans [j, j + 1))."""
        assert self.bin_width is not None
        width = torch.where(value < 0, self.bin_width[:, :1], self.bin_width[:, 1:])
        return value / width + self.half_bins
