"""Every ```python block of README.md runs as written, from the repository root, without config warnings."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from explorer.config import ConfigWarning
from explorer.observers import registry

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S | re.M)


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # a block may register an observer
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
