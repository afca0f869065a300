"""The app's latencies on the embedded demo: the one calibration pass that feeds all four
observers at every point, and re-tuning one point (refit from the statistics + metrics),
which SPEC §7 wants under 250 ms per change.

Run: ``python benchmarks/tuning.py`` (``--repeats N``). Figures are medians; the first
(warm-up) refit of each kind is not counted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.analysis import error_table, point_summary, run_calibration  # noqa: E402
from explorer.config import load_config  # noqa: E402
from explorer.data import demo_batches, load_demo_model  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "recommended_config.yaml"
TARGET_MS = 250.0
ALPHA_FLOOR = 0.9  # the lowest alpha tuned below (and the sidebar's lowest floor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    model, config = load_demo_model(), load_config(CONFIG)
    batches = demo_batches("train", args.batch_size, args.batches)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; demo ViT, "
        f"{args.batches} × {args.batch_size} calibration images, {CONFIG.name}\n"
    )

    times = []
    for _ in range(3):
        start = time.perf_counter()
        run = run_calibration(model, batches, config, alpha_floor=ALPHA_FLOOR)
        times.append(time.perf_counter() - start)
    print(
        f"calibration, all four observers on all {len(run.points)} points: "
        f"{statistics.median(times):.2f} s (median of 3: {', '.join(f'{t:.2f}' for t in times)})"
    )
    start = time.perf_counter()
    error_table(run)
    print(f"all-layer error table (the Compare tab): {time.perf_counter() - start:.2f} s\n")

    print("| point | change | median (ms) | max (ms) | target |")
    print("|---|---|---|---|---|")
    for key in ((1, "mlp_act"), (1, "attn_qkv_output"), (1, "intSoft"), (1, "mlp_fc1")):
        block, name = key
        base = config.point(name, block)
        changes = {
            "Percentile alpha": [
                base.replace(observer_type="PercentileObserver", percentile_alpha=a)
                for a in (0.99, 0.999, 0.9999, 0.995, 0.9995, 0.9)
            ],
            "Percentile sigma": [
                base.replace(observer_type="PercentileObserver", percentile_sigma=s)
                for s in (0.05, 0.2, 0.3, 0.5, 0.7, 0.9)
            ],
            "KL kl_bins": [
                base.replace(observer_type="KLObserver", kl_bins=b) for b in (512, 1024, 4096, 768, 1536, 3072)
            ],
            "OMSE bits": [
                base.replace(observer_type="OmseObserver", bit_type=base.bit_type.__class__(b, True))
                for b in (4, 6, 8, 5, 7, 3)
            ],
        }
        for label, points in changes.items():
            samples = []
            for point in points[: args.repeats + 1]:
                start = time.perf_counter()
                point_summary(run, key, point)
                samples.append((time.perf_counter() - start) * 1e3)
            counted = samples[1:]
            median = statistics.median(counted)
            verdict = "PASS" if median < TARGET_MS else "MISS"
            print(
                f"| {block}·{name} ({base.calibration_mode}) | {label} | {median:.0f} | {max(counted):.0f} | "
                f"< {TARGET_MS:.0f} ms {verdict} |"
            )


if __name__ == "__main__":
    main()
