"""The embedded demo data set: scikit-learn's bundled handwritten digits.

The digits are 8x8 grey images (values 0-16) that ship inside scikit-learn, so the
demo works offline. They are scaled to [0, 1], upsampled bilinearly to 16x16 and
replicated to 3 channels, because timm ViTs and the rest of the explorer (image
folders, uploads) work with RGB input. The split is stratified with a fixed seed:
calibration uses the train split, accuracy the test split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

from explorer.data.calibration import batched

Split = Literal["train", "test"]

SAMPLE_DATA_DIR = Path(__file__).resolve().parents[2] / "sample_data"
DEMO_WEIGHTS = SAMPLE_DATA_DIR / "demo_vit.safetensors"
DEMO_SPEC = SAMPLE_DATA_DIR / "demo_vit.json"

DEMO_IMAGE_SIZE = 16
DEMO_SPLIT_SEED = 0
DEMO_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DemoSpec:
    """What the demo json records: ViT constructor kwargs, input size and normalisation."""

    model_kwargs: dict[str, Any]
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]


def load_demo_spec(path: Path = DEMO_SPEC) -> DemoSpec:
    """Read the demo json; a missing key or malformed value raises ``ValueError`` naming the file."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return DemoSpec(
            model_kwargs=dict(raw["model_kwargs"]),
            input_size=_int_triple(raw["input_size"]),
            mean=tuple(float(v) for v in raw["mean"]),
            std=tuple(float(v) for v in raw["std"]),
            class_names=tuple(str(v) for v in raw["class_names"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed demo model description ({type(exc).__name__}: {exc})") from exc


def _int_triple(value: Any) -> tuple[int, int, int]:
    """Parse a ``[C, H, W]`` list."""
    c, h, w = (int(v) for v in value)
    return c, h, w


@lru_cache(maxsize=1)
def _digits_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load the digits once and split them (stratified, fixed seed)."""
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images,
        digits.target,
        test_size=DEMO_TEST_FRACTION,
        stratify=digits.target,
        random_state=DEMO_SPLIT_SEED,
    )
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


def demo_split_size(split: Split) -> int:
    """How many digits ``split`` holds (without preparing them)."""
    return len(_digits_split()[split][1])


def demo_images(split: Split) -> tuple[Tensor, Tensor]:
    """Un-normalised images ``[N, 3, 16, 16]`` in [0, 1] and int64 labels ``[N]`` of one split."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = _digits_split()[split]
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE), mode="bilinear", align_corners=False)
    return x.expand(-1, 3, -1, -1).contiguous(), torch.tensor(labels, dtype=torch.int64)


def normalize(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Apply per-channel ``(x - mean) / std`` to ``[N, C, H, W]`` images."""
    m = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - m) / s


def demo_split(split: Split) -> tuple[Tensor, Tensor]:
    """Model-ready images (normalised with the demo json's mean/std) and labels of one split."""
    spec = load_demo_spec()
    images, labels = demo_images(split)
    return normalize(images, spec.mean, spec.std), labels


def demo_batches(split: Split, batch_size: int, num_batches: int | None = None) -> list[Tensor]:
    """Model-ready image batches of one split, in split order (see ``batched``)."""
    return batched(demo_split(split)[0], batch_size, num_batches)
