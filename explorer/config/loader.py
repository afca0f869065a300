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
from explorer.limits import CONFIG_MAX_BYTES, CONFIG_MAX_DEPTH, CONFIG_MAX_NODES, over_limit

ConfigSource = QuantConfig | Mapping[str, Any] | str | os.PathLike[str]
"""What :func:`load_config` accepts."""

_MERGE_TAG = "tag:yaml.org,2002:merge"
_YAML_SUFFIXES = (".yaml", ".yml")


def _children(node: Node) -> list[Node]:
    """The nodes directly below ``node`` (for a mapping: each key, then its value)."""
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys and records the line of every key.

    Plain ``yaml.safe_load`` silently keeps the last of two equal keys, which drops whole
    sections of a config (the guide's own recommended config repeats ``layers:``). It also
    bounds the document before building it: nesting depth while composing, and the node count
    with every alias expanded (an alias bomb of a few hundred bytes expands to billions).
    """

    def __init__(self, stream: str, source: str | None) -> None:
        super().__init__(stream)
        self.source = source
        self.key_lines: dict[KeyPath, int] = {}
        self._depth = 0
        self._composed = 0

    def compose_node(self, parent: Node | None, index: object) -> Node:
        """Compose one node, refusing nesting deeper than :data:`CONFIG_MAX_DEPTH` (before Python's recursion
        limit) and more than :data:`CONFIG_MAX_NODES` nodes (before composing them all costs seconds)."""
        self._depth += 1
        self._composed += 1
        try:
            if self._depth > CONFIG_MAX_DEPTH:
                self._refuse("the nesting depth", self._depth, CONFIG_MAX_DEPTH, "CONFIG_MAX_DEPTH")
            if self._composed > CONFIG_MAX_NODES:
                self._refuse(
                    "the number of YAML nodes read so far", self._composed, CONFIG_MAX_NODES, "CONFIG_MAX_NODES"
                )
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1

    def _refuse(self, what: str, value: int, limit: int, name: str) -> None:
        """Raise the :class:`ConfigError` of a bound exceeded at the node being composed."""
        line = self.peek_event().start_mark.line + 1
        raise ConfigError(over_limit(what, value, limit, name), line=line, source=self.source)

    def construct_document(self, node: Node) -> Any:
        """Check the expanded size, record the line of every key by its path (refusing duplicates), then build."""
        self._check_expanded_size(node)
        self._index(node, ())
        return super().construct_document(node)

    def _check_expanded_size(self, root: Node) -> None:
        """Refuse a document whose alias-expanded node count exceeds :data:`CONFIG_MAX_NODES`, or a recursive alias.

        Each distinct node is visited once and its expanded size memoised, so the count costs
        time linear in the text however far the aliases expand.
        """
        sizes: dict[int, int] = {}
        on_path: set[int] = set()
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            node, finished = stack.pop()
            if finished:
                on_path.discard(id(node))
                sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
            elif id(node) in on_path:
                raise ConfigError(
                    "a YAML alias refers to a node that contains it (a recursive structure); "
                    "valid: aliases to separate, non-enclosing anchors",
                    line=node.start_mark.line + 1,
                    source=self.source,
                )
            elif id(node) not in sizes:
                on_path.add(id(node))
                stack.append((node, True))
                stack.extend((child, False) for child in _children(node))
        if sizes[id(root)] > CONFIG_MAX_NODES:
            what = "the number of YAML nodes with every alias expanded"
            detail = over_limit(what, sizes[id(root)], CONFIG_MAX_NODES, "CONFIG_MAX_NODES")
            raise ConfigError(detail, source=self.source)

    def _check_keys(self, node: MappingNode, path: KeyPath) -> list[tuple[Any, Node, int]]:
        """The explicit ``(key, value node, line)`` of a mapping node; a repeated key is a :class:`ConfigError`.

        Keys brought in by a YAML merge (``<<: *anchor``) may be overridden and are not compared;
        a second merge key in one mapping is refused like any repeated key.
        """
        seen: dict[Any, int] = {}
        pairs = []
        merge_line: int | None = None
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                if merge_line is not None:
                    raise ConfigError(
                        f"duplicate merge key '<<' (lines {merge_line} and {line}); "
                        "valid: one merge key listing every anchor, e.g. <<: [*a, *b]",
                        path=format_path(path) or None,
                        line=line,
                        source=self.source,
                    )
                merge_line = line
                continue
            key = self.construct_object(key_node, deep=True)
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
        """Walk the node tree below ``path``, recording key lines (bounded by the expanded-size check)."""
        if isinstance(node, MappingNode):
            for key, value_node, line in self._check_keys(node, path):
                self.key_lines[path + (key,)] = line
                self._index(value_node, path + (key,))
        elif isinstance(node, SequenceNode):
            for position, item in enumerate(node.value):
                self._index(item, path + (position,))


def _check_size(size: int, source: str | None) -> None:
    """Refuse config text above :data:`CONFIG_MAX_BYTES` before parsing it."""
    if size > CONFIG_MAX_BYTES:
        detail = over_limit("the config size", size, CONFIG_MAX_BYTES, "CONFIG_MAX_BYTES", " bytes")
        raise ConfigError(detail, source=source)


def _text_size(text: str) -> int:
    """UTF-8 size of ``text``; huge text is measured by its length alone (a lower bound), without encoding it."""
    return len(text) if len(text) > CONFIG_MAX_BYTES else len(text.encode("utf-8", "surrogatepass"))


def _yaml_error(exc: yaml.YAMLError, text: str, source: str | None) -> ConfigError:
    """A :class:`ConfigError` with the problem and line of a PyYAML error."""
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: the reader knows only the position
        return ConfigError(
            f"invalid YAML: character #x{exc.character:04x} at position {exc.position}: {exc.reason}",
            line=text.count("\n", 0, exc.position) + 1,
            source=source,
        )
    mark = getattr(exc, "problem_mark", None)
    problem = ": ".join(filter(None, (getattr(exc, "context", None), getattr(exc, "problem", None)))) or str(exc)
    return ConfigError(f"invalid YAML: {problem}", line=None if mark is None else mark.line + 1, source=source)


def _parse(text: str, source: str | None) -> tuple[Any, Locator]:
    """The data of a YAML document and a locator for its keys; YAML errors become :class:`ConfigError`."""
    _check_size(_text_size(text), source)
    try:
        loader = _StrictLoader(text, source)  # the reader already refuses control characters here
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, source) from None
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, source) from None
    finally:
        loader.dispose()
    return data, Locator(loader.key_lines, source)


def _from_text(text: str, source: str | None) -> QuantConfig:
    """A validated config from YAML text; errors and warnings cite ``source`` and lines."""
    data, loc = _parse(text, source)
    return QuantConfig._build(data, loc, (), stacklevel=3)


def _from_file(path: Path, source: str) -> QuantConfig:
    """A validated config from the YAML file ``path``, its size checked before it is read."""
    _check_size(path.stat().st_size, source)
    return _from_text(path.read_text(encoding="utf-8-sig"), source)


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
        return _from_file(Path(source), str(source))
    if isinstance(source, str):
        path_or_none = _existing_file(source)
        if path_or_none is not None:
            return _from_file(path_or_none, source)
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
