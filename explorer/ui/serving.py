"""Which server paths the page may read: any (local use), none, or only those under allowed folders.

By default the app is for its own user (``.streamlit/config.toml`` listens on localhost only),
and any local path can be typed. When the page is served to others, typed paths would let them
probe the server's disk, so two environment variables restrict them:

- ``OBSERVER_EXPLORER_SERVE=1``: no server paths at all; only uploads and the demo.
- ``OBSERVER_EXPLORER_DATA_ROOTS=/a:/b``: only paths inside these folders (symlinks resolved).

A refused path gets the same message whether or not it exists, so the answer reveals nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SERVE_ENV = "OBSERVER_EXPLORER_SERVE"
ROOTS_ENV = "OBSERVER_EXPLORER_DATA_ROOTS"
PATHS_DISABLED = f"server paths are disabled while the app is served to others ({SERVE_ENV}); upload the file instead"
_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class PathPolicy:
    """``roots`` None: any path (local use); empty: no paths; else only paths inside these resolved folders."""

    roots: tuple[Path, ...] | None = None

    @property
    def allows_paths(self) -> bool:
        """Whether any server path may be typed at all."""
        return self.roots is None or bool(self.roots)

    def _inside(self, path: Path) -> bool:
        return any(path == root or root in path.parents for root in self.roots or ())

    def resolve(self, text: str, error: type[Exception]) -> Path:
        """The path typed as ``text`` when this policy allows it; else ``error`` with one message for
        every refused path, missing or forbidden alike.

        The path is checked lexically first (nothing outside the roots is touched on disk), then
        again with symlinks resolved, so a link inside a root cannot lead out of it.
        """
        if self.roots is None:
            return Path(text)
        if not self.roots:
            raise error(PATHS_DISABLED)
        lexical = Path(os.path.abspath(text))
        if self._inside(lexical):
            real = Path(os.path.realpath(lexical))
            if self._inside(real) and real.exists():
                return real
        allowed = ", ".join(str(root) for root in self.roots)
        raise error(f"{text}: no such file or folder in the allowed data folders ({allowed})")


def path_policy(environ: Mapping[str, str] = os.environ) -> PathPolicy:
    """The policy the environment asks for (read on every use, so a restart is not needed to test it)."""
    roots = tuple(Path(os.path.realpath(r)) for r in environ.get(ROOTS_ENV, "").split(os.pathsep) if r.strip())
    if roots:
        return PathPolicy(roots)
    if environ.get(SERVE_ENV, "").strip().lower() in _TRUE:
        return PathPolicy(())
    return PathPolicy(None)
