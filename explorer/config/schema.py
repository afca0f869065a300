"""What a config may contain: quantization points, entry keys, their checks, and the resolved :class:`PointConfig`."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from explorer.bit_type import BIT_TYPE_PRESETS, MAX_BITS, MIN_BITS, BitType
from explorer.config.errors import (
    ConfigError,
    ConfigWarning,
    Findings,
    KeyPath,
    Locator,
    Problems,
    format_path,
    valid_choices,
)
from explorer.observers.params import ParamError, check_symmetric, type_name
from explorer.observers.registry import all_params, observer_names, observer_params, symmetric_only
from explorer.quant_ops import QUANTIZERS, check_quantizer

WEIGHT_POINTS: tuple[str, ...] = ("attn_qkv", "attn_proj", "mlp_fc1", "mlp_fc2")
"""Weights of each block; configured under ``layers``."""
ACTIVATION_POINTS: tuple[str, ...] = ("attn_qkv_output", "intSoft", "sv_attn", "mlp_act")
"""Activations inside each block; configured under ``attn_layer``."""
ALL_POINTS: tuple[str, ...] = WEIGHT_POINTS + ACTIVATION_POINTS

SECTION_POINTS: dict[str, tuple[str, ...]] = {"layers": WEIGHT_POINTS, "attn_layer": ACTIVATION_POINTS}
"""Config section → the points it configures."""
SECTION_MODULE_TYPES: dict[str, str] = {"layers": "linear_weight", "attn_layer": "activation"}
TOP_LEVEL_KEYS: tuple[str, ...] = ("default", "layers", "attn_layer", "blocks")
"""Keys a config file may have at its top level, in the order they are written out."""

CALIBRATION_MODES: tuple[str, ...] = ("layer_wise", "channel_wise")
QUANTIZATION_METHODS: tuple[str, ...] = ("Uniform",)
COMMON_KEYS: tuple[str, ...] = ("calibration_mode", "bit_type", "observer_type", "quantization_method", "quantizer")
"""Keys every entry may set whatever its observer; observer parameters follow them, ``symmetric`` comes last."""
BIT_TYPE_KEYS: tuple[str, ...] = ("bits", "signed", "name")
COMMON_DEFAULTS: dict[str, Any] = {
    "calibration_mode": "channel_wise",
    "bit_type": {"bits": 8, "signed": True, "name": "int8"},
    "observer_type": "PercentileObserver",
    "quantization_method": "Uniform",
    "quantizer": "uniform",
}
"""Values a point gets for the common keys that neither its entry nor ``default`` sets."""

_PRESET_NAME = re.compile(r"(u?)int(\d+)")


def entry_keys() -> tuple[str, ...]:
    """Keys one entry (``default`` or a point) may set, in the order they are written out.

    The observer parameters are those of every registered observer, so a class registered
    with ``@register_observer`` brings its own keys.
    """
    return (*COMMON_KEYS, *all_params(), "symmetric")


def builtin_defaults() -> dict[str, Any]:
    """Values a point gets for keys that neither its entry nor ``default`` sets (each parameter's declared default)."""
    return {**COMMON_DEFAULTS, **{name: spec.default for name, spec in all_params().items()}}


def section_of(point: str) -> str:
    """The config section (``layers`` or ``attn_layer``) that configures ``point``."""
    for section, points in SECTION_POINTS.items():
        if point in points:
            return section
    raise ConfigError(f"unknown quantization point {point!r}; {valid_choices(ALL_POINTS, point)}")


def module_type_of(point: str) -> str:
    """The observer ``module_type`` of ``point``: ``linear_weight`` for weights, ``activation`` otherwise."""
    return SECTION_MODULE_TYPES[section_of(point)]


def _choice(choices: Callable[[], tuple[str, ...]]) -> Callable[[object, KeyPath, Locator, Findings], str]:
    """A check that the value is one of ``choices()`` (asked at check time: observers may be registered later)."""

    def check(value: object, path: KeyPath, loc: Locator, sink: Findings) -> str:
        valid = choices()
        if not isinstance(value, str) or value not in valid:
            shown = repr(value) if isinstance(value, str) else type_name(value)
            raise loc.error(path, f"{shown} is not allowed; {valid_choices(valid, value)}")
        return value

    return check


def _is_real(value: object) -> bool:
    """A plain int or float (``true``/``false`` are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_symmetric(value: object, path: KeyPath, loc: Locator, sink: Findings) -> bool:
    """``symmetric``: true or false (leave it out for the default: symmetric when signed)."""
    if not isinstance(value, bool):
        raise loc.error(path, f"{type_name(value)} is not allowed; valid: true or false")
    return value


def _check_bits(value: object, path: KeyPath, loc: Locator) -> int:
    """``bit_type.bits``: an integer from 2 to 16."""
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_BITS <= value <= MAX_BITS:
        raise loc.error(path, f"{type_name(value)} is not allowed; valid: an integer from {MIN_BITS} to {MAX_BITS}")
    return value


def check_bit_type(value: object, path: KeyPath, loc: Locator, sink: Findings) -> dict[str, Any]:
    """``bit_type`` in its mapping form ``{bits, signed[, name]}``.

    A preset name (``int8``) or a :class:`BitType` is accepted and turned into the mapping form.
    A name that contradicts bits/signed (``int8`` with ``bits: 4``) only adds a warning to ``sink``.
    """
    if isinstance(value, BitType):
        return {"bits": value.bits, "signed": value.signed, "name": value.name}
    presets = (
        f"a preset name ({', '.join(BIT_TYPE_PRESETS)}) or a mapping {{bits: 2-16, signed: true/false, name: ...}}"
    )
    if isinstance(value, str):
        if value not in BIT_TYPE_PRESETS:
            raise loc.error(path, f"unknown bit type {value!r}; valid: {presets}")
        preset = BIT_TYPE_PRESETS[value]
        return {"bits": preset.bits, "signed": preset.signed, "name": preset.name}
    if not isinstance(value, Mapping):
        raise loc.error(path, f"{type_name(value)} is not allowed; valid: {presets}")
    unknown = [key for key in value if key not in BIT_TYPE_KEYS]
    if unknown:
        raise loc.error(path + (unknown[0],), f"unknown key {unknown[0]!r}; {valid_choices(BIT_TYPE_KEYS, unknown[0])}")
    missing = [key for key in ("bits", "signed") if key not in value]
    if missing:
        raise loc.error(path, f"missing {' and '.join(missing)}; valid: {presets}")
    bits = _check_bits(value["bits"], path + ("bits",), loc)
    signed = value["signed"]
    if not isinstance(signed, bool):
        raise loc.error(path + ("signed",), f"{type_name(signed)} is not allowed; valid: true or false")
    result: dict[str, Any] = {"bits": bits, "signed": signed}
    if "name" in value:
        name = value["name"]
        if not isinstance(name, str):
            raise loc.error(path + ("name",), f"{type_name(name)} is not allowed; valid: a string such as int8")
        if not name.isprintable():  # line breaks and control characters do not survive a YAML round trip
            raise loc.error(
                path + ("name",), f"{name!r} is not allowed; valid: a one-line label without control characters"
            )
        match = _PRESET_NAME.fullmatch(name)
        if match and (match.group(1) == "", int(match.group(2))) != (signed, bits):
            sink.append(
                (
                    path + ("name",),
                    f"name {name!r} does not match bits: {bits}, signed: {str(signed).lower()}; "
                    "the name is only a label, bits and signed are what is used",
                )
            )
        result["name"] = name
    return result


_COMMON_CHECKS: dict[str, Callable[[Any, KeyPath, Locator, Findings], Any]] = {
    "calibration_mode": _choice(lambda: CALIBRATION_MODES),
    "bit_type": check_bit_type,
    "observer_type": _choice(observer_names),
    "quantization_method": _choice(lambda: QUANTIZATION_METHODS),
    "quantizer": _choice(lambda: QUANTIZERS),
    "symmetric": _check_symmetric,
}


def check_value(key: str, value: object, path: KeyPath, loc: Locator, sink: Findings) -> Any:
    """One entry key's value checked (an observer parameter by its :class:`ParamSpec`); ConfigError names ``path``."""
    if key in _COMMON_CHECKS:
        return _COMMON_CHECKS[key](value, path, loc, sink)
    params = all_params()
    if key not in params:
        raise loc.error(path, f"unknown key {key!r}; {valid_choices(entry_keys(), key)}")
    try:
        return params[key].check(value)
    except ParamError as exc:
        raise loc.error(path, str(exc)) from None


def check_entry(entry: object, path: KeyPath, loc: Locator, sink: Findings) -> dict[str, Any]:
    """One entry (``default`` or a point) checked key by key, in canonical key order; every problem reported.

    ``null`` (or an empty mapping) means "nothing overridden"; ``symmetric: null`` means
    "the default" and is dropped. Warnings go to ``sink``.
    """
    keys = entry_keys()
    if entry is None:
        return {}
    if not isinstance(entry, Mapping):
        raise loc.error(path, f"{type_name(entry)} is not allowed; valid: a mapping of {', '.join(keys)}")
    problems = Problems()
    checked = {
        key: problems.attempt(lambda key=key: check_value(key, entry[key], path + (key,), loc, sink))
        for key in entry
        if not (key == "symmetric" and entry[key] is None)
    }
    problems.raise_any()
    return {key: checked[key] for key in keys if key in checked}


def bit_type_of(mapping: Mapping[str, Any]) -> BitType:
    """The :class:`BitType` of a checked ``bit_type`` mapping."""
    return BitType(mapping["bits"], mapping["signed"], mapping.get("name"))


def cross_check(
    observer_type: str, bit_type: BitType, params: Mapping[str, Any], symmetric: bool | None, quantizer: str
) -> tuple[str, str] | None:
    """The first rule between keys that these settings break, as ``(key, why)``; None when consistent.

    A parameter bounded by the bit type's levels (``kl_bins``) must cover them wherever it matters:
    on an observer that takes it, or when set to anything but its default. A symmetric-only
    observer (KL) refuses ``symmetric: false``. A log quantizer needs an unsigned bit type and no ``symmetric``.
    """
    taken = {spec.name for spec in observer_params(observer_type)}
    for name, spec in all_params().items():
        if name in params and (name in taken or params[name] != spec.default):
            try:
                spec.check_levels(params[name], bit_type)
            except ParamError as exc:
                return name, str(exc)
    try:
        check_symmetric(observer_type, symmetric_only(observer_type), symmetric)
    except ParamError as exc:
        return "symmetric", str(exc)
    why = check_quantizer(quantizer, bit_type, symmetric)
    return None if why is None else ("quantizer", why)


def emit_warnings(
    found: Iterable[tuple[KeyPath, str]], loc: Locator, stacklevel: int, known: Iterable[tuple[KeyPath, str]] = ()
) -> None:
    """Issue each finding once as a located :class:`ConfigWarning`, skipping those in ``known`` (issued before).

    ``stacklevel`` counts from the caller of this function, as in :func:`warnings.warn`.
    """
    skip = set(known)
    for path, why in dict.fromkeys(found):
        if (path, why) not in skip:
            warnings.warn(loc.message(path, why), ConfigWarning, stacklevel=stacklevel + 1)


@dataclass(frozen=True, init=False, repr=False)
class PointConfig:
    """The fully resolved settings of one quantization point: everything needed to build its observer.

    It holds the common keys and a value for every parameter of every registered observer
    (``params``; also readable as attributes, e.g. ``point.kl_bins``), so switching the observer
    type keeps the other parameters. ``symmetric=None`` means the observer's default (symmetric
    when the bit type is signed). Construction validates every field and the rules between them
    (:class:`ConfigError`); instances are immutable and hashable.
    """

    observer_type: str
    calibration_mode: str
    bit_type: BitType
    quantization_method: str
    quantizer: str
    symmetric: bool | None
    param_items: tuple[tuple[str, Any], ...]
    """Every observer parameter as ``(name, value)``, in registration order (see ``params``)."""

    def __init__(
        self,
        observer_type: str,
        calibration_mode: str,
        bit_type: BitType,
        quantization_method: str = "Uniform",
        quantizer: str = "uniform",
        symmetric: bool | None = None,
        **params: Any,
    ) -> None:
        loc = Locator()
        sink: Findings = []
        if not isinstance(bit_type, BitType):
            raise loc.error(("bit_type",), f"{type_name(bit_type)} is not allowed; valid: a BitType")
        common = {"observer_type": observer_type, "calibration_mode": calibration_mode}
        common["quantization_method"] = quantization_method
        common["quantizer"] = quantizer
        fields = {key: check_value(key, value, (key,), loc, sink) for key, value in common.items()}
        if symmetric is not None:
            symmetric = check_value("symmetric", symmetric, ("symmetric",), loc, sink)
        values = {name: spec.default for name, spec in all_params().items()}
        values.update({key: check_value(key, value, (key,), loc, sink) for key, value in params.items()})
        broken = cross_check(fields["observer_type"], bit_type, values, symmetric, fields["quantizer"])
        if broken is not None:
            raise loc.error((broken[0],), broken[1])
        fields.update(bit_type=bit_type, symmetric=symmetric, param_items=tuple(values.items()))
        for key, value in fields.items():
            object.__setattr__(self, key, value)

    @property
    def params(self) -> Mapping[str, Any]:
        """Every observer parameter by name, read-only."""
        return MappingProxyType(dict(self.param_items))

    def __getattr__(self, name: str) -> Any:
        """An observer parameter by name (``point.percentile_alpha``)."""
        if name != "param_items" and not name.startswith("__"):
            for key, value in self.param_items:
                if key == name:
                    return value
        raise AttributeError(f"PointConfig has no setting {name!r}; valid: {', '.join(entry_keys())}")

    def __repr__(self) -> str:
        return f"PointConfig({', '.join(f'{key}={value!r}' for key, value in self._fields().items())})"

    def _fields(self) -> dict[str, Any]:
        """Every setting as a constructor keyword argument."""
        return {
            "observer_type": self.observer_type,
            "calibration_mode": self.calibration_mode,
            "bit_type": self.bit_type,
            "quantization_method": self.quantization_method,
            "quantizer": self.quantizer,
            "symmetric": self.symmetric,
            **dict(self.param_items),
        }

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> PointConfig:
        """A point from the YAML keys of one entry laid over the built-in defaults, validated."""
        sink: Findings = []
        point = resolve_point([((), check_entry(mapping, (), Locator(), sink))], Locator())
        emit_warnings(sink, Locator(), stacklevel=2)
        return point

    def observer_params(self) -> dict[str, Any]:
        """Constructor keyword arguments for this point's observer: only those its type takes."""
        params = {spec.name: self.params[spec.name] for spec in observer_params(self.observer_type)}
        if self.symmetric is not None:
            params["symmetric"] = self.symmetric
        return params

    def to_mapping(self) -> dict[str, Any]:
        """All settings as YAML keys, in the order they are written out (``symmetric`` only when set)."""
        fields = self._fields()
        fields["bit_type"] = {"bits": self.bit_type.bits, "signed": self.bit_type.signed, "name": self.bit_type.name}
        return {key: fields[key] for key in entry_keys() if fields.get(key) is not None}

    def replace(self, **changes: Any) -> PointConfig:
        """A copy with some settings changed, validated; ``bit_type`` may be a preset name or mapping."""
        keys = entry_keys()
        unknown = [key for key in changes if key not in keys]
        if unknown:
            raise Locator().error((unknown[0],), f"unknown key {unknown[0]!r}; {valid_choices(keys, unknown[0])}")
        if "bit_type" in changes and not isinstance(changes["bit_type"], BitType):
            sink: Findings = []
            changes["bit_type"] = bit_type_of(check_bit_type(changes["bit_type"], ("bit_type",), Locator(), sink))
            emit_warnings(sink, Locator(), stacklevel=2)
        return PointConfig(**{**self._fields(), **changes})


def _origin_label(path: KeyPath | None) -> str:
    """Where a resolved value came from, for messages."""
    if path is None:
        return "the built-in default"
    return format_path(path) or "this entry"


def resolve_point(
    chain: Sequence[tuple[KeyPath, Mapping[str, Any]]], loc: Locator, module_type: str = "activation"
) -> PointConfig:
    """The point made by laying checked entries over the built-in defaults, least specific first.

    ``chain`` pairs each entry with its key path (e.g. ``default``, then ``attn_layer.intSoft``).
    A broken rule between keys is reported at the most specific entry, naming where each value came from;
    a log quantizer on a weight point (``module_type`` ``linear_weight``) where the quantizer was set.
    """
    merged: dict[str, Any] = builtin_defaults()
    origin: dict[str, KeyPath | None] = dict.fromkeys(merged)
    for path, entry in chain:
        for key, value in entry.items():
            merged[key] = value
            origin[key] = path
    merged["bit_type"] = bit_type_of(merged["bit_type"])
    if module_type != "activation" and merged["quantizer"] != "uniform":
        where = origin["quantizer"] or ()
        raise loc.error(
            where + ("quantizer",),
            f"quantizer {merged['quantizer']} applies to activations (set it under attn_layer, e.g. for "
            "intSoft); weights are quantized on the uniform grid",
        )
    broken = cross_check(
        merged["observer_type"], merged["bit_type"], merged, merged.get("symmetric"), merged["quantizer"]
    )
    if broken is not None:
        key, why = broken
        involved = {
            "symmetric": (key, "observer_type"),
            "quantizer": (key, "bit_type", "symmetric"),
        }.get(key, (key, "bit_type", "observer_type"))
        sources = ", ".join(f"{name} from {_origin_label(origin.get(name))}" for name in involved)
        raise loc.error((chain[-1][0] if chain else ()) + (key,), f"{why} ({sources})")
    return PointConfig(**merged)
