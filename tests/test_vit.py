"""Tests for explorer.vit: the block wrapper, the whole-model wrapper and the stats capture."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from timm.models.vision_transformer import Attention, Block, VisionTransformer
from torch import Tensor, nn

from explorer import (
    KLObserver,
    PercentileObserver,
    QuantTimmVitBlock,
    QuantViT,
    StatsCapture,
    build_observer,
    load_config,
)
from explorer.analysis import evaluate_quantized
from explorer.config import ACTIVATION_POINTS, ALL_POINTS, WEIGHT_POINTS, ConfigWarning, QuantConfig
from explorer.data import demo_batches
from explorer.stats import PointStats

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
OBSERVER_TYPES = ("MinmaxObserver", "PercentileObserver", "OmseObserver", "KLObserver")

# The shipped minmax/percentile/omse configs warn about intSoft on purpose (the guide's
# "common mistakes"); those warnings are tested in test_config.py.
pytestmark = pytest.mark.filterwarnings("ignore::explorer.config.errors.ConfigWarning")


def quiet_config(source: Any) -> QuantConfig:
    """Load a config without its ConfigWarnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        return load_config(source)


def int8_default(observer_type: str = "MinmaxObserver", **extra: Any) -> QuantConfig:
    """``configs/quant_config_minmax.yaml``'s default (channel_wise int8) with one observer for every point."""
    default = quiet_config(ROOT / "configs" / "quant_config_minmax.yaml").to_dict()["default"]
    return quiet_config({"default": {**default, "observer_type": observer_type, **extra}})


# ----- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_tokens(demo_model: VisionTransformer, calib: list[Tensor]) -> list[Tensor]:
    """Token batches ``[B, N, C]`` entering the demo model's first block."""
    with torch.no_grad():
        return [demo_model.norm_pre(demo_model._pos_embed(demo_model.patch_embed(b))) for b in calib]


@pytest.fixture(scope="module")
def config_runs(demo_model: VisionTransformer, calib: list[Tensor]) -> Callable[[Path], QuantViT]:
    """A QuantViT per shipped config, calibrated on ``calib`` once and shared by the tests."""
    cache: dict[Path, QuantViT] = {}

    def get(path: Path) -> QuantViT:
        if path not in cache:
            cache[path] = calibrated(demo_model, path, calib)
        return cache[path]

    return get


def calibrated(model: nn.Module, config: Any, batches: list[Tensor], **kwargs: Any) -> QuantViT:
    """A QuantViT calibrated on ``batches`` with parameters computed."""
    qvit = QuantViT(model, config, **kwargs)
    qvit.calibrate(batches)
    qvit.compute_quant_params()
    return qvit


# ----- fp32 equivalence on timm block variants --------------------------------------------------
def _supports(name: str) -> bool:
    return name in inspect.signature(Block.__init__).parameters


def _gated_attention(dim: int, heads: int) -> nn.Module | None:
    if "gated" not in inspect.signature(Attention.__init__).parameters:
        return None
    return Attention(dim, heads, qkv_bias=True, gated=True)


BLOCK_VARIANTS: dict[str, dict[str, Any]] = {
    "qkv_bias": {"qkv_bias": True},
    "no_qkv_bias": {"qkv_bias": False},
    "qk_norm": {"qkv_bias": True, "qk_norm": True},
    "layer_scale": {"qkv_bias": True, "init_values": 1e-5},
    "drop_path_eval": {"qkv_bias": True, "drop_path": 0.1},
    "no_proj_bias": {"qkv_bias": False, "proj_bias": False},
    "everything": {"qkv_bias": True, "qk_norm": True, "init_values": 1e-5, "drop_path": 0.1},
}
if _supports("scale_attn_norm"):
    BLOCK_VARIANTS["scale_attn_norm"] = {"qkv_bias": True, "scale_attn_norm": True}
if _supports("scale_mlp_norm"):
    BLOCK_VARIANTS["scale_mlp_norm"] = {"qkv_bias": True, "scale_mlp_norm": True}


