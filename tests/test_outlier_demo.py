"""The outlier-channel demo: the same function as the plain demo, with a few channels tens of times
wider, which the Layer view's distribution facts must name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from reference_impls import omse_candidate_mse
from streamlit.testing.v1 import AppTest
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from explorer.analysis import ExplorerRun, distribution_facts, observer_for, run_calibration
from explorer.bit_type import BitType
from explorer.config import load_config
from explorer.data import OUTLIER_SCALE, add_outlier_channels, load_demo_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "recommended_config.yaml"
APP = ROOT / "app.py"
APP_TIMEOUT_S = 900  # two demo calibrations on a loaded 2-core machine


@pytest.fixture(scope="module")
def outlier_model() -> nn.Module:
    """The demo ViT with outlier channels."""
    return load_demo_model(outlier_channels=True)


def _rescaled(old: nn.Module, new: nn.Module) -> tuple[list[int], list[int]]:
    """For one block, the query and value channels whose qkv weight rows changed."""
    dim = old.attn.qkv.in_features
    rows = (new.attn.qkv.weight != old.attn.qkv.weight).any(dim=1).nonzero().ravel().tolist()
    return [r for r in rows if r < dim], [r - 2 * dim for r in rows if r >= 2 * dim]


def _extreme_channels(run: ExplorerRun, key: tuple[int, str]) -> set[int]:
    """The channels the distribution facts flag on an activation point (the one call into the facts API)."""
    return {channel for channel, _ in distribution_facts(run.stats(key)).extreme_channels}


def test_logits_match_the_plain_demo(
    demo_model: VisionTransformer, outlier_model: nn.Module, test_split: tuple[Tensor, Tensor]
) -> None:
    images, _ = test_split
    with torch.no_grad():
        plain, outlier = demo_model(images), outlier_model(images)
    assert (plain - outlier).abs().max() <= 1e-4
    assert torch.equal(plain.argmax(dim=1), outlier.argmax(dim=1))


@torch.no_grad()
def test_one_query_key_pair_and_one_value_channel_per_head(
    demo_model: VisionTransformer, outlier_model: nn.Module
) -> None:
    for old, new in zip(demo_model.blocks, outlier_model.blocks, strict=True):
        dim, heads = old.attn.qkv.in_features, old.attn.num_heads
        query, value = _rescaled(old, new)
        assert [c // (dim // heads) for c in query] == list(range(heads))
        assert [c // (dim // heads) for c in value] == list(range(heads))
        row = torch.ones(3 * dim)  # query × S, its key ÷ S, value × S; every other row as it was
        row[query] = OUTLIER_SCALE
        row[[dim + c for c in query]] = 1 / OUTLIER_SCALE
        row[[2 * dim + c for c in value]] = OUTLIER_SCALE
        assert torch.allclose(new.attn.qkv.weight, old.attn.qkv.weight * row[:, None], rtol=1e-6, atol=0)
        assert torch.allclose(new.attn.qkv.bias, old.attn.qkv.bias * row, rtol=1e-6, atol=0)
        column = torch.ones(dim)
        column[value] = 1 / OUTLIER_SCALE
        assert torch.allclose(new.attn.proj.weight, old.attn.proj.weight * column, rtol=1e-6, atol=0)
        for (name, p_old), p_new in zip(old.named_parameters(), new.parameters(), strict=True):
            if name not in ("attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight"):
                assert torch.equal(p_old, p_new), name


def test_distribution_facts_name_the_rescaled_channels(
    demo_model: VisionTransformer, outlier_model: nn.Module, calib: list[Tensor]
) -> None:
    run = run_calibration(outlier_model, calib, load_config(CONFIG))
    for block, (old, new) in enumerate(zip(demo_model.blocks, outlier_model.blocks, strict=True)):
        query, value = _rescaled(old, new)
        dim = old.attn.qkv.in_features
        assert {*query, *(2 * dim + c for c in value)} <= _extreme_channels(run, (block, "attn_qkv_output"))
        assert set(value) <= _extreme_channels(run, (block, "sv_attn"))


def test_the_plain_demo_has_no_such_channels(demo_model: VisionTransformer, calib: list[Tensor]) -> None:
    run = run_calibration(demo_model, calib, load_config(CONFIG))
    assert all(not _extreme_channels(run, key) for key in run.points if key[1] in ("attn_qkv_output", "sv_attn"))


@torch.no_grad()
def _rescaled_values(model: nn.Module, batches: list[Tensor]) -> dict[tuple[int, str], Tensor]:
    """Every value of the points holding the rescaled channels, read with plain forward hooks: the
    qkv weight, the qkv output and the projection's input (``sv_attn``), all batches concatenated."""
    values: dict[tuple[int, str], list[Tensor]] = {}
    hooks = []
    for b, block in enumerate(model.blocks):
        values[b, "attn_qkv"] = [block.attn.qkv.weight.detach().clone()]
        hooks.append(
            block.attn.qkv.register_forward_hook(
                lambda _m, _a, out, b=b: values.setdefault((b, "attn_qkv_output"), []).append(out.clone())
            )
        )
        hooks.append(
            block.attn.proj.register_forward_pre_hook(
                lambda _m, args, b=b: values.setdefault((b, "sv_attn"), []).append(args[0].clone())
            )
        )
    try:
        for batch in batches:
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return {key: torch.cat([t.reshape(-1) for t in parts]) for key, parts in values.items()}


