"""Name → observer class registry, so ``observer_type`` strings from YAML resolve to classes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from explorer.config import PointConfig
    from explorer.observers.base import Observer

_REGISTRY: dict[str, type[Observer]] = {}
_T = TypeVar("_T", bound=type)


def register_observer(name: str) -> Callable[[_T], _T]:
    """Class decorator: make an observer class available under ``name`` in configs."""

    def wrap(cls: _T) -> _T:
        if name in _REGISTRY:
            raise ValueError(f"observer type {name!r} is already registered")
        _REGISTRY[name] = cls  # type: ignore[assignment]
        return cls

    return wrap


def observer_names() -> tuple[str, ...]:
    """The ``observer_type`` values a config may use."""
    import explorer.observers  # noqa: F401  (importing the package registers the built-ins)

    return tuple(_REGISTRY)


def observer_class(name: str) -> type[Observer]:
    """The class registered as ``name``; a clear error lists the valid names."""
    names = observer_names()
    if name not in _REGISTRY:
        raise ValueError(f"unknown observer_type {name!r}; valid: {', '.join(names)}")
    return _REGISTRY[name]


def build_observer(entry: PointConfig | Mapping[str, Any], module_type: str = "activation") -> Observer:
    """An observer configured by one (resolved) config entry.

    ``entry`` is a :class:`explorer.config.PointConfig` or a mapping with the YAML keys of one
    point (missing keys take the built-in defaults; the mapping is validated like a config file).
    """
    from explorer.config import PointConfig

    point = entry if isinstance(entry, PointConfig) else PointConfig.from_mapping(entry)
    cls = observer_class(point.observer_type)
    return cls(
        bit_type=point.bit_type,
        module_type=module_type,
        calibration_mode=point.calibration_mode,
        **point.observer_params(),
    )
