"""MinMax: the running minimum and maximum are the clip range."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from explorer.observers.base import Observer
from explorer.observers.params import ParamSpec
from explorer.observers.registry import register_observer


@register_observer("MinmaxObserver")
class MinmaxObserver(Observer):
    """Clips at the extremes seen: nothing is clipped, outliers stretch the scale."""

    label: ClassVar[str] = "MinMax"
    color: ClassVar[str] = "#d62728"
    params: ClassVar[tuple[ParamSpec, ...]] = ()

    def _observe(self, rows: Tensor, lo: Tensor, hi: Tensor) -> None:
        """The running min/max the base class keeps is all MinMax needs."""

    def _clip_range(self) -> tuple[Tensor, Tensor]:
        assert self.min_val is not None and self.max_val is not None
        return self.min_val, self.max_val