def test_omse_picks_its_least_mse_candidate_on_the_rescaled_points(
    outlier_model: nn.Module, calib: list[Tensor]
) -> None:
    """Layer-wise OMSE keeps most of the ×S range at these points (README: it recovers less of MinMax's
    gap than Percentile). That is its objective, not its search: the clip it picks from the run's
    statistics is the best of the 100 candidates by the exact MSE on every calibration value."""
    int8 = {"bits": 8, "signed": True, "name": "int8"}
    config = load_config(
        {"default": {"observer_type": "OmseObserver", "calibration_mode": "layer_wise", "bit_type": int8}}
    )
    run = run_calibration(outlier_model, calib, config)
    for (block, name), x in _rescaled_values(outlier_model, calib).items():
        observer = observer_for(run, (block, name), config.point(name, block))
        lo, hi = x.min().reshape(1), x.max().reshape(1)
        # The same values up to float rounding (timm's fused attention here, the explorer's explicit one there).
        torch.testing.assert_close(torch.cat([observer.data_min, observer.data_max]).reshape(2), torch.cat([lo, hi]))
        exact = omse_candidate_mse(x.reshape(1, -1).numpy(), lo.numpy(), hi.numpy(), BitType(8, True), True)[0]
        chosen = round(100 * (1 - float(observer.clip_max) / float(observer.data_max)))  # f = 1 - i/100
        assert exact[chosen] <= 1.01 * exact.min(), (block, name, chosen, int(exact.argmin()))


def test_refuses_a_block_where_rescaling_is_not_exact() -> None:
    model = VisionTransformer(img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2, qk_norm=True)
    with pytest.raises(ValueError, match="q_norm"):
        add_outlier_channels(model)


def test_the_app_offers_the_outlier_demo_and_names_its_channels(
    demo_model: VisionTransformer, outlier_model: nn.Module
) -> None:
    at = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_S).run()
    at.radio(key="model_kind").set_value("demo_outliers").run()
    at.button(key="calibrate").click().run()
    at.selectbox(key="sel_block").set_value(0)
    at.selectbox(key="sel_point").set_value("sv_attn").run()
    assert not at.exception, at.exception
    assert any("outlier channels" in m.value for m in at.markdown if m.value.startswith("**Model**"))
    _, value = _rescaled(demo_model.blocks[0], outlier_model.blocks[0])
    facts = next(m.value for m in at.markdown if "median channel range" in m.value)
    assert all(re.search(rf"\b{c} \(", facts) for c in value), facts  # "Channel(s) 42 (61.1×), ..."
