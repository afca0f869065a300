"""The four observers × {layer_wise, channel_wise} on both demos: the plain one and the one with
outlier channels (``load_demo_model(outlier_channels=True)``, the same function).

Every row quantizes every point of every block (weights and activations) to signed int8 with one
observer and one granularity (W8A8); ``--weights-channel-wise`` instead keeps the four weight
points at MinMax channel-wise and varies only the activations, FQ-ViT's protocol. Calibration:
the app's default, 4 batches × 32 of the demo train split; evaluation: the demo test split.
Columns: top-1 (%), top-1 agreement with FP32 (%) and the SQNR of the logits against FP32 (dB).

Below the table, the targets of the outlier demo: layer-wise MinMax at least 3 points of agreement
below channel-wise MinMax, and Percentile and OMSE (layer-wise) recovering at least half that gap.

Run: ``python benchmarks/demo_observers.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.analysis import AccuracyReport, calibrate_and_evaluate  # noqa: E402
from explorer.config import WEIGHT_POINTS, ConfigWarning, load_config  # noqa: E402
from explorer.data import demo_batches, demo_split, load_demo_model  # noqa: E402
from explorer.observers import observer_label, observer_names  # noqa: E402

MODES = ("layer_wise", "channel_wise")
DEMOS = {"plain": False, "outliers": True}
INT8 = {"bits": 8, "signed": True, "name": "int8"}
BATCHES, BATCH_SIZE = 4, 32  # the app's default calibration
GAP_TARGET = 3.0  # points of agreement between layer-wise and channel-wise MinMax
RECOVERY_TARGET = 0.5  # share of that gap Percentile and OMSE (layer-wise) must win back


def config(observer_type: str, mode: str, weights_channel_wise: bool) -> dict[str, Any]:
    """Every point on ``observer_type``/``mode`` in int8; optionally weights on MinMax channel-wise."""
    cfg: dict[str, Any] = {"default": {"observer_type": observer_type, "calibration_mode": mode, "bit_type": INT8}}
    if weights_channel_wise:
        weights = {"observer_type": "MinmaxObserver", "calibration_mode": "channel_wise"}
        cfg["layers"] = {point: weights for point in WEIGHT_POINTS}
    return cfg


def measure(weights_channel_wise: bool) -> dict[tuple[str, str, str], AccuracyReport]:
    """The report of every demo × observer × granularity."""
    calib = demo_batches("train", BATCH_SIZE, BATCHES)
    images, labels = demo_split("test")
    reports = {}
    for demo, outliers in DEMOS.items():
        model = load_demo_model(outlier_channels=outliers)
        for observer_type in observer_names():
            for mode in MODES:
                with warnings.catch_warnings():  # e.g. MinMax on the softmax: the point of the comparison
                    warnings.simplefilter("ignore", ConfigWarning)
                    cfg = load_config(config(observer_type, mode, weights_channel_wise))
                _, report = calibrate_and_evaluate(model, cfg, calib, images, labels)
                reports[demo, observer_type, mode] = report
                print(f"  {demo} {observer_label(observer_type)} {mode} done", file=sys.stderr, flush=True)
    return reports


def table(reports: dict[tuple[str, str, str], AccuracyReport]) -> str:
    """The markdown table, FP32 first."""
    lines = [
        "| demo | observer | granularity | top-1 % | agreement % | logit SQNR dB |",
        "|---|---|---|---:|---:|---:|",
    ]
    for demo in DEMOS:
        fp32 = reports[demo, observer_names()[0], MODES[0]].fp32_top1
        lines.append(f"| {demo} | FP32 | — | {fp32:.2f} | 100.00 | — |")
        for observer_type in observer_names():
            for mode in MODES:
                r = reports[demo, observer_type, mode]
                lines.append(
                    f"| {demo} | {observer_label(observer_type)} | {mode} | {r.quant_top1:.2f} | "
                    f"{100 * r.agreement:.2f} | {r.logit_sqnr_db:.1f} |"
                )
    return "\n".join(lines)


def targets(reports: dict[tuple[str, str, str], AccuracyReport]) -> list[str]:
    """The outlier demo's targets, each with its measured value and PASS/FAIL."""

    def agreement(observer_type: str, mode: str) -> float:
        return 100 * reports["outliers", observer_type, mode].agreement

    minmax_layer = agreement("MinmaxObserver", "layer_wise")
    gap = agreement("MinmaxObserver", "channel_wise") - minmax_layer
    lines = [f"- MinMax channel-wise − layer-wise agreement: {gap:.2f} points ({_verdict(gap >= GAP_TARGET)} ≥ 3)"]
    for observer_type in ("PercentileObserver", "OmseObserver"):
        recovered = (agreement(observer_type, "layer_wise") - minmax_layer) / gap if gap > 0 else float("nan")
        lines.append(
            f"- {observer_label(observer_type)} layer-wise recovers {100 * recovered:.0f}% of that gap "
            f"({_verdict(recovered >= RECOVERY_TARGET)} ≥ 50%)"
        )
    return lines


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights-channel-wise",
        action="store_true",
        help="keep the weights on MinMax channel-wise and vary only the activations (FQ-ViT's protocol)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    reports = measure(args.weights_channel_wise)
    scope = "activations (weights: MinMax channel-wise)" if args.weights_channel_wise else "every point"
    print(f"W8A8, signed int8 on {scope}; calibration {BATCHES} × {BATCH_SIZE} train digits; demo test split\n")
    print(table(reports))
    print("\nOutlier demo targets:")
    print("\n".join(targets(reports)))


if __name__ == "__main__":
    main()
