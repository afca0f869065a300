"""Fixtures shared by the test modules: the embedded demo model and its data splits."""

from __future__ import annotations

import copy

import pytest
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

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


@pytest.fixture(scope="session")
def one_block(demo_model: VisionTransformer) -> VisionTransformer:
    """The demo model cut to its first block (shares its parameters): eight points, for analyses
    that run the model many times."""
    model = copy.copy(demo_model)
    model._modules = dict(demo_model._modules)
    model.blocks = nn.Sequential(demo_model.blocks[0])
    return model
