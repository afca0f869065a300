"""The CUDA path against the CPU: statistics built on a GPU, observers fitted there, the analyses on
GPU statistics, the guide's QuantViT and the command line on ``--device cuda`` give what the CPU
gives. Skipped without CUDA.

``EXPLORER_TEST_DEVICE=cpu`` runs the same tests CPU against CPU, which checks the tests themselves
on a machine without a GPU.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from explorer.analysis import ExplorerRun, error_table, run_calibration
from explorer.analysis.explore import (
    as_observer_type,
    distribution_facts,
    histogram,
    log2_histogram,
    summarize,
)
from explorer.cli import main
from explorer.config import PointConfig, load_config
from explorer.observers import build_observer, observer_names
from explorer.stats import PointStats
from explorer.vit import QuantViT

DEVICE = os.environ.get("EXPLORER_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs CUDA (or EXPLORER_TEST_DEVICE=cpu)"
)
CONFIG = "configs/recommended_config.yaml"


@pytest.fixture(autouse=True)
def _full_precision_matmul() -> None:
    """TF32 would round the GPU's float forward to 10 mantissa bits; the CPU keeps 23."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _batches(module_type: str, seed: int, large: bool = False) -> list[Tensor]:
    """Three heavy-tailed batches with two outlier channels; the middle one in float16. Small ones
    keep their raw values in the statistics; ``large`` ones are too many (histograms and tails only)."""
    g = torch.Generator().manual_seed(seed)
    if module_type == "linear_weight":
        shape = (768, 384) if large else (96, 64)
    else:
        shape = (8, 197, 64) if large else (4, 50, 64)
    out = []
    for i, s in enumerate((1.0, 1.7, 0.6)):
        u = torch.rand(*shape, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12) - 0.5
        x = (-torch.sign(u) * torch.log1p(-2 * u.abs())).float() * s
        if module_type == "linear_weight":
            x[[3, 40]] *= 12.0  # output channels are rows
        else:
            x[..., [3, 40]] *= 12.0
        out.append(x.half() if i == 1 else x)
    return out


def _stats(module_type: str, batches: list[Tensor], device: str) -> PointStats:
    stats = PointStats(module_type)
    for b in batches:
        stats.update(b.to(device))
    return stats


def _states_match(cpu: PointStats, dev: PointStats) -> None:
    """Counts, extremes and kept values exactly; the sums of squares (accumulated in float32, in
    another order on a GPU) to float32 rounding."""
    a, b = cpu.state_dict(), {k: v.cpu() for k, v in dev.state_dict().items()}
    assert a.keys() == b.keys()
    for name in a:
        if name == "sumsq":
            torch.testing.assert_close(b[name], a[name], rtol=1e-6, atol=0)
        else:
            assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("large", [False, True], ids=["raw_kept", "large"])
@pytest.mark.parametrize("module_type", ["activation", "linear_weight"])
def test_statistics_built_on_the_device_equal_the_cpus(module_type: str, large: bool) -> None:
    batches = _batches(module_type, 3, large)
    cpu, dev = _stats(module_type, batches, "cpu"), _stats(module_type, batches, DEVICE)
    assert dev.device.type == torch.device(DEVICE).type
    _states_match(cpu, dev)
    moved = dev.to("cpu")
    assert moved.device.type == "cpu" and (moved is dev) == (dev.device.type == "cpu")  # no copy when there
    _states_match(cpu, moved)


def test_merging_across_devices_equals_one_pass_on_the_cpu() -> None:
    batches = _batches("activation", 5, large=True)
    whole = _stats("activation", batches, "cpu")
    on_device = _stats("activation", batches[:2], DEVICE)
    on_device.merge(_stats("activation", batches[2:], "cpu"))  # e.g. a GPU run and a loaded run
    assert on_device.device.type == torch.device(DEVICE).type
    _states_match(whole, on_device)
    on_cpu = _stats("activation", batches[:1], "cpu").merge(_stats("activation", batches[1:], DEVICE))
    assert on_cpu.device.type == "cpu"
    _states_match(whole, on_cpu)


