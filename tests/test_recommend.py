"""The recommended config: candidates, ranking, the greedy refinement and the commented YAML."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from explorer.analysis import ExplorerRun, evaluate_quantized, quantized_model, run_calibration
from explorer.analysis.recommend import (
    GUIDE_ALPHAS,
    Recommendation,
    candidate_points,
    config_of,
    ranked_candidates,
    recommend,
    shortlist,
)
from explorer.config import QuantConfig, load_config
from explorer.observers import observer_names


@pytest.fixture(scope="module")
def run(one_block: VisionTransformer, calib: list[Tensor]) -> ExplorerRun:
    return run_calibration(one_block, calib, QuantConfig(), alpha_floor=0.999)


@pytest.fixture(scope="module")
def eval_batches(test_split: tuple[Tensor, Tensor]) -> list[Tensor]:
    return list(test_split[0][:48].split(24))


@pytest.fixture(scope="module")
def recommendation(one_block: VisionTransformer, run: ExplorerRun, eval_batches: list[Tensor]) -> Recommendation:
    return recommend(one_block, run, eval_batches, bits=4)


def test_candidates_respect_floor_bits_and_sign(run: ExplorerRun) -> None:
    softmax = candidate_points(run, (0, "intSoft"), 4)  # non-negative data: unsigned allowed
    signed_data = candidate_points(run, (0, "attn_qkv_output"), 4)
    assert {p.observer_type for p in softmax} == set(observer_names())
    assert {p.bit_type.bits for p in softmax + signed_data} == {4}
    assert any(not p.bit_type.signed for p in softmax)
    assert all(p.bit_type.signed for p in signed_data)
    alphas = {p.percentile_alpha for p in softmax if p.observer_type == "PercentileObserver"}
    assert alphas == {a for a in GUIDE_ALPHAS if a >= 0.999}
    assert {p.calibration_mode for p in softmax} == {"layer_wise", "channel_wise"}
    assert not any(p.observer_type == "KLObserver" and p.symmetric is False for p in signed_data)
    assert {p.bit_type.bits for p in candidate_points(run, (0, "mlp_fc1"))} == {8}  # no bits: the config's


def test_log_grids_are_candidates_on_the_softmax_only(run: ExplorerRun) -> None:
    softmax = candidate_points(run, (0, "intSoft"), 4)
    grids = {p.quantizer for p in softmax}
    assert grids == {"uniform", "log2", "log_sqrt2"}
    assert all(not p.bit_type.signed and p.symmetric is None for p in softmax if p.quantizer != "uniform")
    assert {p.quantizer for p in candidate_points(run, (0, "attn_qkv_output"), 4)} == {"uniform"}
    assert {p.quantizer for p in candidate_points(run, (0, "attn_qkv"), 4)} == {"uniform"}  # a weight
    log = [c for c in ranked_candidates(run, (0, "intSoft"), 4) if c.point.quantizer == "log2"]
    assert log and all(np.isfinite(c.sqnr_db) for c in log)  # scored from the statistics on the log grid
    entry = config_of({(0, "intSoft"): log[0].point}).point("intSoft", 0)
    assert entry.quantizer == "log2"  # the exported config keeps the grid


def test_ranked_by_mse_and_shortlist_differs_in_observer(run: ExplorerRun) -> None:
    ranked = ranked_candidates(run, (0, "mlp_act"), 4)
    assert [c.mse for c in ranked] == sorted(c.mse for c in ranked)
    short = shortlist(ranked, 3)
    assert short[0] is ranked[0]
    assert len({c.point.observer_type for c in short}) == 3


def test_recommendation_scores_what_it_says(
    recommendation: Recommendation, one_block: VisionTransformer, run: ExplorerRun, eval_batches: list[Tensor]
) -> None:
    qvit = quantized_model(one_block, run, recommendation.config)
    report = evaluate_quantized(qvit, torch.cat(eval_batches))
    assert recommendation.score.sqnr_db == pytest.approx(report.logit_sqnr_db, abs=1e-3)
    assert recommendation.score.agreement == pytest.approx(report.agreement)
    assert all(recommendation.config.point(name, 0).bit_type.bits == 4 for _, name in run.points)


def test_refinement_never_loses_to_least_mse(recommendation: Recommendation) -> None:
    assert recommendation.score.sqnr_db >= recommendation.least_mse_score.sqnr_db


def test_yaml_loads_back_with_a_reason_per_point(recommendation: Recommendation, run: ExplorerRun) -> None:
    text = recommendation.yaml()
    assert load_config(text) == recommendation.config
    for block, name in run.points:
        lines = text.splitlines()
        index = lines.index(f"      {name}:")
        assert lines[index - 1].strip().startswith("# ") and "candidates" in lines[index - 1]
        assert recommendation.reasons[(block, name)] in lines[index - 1]
