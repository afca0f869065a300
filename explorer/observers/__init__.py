"""Observers: collect statistics of a tensor stream and choose quantization parameters."""

# Import order is registration order: the order the app lists the built-in observers.
# isort: off
from explorer.observers.base import Observer
from explorer.observers.minmax import MinmaxObserver
from explorer.observers.percentile import PercentileObserver
from explorer.observers.omse import OmseObserver
from explorer.observers.kl import KLObserver

# isort: on
from explorer.observers.params import ParamError, ParamSpec
from explorer.observers.registry import (
    build_observer,
    observer_class,
    observer_color,
    observer_label,
    observer_names,
    observer_params,
    register_observer,
    registered_observers,
)

__all__ = [
    "Observer",
    "MinmaxObserver",
    "PercentileObserver",
    "OmseObserver",
    "KLObserver",
    "ParamError",
    "ParamSpec",
    "build_observer",
    "observer_class",
    "observer_color",
    "observer_label",
    "observer_names",
    "observer_params",
    "register_observer",
    "registered_observers",
]