def _points(module_type: str) -> list[PointConfig]:
    """Every observer, at 8 and 4 bits, layer- and channel-wise; the log grids on positive data."""
    points = []
    for observer_type in observer_names():
        for bits in ("int8", "int4"):
            for mode in ("layer_wise", "channel_wise"):
                base = PointConfig.from_mapping({"bit_type": bits, "calibration_mode": mode})
                points.append(as_observer_type(base, observer_type))
        if module_type == "activation":
            for quantizer in ("log2", "log_sqrt2"):
                entry = {"bit_type": "uint4", "calibration_mode": "layer_wise", "quantizer": quantizer}
                points.append(as_observer_type(PointConfig.from_mapping(entry), observer_type))
    return points


@pytest.mark.parametrize("large", [False, True], ids=["raw_kept", "large"])
@pytest.mark.parametrize("module_type", ["activation", "linear_weight"])
def test_fits_and_summaries_on_device_statistics_equal_the_cpus(module_type: str, large: bool) -> None:
    batches = _batches(module_type, 11, large)
    cpu = _stats(module_type, batches, "cpu")
    positive = _stats(module_type, [b.abs() for b in batches], "cpu")
    wrong: list[str] = []  # every mismatch, not only the first
    for point in _points(module_type):
        source = positive if point.quantizer != "uniform" else cpu
        dev = source.to(DEVICE)
        what = f"{point.observer_type} {point.bit_type.name} {point.calibration_mode} {point.quantizer}"
        try:
            on_cpu = build_observer(point, module_type).fit(source)
            on_dev = build_observer(point, module_type).fit(dev)
            for a, b in ((on_cpu.clip_min, on_dev.clip_min), (on_cpu.clip_max, on_dev.clip_max)):
                assert b.device.type == torch.device(DEVICE).type
                torch.testing.assert_close(b.cpu(), a, rtol=1e-6, atol=0)
            s_cpu = summarize(on_cpu, point.observer_type, source)
            s_dev = summarize(on_dev, point.observer_type, dev)
            np.testing.assert_allclose(s_dev.scale, s_cpu.scale, rtol=1e-6)
            for field in ("mse", "sqnr_db", "clipped_fraction", "clip_mse", "round_mse"):
                # the metrics hold float32 steps, rounded differently on a GPU
                assert getattr(s_dev, field) == pytest.approx(getattr(s_cpu, field), rel=1e-6, abs=1e-12), field
        except (AssertionError, RuntimeError) as exc:
            wrong.append(f"{what}: {type(exc).__name__}: {str(exc)[:300]}")
    assert not wrong, "\n".join(wrong)


def test_distribution_views_of_device_statistics_equal_the_cpus() -> None:
    cpu = _stats("activation", _batches("activation", 13, large=True), "cpu")
    dev = cpu.to(DEVICE)
    facts_cpu, facts_dev = distribution_facts(cpu), distribution_facts(dev)
    assert (facts_dev.min, facts_dev.max, facts_dev.p9999_abs) == (facts_cpu.min, facts_cpu.max, facts_cpu.p9999_abs)
    assert facts_dev.extreme_channels == facts_cpu.extreme_channels
    for view in (histogram, log2_histogram):
        for channel in (-1, 40):
            for a, b in zip(view(cpu, channel), view(dev, channel), strict=True):
                np.testing.assert_array_equal(b, a)


def _tables_close(a: pd.DataFrame, b: pd.DataFrame, sqnr_db: float, rel: float) -> None:
    assert list(a["failure"].isna()) == list(b["failure"].isna())
    assert (a[["block", "point", "observer"]].to_numpy() == b[["block", "point", "observer"]].to_numpy()).all()
    np.testing.assert_allclose(b["sqnr_db"], a["sqnr_db"], atol=sqnr_db, rtol=0)
    np.testing.assert_allclose(b["mse"], a["mse"], rtol=rel, atol=0)
    np.testing.assert_allclose(b["clipped_fraction"], a["clipped_fraction"], atol=rel * 1e-2, rtol=rel)


