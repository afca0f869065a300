"""Percentile: clip at the alpha / (1 - alpha) quantiles, smoothed across batches by EMA."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from explorer.bit_type import BitType
from explorer.observers.base import Observer
from explorer.observers.params import PERCENTILE_ALPHA, PERCENTILE_SIGMA, ParamSpec
from explorer.observers.quantile import row_quantile
from explorer.observers.registry import register_observer


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
        if isinstance(percentile_alpha, bool) or not isinstance(percentile_alpha, (int, float)):
            raise TypeError(f"PercentileObserver: percentile_alpha must be a number, got {percentile_alpha!r}")
        if not 0.5 < percentile_alpha <= 1.0:
            raise ValueError(f"PercentileObserver: percentile_alpha must be in (0.5, 1], got {percentile_alpha}")
        if isinstance(percentile_sigma, bool) or not isinstance(percentile_sigma, (int, float)):
            raise TypeError(f"PercentileObserver: percentile_sigma must be a number, got {percentile_sigma!r}")
        if not 0.0 < percentile_sigma <= 1.0:
            raise ValueError(f"PercentileObserver: percentile_sigma must be in (0, 1], got {percentile_sigma}")
        self.percentile_alpha = float(percentile_alpha)
        self.percentile_sigma = float(percentile_sigma)
        self.ema_low: Tensor | None = None
        self.ema_high: Tensor | None = None

    def _observe(self, rows: Tensor, lo: Tensor, hi: Tensor) -> None:
        low = row_quantile(rows, 1.0 - self.percentile_alpha)
        high = row_quantile(rows, self.percentile_alpha)
        if self.ema_low is None or self.ema_high is None:
            self.ema_low, self.ema_high = low, high
        else:
            self.ema_low = self.ema_low + self.percentile_sigma * (low - self.ema_low)
            self.ema_high = self.ema_high + self.percentile_sigma * (high - self.ema_high)

    def _clip_range(self) -> tuple[Tensor, Tensor]:
        assert self.ema_low is not None and self.ema_high is not None
        return self.ema_low, self.ema_high

    def _extra_repr(self) -> dict[str, Any]:
        return {"percentile_alpha": self.percentile_alpha, "percentile_sigma": self.percentile_sigma}
