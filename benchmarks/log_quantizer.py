"""Log2 and log√2 grids on the softmax (``intSoft``) against uniform observers, on the demo.

Only ``intSoft`` is quantized to 4 bits (layer-wise); every other point stays at 16 bits (MinMax,
channel-wise), so the table isolates the softmax grid. Calibration: the app's default, 4 batches ×
32 of the demo train split (one statistics pass; each row's observers are fitted from it);
evaluation: the demo test split. Columns: top-1 agreement with FP32 and the SQNR of the logits.

Then the accuracy of the log-grid metrics read from the statistics (no raw values) against the
exact figures on the values themselves: on the demo's ``intSoft`` tensors, and on synthetic
attention maps of real-size ViTs (197, 1024 and 2048 tokens, flat and peaked), for the linear
statistics histogram and for the log-spaced :class:`~explorer.stats.log_metrics.LogHistogram`
sketch. Last, the calibration time of a uniform and of a log ``intSoft`` (the log grid adds one
comparison).

Targets: a log grid at least 5 dB of logit SQNR above the best uniform observer, with agreement
within 1 point of it; metrics from the statistics within 0.3 dB of exact.

Run: ``python benchmarks/log_quantizer.py`` (about three minutes on 2 cores).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.analysis import evaluate_quantized  # noqa: E402
from explorer.analysis.explore import quantized_model, run_calibration  # noqa: E402
from explorer.bit_type import BitType  # noqa: E402
from explorer.config import ConfigWarning, load_config  # noqa: E402
from explorer.data import demo_batches, demo_split, load_demo_model  # noqa: E402
from explorer.quant_ops import qparams_from_range  # noqa: E402
from explorer.stats import PointStats  # noqa: E402
from explorer.stats.log_metrics import LogHistogram, log_error_from_stats, log_error_from_values  # noqa: E402
from explorer.stats.metrics import ratio_db  # noqa: E402
from explorer.vit.model import QuantViT  # noqa: E402

BATCHES, BATCH_SIZE = 4, 32  # the app's default calibration
INT4 = {"bits": 4, "signed": True, "name": "int4"}
UINT4 = {"bits": 4, "signed": False, "name": "uint4"}
GRIDS: dict[str, dict[str, Any]] = {
    "MinMax, int4": {"observer_type": "MinmaxObserver", "bit_type": INT4},
    "MinMax, uint4": {"observer_type": "MinmaxObserver", "bit_type": UINT4},
    "KL, int4 (the guide's choice)": {"observer_type": "KLObserver", "bit_type": INT4, "kl_bins": 4096},
    "OMSE, uint4": {"observer_type": "OmseObserver", "bit_type": UINT4},
    "log2, 4 bits": {"observer_type": "MinmaxObserver", "bit_type": UINT4, "quantizer": "log2"},
    "log√2, 4 bits": {"observer_type": "MinmaxObserver", "bit_type": UINT4, "quantizer": "log_sqrt2"},
}
UNIFORM_ROWS = 4  # the first rows of GRIDS are uniform
SQNR_MARGIN, AGREEMENT_SLACK, METRIC_TOLERANCE = 5.0, 1.0, 0.3


def config(intsoft: dict[str, Any]) -> dict[str, Any]:
    """Every point at 16 bits (MinMax channel-wise), ``intSoft`` layer-wise with ``intsoft``'s settings."""
    default = {"observer_type": "MinmaxObserver", "calibration_mode": "channel_wise"}
    return {
        "default": {**default, "bit_type": {"bits": 16, "signed": True, "name": "int16"}},
        "attn_layer": {"intSoft": {"calibration_mode": "layer_wise", **intsoft}},
    }


def grid_table() -> list[tuple[str, float, float]]:
    """``(row, agreement %, logit SQNR dB)`` per grid."""
    model = load_demo_model()
    calib = demo_batches("train", BATCH_SIZE, BATCHES)
    images, labels = demo_split("test")
    with warnings.catch_warnings():  # MinMax on the softmax is the point of the comparison
        warnings.simplefilter("ignore", ConfigWarning)
        configs = {row: load_config(config(entry)) for row, entry in GRIDS.items()}
    run = run_calibration(model, calib, configs["MinMax, int4"])
    rows = []
    for row, cfg in configs.items():
        report = evaluate_quantized(quantized_model(model, run, cfg), images, labels)
        rows.append((row, 100 * report.agreement, report.logit_sqnr_db))
    return rows


