"""Reading configs from YAML (refusing duplicate keys, remembering lines) and writing them back."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from explorer.config.errors import ConfigError, KeyPath, Locator, format_path
from explorer.config.quant_config import QuantConfig

ConfigSource = QuantConfig | Mapping[str, Any] | str | os.PathLike[str]
"""What :func:`load_config` accepts."""

_MERGE_TAG = "tag:yaml.org,2002:merge"
_YAML_SUFFIXES = (".yaml", ".yml")


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys and records the line of every key.

    Plain ``yaml.safe_load`` silently keeps the last of two equal keys, which drops whole
    sections of a config (the guide's own recommended config repeats ``layers:``).
    """

    def __init__(self, stream: str, source: str | None) -> None:
        super().__init__(stream)
        self.source = source
        self.key_lines: dict[KeyPath, int] = {}
        self._open: set[int] = set()

    def construct_document(self, node: Node) -> Any:
        """Record the line of every key by its path (refusing duplicates, path named), then build the data."""
        self._index(node, ())
        return super().construct_document(node)

    def _check_keys(self, node: MappingNode, path: KeyPath) -> list[tuple[Any, Node, int]]:
        """The explicit ``(key, value node, line)`` of a mapping node; a repeated key is a :class:`ConfigError`.

        Keys brought in by a YAML merge (``<<: *anchor``) may be overridden and are not compared.
        """
        seen: dict[Any, int] = {}
        pairs = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:
                raise ConfigError("a mapping key must be a plain value", line=line, source=self.source) from None
            if first is not None:
                raise ConfigError(
                    f"duplicate key {key!r} (lines {first} and {line}); YAML keeps only the last one, "
                    "silently dropping the first: merge them into one",
                    path=format_path(path + (key,)),
                    line=line,
                    source=self.source,
                )
            seen[key] = line
            pairs.append((key, value_node, line))
        return pairs

    def _index(self, node: Node, path: KeyPath) -> None:
        """Walk the node tree below ``path``, recording key lines (an alias loop is walked once)."""
        if id(node) in self._open:
            return
        self._open.add(id(node))
        if isinstance(node, MappingNode):
            for key, value_node, line in self._check_keys(node, path):
                self.key_lines[path + (key,)] = line
                self._index(value_node, path + (key,))
        elif isinstance(node, SequenceNode):
            for position, item in enumerate(node.value):
                self._index(item, path + (position,))
        self._open.discard(id(node))


def _parse(text: str, source: str | None) -> tuple[Any, Locator]:
    """The data of a YAML document and a locator for its keys; YAML errors become :class:`ConfigError`."""
    loader = _StrictLoader(text, source)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = ": ".join(filter(None, (getattr(exc, "context", None), getattr(exc, "problem", None)))) or str(exc)
        raise ConfigError(
            f"invalid YAML: {problem}", line=None if mark is None else mark.line + 1, source=source
        ) from None
    finally:
        loader.dispose()
    return data, Locator(loader.key_lines, source)


def _from_text(text: str, source: str | None) -> QuantConfig:
    """A validated config from YAML text; errors and warnings cite ``source`` and lines."""
    data, loc = _parse(text, source)
    return QuantConfig._build(data, loc, (), stacklevel=3)


def _existing_file(text: str) -> Path | None:
    """``text`` as a path when it names an existing file (YAML text never does)."""
    if "\n" in text or not text.strip():
        return None
    try:
        path = Path(text)
        return path if path.is_file() else None
    except (OSError, ValueError):
        return None


def load_config(source: ConfigSource) -> QuantConfig:
    """A validated :class:`QuantConfig` from a file path, YAML text, plain data, or a config (returned as is).

    A ``str`` is read as a path when it names an existing file, and as YAML text otherwise;
    a single-line ``str`` ending in ``.yaml``/``.yml`` that names no file is a FileNotFoundError.
    Problems raise :class:`ConfigError` (with the file, line and key path) and warn with
    :class:`ConfigWarning`.
    """
    if isinstance(source, QuantConfig):
        return source
    if isinstance(source, Mapping):
        return QuantConfig._build(source, Locator(), (), stacklevel=2)
    if isinstance(source, os.PathLike):
        path = Path(source)
        return _from_text(path.read_text(encoding="utf-8-sig"), str(path))
    if isinstance(source, str):
        path_or_none = _existing_file(source)
        if path_or_none is not None:
            return _from_text(path_or_none.read_text(encoding="utf-8-sig"), source)
        if "\n" not in source.strip() and source.strip().lower().endswith(_YAML_SUFFIXES):
            raise FileNotFoundError(errno.ENOENT, "config file not found", source)
        return _from_text(source, None)
    raise TypeError(f"load_config() takes a path, YAML text, a mapping or a QuantConfig, not {type(source).__name__}")


class _FlowMapping(dict):  # type: ignore[type-arg]
    """A mapping written on one line (``{bits: 8, signed: true, name: int8}``)."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes :class:`_FlowMapping` in flow style and keeps key order."""


_Dumper.add_representer(
    _FlowMapping, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)
)


def _for_dump(value: Any, key: object = None) -> Any:
    """Plain config data with each ``bit_type`` marked to be written on one line."""
    if isinstance(value, dict):
        items = {k: _for_dump(v, k) for k, v in value.items()}
        return _FlowMapping(items) if key == "bit_type" else items
    return value


def dump_config(config: QuantConfig) -> str:
    """``config`` as YAML text (keys in the order default, layers, attn_layer, blocks) that loads back equal."""
    return yaml.dump(
        _for_dump(config.to_dict()), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
