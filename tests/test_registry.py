"""A user-registered observer works everywhere the built-ins do: YAML, ``build_observer``, ``QuantViT``."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import ClassVar

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from explorer import BitType, QuantViT, build_observer, load_config
from explorer.charts.style import color_of
from explorer.config import ConfigError, dump_config, entry_keys
from explorer.observers import (
    MinmaxObserver,
    ParamError,
    ParamSpec,
    observer_label,
    observer_names,
    observer_params,
    register_observer,
    registry,
)
from explorer.observers.params import check_observer_params

KEEP = ParamSpec(
    "range_keep", float, 0.5, 0.0, 1.0, "Share of the MinMax range kept.", low_open=True, step=0.05, decimals=2
)

CONFIG = """
default: {observer_type: MinmaxObserver, calibration_mode: layer_wise}
layers:
  attn_qkv: {observer_type: HalfRangeObserver}
attn_layer:
  mlp_act: {observer_type: HalfRangeObserver, range_keep: 0.25}
"""


class HalfRangeObserver(MinmaxObserver):
    """MinMax with its range scaled by ``range_keep`` (half by default)."""

    label: ClassVar[str] = "Half"
    color: ClassVar[str] = "#ff7f0e"
    params: ClassVar[tuple[ParamSpec, ...]] = (KEEP,)

    def __init__(
        self,
        bit_type: BitType,
        module_type: str,
        calibration_mode: str = "channel_wise",
        range_keep: float = 0.5,
        symmetric: bool | None = None,
    ) -> None:
        super().__init__(bit_type, module_type, calibration_mode, symmetric)
        self.range_keep = check_observer_params("HalfRangeObserver", self.params, bit_type, {"range_keep": range_keep})[
            "range_keep"
        ]

    def _clip_range(self) -> tuple[Tensor, Tensor]:
        lo, hi = super()._clip_range()
        return lo * self.range_keep, hi * self.range_keep


@pytest.fixture(scope="module")
def half_range() -> Iterator[type[HalfRangeObserver]]:
    """``HalfRangeObserver`` registered for this module's tests, unregistered after them."""
    register_observer("HalfRangeObserver")(HalfRangeObserver)
    yield HalfRangeObserver
    registry._REGISTRY.pop("HalfRangeObserver")


def quiet_load(text: str):  # noqa: ANN201
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_config(text)


def test_registration_brings_label_colour_and_parameters(half_range: type[HalfRangeObserver]) -> None:
    assert observer_names()[-1] == "HalfRangeObserver"
    assert observer_label("HalfRangeObserver") == "Half"
    assert observer_params("HalfRangeObserver") == (KEEP,)
    assert color_of("Half") == "#ff7f0e"
    assert "range_keep" in entry_keys()


def test_yaml_with_the_registered_observer_and_its_parameter(half_range: type[HalfRangeObserver]) -> None:
    config = quiet_load(CONFIG)
    mlp_act = config.point("mlp_act")
    assert mlp_act.observer_type == "HalfRangeObserver"
    assert mlp_act.observer_params() == {"range_keep": 0.25}
    assert config.point("attn_qkv").observer_params() == {"range_keep": 0.5}  # the declared default
    assert config.point("mlp_fc1").observer_params() == {}  # MinMax takes none
    assert quiet_load(dump_config(config)) == config
    with pytest.raises(ConfigError, match=r"line 3: attn_layer\.mlp_act\.range_keep: .*\(0, 1\]") as info:
        quiet_load("default: {observer_type: HalfRangeObserver}\nattn_layer:\n  mlp_act: {range_keep: 1.5}\n")
    assert "range_keep: range_keep" not in str(info.value)


def test_constructor_shares_the_schema_validators(half_range: type[HalfRangeObserver]) -> None:
    observer = build_observer({"observer_type": "HalfRangeObserver", "range_keep": 0.75})
    assert isinstance(observer, HalfRangeObserver) and observer.range_keep == 0.75
    with pytest.raises(ParamError, match=r"HalfRangeObserver: range_keep: an integer \(0\) .*valid: .* \(0, 1\]"):
        HalfRangeObserver(BitType(8, True), "activation", range_keep=0)


def test_quant_vit_calibrates_with_the_registered_observer(
    half_range: type[HalfRangeObserver], demo_model: VisionTransformer, calib: list[Tensor]
) -> None:
    model = QuantViT(demo_model, quiet_load(CONFIG))
    with torch.no_grad():
        model.calibrate(calib)
    model.compute_quant_params()
    block = model.blocks[0]
    observer = block.observers["mlp_act"]
    assert isinstance(observer, HalfRangeObserver) and observer.range_keep == 0.25
    assert isinstance(block.observers["attn_qkv"], HalfRangeObserver)
    assert torch.allclose(observer.clip_max, observer.max_val * 0.25)
    scale, zero_point = observer.get_quantization_params()
    amax = torch.maximum(observer.clip_min.abs(), observer.clip_max.abs())
    assert torch.allclose(scale.flatten(), (amax / 127.5).flatten().clamp_min(torch.finfo(torch.float32).eps))
    assert int(zero_point.abs().sum()) == 0
    model.mode = "quantized"
    with torch.no_grad():
        assert torch.isfinite(model(calib[0])).all()
