"""Observers: collect statistics of a tensor stream and choose quantization parameters."""

from explorer.observers.base import Observer
from explorer.observers.kl import KLObserver
from explorer.observers.minmax import MinmaxObserver
from explorer.observers.omse import OmseObserver
from explorer.observers.percentile import PercentileObserver
from explorer.observers.registry import build_observer, observer_class, observer_names, register_observer

__all__ = [
    "Observer",
    "MinmaxObserver",
    "PercentileObserver",
    "OmseObserver",
    "KLObserver",
    "build_observer",
    "observer_class",
    "observer_names",
    "register_observer",
]
