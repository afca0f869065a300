"""The validated, immutable config of a whole model: what was written, and every point resolved from it."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Hashable, Mapping
from types import MappingProxyType
from typing import Any

from explorer.config.errors import Findings, KeyPath, Locator, Problems, valid_choices
from explorer.config.schema import (
    ALL_POINTS,
    SECTION_POINTS,
    TOP_LEVEL_KEYS,
    PointConfig,
    check_entry,
    emit_warnings,
    entry_keys,
    module_type_of,
    resolve_point,
    section_of,
    type_name,
)

_EMPTY: Mapping[Any, Any] = MappingProxyType({})
_DIGITS = re.compile(r"[0-9]+")


def _block_index(key: object) -> int | None:
    """A ``blocks`` key as a block index (``0`` or ``"0"``); None when it is not one."""
    if isinstance(key, int) and not isinstance(key, bool):
        return key if key >= 0 else None
    if isinstance(key, str) and _DIGITS.fullmatch(key):
        return int(key)
    return None


def _check_block(block: object) -> None:
    """Reject a ``block`` argument that is not a non-negative int."""
    if block is not None and _block_index(block) != block:
        raise Locator().error(("blocks",), f"block {block!r} is not allowed; valid: a non-negative integer or None")


def _point_hint(key: object, section: str | None) -> str:
    """A hint for a misplaced point name: which section it belongs to."""
    if key in ALL_POINTS and section_of(str(key)) != section:
        return f"; {key} belongs under {section_of(str(key))}"
    return ""


def _check_section(value: object, path: KeyPath, section: str, loc: Locator, sink: Findings) -> dict[str, Any]:
    """A ``layers``/``attn_layer`` section: known point names only, each entry checked, canonical order."""
    points = SECTION_POINTS[section]
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise loc.error(path, f"{type_name(value)} is not allowed; valid: a mapping of points {', '.join(points)}")
    problems = Problems()
    for key in value:
        if key not in points:
            detail = f"unknown point {key!r} in {section}; {valid_choices(points, key)}{_point_hint(key, section)}"
            problems.errors.append(loc.error(path + (key,), detail))
    checked = {
        name: problems.attempt(lambda name=name: check_entry(value[name], path + (name,), loc, sink))
        for name in points
        if name in value
    }
    problems.raise_any()
    return checked  # type: ignore[return-value]


def _check_block_entry(block: object, path: KeyPath, loc: Locator, sink: Findings) -> dict[str, Any]:
    """One block's overrides: ``layers`` and/or ``attn_layer``; every problem reported."""
    if block is None:
        return {}
    if not isinstance(block, Mapping):
        raise loc.error(path, f"{type_name(block)} is not allowed; valid: a mapping with layers and/or attn_layer")
    problems = Problems()
    for name in block:
        if name not in SECTION_POINTS:
            detail = f"unknown key {name!r}; {valid_choices(SECTION_POINTS, name)}{_point_hint(name, None)}"
            problems.errors.append(loc.error(path + (name,), detail))
    checked = {
        section: problems.attempt(
            lambda section=section: _check_section(block[section], path + (section,), section, loc, sink)
        )
        for section in SECTION_POINTS
        if section in block
    }
    problems.raise_any()
    return checked