def make_block(dim: int = 32, heads: int = 4, **kwargs: Any) -> Block:
    """A timm Block in eval mode with every parameter randomised (LayerScale and norms too)."""
    torch.manual_seed(0)
    block = Block(dim, heads, **kwargs).eval()
    with torch.no_grad():
        for name, param in block.named_parameters():
            if name.endswith("gamma"):  # LayerScale: make the residual branches matter
                param.copy_(0.5 + torch.rand_like(param))
            elif param.dim() == 1:
                param.add_(0.1 * torch.randn_like(param))
    return block


def assert_fp32_equivalent(block: nn.Module, inputs: list[Tensor]) -> None:
    """'fp32' is the block itself; the explicit path (calibration) matches it closely."""
    wrapped = QuantTimmVitBlock(block, int8_default())
    with torch.no_grad():
        for x in inputs:
            expected = block(x)
            wrapped.mode = "fp32"
            assert torch.equal(wrapped(x), expected)
            explicit = wrapped.calibration(x)
            assert wrapped.mode == "calibration"
            torch.testing.assert_close(explicit, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", sorted(BLOCK_VARIANTS))
def test_block_variants_fp32_and_explicit_path(variant: str) -> None:
    block = make_block(**BLOCK_VARIANTS[variant])
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(2, 9, 32, generator=gen), 3.0 * torch.randn(3, 17, 32, generator=gen)]
    assert_fp32_equivalent(block, inputs)


def test_attention_with_other_head_dim_and_gate() -> None:
    block = make_block(qkv_bias=True)
    block.attn = Attention(32, 4, attn_head_dim=4, qkv_bias=True).eval()  # attn_dim 16 != dim 32
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(2))
    assert_fp32_equivalent(block, [x])
    gated = _gated_attention(32, 4)
    if gated is not None:
        block.attn = gated.eval()
        assert_fp32_equivalent(block, [x])


def test_demo_blocks_fp32_and_explicit_path(demo_model: VisionTransformer, demo_tokens: list[Tensor]) -> None:
    tokens = demo_tokens
    for block in demo_model.blocks:
        assert_fp32_equivalent(block, tokens)
        with torch.no_grad():
            tokens = [block(t) for t in tokens]


