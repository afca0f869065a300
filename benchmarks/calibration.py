"""Whole-model calibration cost and accuracy per observer: the guide's §5 table, reproduced.

Two models:
- ``demo``: the embedded digits ViT (``sample_data/``); calibration on the demo train split,
  accuracy on the demo test split (top-1 FP32 vs quantized, and the drop).
- ``vit_tiny``: ``timm.create_model("vit_tiny_patch16_224", pretrained=False)`` (random
  weights, seed 0) on random normal images. Top-1 accuracy means nothing there, so the
  table gives the top-1 agreement of the quantized model with FP32 and the logit SQNR.

Rows: MinMax, Percentile, OMSE and KL each quantize *every* point of every block (the
default of ``configs/quant_config_minmax.yaml`` -- channel_wise int8 -- with its
``observer_type`` replaced), plus ``configs/recommended_config.yaml`` as it ships.
All rows see the same calibration batches, so the ratios to MinMax compare like with like.

Measured per row, in a fresh subprocess per row and round:
- time: the whole calibration (forward passes + observer updates + ``compute_quant_params``),
  the median of ``--repeats`` runs (default 3), each on a fresh ``QuantViT``. A row whose first
  run takes longer than ``--single-run-s`` (default 15 s) is timed once. The table says how many
  runs each row got. The rows run round-robin ``--rounds`` times (default 2), each time in a fresh
  process, and each row reports its fastest round: on this shared 2-core machine a process
  sometimes runs about 1.5× slower from start to end (as if it had one core), so one process per
  row could set a fast MinMax against a slow KL, or the reverse;
- memory: peak RSS (``ru_maxrss``) minus the RSS just before the first calibration, i.e. what
  calibration adds (after one warm-up FP32 forward, so one-time library set-up is not billed
  to it); the absolute peak is printed too;
- accuracy: after the timed runs.

Run: ``python benchmarks/calibration.py`` (``--quick``: fewer batches and one run, a smoke run).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.observers import observer_label, observer_names  # noqa: E402

OBSERVER_OF_ROW = {observer_label(name): name for name in observer_names()}
"""Table row (the observer's label) → observer type: every registered observer."""
ROWS: tuple[str, ...] = (*OBSERVER_OF_ROW, "recommended")
# SPEC §7: whole-model calibration time and memory relative to MinMax.
TIME_TARGETS = {"Percentile": 1.5, "OMSE": 2.0, "KL": 2.0}
MEMORY_TARGET = 1.5
# The guide's §5 table (ImageNet, 100 batches): seconds, accuracy drop, MB.
GUIDE_TABLE = {
    "MinMax": (2.3, "-1.2%", 100),
    "Percentile": (5.1, "-0.3%", 150),
    "OMSE": (48.7, "-0.1%", 500),
    "KL": (32.4, "-0.2%", 300),
}
# The guide's recommended calibration batch counts per observer (§6.3).
GUIDE_BATCHES = {"MinMax": 10, "Percentile": 50, "OMSE": 20, "KL": 100}


@dataclass(frozen=True)
class Workload:
    """How much data one model's calibration sees."""

    batch_size: int
    num_batches: int
    eval_images: int | None  # None: the whole demo test split


WORKLOADS: dict[str, dict[str, Workload]] = {
    "full": {"demo": Workload(64, 20, None), "vit_tiny": Workload(8, 8, 32)},
    "quick": {"demo": Workload(32, 2, None), "vit_tiny": Workload(2, 1, 4)},
}


# ----- worker: one calibration in this process ----------------------------------------------------
def current_rss_mb() -> float:
    """Resident set size now, in MB (from /proc; falls back to the peak where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def row_config(row: str) -> Any:
    """The config of one table row."""
    from explorer import load_config

    if row == "recommended":
        return load_config(ROOT / "configs" / "recommended_config.yaml")
    default = load_config(ROOT / "configs" / "quant_config_minmax.yaml").to_dict()["default"]
    # Only the default section: the file's `layers.attn_qkv: MinmaxObserver` would otherwise pin one point.
    return load_config({"default": {**default, "observer_type": OBSERVER_OF_ROW[row]}})


def load_workload(model_name: str, work: Workload) -> tuple[Any, list[Any], Any, Any]:
    """``(model, calibration batches, eval images, eval labels or None)``."""
    import timm
    import torch

    from explorer.data import demo_batches, demo_split, load_demo_model

    if model_name == "demo":
        model = load_demo_model()
        batches = demo_batches("train", work.batch_size, work.num_batches)
        images, labels = demo_split("test")
        return model, batches, images, labels
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(work.batch_size, 3, 224, 224, generator=gen) for _ in range(work.num_batches)]
    images = torch.randn(work.eval_images or 64, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    return model, batches, images, None


def worker(model_name: str, row: str, work: Workload, repeats: int, single_run_s: float) -> dict[str, Any]:
    """Calibrate one model with one row's config: times, memory of the first run, then accuracy."""
    import torch

    from explorer import QuantViT

    warnings.simplefilter("ignore")  # the guide's intSoft "common mistakes" are intended in these rows
    model, batches, images, labels = load_workload(model_name, work)
    config = row_config(row)
    with torch.no_grad():
        model(batches[0])  # warm-up: one-time library set-up is not calibration cost
    gc.collect()
    before = current_rss_mb()
    seconds: list[float] = []
    peak = before
    qvit = None
    while len(seconds) < repeats:
        qvit = None
        gc.collect()
        qvit = QuantViT(model, config)
        start = time.perf_counter()
        qvit.calibrate(batches)
        qvit.compute_quant_params()
        seconds.append(time.perf_counter() - start)
        if len(seconds) == 1:
            peak = peak_rss_mb()
            if seconds[0] > single_run_s:
                break
    assert qvit is not None
    from explorer.analysis.evaluation import evaluate_quantized

    report = evaluate_quantized(qvit, images, labels, batch_size=64)
    return {
        "seconds": statistics.median(seconds),
        "all_seconds": seconds,
        "mem_added_mb": max(0.0, peak - before),
        "mem_peak_mb": peak,
        "threads": torch.get_num_threads(),
        "fp32_top1": report.fp32_top1,
        "quant_top1": report.quant_top1,
        "agreement": report.agreement,
        "logit_sqnr_db": report.logit_sqnr_db,
        "num_images": report.num_images,
    }


# ----- driver: subprocesses, medians, table ---------------------------------------------------------
def run_worker(model_name: str, row: str, mode: str, repeats: int, single_run_s: float) -> dict[str, Any]:
    """One row of one model in a fresh Python process; its JSON result."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        model_name,
        row,
        "--workload",
        mode,
        "--repeats",
        str(repeats),
        "--single-run-s",
        str(single_run_s),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {model_name}/{row} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def verdict(ratio: float, target: float | None) -> str:
    """PASS/MISS against a ratio target ('-' when there is none)."""
    if target is None:
        return "-"
    return "PASS" if ratio <= target else "MISS"


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(model_name: str, results: dict[str, dict[str, Any]]) -> list[str]:
    """The markdown table of one model."""
    base_time = results["MinMax"]["seconds"]
    base_mem = results["MinMax"]["mem_added_mb"]
    if model_name == "demo":
        acc_head = "FP32 top-1 % | quant top-1 % | drop (pts)"
    else:
        acc_head = "agreement | logit SQNR (dB)"
    header = (
        "| observer | runs | calib time (s, median) | time × MinMax | time target | time | "
        f"mem added (MB) | mem × MinMax | mem target | mem | peak RSS (MB) | {acc_head} |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in ROWS:
        r = results[row]
        time_ratio = r["seconds"] / base_time if base_time > 0 else float("nan")
        mem_ratio = r["mem_added_mb"] / base_mem if base_mem > 0 else float("nan")
        time_target = TIME_TARGETS.get(row)
        mem_target = MEMORY_TARGET if row in TIME_TARGETS else None
        if model_name == "demo":
            drop = None if r["fp32_top1"] is None else r["fp32_top1"] - r["quant_top1"]
            acc = f"{fmt(r['fp32_top1'], '.2f')} | {fmt(r['quant_top1'], '.2f')} | {fmt(drop, '+.2f')}"
        else:
            acc = f"{r['agreement']:.3f} | {r['logit_sqnr_db']:.1f}"
        lines.append(
            f"| {row} | {len(r['all_seconds'])} | {r['seconds']:.2f} | {time_ratio:.2f}× | "
            f"{'-' if time_target is None else f'≤ {time_target}×'} | {verdict(time_ratio, time_target)} | "
            f"{r['mem_added_mb']:.1f} | {mem_ratio:.2f}× | "
            f"{'-' if mem_target is None else f'≤ {mem_target}×'} | {verdict(mem_ratio, mem_target)} | "
            f"{r['mem_peak_mb']:.0f} | {acc} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer batches and one run per row: a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row (median); default 3, quick 1")
    parser.add_argument(
        "--single-run-s",
        type=float,
        default=15.0,
        help="a row whose first run takes longer than this is timed once; default 15",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="fresh processes per row, run round-robin; each row reports its fastest round (default 2, quick 1)",
    )
    parser.add_argument("--models", nargs="+", default=["demo", "vit_tiny"], choices=["demo", "vit_tiny"])
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "ROW"), help=argparse.SUPPRESS)
    parser.add_argument("--workload", default="full", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.quick:
        args.rounds = 1
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    if args.worker:
        model_name, row = args.worker
        work = WORKLOADS[args.workload][model_name]
        print(json.dumps(worker(model_name, row, work, repeats, args.single_run_s)))
        return

    mode = "quick" if args.quick else "full"
    import torch

    print("# Whole-model calibration per observer (guide §5, SPEC §7)\n")
    print(
        "Rows MinMax/Percentile/OMSE/KL: every point of every block uses that observer, on top of "
        "configs/quant_config_minmax.yaml's default (channel_wise, int8). "
        "'recommended' is configs/recommended_config.yaml as shipped (OMSE weights, Percentile "
        "activations, KL intSoft layer_wise)."
    )
    print(
        "Time: whole calibration (forward passes + observer updates + compute_quant_params), median of "
        f"{repeats} run(s) per row on a fresh QuantViT each (rows whose first run exceeds {args.single_run_s:.0f} s "
        "are timed once), one fresh subprocess per row and round; each row reports the fastest of "
        f"{args.rounds} round(s), run round-robin over the rows (on a shared machine a process sometimes runs "
        "about 1.5× slower throughout, whatever it runs); torch threads: default "
        f"({torch.get_num_threads()} here). Memory: peak RSS (ru_maxrss) minus RSS right before the first "
        "calibration (after one warm-up FP32 forward); the absolute peak includes torch/timm themselves."
    )
    recommended = ", ".join(f"{k} {v}" for k, v in GUIDE_BATCHES.items())
    print(
        "Every observer gets the SAME calibration batches so the ratios compare like with like. "
        f"The guide recommends different counts per observer ({recommended}) as a quality/cost "
        "trade-off; using them here would mix the cost of an observer with the cost of more data "
        "(calibration time grows about linearly with the batch count for every observer)."
    )
    print(
        "Guide §5 (ImageNet, 100 batches, its own implementation): "
        + "; ".join(f"{k} {t} s / {d} / {m} MB" for k, (t, d, m) in GUIDE_TABLE.items())
        + " = Percentile 2.2×, OMSE 21×, KL 14× MinMax's time."
    )
    if args.quick:
        print("\n**--quick: smoke run with few batches and one run per row; ratios are not meaningful.**")

    started = time.perf_counter()
    for model_name in args.models:
        work = WORKLOADS[mode][model_name]
        rounds: dict[str, list[dict[str, Any]]] = {row: [] for row in ROWS}
        for _ in range(args.rounds):  # every row once per round, so a slow spell of the machine hits all rows
            for row in ROWS:
                res = run_worker(model_name, row, mode, repeats, args.single_run_s)
                rounds[row].append(res)
                runs = ", ".join(f"{t:.2f}" for t in res["all_seconds"])
                print(
                    f"  [{time.perf_counter() - started:6.1f} s] {model_name:8s} {row:11s} runs {runs} s, "
                    f"+{res['mem_added_mb']:.0f} MB",
                    file=sys.stderr,
                )
        results = {row: min(found, key=lambda r: r["seconds"]) for row, found in rounds.items()}
        if model_name == "demo":
            title = (
                f"## demo ViT (4 blocks, dim 64, 16×16 digits): {work.num_batches} batches × {work.batch_size} "
                f"train images; accuracy on the {results['MinMax']['num_images']} test images"
            )
        else:
            title = (
                f"## vit_tiny_patch16_224 (random init, seed 0): {work.num_batches} batches × {work.batch_size} "
                f"random normal images; agreement/SQNR on {results['MinMax']['num_images']} other random images"
            )
        print(f"\n{title}\n")
        print("\n".join(table(model_name, results)))
        runs_text = "; ".join(
            f"{row} " + " | ".join(", ".join(f"{t:.2f}" for t in r["all_seconds"]) for r in rounds[row]) for row in ROWS
        )
        print(f"\nAll timed runs (s; rounds apart by |): {runs_text}")
    print(f"\nTotal benchmark time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
