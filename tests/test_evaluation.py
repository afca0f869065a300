"""Tests for explorer.analysis.evaluation: FP32 vs quantized accuracy, agreement and logit SQNR."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from explorer import QuantViT, load_config
from explorer.analysis import AccuracyReport, calibrate_and_evaluate, evaluate_quantized
from explorer.config import ConfigWarning, QuantConfig

ROOT = Path(__file__).resolve().parents[1]


def config_with_bits(bits: int) -> QuantConfig:
    """The Percentile config (intSoft layer-wise) at ``bits`` everywhere."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        base = load_config(ROOT / "configs" / "quant_config_percentile.yaml")
    return base.with_default(bit_type={"bits": bits, "signed": True}).with_point(
        "intSoft", calibration_mode="layer_wise"
    )


@pytest.fixture(scope="module")
def qvits(demo_model: VisionTransformer, calib: list[Tensor]) -> dict[int, QuantViT]:
    """The demo model calibrated at 8 and at 4 bits."""
    runs = {}
    for bits in (8, 4):
        qvit = QuantViT(demo_model, config_with_bits(bits))
        qvit.calibrate(calib)
        qvit.compute_quant_params()
        runs[bits] = qvit
    return runs


@pytest.fixture(scope="module")
def reports(qvits: dict[int, QuantViT], test_split: tuple[Tensor, Tensor]) -> dict[int, AccuracyReport]:
    return {bits: evaluate_quantized(qvit, *test_split) for bits, qvit in qvits.items()}


def test_report_fields_on_the_demo(
    reports: dict[int, AccuracyReport], demo_model: VisionTransformer, test_split: tuple[Tensor, Tensor]
) -> None:
    images, labels = test_split
    with torch.no_grad():
        direct = 100.0 * float((demo_model(images).argmax(dim=1) == labels).double().mean())
    for report in reports.values():
        assert report.num_images == len(labels)
        assert report.fp32_top1 == pytest.approx(direct, abs=1e-9)
        assert report.fp32_top1 is not None and report.quant_top1 is not None
        assert 0.0 <= report.quant_top1 <= 100.0
        assert 0.0 <= report.agreement <= 1.0
        assert report.drop == pytest.approx(report.fp32_top1 - report.quant_top1)
        assert math.isfinite(report.logit_sqnr_db)


def test_quantized_top1_is_a_direct_computation(
    qvits: dict[int, QuantViT], reports: dict[int, AccuracyReport], test_split: tuple[Tensor, Tensor]
) -> None:
    images, labels = test_split
    qvit = qvits[8]
    qvit.mode = "quantized"
    with torch.no_grad():
        predictions = qvit(images).argmax(dim=1)
    qvit.mode = "fp32"
    with torch.no_grad():
        reference = qvit(images).argmax(dim=1)
    assert reports[8].quant_top1 == pytest.approx(100.0 * float((predictions == labels).double().mean()))
    assert reports[8].agreement == pytest.approx(float((predictions == reference).double().mean()))


def test_sqnr_larger_at_8_bits_than_at_4(reports: dict[int, AccuracyReport]) -> None:
    assert reports[8].logit_sqnr_db > reports[4].logit_sqnr_db + 6.0
    assert reports[8].agreement >= reports[4].agreement
    assert reports[8].agreement >= 0.9


@pytest.mark.parametrize("mode", ["fp32", "calibration", "quantized"])
def test_mode_is_restored(qvits: dict[int, QuantViT], test_split: tuple[Tensor, Tensor], mode: str) -> None:
    qvit = qvits[8]
    qvit.mode = mode
    evaluate_quantized(qvit, test_split[0][:16])
    assert qvit.mode == mode
    assert all(block.mode == mode for block in qvit.blocks)


def test_without_labels(
    qvits: dict[int, QuantViT], reports: dict[int, AccuracyReport], test_split: tuple[Tensor, Tensor]
) -> None:
    report = evaluate_quantized(qvits[8], test_split[0])
    assert report.fp32_top1 is None and report.quant_top1 is None and report.drop is None
    assert report.agreement == reports[8].agreement
    assert report.logit_sqnr_db == pytest.approx(reports[8].logit_sqnr_db)
    assert report.num_images == len(test_split[1])


def test_batching_and_list_inputs_give_the_same_report(
    qvits: dict[int, QuantViT], test_split: tuple[Tensor, Tensor]
) -> None:
    images, labels = test_split[0][:40], test_split[1][:40]
    whole = evaluate_quantized(qvits[4], images, labels)
    small = evaluate_quantized(qvits[4], images, labels, batch_size=7)
    as_batches = evaluate_quantized(qvits[4], list(images.split(16)), labels)
    as_images = evaluate_quantized(qvits[4], list(images.unbind(0)), labels)
    for other in (small, as_batches, as_images):
        assert other.num_images == 40
        assert other.fp32_top1 == whole.fp32_top1
        assert other.quant_top1 == whole.quant_top1
        assert other.agreement == whole.agreement
        assert other.logit_sqnr_db == pytest.approx(whole.logit_sqnr_db, rel=1e-6)


def test_16_bit_minmax_agrees_fully(demo_model: VisionTransformer, calib: list[Tensor]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        config = load_config({"default": {"observer_type": "MinmaxObserver", "bit_type": {"bits": 16, "signed": True}}})
    qvit = QuantViT(demo_model, config)
    qvit.calibrate(calib)
    qvit.compute_quant_params()
    report = evaluate_quantized(qvit, calib[1])  # seen in calibration: nothing clipped
    assert report.agreement == 1.0
    assert report.logit_sqnr_db > 60.0


def test_errors(demo_model: VisionTransformer, qvits: dict[int, QuantViT], test_split: tuple[Tensor, Tensor]) -> None:
    images, labels = test_split
    fresh = QuantViT(demo_model, config_with_bits(8))
    with pytest.raises(RuntimeError, match="compute_quant_params"):
        evaluate_quantized(fresh, images[:8])
    assert fresh.mode == "fp32"
    with pytest.raises(ValueError, match="labels"):
        evaluate_quantized(qvits[8], images[:8], labels[:7])
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_quantized(qvits[8], images[:8], batch_size=0)
    with pytest.raises(ValueError, match="no images"):
        evaluate_quantized(qvits[8], [])
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        evaluate_quantized(qvits[8], images[0, 0])
    with pytest.raises(TypeError, match="QuantViT"):
        evaluate_quantized(demo_model, images[:8])  # type: ignore[arg-type]


def test_calibrate_and_evaluate(
    demo_model: VisionTransformer,
    calib: list[Tensor],
    qvits: dict[int, QuantViT],
    test_split: tuple[Tensor, Tensor],
) -> None:
    images, labels = test_split[0][:64], test_split[1][:64]
    qvit, report = calibrate_and_evaluate(demo_model, config_with_bits(8), calib, images, labels)
    assert isinstance(qvit, QuantViT) and qvit.mode == "quantized"
    assert report == evaluate_quantized(qvits[8], images, labels)
    assert all(type(block).__name__ == "Block" for block in demo_model.blocks)
