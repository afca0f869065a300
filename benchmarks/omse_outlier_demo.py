"""Why layer-wise OMSE wins back less of layer-wise MinMax's gap than Percentile on the outlier demo.

The demo's rescaling is exact, so it leaves each channel's weight in the function as it was: an
error on a channel × S reaches the logits ÷ S, one on a key channel ÷ S reaches them × S. OMSE
scores its 100 candidates by the tensor's squared error, which weighs the wide channels S² too
much. At every point holding rescaled channels (``attn_qkv``, ``attn_qkv_output``, ``sv_attn``)
this scores the same candidates by the error weighted as the function weighs it (1/S² on the
channels × S, S² on the key channels ÷ S), uses that candidate there, and measures the model.

Protocol of ``benchmarks/demo_observers.py``: every point signed int8, layer-wise; calibration
4 × 32 train digits; the demo test split. Run: ``python benchmarks/omse_outlier_demo.py``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.demo_observers import BATCH_SIZE, BATCHES, config  # noqa: E402
from explorer.analysis import AccuracyReport, calibrate_and_evaluate, evaluate_quantized  # noqa: E402
from explorer.config import ConfigWarning, load_config  # noqa: E402
from explorer.data import (  # noqa: E402
    OUTLIER_SCALE,
    OutlierChannels,
    add_outlier_channels,
    demo_batches,
    demo_split,
    load_demo_model,
)
from explorer.observers import MinmaxObserver, OmseObserver  # noqa: E402
from explorer.quant_ops import fake_quantize, qparams_from_range  # noqa: E402
from explorer.vit import QuantViT  # noqa: E402


def channel_weights(channels: OutlierChannels, point: str, dim: int) -> Tensor:
    """Per channel of ``point`` (last axis), the weight of a squared error in the function relative to
    the plain demo: 1/S² on the channels × S, S² on the key channels ÷ S, 1 elsewhere."""
    if point == "sv_attn":
        weights = torch.ones(dim, dtype=torch.float64)
        weights[list(channels.value)] = OUTLIER_SCALE**-2
        return weights
    weights = torch.ones(3 * dim, dtype=torch.float64)
    weights[[*channels.query, *(2 * dim + c for c in channels.value)]] = OUTLIER_SCALE**-2
    weights[[dim + c for c in channels.query]] = OUTLIER_SCALE**2
    return weights


@torch.no_grad()
def point_values(model: nn.Module, batches: list[Tensor]) -> dict[tuple[int, str], Tensor]:
    """Every value of the points holding rescaled channels as ``[n, channels]`` (the qkv weight
    transposed; activations of all batches)."""
    values: dict[tuple[int, str], list[Tensor]] = {}
    hooks = []
    for b, block in enumerate(model.blocks):  # type: ignore[union-attr, arg-type]
        values[b, "attn_qkv"] = [block.attn.qkv.weight.T]
        hooks.append(
            block.attn.qkv.register_forward_hook(
                lambda _m, _a, out, b=b: values.setdefault((b, "attn_qkv_output"), []).append(out.flatten(0, -2))
            )
        )
        hooks.append(
            block.attn.proj.register_forward_pre_hook(
                lambda _m, args, b=b: values.setdefault((b, "sv_attn"), []).append(args[0].flatten(0, -2))
            )
        )
    try:
        for batch in batches:
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return {key: torch.cat(parts) for key, parts in values.items()}


def weighted_best_factor(observer: OmseObserver, x: Tensor, weights: Tensor) -> float:
    """The shrink factor among OMSE's candidates of least channel-weighted squared error on ``x``."""
    assert observer.data_min is not None and observer.data_max is not None
    errors = []
    for factor in observer.shrink_factors.tolist():
        scale, zero_point = qparams_from_range(
            observer.data_min * factor, observer.data_max * factor, observer.bit_type, observer.symmetric
        )
        x_hat = fake_quantize(x, scale.float(), zero_point.float(), observer.bit_type)
        errors.append(float(((x_hat - x).double().square() * weights).mean()))
    return float(observer.shrink_factors[min(range(len(errors)), key=errors.__getitem__)])


def fixed_range(observer: OmseObserver, factor: float) -> MinmaxObserver:
    """A MinMax observer whose range is ``observer``'s data range × ``factor`` (one OMSE candidate)."""
    assert observer.data_min is not None and observer.data_max is not None
    fixed = MinmaxObserver(observer.bit_type, observer.module_type, "layer_wise", observer.symmetric)
    fixed.update(torch.cat([observer.data_min, observer.data_max]).reshape(1, 2) * factor)
    return fixed


def main() -> None:
    torch.manual_seed(0)
    calib = demo_batches("train", BATCH_SIZE, BATCHES)
    images, labels = demo_split("test")
    model = load_demo_model()
    channels = add_outlier_channels(model)
    with warnings.catch_warnings():  # MinMax on the softmax: part of the comparison
        warnings.simplefilter("ignore", ConfigWarning)
        configs = {
            (observer, mode): load_config(config(observer, mode, weights_channel_wise=False))
            for observer, mode in (("MinmaxObserver", "layer_wise"), ("MinmaxObserver", "channel_wise"))
        }
    reports: dict[str, AccuracyReport] = {
        f"MinMax {mode}": calibrate_and_evaluate(model, cfg, calib, images, labels)[1]
        for (_, mode), cfg in configs.items()
    }
    qvit = QuantViT(model, load_config(config("OmseObserver", "layer_wise", weights_channel_wise=False)))
    qvit.calibrate(calib)
    qvit.compute_quant_params()
    reports["OMSE layer_wise"] = evaluate_quantized(qvit, images, labels)
    values = point_values(model, calib)
    dim = model.blocks[0].attn.qkv.in_features  # type: ignore[index, union-attr]
    print("| block | point | OMSE keeps | function-weighted MSE keeps |\n|---|---|---:|---:|")
    for (block, point), x in sorted(values.items()):
        observer = qvit.blocks[block].observers[point]
        assert isinstance(observer, OmseObserver)
        factor = weighted_best_factor(observer, x, channel_weights(channels[block], point, dim))
        clip = torch.cat([observer.clip_min, observer.clip_max]).abs().max()
        kept = float(clip / torch.cat([observer.data_min, observer.data_max]).abs().max())  # its shrink factor
        print(f"| {block} | {point} | {100 * kept:.0f}% | {100 * factor:.0f}% |")
        qvit.set_observer(block, point, fixed_range(observer, factor))
    qvit.compute_quant_params()
    reports["OMSE layer_wise, function-weighted at those points"] = evaluate_quantized(qvit, images, labels)
    low = 100 * reports["MinMax layer_wise"].agreement
    gap = 100 * reports["MinMax channel_wise"].agreement - low
    print("\n| model | agreement % | logit SQNR dB | share of MinMax's gap |\n|---|---:|---:|---:|")
    for name, report in reports.items():
        share = (100 * report.agreement - low) / gap if gap > 0 else float("nan")
        print(f"| {name} | {100 * report.agreement:.2f} | {report.logit_sqnr_db:.1f} | {100 * share:.0f}% |")


if __name__ == "__main__":
    main()