def _check_blocks(value: object, loc: Locator, sink: Findings) -> dict[int, dict[str, Any]]:
    """The ``blocks`` extension: block index → its own ``layers``/``attn_layer`` overrides, sorted by index."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        detail = f"{type_name(value)} is not allowed; valid: a mapping of block index → overrides"
        raise loc.error(("blocks",), detail)
    problems = Problems()
    result: dict[int, dict[str, Any]] = {}
    written: dict[int, Hashable] = {}
    for key, block in value.items():
        path: KeyPath = ("blocks", key)
        index = _block_index(key)
        if index is None:
            detail = f"block index {key!r} is not allowed; valid: a non-negative integer such as 0"
            problems.errors.append(loc.error(path, detail))
            continue
        if index in written:
            first, again = loc.line(("blocks", written[index])), loc.line(path)
            lines = f" (lines {first} and {again})" if first and again else ""
            detail = f"block {index} is given twice, as {written[index]!r} and {key!r}{lines}; merge them"
            problems.errors.append(loc.error(path, detail))
            continue
        written[index] = key
        checked = problems.attempt(lambda block=block, path=path: _check_block_entry(block, path, loc, sink))
        if checked is not None:
            result[index] = checked
    problems.raise_any()
    return dict(sorted(result.items()))


def _check_document(data: object, loc: Locator, sink: Findings) -> dict[str, Any]:
    """A whole config checked and put in canonical form (null sections become empty mappings).

    Every problem found is reported at once, in one :class:`ConfigError`.
    """
    if not isinstance(data, Mapping):
        hint = ""
        if data is None:
            hint = " (an empty document; write {} for all defaults)"
        elif isinstance(data, str) and "\n" not in data.strip():
            hint = " (if this was meant as a file path: no such file)"
        valid = f"valid: a mapping with keys {', '.join(TOP_LEVEL_KEYS)}"
        raise loc.error((), f"the top level is {type_name(data)}{hint}; {valid}")
    problems = Problems()
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            hint = _point_hint(key, None)
            if key in entry_keys():
                hint = f"; put {key} under default to apply it to every point"
            detail = f"unknown top-level key {key!r}; {valid_choices(TOP_LEVEL_KEYS, key)}{hint}"
            problems.errors.append(loc.error((key,), detail))
    checks: dict[str, Callable[[], Any]] = {
        "default": lambda: check_entry(data["default"], ("default",), loc, sink),
        **{
            section: (lambda section=section: _check_section(data[section], (section,), section, loc, sink))
            for section in SECTION_POINTS
        },
        "blocks": lambda: _check_blocks(data["blocks"], loc, sink),
    }
    result = {key: problems.attempt(check) for key, check in checks.items() if key in data}
    problems.raise_any()
    return result


def _canonical_path(path: KeyPath) -> KeyPath:
    """``path`` with a block written as ``"0"`` named by its index ``0``."""
    if len(path) > 1 and path[0] == "blocks" and _block_index(path[1]) is not None:
        return ("blocks", _block_index(path[1])) + path[2:]
    return path


def _with_block_aliases(loc: Locator) -> Locator:
    """The same locator, with lines of blocks written as ``"0":`` also found under the index ``0``."""
    aliases = {_canonical_path(path): line for path, line in loc.lines.items()}
    return Locator({**aliases, **loc.lines}, loc.source)


def _common_mistakes(chain: list[tuple[KeyPath, Mapping[str, Any]]], point: PointConfig) -> Findings:
    """The guide's common mistakes on a resolved ``intSoft``, as ``(where the value was set, why)``."""

    def origin(key: str) -> tuple[KeyPath, str]:
        for path, entry in reversed(chain):
            if key in entry:
                return path + (key,), ""
        return ("attn_layer", "intSoft"), f" (the built-in default: nothing in the config sets {key})"

    found: Findings = []
    if point.observer_type == "MinmaxObserver":
        path, how = origin("observer_type")
        found.append(
            (
                path,
                f"MinmaxObserver{how} applies to intSoft (the softmax output), where one outlier sets the "
                "whole range; the guide recommends KLObserver (kl_bins 4096, layer_wise) there",
            )
        )
    if point.calibration_mode == "channel_wise":
        path, how = origin("calibration_mode")
        found.append(
            (
                path,
                f"calibration_mode channel_wise{how} applies to intSoft (the softmax output); "
                "the guide recommends layer_wise there",
            )
        )
    return found


def _resolve_all(data: Mapping[str, Any], loc: Locator, sink: Findings) -> dict[tuple[str, int | None], PointConfig]:
    """Every point of every section, and of every block that overrides it; warns about common mistakes."""
    base = [(("default",), data["default"])] if "default" in data else []
    chains: dict[tuple[str, int | None], list[tuple[KeyPath, Mapping[str, Any]]]] = {}
    for section, names in SECTION_POINTS.items():
        entries = data.get(section, {})
        for name in names:
            chains[(name, None)] = base + ([((section, name), entries[name])] if name in entries else [])
    for index, block in data.get("blocks", {}).items():
        for section, entries in block.items():
            for name, entry in entries.items():
                chains[(name, index)] = chains[(name, None)] + [(("blocks", index, section, name), entry)]
    problems = Problems()
    points = {
        key: problems.attempt(lambda chain=chain, name=key[0]: resolve_point(chain, loc, module_type_of(name)))
        for key, chain in chains.items()
    }
    problems.raise_any()
    for (name, index), chain in chains.items():
        if name == "intSoft":
            sink.extend(_common_mistakes(chain, points[(name, index)]))  # type: ignore[arg-type]
    return points  # type: ignore[return-value]


