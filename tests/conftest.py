"""Fixtures shared by the test modules: the embedded demo model and its data splits."""

from __future__ import annotations

import pytest
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from explorer.data import demo_batches, demo_split, load_demo_model


@pytest.fixture(scope="session")
def demo_model() -> VisionTransformer:
    """The embedded demo ViT (eval mode); tests must not modify it."""
    model = load_demo_model()
    assert isinstance(model, VisionTransformer)
    return model


@pytest.fixture(scope="session")
def calib() -> list[Tensor]:
    """Two small calibration batches from the demo train split."""
    return demo_batches("train", 32, 2)


@pytest.fixture(scope="session")
def test_split() -> tuple[Tensor, Tensor]:
    """The demo test split: normalised images and labels."""
    return demo_split("test")
