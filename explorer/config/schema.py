"""What a config may contain: quantization points, entry keys, their checks, and the resolved :class:`PointConfig`."""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from explorer.bit_type import BIT_TYPE_PRESETS, MAX_BITS, MIN_BITS, BitType
from explorer.config.errors import ConfigError, ConfigWarning, Findings, KeyPath, Locator, format_path, valid_choices
from explorer.limits import KL_MAX_BINS

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

OBSERVER_TYPES: tuple[str, ...] = ("MinmaxObserver", "PercentileObserver", "OmseObserver", "KLObserver")
CALIBRATION_MODES: tuple[str, ...] = ("layer_wise", "channel_wise")
QUANTIZATION_METHODS: tuple[str, ...] = ("Uniform",)

ENTRY_KEYS: tuple[str, ...] = (
    "calibration_mode",
    "bit_type",
    "observer_type",
    "quantization_method",
    "percentile_alpha",
    "percentile_sigma",
    "kl_bins",
    "symmetric",
)
"""Keys one entry (``default`` or a point) may set, in the order they are written out."""
BIT_TYPE_KEYS: tuple[str, ...] = ("bits", "signed", "name")

OBSERVER_PARAMS: dict[str, tuple[str, ...]] = {
    "MinmaxObserver": (),
    "PercentileObserver": ("percentile_alpha", "percentile_sigma"),
    "OmseObserver": (),
    "KLObserver": ("kl_bins",),
}
"""Entry keys each observer type takes as constructor arguments (``symmetric`` is taken by all)."""

BUILTIN_DEFAULTS: dict[str, Any] = {
    "calibration_mode": "channel_wise",
    "bit_type": {"bits": 8, "signed": True, "name": "int8"},
    "observer_type": "PercentileObserver",
    "quantization_method": "Uniform",
    "percentile_alpha": 0.9995,
    "percentile_sigma": 0.1,
    "kl_bins": 2048,
}
"""Values a point gets for keys that neither its entry nor ``default`` sets."""

_PRESET_NAME = re.compile(r"(u?)int(\d+)")


def section_of(point: str) -> str:
    """The config section (``layers`` or ``attn_layer``) that configures ``point``."""
    for section, points in SECTION_POINTS.items():
        if point in points:
            return section
    raise ConfigError(f"unknown quantization point {point!r}; {valid_choices(ALL_POINTS, point)}")


def module_type_of(point: str) -> str:
    """The observer ``module_type`` of ``point``: ``linear_weight`` for weights, ``activation`` otherwise."""
    return SECTION_MODULE_TYPES[section_of(point)]


