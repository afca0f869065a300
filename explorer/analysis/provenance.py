"""Where a calibration run came from: the model and the data, as a saved run file records them.

A run file is explored far from where it was calibrated; these records say what to load to
evaluate it there (the model) and describe what it saw (the data), as plain JSON-able values.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

MODEL_KINDS = ("demo", "timm", "checkpoint")
DATA_KINDS = ("demo", "folder", "upload", "tensor")


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _from_dict(cls: type, data: Any, kinds: tuple[str, ...]) -> Any:
    """``cls(**data)`` for a dict of exactly ``cls``'s fields with their types; ValueError otherwise."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be a mapping, got {type(data).__name__}")
    names = {f.name: f for f in fields(cls)}
    if set(data) != set(names):
        raise ValueError(f"{cls.__name__} needs the keys {', '.join(sorted(names))}, got {', '.join(sorted(data))}")
    for name, value in data.items():
        default = getattr(cls, name, "")
        if type(value) is not type(default):
            raise ValueError(f"{cls.__name__}.{name} must be a {type(default).__name__}, got {value!r}")
    if data["kind"] not in kinds:
        raise ValueError(f"{cls.__name__}.kind must be one of {', '.join(kinds)}, got {data['kind']!r}")
    return cls(**data)


@dataclass(frozen=True)
class ModelIdentity:
    """The calibrated model: the demo, a timm name, or a checkpoint (its path, architecture and SHA-256)."""

    kind: str = "demo"
    name: str = ""  # timm name, or the checkpoint's architecture ("demo" or a timm name)
    pretrained: bool = False
    path: str = ""
    sha256: str = ""
    outlier_channels: bool = False  # demo only

    def describe(self) -> str:
        """A short human description, e.g. ``"timm vit_base_patch16_224 (random init)"``."""
        if self.kind == "timm":
            return f"timm {self.name}" + (" (pretrained)" if self.pretrained else " (random init)")
        if self.kind == "checkpoint":
            return f"checkpoint {self.path} ({self.name}, sha256 {self.sha256[:12]}…)"
        return "demo ViT (digits, outlier channels)" if self.outlier_channels else "demo ViT (digits)"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelIdentity:
        """The identity ``as_dict`` wrote; ValueError when a key is missing, extra or of the wrong type."""
        return _from_dict(cls, data, MODEL_KINDS)


@dataclass(frozen=True)
class DataIdentity:
    """The calibration data: its kind (as the app's sources name them), path when it had one, and a description."""

    kind: str = "demo"
    path: str = ""
    description: str = "demo digits (train split)"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> DataIdentity:
        """The identity ``as_dict`` wrote; ValueError when a key is missing, extra or of the wrong type."""
        return _from_dict(cls, data, DATA_KINDS)


@dataclass(frozen=True)
class RunSource:
    """Model, data and batch size of a calibration run."""

    model: ModelIdentity
    data: DataIdentity
    batch_size: int