@pytest.fixture(scope="module")
def cpu_run(one_block: VisionTransformer, calib: list[Tensor]) -> ExplorerRun:
    return run_calibration(one_block, [b[:8] for b in calib], load_config(CONFIG))


def test_error_table_on_device_statistics_equals_the_cpus(cpu_run: ExplorerRun) -> None:
    on_device = ExplorerRun(cpu_run.config, cpu_run.num_blocks, cpu_run.capture.to(DEVICE), cpu_run.alpha_floor)
    assert next(iter(on_device.capture.stats.values())).device.type == torch.device(DEVICE).type
    _tables_close(error_table(cpu_run), error_table(on_device), sqnr_db=1e-4, rel=1e-5)


def test_calibrating_on_the_device_hands_back_cpu_statistics_close_to_the_cpus(
    one_block: VisionTransformer, calib: list[Tensor], cpu_run: ExplorerRun, tmp_path: Path
) -> None:
    model = copy.deepcopy(one_block).to(DEVICE)
    run = run_calibration(model, [b[:8].to(DEVICE) for b in calib], load_config(CONFIG))
    assert {s.device.type for s in run.capture.stats.values()} == {"cpu"}
    assert run.capture.errors == cpu_run.capture.errors
    # the float forward differs by rounding between devices, so the figures agree closely, not exactly
    _tables_close(error_table(cpu_run), error_table(run), sqnr_db=0.05, rel=0.02)
    loaded = ExplorerRun.load(run.save(tmp_path / "gpu.run"))
    _tables_close(error_table(run), error_table(loaded), sqnr_db=0.0, rel=0.0)


def test_the_guides_quantvit_on_the_device_matches_the_cpu(
    demo_model: VisionTransformer, calib: list[Tensor], test_split: tuple[Tensor, Tensor]
) -> None:
    images = test_split[0][:64]
    results = {}
    for device in ("cpu", DEVICE):
        qvit = QuantViT(copy.deepcopy(demo_model).to(device), "configs/quant_config_percentile.yaml")
        qvit.calibrate([b.to(device) for b in calib])
        qvit.compute_quant_params()
        qvit.mode = "quantized"
        with torch.no_grad():
            logits = qvit(images.to(device))
        assert logits.device.type == torch.device(device).type
        scales = {key: obs.get_quantization_params()[0].cpu() for key, obs in qvit.observers().items()}
        results[device] = logits.cpu(), scales
    (cpu_logits, cpu_scales), (dev_logits, dev_scales) = results["cpu"], results[DEVICE]
    assert cpu_scales.keys() == dev_scales.keys()
    for key in cpu_scales:
        torch.testing.assert_close(dev_scales[key], cpu_scales[key], rtol=0.011, atol=0, msg=str(key))
    assert (dev_logits.argmax(1) == cpu_logits.argmax(1)).float().mean() >= 0.95
    error = (dev_logits - cpu_logits).pow(2).sum() / cpu_logits.pow(2).sum()
    assert error < 1e-3


def test_the_command_line_calibrates_on_the_device(tmp_path: Path) -> None:
    args = ["calibrate", "--batches", "2", "--batch-size", "8"]
    assert main([*args, "--device", DEVICE.split(":")[0], "--out", str(tmp_path / "dev.run")]) == 0
    assert main([*args, "--device", "cpu", "--out", str(tmp_path / "cpu.run")]) == 0
    dev, cpu = ExplorerRun.load(tmp_path / "dev.run"), ExplorerRun.load(tmp_path / "cpu.run")
    shape = [(r.batches, r.num_blocks, sorted(r.capture.stats)) for r in (dev, cpu)]
    assert shape[0] == shape[1]
    _tables_close(error_table(cpu), error_table(dev), sqnr_db=0.05, rel=0.02)