def type_name(value: object) -> str:
    """How a YAML user would call the type of ``value``."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}
    for kind, name in names.items():
        if type(value) is kind:
            return f"{name} ({value!r})"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _choice(valid: tuple[str, ...]) -> Callable[[object, KeyPath, Locator, Findings], str]:
    """A check that the value is one of ``valid``."""

    def check(value: object, path: KeyPath, loc: Locator, sink: Findings) -> str:
        if not isinstance(value, str) or value not in valid:
            shown = repr(value) if isinstance(value, str) else type_name(value)
            raise loc.error(path, f"{shown} is not allowed; {valid_choices(valid, value)}")
        return value

    return check


def _is_real(value: object) -> bool:
    """A plain int or float (``true``/``false`` are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_alpha(value: object, path: KeyPath, loc: Locator, sink: Findings) -> float:
    """``percentile_alpha``: the kept fraction, in (0.5, 1]."""
    if not _is_real(value) or not 0.5 < value <= 1.0:  # type: ignore[operator]
        raise loc.error(path, f"{type_name(value)} is not allowed; valid: a number in (0.5, 1], e.g. 0.9995")
    return float(value)  # type: ignore[arg-type]


def _check_sigma(value: object, path: KeyPath, loc: Locator, sink: Findings) -> float:
    """``percentile_sigma``: the EMA update weight, in (0, 1]."""
    if not _is_real(value) or not 0.0 < value <= 1.0:  # type: ignore[operator]
        raise loc.error(path, f"{type_name(value)} is not allowed; valid: a number in (0, 1], e.g. 0.1")
    return float(value)  # type: ignore[arg-type]


def _check_kl_bins(value: object, path: KeyPath, loc: Locator, sink: Findings) -> int:
    """``kl_bins``: an integer histogram size; checked against the bit type once the point is resolved."""
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= KL_MAX_BINS:
        raise loc.error(
            path,
            f"{type_name(value)} is not allowed; valid: an integer from the bit type's number of levels "
            f"(128 for int8) up to {KL_MAX_BINS}, e.g. 2048",
        )
    return value


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


ENTRY_CHECKS: dict[str, Callable[[Any, KeyPath, Locator, Findings], Any]] = {
    "calibration_mode": _choice(CALIBRATION_MODES),
    "bit_type": check_bit_type,
    "observer_type": _choice(OBSERVER_TYPES),
    "quantization_method": _choice(QUANTIZATION_METHODS),
    "percentile_alpha": _check_alpha,
    "percentile_sigma": _check_sigma,
    "kl_bins": _check_kl_bins,
    "symmetric": _check_symmetric,
}


def check_entry(entry: object, path: KeyPath, loc: Locator, sink: Findings) -> dict[str, Any]:
    """One entry (``default`` or a point) checked key by key, in canonical key order.

    ``null`` (or an empty mapping) means "nothing overridden"; ``symmetric: null`` means
    "the default" and is dropped. Warnings go to ``sink``.
    """
    if entry is None:
        return {}
    if not isinstance(entry, Mapping):
        raise loc.error(path, f"{type_name(entry)} is not allowed; valid: a mapping of {', '.join(ENTRY_KEYS)}")
    for key in entry:
        if key not in ENTRY_CHECKS:
            raise loc.error(path + (key,), f"unknown key {key!r}; {valid_choices(ENTRY_KEYS, key)}")
    return {
        key: ENTRY_CHECKS[key](entry[key], path + (key,), loc, sink)
        for key in ENTRY_KEYS
        if key in entry and not (key == "symmetric" and entry[key] is None)
    }


def bit_type_of(mapping: Mapping[str, Any]) -> BitType:
    """The :class:`BitType` of a checked ``bit_type`` mapping."""
    return BitType(mapping["bits"], mapping["signed"], mapping.get("name"))


def cross_check(observer_type: str, bit_type: BitType, kl_bins: int, symmetric: bool | None) -> tuple[str, str] | None:
    """The first rule between keys that these settings break, as ``(key, why)``; None when consistent.

    ``kl_bins`` must cover the bit type's levels wherever it matters: on a KLObserver, or when
    set to anything but the built-in 2048. KLObserver is symmetric only.
    """
    levels = bit_type.levels
    if (observer_type == "KLObserver" or kl_bins != BUILTIN_DEFAULTS["kl_bins"]) and kl_bins < levels:
        return "kl_bins", (
            f"kl_bins {kl_bins} is fewer than the {levels} levels of {bit_type.name} "
            f"({bit_type.bits}-bit {'signed' if bit_type.signed else 'unsigned'}); "
            f"valid: an integer from {levels} to {KL_MAX_BINS}"
        )
    if observer_type == "KLObserver" and symmetric is False:
        return "symmetric", (
            "KLObserver is symmetric only, so symmetric: false cannot be used with it; "
            "valid: true, or leave symmetric out"
        )
    return None


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


@dataclass(frozen=True)
class PointConfig:
    """The fully resolved settings of one quantization point: everything needed to build its observer.

    ``symmetric=None`` means the observer's default (symmetric when the bit type is signed).
    Construction validates every field and the rules between them (:class:`ConfigError`).
    """

    observer_type: str
    calibration_mode: str
    bit_type: BitType
    quantization_method: str = "Uniform"
    percentile_alpha: float = 0.9995
    percentile_sigma: float = 0.1
    kl_bins: int = 2048
    symmetric: bool | None = None

    def __post_init__(self) -> None:
        loc = Locator()
        sink: Findings = []
        if not isinstance(self.bit_type, BitType):
            raise loc.error(("bit_type",), f"{type_name(self.bit_type)} is not allowed; valid: a BitType")
        for key in ENTRY_KEYS:
            value = getattr(self, key)
            if key != "bit_type" and not (key == "symmetric" and value is None):
                object.__setattr__(self, key, ENTRY_CHECKS[key](value, (key,), loc, sink))
        broken = cross_check(self.observer_type, self.bit_type, self.kl_bins, self.symmetric)
        if broken is not None:
            raise loc.error((broken[0],), broken[1])

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> PointConfig:
        """A point from the YAML keys of one entry laid over the built-in defaults, validated."""
        sink: Findings = []
        point = resolve_point([((), check_entry(mapping, (), Locator(), sink))], Locator())
        emit_warnings(sink, Locator(), stacklevel=2)
        return point

    def observer_params(self) -> dict[str, Any]:
        """Constructor keyword arguments for this point's observer: only those its type takes."""
        params = {key: getattr(self, key) for key in OBSERVER_PARAMS[self.observer_type]}
        if self.symmetric is not None:
            params["symmetric"] = self.symmetric
        return params

    def to_mapping(self) -> dict[str, Any]:
        """All settings as YAML keys (``symmetric`` only when set)."""
        mapping: dict[str, Any] = {}
        for key in ENTRY_KEYS:
            value = getattr(self, key)
            if key == "bit_type":
                mapping[key] = {"bits": value.bits, "signed": value.signed, "name": value.name}
            elif value is not None:
                mapping[key] = value
        return mapping

    def replace(self, **changes: Any) -> PointConfig:
        """A copy with some settings changed, validated; ``bit_type`` may be a preset name or mapping."""
        unknown = [key for key in changes if key not in ENTRY_KEYS]
        if unknown:
            raise Locator().error((unknown[0],), f"unknown key {unknown[0]!r}; {valid_choices(ENTRY_KEYS, unknown[0])}")
        if "bit_type" in changes and not isinstance(changes["bit_type"], BitType):
            sink: Findings = []
            changes["bit_type"] = bit_type_of(check_bit_type(changes["bit_type"], ("bit_type",), Locator(), sink))
            emit_warnings(sink, Locator(), stacklevel=2)
        return dataclasses.replace(self, **changes)


def _origin_label(path: KeyPath | None) -> str:
    """Where a resolved value came from, for messages."""
    if path is None:
        return "the built-in default"
    return format_path(path) or "this entry"


def resolve_point(chain: Sequence[tuple[KeyPath, Mapping[str, Any]]], loc: Locator) -> PointConfig:
    """The point made by laying checked entries over the built-in defaults, least specific first.

    ``chain`` pairs each entry with its key path (e.g. ``default``, then ``attn_layer.intSoft``).
    A broken rule between keys is reported at the most specific entry, naming where each value came from.
    """
    merged: dict[str, Any] = dict(BUILTIN_DEFAULTS)
    origin: dict[str, KeyPath | None] = dict.fromkeys(merged)
    for path, entry in chain:
        for key, value in entry.items():
            merged[key] = value
            origin[key] = path
    merged["bit_type"] = bit_type_of(merged["bit_type"])
    broken = cross_check(merged["observer_type"], merged["bit_type"], merged["kl_bins"], merged.get("symmetric"))
    if broken is not None:
        key, why = broken
        involved = (key, "bit_type", "observer_type") if key == "kl_bins" else (key, "observer_type")
        sources = ", ".join(f"{name} from {_origin_label(origin.get(name))}" for name in involved)
        raise loc.error((chain[-1][0] if chain else ()) + (key,), f"{why} ({sources})")
    return PointConfig(**merged)
