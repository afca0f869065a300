"""Errors and warnings raised while reading a quantization config, with where they happened."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

_T = TypeVar("_T")
KeyPath = tuple[Hashable, ...]
"""Keys from the top of the document down to one value, e.g. ``("attn_layer", "intSoft", "kl_bins")``."""
Findings = list[tuple[KeyPath, str]]
"""Warnings found while checking a config, each as (key path it is about, why), located only when issued."""


def format_path(path: KeyPath) -> str:
    """``("attn_layer", "intSoft")`` → ``"attn_layer.intSoft"`` (the form used in every message)."""
    return ".".join(str(key) for key in path)


def valid_choices(valid: Iterable[object], got: object | None = None) -> str:
    """``"valid: a, b, c"``, plus a "did you mean" hint when ``got`` is close to one of them."""
    names = [str(v) for v in valid]
    text = f"valid: {', '.join(names)}"
    if isinstance(got, str):
        close = difflib.get_close_matches(got, names, n=1, cutoff=0.6)
        if not close:
            close = [name for name in names if name.lower() == got.lower()]
        if close:
            text += f" (did you mean {close[0]!r}?)"
    return text


class ConfigError(ValueError):
    """An invalid config: the message names the key path, the line when known, and what is valid.

    A config with several problems raises one ConfigError listing them all (``problems``, in line
    order); ``detail``, ``path`` and ``line`` are then those of the first.
    """

    def __init__(
        self, detail: str, *, path: str | None = None, line: int | None = None, source: str | None = None
    ) -> None:
        self.detail = detail
        self.path = path
        self.line = line
        self.source = source
        self.problems: tuple[ConfigError, ...] = (self,)
        super().__init__(_locate(detail, path, line, source))

    @classmethod
    def combine(cls, errors: Sequence[ConfigError]) -> ConfigError:
        """One error reporting every problem of ``errors`` (itself when there is only one)."""
        unique = {str(problem): problem for error in errors for problem in error.problems}
        problems = sorted(unique.values(), key=lambda problem: (problem.line is None, problem.line or 0))
        if len(problems) == 1:
            return problems[0]
        first = problems[0]
        combined = cls(first.detail, path=first.path, line=first.line, source=first.source)
        combined.problems = tuple(problems)
        combined.args = (f"{len(problems)} problems:\n" + "\n".join(f"- {problem}" for problem in problems),)
        return combined


class Problems:
    """Collects the :class:`ConfigError` of each check, so that one pass reports every problem at once."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def attempt(self, check: Callable[[], _T]) -> _T | None:
        """``check()``, or None with its error recorded."""
        try:
            return check()
        except ConfigError as exc:
            self.errors.append(exc)
            return None

    def raise_any(self) -> None:
        """Raise one :class:`ConfigError` for everything recorded, if anything was."""
        if self.errors:
            raise ConfigError.combine(self.errors)


class ConfigWarning(UserWarning):
    """A config that loads but is probably not what was meant (e.g. the guide's common mistakes)."""


def _locate(detail: str, path: str | None, line: int | None, source: str | None) -> str:
    """``"file.yaml, line 7: attn_layer.intSoft: detail"`` with whatever parts are known."""
    where = ", ".join(part for part in (source, None if line is None else f"line {line}") if part)
    return ": ".join(part for part in (where, path, detail) if part)


@dataclass(frozen=True)
class Locator:
    """Turns a key path into a located :class:`ConfigError` or warning text.

    ``lines`` maps key paths to the 1-based line of the key in the YAML source (empty for
    configs built from Python data); a path without its own line reports its nearest ancestor's.
    """

    lines: Mapping[KeyPath, int] = field(default_factory=dict)
    source: str | None = None

    def line(self, path: KeyPath) -> int | None:
        """Line of ``path``'s key, or of the closest enclosing key that has one."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def error(self, path: KeyPath, detail: str) -> ConfigError:
        """A :class:`ConfigError` about the value at ``path``."""
        return ConfigError(detail, path=format_path(path) or None, line=self.line(path), source=self.source)

    def message(self, path: KeyPath, detail: str) -> str:
        """Warning text about the value at ``path``, located like an error."""
        return _locate(detail, format_path(path) or None, self.line(path), self.source)
