"""Name → observer class registry, so ``observer_type`` strings from YAML resolve to classes.

The registry is the one list of observers: configs, the app and the charts read each class's
declared ``label``, ``color``, ``params`` and ``symmetric_only`` through the helpers here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from explorer.observers.params import ParamSpec

if TYPE_CHECKING:
    from explorer.config import PointConfig
    from explorer.observers.base import Observer

_REGISTRY: dict[str, type[Observer]] = {}
_T = TypeVar("_T", bound=type)
_RESERVED = ("bit_type", "module_type", "calibration_mode", "observer_type", "quantization_method", "symmetric")
"""Constructor and config keys that an observer parameter may not be named."""
FALLBACK_COLOR = "#7f7f7f"
"""Colour of an observer class that declares none."""


def _declared_params(name: str, cls: type) -> tuple[ParamSpec, ...]:
    """``cls.params`` checked: ParamSpecs, no reserved name, and the same spec wherever a name recurs."""
    params = tuple(getattr(cls, "params", ()))
    taken = {spec.name: spec for other in _REGISTRY.values() for spec in getattr(other, "params", ())}
    for spec in params:
        if not isinstance(spec, ParamSpec):
            raise TypeError(f"observer {name!r}: params must hold ParamSpec objects, got {type(spec).__name__}")
        if spec.name in _RESERVED:
            raise ValueError(f"observer {name!r}: parameter name {spec.name!r} is reserved ({', '.join(_RESERVED)})")
        if spec.name in taken and taken[spec.name] != spec:
            raise ValueError(
                f"observer {name!r}: parameter {spec.name!r} is already declared differently by another observer; "
                "reuse that ParamSpec or choose another name"
            )
    return params


def register_observer(name: str) -> Callable[[_T], _T]:
    """Class decorator: make an observer class available under ``name`` in configs, the app and the charts."""

    def wrap(cls: _T) -> _T:
        if name in _REGISTRY:
            raise ValueError(f"observer type {name!r} is already registered")
        _declared_params(name, cls)
        _REGISTRY[name] = cls  # type: ignore[assignment]
        return cls

    return wrap


def registered_observers() -> dict[str, type[Observer]]:
    """Every registered observer type → its class, in registration order (the order the app lists them)."""
    import explorer.observers  # noqa: F401  (importing the package registers the built-ins)

    return dict(_REGISTRY)


def observer_names() -> tuple[str, ...]:
    """The ``observer_type`` values a config may use."""
    return tuple(registered_observers())


def observer_class(name: str) -> type[Observer]:
    """The class registered as ``name``; a clear error lists the valid names."""
    registered = registered_observers()
    if name not in registered:
        raise ValueError(f"unknown observer_type {name!r}; valid: {', '.join(registered)}")
    return registered[name]


def observer_label(name: str) -> str:
    """The short name the app shows for observer type ``name`` (its class's ``label``)."""
    return str(getattr(observer_class(name), "label", name.removesuffix("Observer")))


def observer_color(name: str) -> str:
    """The colour charts draw observer type ``name`` in (its class's ``color``)."""
    return str(getattr(observer_class(name), "color", FALLBACK_COLOR))


def observer_params(name: str) -> tuple[ParamSpec, ...]:
    """The parameters observer type ``name`` takes, as declared by its class."""
    return tuple(getattr(observer_class(name), "params", ()))


def symmetric_only(name: str) -> bool:
    """Whether observer type ``name`` refuses ``symmetric: false``."""
    return bool(getattr(observer_class(name), "symmetric_only", False))


def all_params() -> dict[str, ParamSpec]:
    """Every parameter any registered observer takes, by name, in registration order."""
    return {spec.name: spec for name in observer_names() for spec in observer_params(name)}


def build_observer(entry: PointConfig | Mapping[str, Any], module_type: str = "activation") -> Observer:
    """An observer configured by one (resolved) config entry.

    ``entry`` is a :class:`explorer.config.PointConfig` or a mapping with the YAML keys of one
    point (missing keys take the built-in defaults; the mapping is validated like a config file).
    """
    from explorer.config import PointConfig

    point = entry if isinstance(entry, PointConfig) else PointConfig.from_mapping(entry)
    cls = observer_class(point.observer_type)
    observer = cls(
        bit_type=point.bit_type,
        module_type=module_type,
        calibration_mode=point.calibration_mode,
        **point.observer_params(),
    )
    observer.quantizer = point.quantizer
    return observer