def test_attention_mask_and_causal_paths_match_timm() -> None:
    block = make_block(qkv_bias=True)
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(3))
    wrapped = QuantTimmVitBlock(block, int8_default())
    bool_mask = torch.rand(7, 7, generator=torch.Generator().manual_seed(4)) > 0.3
    bool_mask |= torch.eye(7, dtype=torch.bool)
    float_mask = torch.randn(7, 7, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        wrapped.mode = "calibration"
        for kwargs in ({"attn_mask": bool_mask}, {"attn_mask": float_mask}, {"is_causal": True}):
            torch.testing.assert_close(wrapped(x, **kwargs), block(x, **kwargs), rtol=1e-5, atol=1e-5)


# ----- the guide's usage example ----------------------------------------------------------------
def test_guide_usage_example(
    demo_model: VisionTransformer, demo_tokens: list[Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the guide's config path is relative to the project root
    original_vit_block = demo_model.blocks[0]
    calibration_loader = demo_tokens
    input_tensor = demo_tokens[0]

    # --- as written in the guide (import line replaced by `from explorer import ...`) ---
    quant_block = QuantTimmVitBlock(
        block=original_vit_block,
        quant_config="configs/quant_config_percentile.yaml",
        enable_profiling=False,
    )
    for batch in calibration_loader:
        with torch.no_grad():
            quant_block.calibration(batch)
    quant_block.compute_quant_params()
    quant_block.mode = "quantized"
    output = quant_block(input_tensor)
    # -------------------------------------------------------------------------------------

    with torch.no_grad():
        expected = original_vit_block(input_tensor)
    assert output.shape == expected.shape
    assert torch.isfinite(output).all()
    assert not torch.equal(output, expected)  # really quantized
    error = (output - expected).pow(2).sum() / expected.pow(2).sum()
    assert error < 1e-2  # SQNR above 20 dB at int8
    assert isinstance(quant_block.observers["attn_qkv_output"], PercentileObserver)
    assert quant_block.observers["attn_qkv_output"].percentile_alpha == 0.999


# ----- every shipped config on the demo model ---------------------------------------------------
@pytest.mark.parametrize("config_path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_calibrates_and_quantizes(
    config_path: Path, config_runs: Callable[[Path], QuantViT], test_split: tuple[Tensor, Tensor]
) -> None:
    qvit = config_runs(config_path)
    assert all(obs.num_batches >= 1 for obs in qvit.observers().values())
    images = test_split[0][:96]
    report = evaluate_quantized(qvit, images)
    assert qvit.mode == "calibration"  # restored
    qvit.mode = "quantized"
    with torch.no_grad():
        logits = qvit(images)
    assert torch.isfinite(logits).all()
    assert report.agreement >= 0.9
    assert report.logit_sqnr_db > 15.0


def test_shipped_configs_cover_the_guide() -> None:
    names = {p.stem for p in CONFIGS}
    assert {
        "quant_config_minmax",
        "quant_config_percentile",
        "quant_config_omse",
        "quant_config_kl",
        "recommended_config",
    } <= names


# ----- accuracy: W8A8 close to FP32, 4 bits measurably worse ------------------------------------
@pytest.fixture(scope="module")
def bits_reports(
    demo_model: VisionTransformer,
    calib: list[Tensor],
    test_split: tuple[Tensor, Tensor],
    config_runs: Callable[[Path], QuantViT],
) -> dict[int, Any]:
    """``recommended_config.yaml`` (W8A8) and the same with every point 4-bit, on the full demo test split."""
    path = ROOT / "configs" / "recommended_config.yaml"
    int4 = {"bits": 4, "signed": True, "name": "int4"}
    runs = {8: config_runs(path), 4: calibrated(demo_model, quiet_config(path).with_default(bit_type=int4), calib)}
    reports = {}
    for bits, qvit in runs.items():
        assert {(obs.bit_type.bits, obs.bit_type.signed) for obs in qvit.observers().values()} == {(bits, True)}
        reports[bits] = evaluate_quantized(qvit, *test_split)
    return reports


def test_w8a8_recommended_accuracy_close_to_fp32(bits_reports: dict[int, Any]) -> None:
    report = bits_reports[8]
    assert report.num_images == 360
    assert report.drop <= 3.0
    assert report.agreement >= 0.95


def test_4bit_is_measurably_worse_than_8bit(bits_reports: dict[int, Any]) -> None:
    r8, r4 = bits_reports[8], bits_reports[4]
    assert r4.logit_sqnr_db < r8.logit_sqnr_db - 6.0  # about 6 dB per bit; 4 bits fewer
    assert (r4.drop - r8.drop >= 2.0) or (r8.agreement - r4.agreement >= 0.05)


# ----- observers per point ----------------------------------------------------------------------
def test_observer_keys_and_channel_counts(demo_model: VisionTransformer, calib: list[Tensor]) -> None:
    qvit = calibrated(demo_model, int8_default("MinmaxObserver"), calib[:1])
    first: Any = demo_model.blocks[0]
    dim, heads, depth = demo_model.embed_dim, first.attn.num_heads, len(demo_model.blocks)
    hidden = first.mlp.fc1.out_features
    observers = qvit.observers()
    assert set(observers) == {(b, p) for b in range(depth) for p in ALL_POINTS}
    channels = {
        "attn_qkv": 3 * dim,
        "attn_proj": dim,
        "mlp_fc1": hidden,
        "mlp_fc2": dim,
        "attn_qkv_output": 3 * dim,
        "intSoft": heads,
        "sv_attn": dim,
        "mlp_act": hidden,
    }
    for (block, point), obs in observers.items():
        assert obs.num_channels == channels[point], (block, point)
        assert obs.module_type == ("linear_weight" if point in WEIGHT_POINTS else "activation")
        scale, zero_point = obs.get_quantization_params()
        if point in WEIGHT_POINTS:
            assert scale.shape == (channels[point], 1)
        elif point == "intSoft":
            assert scale.shape == (1, heads, 1, 1)
        else:
            assert scale.shape == (1, 1, channels[point])
        assert zero_point.shape == scale.shape
    max_val = observers[(0, "intSoft")].max_val
    assert max_val is not None and max_val.numel() == heads


def test_layer_wise_intsoft_is_one_range(demo_model: VisionTransformer, calib: list[Tensor]) -> None:
    config = int8_default("MinmaxObserver").with_point("intSoft", calibration_mode="layer_wise")
    qvit = calibrated(demo_model, config, calib[:1])
    obs = qvit.observers()[(0, "intSoft")]
    assert obs.num_channels == 1
    assert obs.get_quantization_params()[0].shape == ()


# ----- per-block overrides ----------------------------------------------------------------------
def test_per_block_overrides_are_honoured(demo_model: VisionTransformer, calib: list[Tensor]) -> None:
    config = quiet_config(
        {
            "default": {"observer_type": "PercentileObserver"},
            "attn_layer": {"intSoft": {"calibration_mode": "layer_wise"}},
            "blocks": {
                1: {"attn_layer": {"intSoft": {"observer_type": "KLObserver", "kl_bins": 512}}},
                "3": {"layers": {"mlp_fc2": {"bit_type": {"bits": 4, "signed": True}}}},
            },
        }
    )
    qvit = QuantViT(demo_model, config)
    observers = qvit.observers()
    for (block, point), obs in observers.items():
        if (block, point) == (1, "intSoft"):
            assert isinstance(obs, KLObserver)
            assert obs.kl_bins == 512 and obs.calibration_mode == "layer_wise"
        else:
            assert isinstance(obs, PercentileObserver), (block, point)
        expected_bits = 4 if (block, point) == (3, "mlp_fc2") else 8
        assert obs.bit_type.bits == expected_bits
    qvit.calibrate(calib[:1])
    qvit.compute_quant_params()
    assert float(observers[(1, "intSoft")].clip_max) > 0


def test_out_of_range_block_override_is_rejected(demo_model: VisionTransformer) -> None:
    depth = len(demo_model.blocks)
    config = quiet_config({"blocks": {depth: {"attn_layer": {"intSoft": {"kl_bins": 4096}}}}})
    with pytest.raises(ValueError, match=rf"block.*{depth}.*{depth} blocks"):
        QuantViT(demo_model, config)


# ----- errors -----------------------------------------------------------------------------------
def test_compute_quant_params_before_calibration(demo_model: VisionTransformer) -> None:
    block = QuantTimmVitBlock(demo_model.blocks[0], int8_default())
    with pytest.raises(RuntimeError, match="before calibration.*calibration\\(batch\\)"):
        block.compute_quant_params()
    with pytest.raises(RuntimeError, match="calibration"):
        QuantViT(demo_model, int8_default()).compute_quant_params()


def test_quantized_mode_needs_parameters(demo_model: VisionTransformer, demo_tokens: list[Tensor]) -> None:
    block = QuantTimmVitBlock(demo_model.blocks[0], int8_default())
    with pytest.raises(RuntimeError, match="compute_quant_params"):
        block.mode = "quantized"
    block.calibration(demo_tokens[0])
    with pytest.raises(RuntimeError, match="compute_quant_params"):
        block.mode = "quantized"  # calibrated, but no parameters yet
    with pytest.raises(RuntimeError, match="compute_quant_params"):
        QuantViT(demo_model, int8_default()).mode = "quantized"
    block.compute_quant_params()
    block.mode = "quantized"
    assert block.mode == "quantized"


def test_quantvit_mode_change_is_all_or_nothing(demo_model: VisionTransformer, calib: list[Tensor]) -> None:
    qvit = calibrated(demo_model, int8_default(), calib[:1])
    qvit.mode = "fp32"
    qvit.set_observer(1, "mlp_act", build_observer({"observer_type": "MinmaxObserver"}))  # block 1 loses its params
    with pytest.raises(RuntimeError, match="compute_quant_params"):
        qvit.mode = "quantized"
    assert [block.mode for block in qvit.blocks] == ["fp32"] * len(qvit.blocks)
    with pytest.raises(ValueError, match="mode must be one of"):
        qvit.mode = "int8"
    assert [block.mode for block in qvit.blocks] == ["fp32"] * len(qvit.blocks)


@pytest.mark.parametrize("bad", ["int8", "FP32", "", "train"])
def test_invalid_mode_string(demo_model: VisionTransformer, bad: str) -> None:
    block = QuantTimmVitBlock(demo_model.blocks[0], int8_default())
    with pytest.raises(ValueError, match="fp32.*calibration.*quantized"):
        block.mode = bad
    assert block.mode == "fp32"


@pytest.mark.parametrize("module", [nn.Linear(8, 8), nn.Sequential(), nn.TransformerEncoderLayer(8, 2)])
def test_wrapping_a_non_block_is_a_type_error(module: nn.Module) -> None:
    with pytest.raises(TypeError, match="timm vision_transformer.Block"):
        QuantTimmVitBlock(module, int8_default())


def test_quantvit_on_a_non_vit_is_a_type_error() -> None:
    class NotAViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(4, 4)])

    for model in (nn.Sequential(nn.Linear(4, 4)), NotAViT()):
        with pytest.raises(TypeError, match="not a timm VisionTransformer"):
            QuantViT(model, int8_default())


# ----- profiling --------------------------------------------------------------------------------
def test_profiling_records_time_and_state(demo_model: VisionTransformer, calib: list[Tensor]) -> None:
    qvit = calibrated(demo_model, int8_default("PercentileObserver"), calib, enable_profiling=True)
    for block in qvit.blocks:
        profile = block.profile()
        assert set(profile) == set(ALL_POINTS)
        for point, row in profile.items():
            assert row["seconds"] > 0, point
            assert row["state_bytes"] > 0, point
            assert row["batches"] == (1 if point in WEIGHT_POINTS else len(calib)), point


def test_profiling_off_records_nothing(demo_model: VisionTransformer, calib: list[Tensor]) -> None:
    qvit = calibrated(demo_model, int8_default(), calib[:1])
    assert all(row["seconds"] == 0 for block in qvit.blocks for row in block.profile().values())


# ----- stats capture ----------------------------------------------------------------------------
def test_stats_capture_fits_equal_separate_calibrations(demo_model: VisionTransformer) -> None:
    """Observers fitted from one capture pass's statistics == four separate QuantViT calibrations."""
    base = int8_default("MinmaxObserver")
    calib = demo_batches("train", 8, 2)  # two small batches keep four observers on 32 points cheap
    capture = StatsCapture(demo_model, base)
    result = capture.run(calib)
    capture.close()
    assert result.batches == len(calib)
    assert not result.errors
    assert set(result.stats) == {(b, p) for b in range(len(demo_model.blocks)) for p in ALL_POINTS}
    for observer_type in OBSERVER_TYPES:
        config = base.with_default(observer_type=observer_type)
        separate = QuantViT(demo_model, config)
        separate.calibrate(calib)
        for key, ref in separate.observers().items():
            # OMSE/KL searches cost ~0.1-0.2 s a point: those two are compared on block 0 and every intSoft.
            if observer_type in ("OmseObserver", "KLObserver") and key[0] != 0 and key[1] != "intSoft":
                continue
            fitted = build_observer(config.point(key[1], key[0]), ref.module_type).fit(result.stats[key])
            assert fitted.num_batches == ref.num_batches == (1 if key[1] in WEIGHT_POINTS else 2), key
            assert torch.equal(fitted.data_min, ref.data_min) and torch.equal(fitted.data_max, ref.data_max), key
            assert torch.equal(fitted.clip_min, ref.clip_min), (observer_type, key)
            assert torch.equal(fitted.clip_max, ref.clip_max), (observer_type, key)


def test_stats_capture_keeps_no_activation(demo_model: VisionTransformer, calib: list[Tensor]) -> None:
    """The statistics stay far smaller than the activations they summarise, and grow slowly per batch."""
    one_batch = sum(t.numel() * 4 for t in _activations(demo_model, calib[0]))
    one = StatsCapture(demo_model, int8_default()).run(calib[:1])
    three = StatsCapture(demo_model, int8_default()).run(calib + calib[:1])
    per_batch = (sum(s.nbytes() for s in three.stats.values()) - sum(s.nbytes() for s in one.stats.values())) / 2
    activations = [k for k in one.stats if k[1] in ACTIVATION_POINTS]
    assert all(one.stats[k].raw is None for k in activations if one.stats[k].count * one.stats[k].channels > 262_144)
    assert per_batch < 0.25 * one_batch, (per_batch, one_batch)


def _activations(model: nn.Module, batch: Tensor) -> list[Tensor]:
    """The activation tensors of every point of every block for one batch (via a tap)."""
    seen: list[Tensor] = []
    qvit = QuantViT(model, int8_default())
    for block in qvit.blocks:
        block.taps.append(lambda point, t: seen.append(t.detach().clone()))
    with torch.no_grad():
        qvit(batch)
    return seen


def test_quantized_forward_without_grad_equals_with_grad_and_spares_taps(
    demo_model: VisionTransformer, calib: list[Tensor]
) -> None:
    """Without autograd the activations are fake-quantized in place: the logits are those of the
    grad-enabled path, and a tap that keeps the tensors it saw still holds the float values."""
    qvit = QuantViT(demo_model, int8_default())
    qvit.calibrate(calib[:1])
    qvit.compute_quant_params()
    qvit.mode = "quantized"
    batch = calib[1]
    with torch.enable_grad():
        want = qvit(batch).detach()
    with torch.no_grad():
        assert torch.equal(qvit(batch), want)
        held: list[tuple[Tensor, Tensor]] = []
        qvit.blocks[0].taps.append(lambda point, t: held.append((t, t.clone())))
        assert torch.equal(qvit(batch), want)
    assert len(held) == len(ACTIVATION_POINTS)
    assert all(torch.equal(kept, copy) for kept, copy in held)


def test_stats_capture_refused_point_is_recorded(demo_model: VisionTransformer, calib: list[Tensor]) -> None:
    """A point whose tensor is refused is dropped with its reason; every other point continues."""

    class Failing(PointStats):
        def update(self, v: Tensor) -> None:
            raise RuntimeError("simulated allocation failure")

    capture = StatsCapture(demo_model, int8_default())
    capture.result.stats[(1, "mlp_act")] = Failing("activation")
    result = capture.run(calib)
    capture.close()
    assert result.errors == {(1, "mlp_act"): "RuntimeError: simulated allocation failure"}
    assert (1, "mlp_act") not in result.stats
    assert all(s.num_batches == (1 if p in WEIGHT_POINTS else len(calib)) for (b, p), s in result.stats.items())


# ----- the original model is left alone ---------------------------------------------------------
def test_original_model_unchanged(demo_model: VisionTransformer, calib: list[Tensor]) -> None:
    x = calib[0]
    with torch.no_grad():
        before = demo_model(x)
    state = {k: v.clone() for k, v in demo_model.state_dict().items()}
    qvit = calibrated(demo_model, int8_default(), calib)
    qvit.mode = "quantized"
    with torch.no_grad():
        quantized = qvit(x)
        qvit.mode = "fp32"
        fp32 = qvit(x)
        after = demo_model(x)
    assert all(type(b) is Block for b in demo_model.blocks)
    assert all(isinstance(b, QuantTimmVitBlock) for b in qvit.model.get_submodule("blocks").children())
    assert torch.equal(after, before)
    assert torch.equal(fp32, before)  # 'fp32' mode is the original model
    assert not torch.equal(quantized, before)
    assert all(torch.equal(v, state[k]) for k, v in demo_model.state_dict().items())