def _read_only(value: Any) -> Any:
    """Nested mappings as read-only views."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: _read_only(item) for key, item in value.items()})
    return value


def _frozen(value: Any) -> Hashable:
    """A hashable form of nested mappings, equal exactly when the mappings are."""
    if isinstance(value, Mapping):
        return frozenset((key, _frozen(item)) for key, item in value.items())
    return value


class QuantConfig:
    """A whole quantization config: the entries as written (validated), and each point resolved.

    A point resolves as built-in defaults ← ``default`` ← its ``layers``/``attn_layer`` entry ←
    its entry under ``blocks.<index>``. Immutable: the ``with_*`` methods return new configs.
    Equality compares what was written; ``warnings`` (the :class:`ConfigWarning` texts) is not compared.
    """

    __slots__ = ("_data", "_view", "_points", "_found", "warnings")
    _data: dict[str, Any]
    _view: Mapping[str, Any]
    _points: dict[tuple[str, int | None], PointConfig]
    _found: tuple[tuple[KeyPath, str], ...]
    warnings: tuple[str, ...]

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        """Validate ``data`` (the YAML structure as Python data); no data means all built-in defaults."""
        self._setup({} if data is None else data, Locator(), (), stacklevel=2)

    @classmethod
    def _build(cls, data: object, loc: Locator, known: tuple[tuple[KeyPath, str], ...], stacklevel: int) -> QuantConfig:
        """Validate ``data`` located by ``loc``; findings in ``known`` were already issued and are not repeated.

        ``stacklevel`` counts frames from this method's caller (1) up to the user's code.
        """
        config = cls.__new__(cls)
        config._setup(data, loc, known, stacklevel + 1)
        return config

    def _setup(self, data: object, loc: Locator, known: tuple[tuple[KeyPath, str], ...], stacklevel: int) -> None:
        """Check, store and resolve; issue the warnings found (``stacklevel`` as in :meth:`_build`)."""
        sink: Findings = []
        canonical = _check_document(data, loc, sink)
        loc = _with_block_aliases(loc)
        points = _resolve_all(canonical, loc, sink)
        found = tuple(dict.fromkeys((_canonical_path(path), why) for path, why in sink))
        object.__setattr__(self, "_data", canonical)
        object.__setattr__(self, "_view", _read_only(canonical))
        object.__setattr__(self, "_points", points)
        object.__setattr__(self, "_found", found)
        object.__setattr__(self, "warnings", tuple(loc.message(path, why) for path, why in found))
        emit_warnings(found, loc, stacklevel + 1, known)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("QuantConfig is immutable; use with_point() or with_default()")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("QuantConfig is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantConfig):
            return NotImplemented
        return self._data == other._data

    def __hash__(self) -> int:
        return hash(_frozen(self._data))

    def __repr__(self) -> str:
        return f"QuantConfig({self._data!r})"

    @property
    def default(self) -> Mapping[str, Any]:
        """The ``default`` entry as written (read-only; empty when absent)."""
        return self._view.get("default", _EMPTY)

    @property
    def layers(self) -> Mapping[str, Mapping[str, Any]]:
        """The ``layers`` (weight) entries as written, read-only."""
        return self._view.get("layers", _EMPTY)

    @property
    def attn_layer(self) -> Mapping[str, Mapping[str, Any]]:
        """The ``attn_layer`` (activation) entries as written, read-only."""
        return self._view.get("attn_layer", _EMPTY)

    @property
    def blocks(self) -> Mapping[int, Mapping[str, Mapping[str, Any]]]:
        """Per-block overrides as written: index → ``{"layers": ..., "attn_layer": ...}``, read-only."""
        return self._view.get("blocks", _EMPTY)

    @property
    def block_indices(self) -> tuple[int, ...]:
        """Indices of the blocks that have their own overrides, ascending."""
        return tuple(self.blocks)

    def point(self, name: str, block: int | None = None) -> PointConfig:
        """The resolved settings of point ``name`` (in block ``block``, or for any block without overrides)."""
        section_of(name)
        _check_block(block)
        return self._points.get((name, block)) or self._points[(name, None)]

    def module_type(self, name: str) -> str:
        """The observer ``module_type`` of point ``name``."""
        return module_type_of(name)

    def with_point(self, name: str, block: int | None = None, **params: Any) -> QuantConfig:
        """A new config with point ``name``'s entry updated by ``params`` (YAML keys), validated.

        ``block=None`` edits the ``layers``/``attn_layer`` entry; an index edits that block's
        override. A value of None removes the key from the entry, so it is inherited again.
        """
        section = section_of(name)
        _check_block(block)
        data = self.to_dict()
        if block is None:
            path: KeyPath = (section, name)
            entry = data.setdefault(section, {}).setdefault(name, {})
        else:
            path = ("blocks", block, section, name)
            entry = data.setdefault("blocks", {}).setdefault(block, {}).setdefault(section, {}).setdefault(name, {})
        _update(entry, params, path)
        return QuantConfig._build(data, Locator(), self._found, stacklevel=2)

    def with_default(self, **params: Any) -> QuantConfig:
        """A new config with the ``default`` entry updated by ``params`` (None removes a key), validated."""
        data = self.to_dict()
        _update(data.setdefault("default", {}), params, ("default",))
        return QuantConfig._build(data, Locator(), self._found, stacklevel=2)

    def to_dict(self) -> dict[str, Any]:
        """What the config sets, as plain nested dicts (a copy), in the order it is written out."""
        return copy.deepcopy(self._data)


def _update(entry: dict[str, Any], params: Mapping[str, Any], path: KeyPath) -> None:
    """Set (or, for None, remove) entry keys; unknown keys are an error naming ``path``."""
    keys = entry_keys()
    for key, value in params.items():
        if key not in keys:
            raise Locator().error(path + (key,), f"unknown key {key!r}; {valid_choices(keys, key)}")
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
