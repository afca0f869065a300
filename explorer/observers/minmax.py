"""MinMax: the running minimum and maximum are the clip range."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import Tensor

from explorer.observers.base import Observer
from explorer.observers.params import ParamSpec
from explorer.observers.registry import register_observer

if TYPE_CHECKING:
    from explorer.stats.point_stats import StatsView


@register_observer("MinmaxObserver")
class MinmaxObserver(Observer):
    """Clips at the extremes seen: nothing is clipped, outliers stretch the scale."""

    label: ClassVar[str] = "MinMax"
    color: ClassVar[str] = "#d62728"
    params: ClassVar[tuple[ParamSpec, ...]] = ()

    def _observe(self, blocks: Tensor, lo: Tensor, hi: Tensor) -> None:
        """The running min/max the base class keeps is all MinMax needs."""

    def _fit(self, view: StatsView) -> None:
        """The base class takes the running min/max from the statistics."""

    def _clip_range(self) -> tuple[Tensor, Tensor]:
        assert self.data_min is not None and self.data_max is not None
        return self.data_min, self.data_max
