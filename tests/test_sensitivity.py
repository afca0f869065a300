"""Sensitivity per point against direct computations on a QuantViT with points left in float by hand."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from explorer.analysis import ExplorerRun, quantized_model, run_calibration
from explorer.analysis.sensitivity import ModelScorer, sensitivity
from explorer.config import QuantConfig, load_config
from explorer.quant_ops import sqnr_db
from explorer.vit import QuantViT

CONFIG = "configs/quant_config_omse.yaml"


@pytest.fixture(scope="module")
def run(demo_model: VisionTransformer, calib: list[Tensor]) -> ExplorerRun:
    with pytest.warns():
        config = load_config(CONFIG)
    return run_calibration(demo_model, calib, config)


@pytest.fixture(scope="module")
def eval_batches(test_split: tuple[Tensor, Tensor]) -> list[Tensor]:
    images, _ = test_split
    return list(images[:48].split(24))


@pytest.fixture(scope="module")
def table(demo_model: VisionTransformer, run: ExplorerRun, eval_batches: list[Tensor]) -> pd.DataFrame:
    return sensitivity(demo_model, run, run.config, eval_batches)


def _direct(qvit: QuantViT, model: VisionTransformer, images: Tensor, float_points: set[tuple[int, str]]) -> tuple:
    """SQNR and agreement of the whole model run in quantized mode with ``float_points`` in float."""
    for index, block in enumerate(qvit.blocks):
        block.float_points = {p for p in block.observers if (index, p) in float_points}
    qvit.mode = "quantized"
    with torch.no_grad():
        reference, logits = model(images), qvit(images)
    return sqnr_db(reference, logits), float((reference.argmax(1) == logits.argmax(1)).double().mean())


def test_one_row_per_point(table: pd.DataFrame, run: ExplorerRun) -> None:
    assert list(table.columns) == [
        "block",
        "point",
        "only_sqnr_db",
        "only_agreement",
        "all_but_sqnr_db",
        "all_but_agreement",
    ]
    assert list(zip(table["block"], table["point"], strict=True)) == run.points


def test_rows_match_direct_computation(
    table: pd.DataFrame, demo_model: VisionTransformer, run: ExplorerRun, eval_batches: list[Tensor]
) -> None:
    # every point; float rounding differs (timm's fused attention in blocks with nothing quantized, one
    # batch here), and it weighs more the higher the SQNR, hence a relative tolerance
    qvit = quantized_model(demo_model, run, run.config)
    images = torch.cat(eval_batches)
    for row, key in zip(table.itertuples(), run.points, strict=True):
        only = _direct(qvit, demo_model, images, set(run.points) - {key})
        all_but = _direct(qvit, demo_model, images, {key})
        assert row.only_sqnr_db == pytest.approx(only[0], rel=1e-4), key
        assert row.only_agreement == pytest.approx(only[1]), key
        assert row.all_but_sqnr_db == pytest.approx(all_but[0], rel=1e-4), key
        assert row.all_but_agreement == pytest.approx(all_but[1]), key


def test_all_float_is_fp32(demo_model: VisionTransformer, run: ExplorerRun, eval_batches: list[Tensor]) -> None:
    scorer = ModelScorer(quantized_model(demo_model, run, run.config), eval_batches)
    scorer.set_float(run.points)
    score = scorer.score()
    assert score.sqnr_db == float("inf") and score.agreement == 1.0


def test_unknown_float_point_is_an_error(demo_model: VisionTransformer) -> None:
    with pytest.raises(KeyError, match="not points"):
        QuantViT(demo_model, QuantConfig()).keep_float([(9, "mlp_act")])
