"""Real-size ViTs: calibration time and memory of the per-point statistics, and tuning speed.

For each model (timm, random init, seed 0, 224², random normal images; every row of a model sees
the same batches), in one process per model with ``--threads`` threads (default 2). Times are
medians of ``--repeats`` runs (default 3), forward and calibration alternating:
- ``forward s``: the plain float forward of the batches (timm's own model, no wrapper);
- ``calibration s``: ``run_calibration`` on the same batches (the statistics of every point, from
  which all four observers are fitted), and its ratio to the forward (target ≤ 2.5×);
- ``mem added MB``: peak RSS during ``run_calibration`` (sampled every 2 ms) minus the RSS just
  before it (targets: deit_small ≤ 600 MB, vit_base ≤ 1.5 GB);
- ``stats MB`` and ``per extra batch MB``: bytes held by the statistics, and their growth per batch
  from a run on half the batches (vit_base target ≤ 5 MB per batch);
- ``error_table s``: all points × four observers from the statistics (vit_base target ≤ 5 s), in
  the calibrating process, then ``loaded``: on the run saved and loaded in a fresh process, as an app
  that opens a run file computes it;
- ``refit ms``: one point's refit + summary (``point_summary``), median over blocks, per observer
  and point kind; the worst median is reported (deit_small target ≤ 50 ms).

Run: ``python benchmarks/scale.py`` (``--quick``: 2 batches of 4, a smoke run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = {"deit_small_patch16_224": (8, 16), "vit_base_patch16_224": (4, 16)}


def rss_mb() -> float:
    """Resident set size now, in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


class PeakSampler:
    """Samples the RSS in a thread while a block runs; ``peak`` is the largest value seen."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def loaded_table_s(path: str, threads: int, repeats: int) -> list[float]:
    """``error_table`` times of the run saved at ``path``, loaded in this (fresh) process."""
    import torch

    from explorer.analysis import error_table
    from explorer.analysis.runfile import load_run

    torch.set_num_threads(threads)
    run = load_run(path)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        error_table(run)
        times.append(time.perf_counter() - start)
    return times


def worker(name: str, batches: int, batch_size: int, threads: int, repeats: int) -> dict[str, Any]:
    """Measure one model; returns the figures as a dict."""
    import timm
    import torch

    from explorer.analysis import error_table, point_summary, run_calibration
    from explorer.config import load_config
    from explorer.observers import observer_names

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    g = torch.Generator().manual_seed(1)
    data = [torch.randn(batch_size, 3, 224, 224, generator=g) for _ in range(batches)]
    config = load_config("configs/quant_config_minmax.yaml")

    def forward_s() -> float:
        with torch.no_grad():
            start = time.perf_counter()
            for batch in data:
                model(batch)
            return time.perf_counter() - start

    def calibration_s() -> float:
        start = time.perf_counter()
        run_calibration(model, data, config)
        return time.perf_counter() - start

    with torch.no_grad():
        model(data[0][:2])  # warm-up
    forwards = [forward_s()]
    before = rss_mb()  # the first run after the forward, so no earlier run's freed memory hides its peak
    with PeakSampler() as sampler:
        start = time.perf_counter()
        run = run_calibration(model, data, config)
        calibrations = [time.perf_counter() - start]
    for _ in range(repeats - 1):  # alternate, so a noisy spell hits both sides
        forwards.append(forward_s())
        calibrations.append(calibration_s())
    forward, calibration = statistics.median(forwards), statistics.median(calibrations)
    half_bytes = run_calibration(model, data[: batches // 2], config).nbytes
    tables = []
    for _ in range(repeats):
        start = time.perf_counter()
        table = error_table(run)
        tables.append(time.perf_counter() - start)
    table_s = statistics.median(tables)
    with tempfile.TemporaryDirectory() as tmp:
        path = run.save(Path(tmp) / "run.safetensors")
        loaded = json.loads(
            subprocess.run(
                [sys.executable, __file__, "--threads", str(threads), "--repeats", str(repeats), "--loaded", str(path)],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
    refit: dict[str, float] = {}
    for observer_type in observer_names():
        for point in sorted({p for _, p in run.points}):
            times = []
            for block in range(run.num_blocks):
                key = (block, point)
                start = time.perf_counter()
                point_summary(run, key, run.point_config(observer_type, key))
                times.append(time.perf_counter() - start)
            refit[f"{observer_type}/{point}"] = 1000 * statistics.median(times)
    worst = max(refit, key=refit.__getitem__)
    return {
        "model": name,
        "batches": f"{batches} × {batch_size}",
        "forward_s": forward,
        "calibration_s": calibration,
        "mem_added_mb": sampler.peak - before,
        "stats_mb": run.nbytes / 2**20,
        "per_batch_mb": (run.nbytes - half_bytes) / 2**20 / (batches - batches // 2),
        "error_table_s": table_s,
        "loaded_table_s": statistics.median(loaded),
        "missing_metrics": int(table["mse"].isna().sum()),
        "refit_worst_ms": refit[worst],
        "refit_worst": worst,
        "refit_median_ms": statistics.median(refit.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 batches of 4 per model (smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="timings are medians of this many runs")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--loaded", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loaded:
        print(json.dumps(loaded_table_s(args.loaded, args.threads, args.repeats)))
        return
    if args.worker:
        name, batches, batch_size = args.worker.split(":")
        print(json.dumps(worker(name, int(batches), int(batch_size), args.threads, args.repeats)))
        return
    rows = []
    for name in args.models:
        batches, batch_size = (2, 4) if args.quick else MODELS[name]
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--threads",
                str(args.threads),
                "--repeats",
                str(args.repeats),
                "--worker",
                f"{name}:{batches}:{batch_size}",
            ],  # fmt: skip
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"threads: {args.threads}; timm random init, 224², random normal images; same batches per model\n")
    print(
        "| model | batches | forward s | calibration s | × forward | mem added MB | stats MB | per extra batch MB "
        "| error_table s (loaded) | metrics missing | refit+summary ms (median; worst observer/point) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['batches']} | {r['forward_s']:.2f} | {r['calibration_s']:.2f} | "
            f"{r['calibration_s'] / r['forward_s']:.2f}× | {r['mem_added_mb']:.0f} | {r['stats_mb']:.0f} | "
            f"{r['per_batch_mb']:.2f} | {r['error_table_s']:.2f} ({r['loaded_table_s']:.2f}) | "
            f"{r['missing_metrics']} | "
            f"{r['refit_median_ms']:.1f}; {r['refit_worst_ms']:.1f} ({r['refit_worst']}) |"
        )


if __name__ == "__main__":
    main()
