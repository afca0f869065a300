"""Which point hurts, and what to use (SPEC §10), measured on the embedded demo.

Calibration: 4 × 32 train digits (the app's default). Selection (sensitivity, the recommendation's
refinement, mixed precision): 128 other train digits. Every accuracy below is on the demo test
split, which no choice saw. Rows:
- at 4 bits on every point: the four uniform configs (``configs/quant_config_*.yaml``), the guide's
  ``recommended_config.yaml`` and ``recommend_config(bits=4)``;
- at an average of 6 bits: the four uniform 6-bit configs and ``mixed_precision`` (choices 4/6/8)
  from the OMSE config;
- timings: sensitivity of all 32 demo points, the recommendation, and with ``--vit-tiny`` the
  sensitivity of vit_tiny_patch16_224 (random init, 12 blocks, 64 evaluation images).

Run: ``python benchmarks/recommend.py [--vit-tiny]`` (2 threads).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.analysis import (  # noqa: E402
    AccuracyReport,
    evaluate_quantized,
    quantized_model,
    recommend,
    run_calibration,
    search_mixed_precision,
    sensitivity,
)
from explorer.analysis.mixed_precision import with_bits  # noqa: E402
from explorer.config import ConfigWarning, QuantConfig, load_config  # noqa: E402
from explorer.data import demo_batches, demo_split, load_demo_model  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
UNIFORM = {"MinMax": "minmax", "Percentile": "percentile", "OMSE": "omse", "KL": "kl"}
SENSITIVITY_TARGET_S, RECOMMEND_TARGET_S, VIT_TINY_TARGET_S = 20.0, 60.0, 180.0


def _config(name: str | None = None) -> QuantConfig:
    """A config of ``configs/`` (None: the built-in defaults), its intSoft warnings silenced: they are the point."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        return QuantConfig() if name is None else load_config(CONFIGS / name)


def _row(label: str, report: AccuracyReport) -> str:
    return f"| {label} | {report.quant_top1:.2f} | {100 * report.agreement:.2f} | {report.logit_sqnr_db:.2f} |"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def vit_tiny_seconds() -> float:
    """Seconds for the sensitivity of every point of a random-init vit_tiny on 64 images."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    calib = [torch.randn(8, 3, 224, 224)]
    evaluation = list(torch.randn(64, 3, 224, 224).split(16))
    config = _config()
    run = run_calibration(model, calib, config)
    start = time.perf_counter()
    sensitivity(model, run, config, evaluation)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vit-tiny", action="store_true", help="also time sensitivity on vit_tiny (minutes)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = load_demo_model()
    calib = demo_batches("train", 32, 4)
    selection = demo_batches("train", 64, 6)[4:]  # train digits 256-383: not calibration, not test
    images, labels = demo_split("test")
    run = run_calibration(model, calib, _config())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; "
        f"demo ViT, calibration {len(calib)} × 32, selection {sum(len(b) for b in selection)} train digits, "
        f"test {len(images)} digits\n"
    )

    def test(config: QuantConfig) -> AccuracyReport:
        return evaluate_quantized(quantized_model(model, run, config), images, labels)

    print("| config | top-1 % | agreement % | logit SQNR dB |\n|---|---:|---:|---:|")
    print(f"| FP32 | {test(_config()).fp32_top1:.2f} | 100.00 | — |")
    uniform4 = {label: test(with_bits(_config(f"quant_config_{f}.yaml"), 4)) for label, f in UNIFORM.items()}
    for label, report in uniform4.items():
        print(_row(f"4-bit uniform {label}", report))
    guide4 = test(with_bits(_config("recommended_config.yaml"), 4))
    print(_row("4-bit guide's recommended_config", guide4))
    start = time.perf_counter()
    recommendation = recommend(model, run, selection, bits=4)
    recommend_s = time.perf_counter() - start
    recommended4 = test(recommendation.config)
    print(_row("4-bit recommend_config", recommended4))
    uniform6 = {label: test(with_bits(_config(f"quant_config_{f}.yaml"), 6)) for label, f in UNIFORM.items()}
    for label, report in uniform6.items():
        print(_row(f"6-bit uniform {label}", report))
    mixed = search_mixed_precision(model, run, _config("quant_config_omse.yaml"), selection, 6.0)
    chosen = mixed.tried[mixed.tried["chosen"]].iloc[0]
    mixed6 = test(mixed.config)
    print(_row(f"mixed precision from OMSE, average {chosen['average_bits']:.2f} bits ({chosen['label']})", mixed6))
    start = time.perf_counter()
    sensitivity(model, run, _config("quant_config_omse.yaml"), selection)
    sensitivity_s = time.perf_counter() - start

    best4 = max(r.agreement for r in uniform4.values())
    print("\nTargets:")
    print(
        f"- 4-bit recommendation agreement {100 * recommended4.agreement:.2f} % ≥ best uniform "
        f"{100 * best4:.2f} % and ≥ guide {100 * guide4.agreement:.2f} %: "
        f"{_verdict(recommended4.agreement >= max(best4, guide4.agreement))}"
    )
    best6 = max(r.agreement for r in uniform6.values())
    print(
        f"- mixed precision (≤ 6 bits) agreement {100 * mixed6.agreement:.2f} % ≥ best uniform 6-bit "
        f"{100 * best6:.2f} %: {_verdict(mixed6.agreement >= best6)}"
    )
    fast = _verdict(sensitivity_s <= SENSITIVITY_TARGET_S)
    print(f"- sensitivity, 32 demo points: {sensitivity_s:.1f} s ({fast} ≤ 20 s)")
    print(f"- recommendation on the demo: {recommend_s:.1f} s ({_verdict(recommend_s <= RECOMMEND_TARGET_S)} ≤ 60 s)")
    if args.vit_tiny:
        seconds = vit_tiny_seconds()
        fast = _verdict(seconds <= VIT_TINY_TARGET_S)
        print(f"- sensitivity, vit_tiny 96 points × 64 images: {seconds:.0f} s ({fast} ≤ 180 s)")
    print(f"(load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
