"""What an observer declares about itself: its parameters (:class:`ParamSpec`) and the checks they share.

Each observer class carries ``label``, ``color``, ``params`` and ``symmetric_only`` as class
attributes. The config schema, the app's tuning inputs, the charts and the constructors all
read them from there, so a class registered with ``@register_observer`` works everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from explorer.limits import KL_MAX_BINS

if TYPE_CHECKING:
    from explorer.bit_type import BitType

KL_BINS_MAX = KL_MAX_BINS


class ParamError(ValueError):
    """A parameter value an observer does not accept; the text says what it got and what is valid."""


def type_name(value: object) -> str:
    """How a YAML user would call the type of ``value`` (``"a number (0.3)"``)."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}
    for kind, name in names.items():
        if type(value) is kind:
            return f"{name} ({value!r})"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    """``(0.5, 1]`` style interval text."""
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


@dataclass(frozen=True)
class ParamSpec:
    """One observer parameter: its config key, type, default, valid range and how the app edits it.

    ``kind`` is ``int`` or ``float``; the range is ``low``..``high`` with open ends as flagged.
    ``at_least_levels`` raises the lower bound to the bit type's number of levels (``kl_bins``).
    ``step`` and ``decimals`` are the app's input step and shown precision; ``powers_of_two``
    makes the app offer a choice of powers of two instead of a free number.
    """

    name: str
    kind: type
    default: float
    low: float
    high: float
    description: str
    low_open: bool = False
    high_open: bool = False
    at_least_levels: bool = False
    step: float = 1
    decimals: int = 0
    powers_of_two: bool = False

    def __post_init__(self) -> None:
        if self.kind not in (int, float):
            raise TypeError(f"ParamSpec {self.name}: kind must be int or float, got {self.kind!r}")
        self.check(self.default)

    def valid(self, bit_type: BitType | None = None) -> str:
        """What is valid, as said after ``valid:`` in messages."""
        if self.kind is int:
            low = self.lower(bit_type)
            if self.at_least_levels and bit_type is None:
                return (
                    f"an integer from the bit type's number of levels (128 for int8) up to {self.high:g}, "
                    f"e.g. {self.default}"
                )
            return f"an integer from {low:g} to {self.high:g}, e.g. {self.default}"
        return f"a number in {_interval(self.low, self.high, self.low_open, self.high_open)}, e.g. {self.default}"

    def lower(self, bit_type: BitType | None = None) -> float:
        """The lowest allowed value (for ``at_least_levels``, the bit type's levels when given)."""
        if self.at_least_levels and bit_type is not None:
            return max(self.low, bit_type.levels)
        return self.low

    def check(self, value: object) -> Any:
        """``value`` as this parameter's type; :class:`ParamError` when it has the wrong type or range.

        The bit-type bound of ``at_least_levels`` is checked by :func:`check_levels`.
        """
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind is int and not isinstance(value, int):
            number = False
        if not number or not math.isfinite(value) or not self._in_range(value):  # type: ignore[arg-type]
            raise ParamError(f"{type_name(value)} is not allowed; valid: {self.valid()}")
        return self.kind(value)

    def check_levels(self, value: Any, bit_type: BitType) -> None:
        """Raise :class:`ParamError` when ``value`` is below the levels of ``bit_type`` (``at_least_levels``)."""
        levels = bit_type.levels
        if self.at_least_levels and value < levels:
            kind = "signed" if bit_type.signed else "unsigned"
            raise ParamError(
                f"{value} is fewer than the {levels} levels of {bit_type.name} ({bit_type.bits}-bit {kind}); "
                f"valid: {self.valid(bit_type)}"
            )

    def ui_bounds(self, bit_type: BitType) -> tuple[float, float]:
        """The smallest and largest value an input box may offer: open ends moved in by one shown step."""
        tick = 10.0**-self.decimals if self.kind is float else 1
        low = self.lower(bit_type) + (tick if self.low_open else 0)
        high = self.high - (tick if self.high_open else 0)
        return (self.kind(low), self.kind(high))

    def choices(self, bit_type: BitType, current: Any) -> tuple[Any, ...]:
        """For ``powers_of_two``: the powers of two in range for ``bit_type``, plus ``current``."""
        low, high = self.ui_bounds(bit_type)
        powers = {2**e for e in range(int(math.log2(high)) + 1) if low <= 2**e <= high}
        return tuple(sorted(powers | {current}))

    def _in_range(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


def check_observer_params(
    owner: str, params: tuple[ParamSpec, ...], bit_type: BitType, values: Mapping[str, Any]
) -> dict[str, Any]:
    """``values`` checked against ``params`` for a constructor; errors name ``owner`` and the parameter.

    Returns the values converted to each parameter's type. Raises :class:`ParamError`.
    """
    checked = {}
    for spec in params:
        try:
            checked[spec.name] = spec.check(values[spec.name])
            spec.check_levels(checked[spec.name], bit_type)
        except ParamError as exc:
            raise ParamError(f"{owner}: {spec.name}: {exc}") from None
    return checked


def check_symmetric(owner: str, symmetric_only: bool, symmetric: bool | None) -> None:
    """Refuse ``symmetric=False`` for an observer that is symmetric only (:class:`ParamError`)."""
    if symmetric_only and symmetric is False:
        raise ParamError(
            f"{owner} is symmetric only, so symmetric: false cannot be used with it; "
            "valid: true, or leave symmetric out"
        )


PERCENTILE_ALPHA = ParamSpec(
    "percentile_alpha",
    float,
    0.9995,
    0.5,
    1.0,
    "Fraction of values kept inside the range; the guide's range is 0.9–0.99999.",
    low_open=True,
    step=0.0001,
    decimals=5,
)
PERCENTILE_SIGMA = ParamSpec(
    "percentile_sigma",
    float,
    0.1,
    0.0,
    1.0,
    "EMA weight of each new batch's percentiles.",
    low_open=True,
    step=0.01,
    decimals=3,
)
KL_BINS = ParamSpec(
    "kl_bins",
    int,
    2048,
    2,
    KL_BINS_MAX,
    "Histogram bins of the KL search; at least the bit type's levels; the guide uses 512–8192.",
    at_least_levels=True,
    powers_of_two=True,
)
