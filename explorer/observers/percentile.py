"""Percentile: clip at the alpha / (1 - alpha) quantiles, smoothed across batches by EMA."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from explorer.bit_type import BitType
from explorer.observers.base import Observer
from explorer.observers.params import PERCENTILE_ALPHA, PERCENTILE_SIGMA, ParamSpec, check_observer_params
from explorer.observers.registry import register_observer
from explorer.stats.layout import blocks_as_rows, check_extremes
from explorer.stats.quantile import row_quantile_and_extreme

if TYPE_CHECKING:
    from explorer.stats.point_stats import StatsView


@register_observer("PercentileObserver")
class PercentileObserver(Observer):
    """Per batch, the exact ``alpha`` and ``1 - alpha`` quantiles (as ``numpy.quantile``);
    the first batch initialises the estimate, later ones move it by ``sigma * (cur - est)``.

    Works layer-wise and channel-wise, on tensors of any size.
    """

    label: ClassVar[str] = "Percentile"
    color: ClassVar[str] = "#1f77b4"
    params: ClassVar[tuple[ParamSpec, ...]] = (PERCENTILE_ALPHA, PERCENTILE_SIGMA)

    def __init__(
        self,
        bit_type: BitType,
        module_type: str,
        calibration_mode: str = "channel_wise",
        percentile_alpha: float = 0.9995,
        percentile_sigma: float = 0.1,
        symmetric: bool | None = None,
    ) -> None:
        super().__init__(bit_type, module_type, calibration_mode, symmetric)
        checked = check_observer_params(
            self._name,
            self.params,
            bit_type,
            {"percentile_alpha": percentile_alpha, "percentile_sigma": percentile_sigma},
        )
        self.percentile_alpha = float(checked["percentile_alpha"])
        self.percentile_sigma = float(checked["percentile_sigma"])
        self.ema_low: Tensor | None = None
        self.ema_high: Tensor | None = None
        self._batch: tuple[Tensor, Tensor] | None = None  # the last batch's quantiles, until folded

    def _extremes(self, blocks: Tensor) -> tuple[Tensor, Tensor]:
        """The batch's quantiles, and its extremes from the same selections of each row's ends."""
        rows = blocks_as_rows(blocks)  # a view for tokens [B, N, C] (channels last) and layer-wise
        low, lo = row_quantile_and_extreme(rows, 1.0 - self.percentile_alpha, largest=False)
        high, hi = row_quantile_and_extreme(rows, self.percentile_alpha, largest=True)
        check_extremes(blocks, lo, hi, f"{self._name}.update")
        self._batch = (low, high)
        return lo, hi

    def _observe(self, blocks: Tensor, lo: Tensor, hi: Tensor) -> None:
        assert self._batch is not None
        self._fold(*self._batch)
        self._batch = None

    def _fold(self, low: Tensor, high: Tensor) -> None:
        """One batch's percentiles into the EMA (the first batch initialises it)."""
        if self.ema_low is None or self.ema_high is None:
            self.ema_low, self.ema_high = low, high
        else:
            self.ema_low = self.ema_low + self.percentile_sigma * (low - self.ema_low)
            self.ema_high = self.ema_high + self.percentile_sigma * (high - self.ema_high)

    def _fit(self, view: StatsView) -> None:
        if self.percentile_alpha < view.alpha_floor:
            raise ValueError(
                f"PercentileObserver: percentile_alpha {self.percentile_alpha} is below the run's alpha_floor "
                f"{view.alpha_floor}: its tails were not kept; use alpha ≥ {view.alpha_floor} or recalibrate "
                "with a lower floor"
            )
        lows, highs = view.ends.quantiles(1.0 - self.percentile_alpha), view.ends.quantiles(self.percentile_alpha)
        self.ema_low = self.ema_high = None
        for low, high in zip(lows, highs, strict=True):
            self._fold(low, high)

    @property
    def min_val(self) -> Tensor | None:
        """The EMA'd low percentile: the range the scale is computed from (as in FQ-ViT)."""
        return self.ema_low

    @property
    def max_val(self) -> Tensor | None:
        """The EMA'd high percentile (see :attr:`min_val`)."""
        return self.ema_high

    def _clip_range(self) -> tuple[Tensor, Tensor]:
        assert self.ema_low is not None and self.ema_high is not None
        return self.ema_low, self.ema_high

    def _extra_repr(self) -> dict[str, Any]:
        return {"percentile_alpha": self.percentile_alpha, "percentile_sigma": self.percentile_sigma}