def demo_softmax() -> list[Tensor]:
    """The ``intSoft`` tensors of every block on the calibration batches."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        qvit = QuantViT(load_demo_model(), load_config(config(GRIDS["MinMax, uint4"])))
    tensors: list[Tensor] = []
    for block in qvit.blocks:
        block.taps.append(lambda point, x: tensors.append(x.detach().clone()) if point == "intSoft" else None)
    with torch.no_grad():
        for batch in demo_batches("train", BATCH_SIZE, BATCHES):
            qvit(batch)
    return tensors


def synthetic_softmax(tokens: int, heads: int = 12, spread: float = 2.5, batches: int = 2) -> list[Tensor]:
    """Attention maps shaped like a real-size ViT's: a softmax of Gaussian scores (std ``spread``;
    a small spread gives flat attention, most values near ``1 / tokens``)."""
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randn(1, heads, tokens, tokens, generator=generator) * spread).softmax(dim=-1) for _ in range(batches)
    ]


def metric_rows(name: str, tensors: list[Tensor]) -> list[tuple[str, str, int, float, float, float]]:
    """``(data, grid, bits, exact dB, linear histogram dB, log sketch dB)`` for one point's tensors."""
    stats, sketch = PointStats("activation"), LogHistogram.empty(1)
    for t in tensors:
        stats.update(t)
        sketch = sketch.counted(t.reshape(1, -1))
    view = dataclasses.replace(stats.view("layer_wise"), raw=None)  # what a real-size point keeps
    values = torch.cat([t.reshape(1, -1) for t in tensors], dim=1)
    signal = float((values.double() ** 2).sum())
    rows = []
    for bits in (4, 8):
        bit_type = BitType(bits, False)
        scale, zero_point = qparams_from_range(view.min, view.max, bit_type)
        for quantizer in ("log2", "log_sqrt2"):
            exact = log_error_from_values(values, scale, zero_point, bit_type, quantizer).sqnr_db
            binned = log_error_from_stats(view, scale, zero_point, bit_type, quantizer).sqnr_db
            rounding, clipping = sketch.log_sse(view.max.double(), bits, quantizer)
            rows.append((name, quantizer, bits, exact, binned, ratio_db(signal, float(rounding + clipping))))
    return rows


def calibration_seconds(grids: list[str], repeats: int = 5) -> dict[str, float]:
    """Best-of-``repeats`` time of a full calibration pass of the demo per row of :data:`GRIDS`,
    the rows taking turns so that a busy machine slows them alike."""
    model, calib = load_demo_model(), demo_batches("train", BATCH_SIZE, BATCHES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        configs = {row: load_config(config(GRIDS[row])) for row in grids}
    best = dict.fromkeys(grids, float("inf"))
    for _ in range(repeats):
        for row, cfg in configs.items():
            qvit = QuantViT(model, cfg)
            start = time.perf_counter()
            qvit.calibrate(calib)
            best[row] = min(best[row], time.perf_counter() - start)
    return best


def main() -> None:
    torch.manual_seed(0)
    rows = grid_table()
    print("| intSoft grid | agreement with FP32 | logit SQNR |\n|---|---:|---:|")
    for row, agreement, sqnr in rows:
        print(f"| {row} | {agreement:.1f}% | {sqnr:.1f} dB |")
    best = max(rows[:UNIFORM_ROWS], key=lambda r: r[2])
    log = max(rows[UNIFORM_ROWS:], key=lambda r: r[2])
    print(
        f"\n- best log grid ({log[0]}) − best uniform ({best[0]}): {log[2] - best[2]:+.1f} dB "
        f"({'PASS' if log[2] - best[2] >= SQNR_MARGIN else 'FAIL'} ≥ +{SQNR_MARGIN:g}), agreement "
        f"{log[1] - best[1]:+.1f} points ({'PASS' if log[1] >= best[1] - AGREEMENT_SLACK else 'FAIL'} ≥ −1)"
    )
    print("\n| data | grid | bits | exact SQNR | from the statistics | from a log sketch (16/octave) |")
    print("|---|---|---:|---:|---:|---:|")
    worst = 0.0
    data = {
        "demo intSoft": demo_softmax(),
        "197 tokens": synthetic_softmax(197),
        "1024 tokens": synthetic_softmax(1024),
        "2048 tokens, flat": synthetic_softmax(2048, heads=2, spread=0.5),
        "2048 tokens, peaked": synthetic_softmax(2048, heads=2, spread=8.0),
    }
    for name, tensors in data.items():
        for data_name, quantizer, bits, exact, binned, sketch in metric_rows(name, tensors):
            worst = max(worst, abs(binned - exact))
            print(
                f"| {data_name} | {quantizer} | {bits} | {exact:.3f} dB | {binned:.3f} dB ({binned - exact:+.3f}) "
                f"| {sketch:.3f} dB ({sketch - exact:+.3f}) |"
            )
    verdict = "PASS" if worst <= METRIC_TOLERANCE else "FAIL"
    print(f"\n- worst metric error from the statistics: {worst:.3f} dB ({verdict} ≤ {METRIC_TOLERANCE:g})")
    seconds = calibration_seconds(["MinMax, uint4", "log2, 4 bits"])
    print("- calibration (best of 5): " + ", ".join(f"{row} {t:.3f} s" for row, t in seconds.items()))


if __name__ == "__main__":
    main()
