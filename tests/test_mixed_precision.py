"""Mixed precision and convergence against direct computations on the (one-block) demo model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from explorer.analysis import ExplorerRun, evaluate_quantized, observer_for, quantized_model, run_calibration
from explorer.analysis.convergence import CONVERGENCE_OBSERVERS, convergence
from explorer.analysis.mixed_precision import (
    MixedPrecision,
    _greedy_walk,
    average_bits,
    point_elements,
    search_mixed_precision,
    with_bits,
)
from explorer.config import ALL_POINTS, QuantConfig
from explorer.vit import QuantViT


@pytest.fixture(scope="module")
def run(one_block: VisionTransformer, calib: list[Tensor]) -> ExplorerRun:
    return run_calibration(one_block, calib, QuantConfig())


@pytest.fixture(scope="module")
def eval_batches(test_split: tuple[Tensor, Tensor]) -> list[Tensor]:
    return list(test_split[0][:48].split(24))


@pytest.fixture(scope="module")
def result(one_block: VisionTransformer, run: ExplorerRun, eval_batches: list[Tensor]) -> MixedPrecision:
    return search_mixed_precision(one_block, run, run.config, eval_batches, 6.0, choices=(4, 8))


def test_with_bits_sets_every_point_and_keeps_sign() -> None:
    config = QuantConfig(
        {"default": {"bit_type": "uint8"}, "blocks": {1: {"layers": {"mlp_fc1": {"bit_type": "int8"}}}}}
    )
    four = with_bits(config, 4)
    assert all(four.point(name, block).bit_type.bits == 4 for name in ALL_POINTS for block in (0, 1))
    assert not four.point("mlp_act", 0).bit_type.signed and four.point("mlp_fc1", 1).bit_type.signed


def test_point_elements(one_block: VisionTransformer, eval_batches: list[Tensor]) -> None:
    elements = point_elements(QuantViT(one_block, QuantConfig()), eval_batches[0])
    block = one_block.blocks[0]
    tokens = one_block.patch_embed.num_patches + one_block.num_prefix_tokens
    assert elements[0, "mlp_fc1"] == block.mlp.fc1.weight.numel()
    assert elements[0, "mlp_act"] == tokens * block.mlp.fc1.out_features
    assert elements[0, "intSoft"] == block.attn.num_heads * tokens * tokens


def test_greedy_walk_lowers_cheapest_first() -> None:
    noise = {(0, "a"): {4: 1.0, 8: 0.0}, (0, "b"): {4: 0.1, 8: 0.0}}
    walk = _greedy_walk(noise, {(0, "a"): 1, (0, "b"): 1}, (4, 8))
    assert walk == [{(0, "a"): 8, (0, "b"): 8}, {(0, "a"): 8, (0, "b"): 4}, {(0, "a"): 4, (0, "b"): 4}]


def test_mixed_precision_within_budget_and_scored_right(
    result: MixedPrecision, one_block: VisionTransformer, run: ExplorerRun, eval_batches: list[Tensor]
) -> None:
    elements = point_elements(QuantViT(one_block, run.config), eval_batches[0])
    assert average_bits(result.bits, elements) <= 6.0
    for (block, name), bits in result.bits.items():
        assert result.config.point(name, block).bit_type.bits == bits
    chosen = result.tried[result.tried["chosen"]].iloc[0]
    report = evaluate_quantized(quantized_model(one_block, run, result.config), torch.cat(eval_batches))
    assert chosen["sqnr_db"] == pytest.approx(report.logit_sqnr_db, abs=1e-3)
    uniform4 = result.tried[result.tried["label"] == "uniform 4-bit"].iloc[0]
    assert chosen["sqnr_db"] >= uniform4["sqnr_db"]


def test_convergence_ends_at_the_fitted_clip_range(run: ExplorerRun) -> None:
    key = (0, "mlp_act")
    table = convergence(run, key)
    assert set(table["observer_type"]) == set(CONVERGENCE_OBSERVERS)
    for observer_type, rows in table.groupby("observer_type"):
        assert list(rows["batches"]) == list(range(1, run.batches + 1))
        observer = observer_for(run, key, run.point_config(str(observer_type), key))
        assert rows["clip_min"].iloc[-1] == pytest.approx(float(observer.clip_min.min()), rel=1e-6)
        assert rows["clip_max"].iloc[-1] == pytest.approx(float(observer.clip_max.max()), rel=1e-6)
    minmax = table[table["observer_type"] == "MinmaxObserver"]
    assert minmax["clip_max"].is_monotonic_increasing and minmax["clip_min"].is_monotonic_decreasing


def test_convergence_below_the_floor_is_an_error(run: ExplorerRun) -> None:
    low = dataclasses.replace(run, config=QuantConfig({"default": {"percentile_alpha": 0.99}}))
    with pytest.raises(ValueError, match="alpha_floor"):
        convergence(low, (0, "mlp_act"))
