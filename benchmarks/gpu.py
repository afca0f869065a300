"""Real-size ViTs calibrated on a GPU: time, GPU memory, and agreement with the CPU.

For each model (timm, random init, seed 0, 224², random normal images, the sizes of
``benchmarks/scale.py``), model and batches on the GPU (``--device``, default ``cuda``):
- ``forward s``: the plain float forward of the batches; ``calibration s``: ``run_calibration`` (the
  statistics of every point, built on the GPU and handed back on the CPU) and its ratio to the
  forward. Medians of ``--repeats`` runs, alternating, each synchronised;
- ``GPU MB added``: peak GPU memory allocated during ``run_calibration`` minus that before it;
- ``guide path``: ``QuantViT.calibrate`` + ``compute_quant_params`` per observer (every point one
  observer type, as ``benchmarks/calibration.py``), as a ratio to MinMax's;
- ``vs CPU``: the same calibration on the CPU (TF32 off on the GPU, so both forwards keep float32);
  the largest SQNR difference over every point × observer of ``error_table``, and how many rows
  differ by more than 0.1 dB. The float forwards differ by rounding, so the figures agree closely,
  not exactly.

Run: ``python benchmarks/gpu.py`` on a machine with CUDA (``--quick``: 2 batches of 4). (Not
``cuda.py``: a script of that name in ``benchmarks/`` hides the ``cuda`` package that ``import torch``
looks for, and breaks every benchmark run from that folder.)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.calibration import row_config  # noqa: E402
from benchmarks.scale import MODELS  # noqa: E402

GUIDE_ROWS = ("MinMax", "Percentile", "OMSE", "KL")


def timed(fn: Any) -> float:
    """Seconds ``fn()`` takes, with the GPU's queue drained before and after."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def measure(name: str, batches: int, batch_size: int, repeats: int, device: str) -> dict[str, Any]:
    """One model's figures."""
    import timm
    import torch

    from explorer.analysis import error_table, run_calibration
    from explorer.config import load_config
    from explorer.vit import QuantViT

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    cpu_model = timm.create_model(name, pretrained=False).eval()
    model = copy.deepcopy(cpu_model).to(device)
    g = torch.Generator().manual_seed(1)
    cpu_data = [torch.randn(batch_size, 3, 224, 224, generator=g) for _ in range(batches)]
    data = [b.to(device) for b in cpu_data]
    config = load_config("configs/quant_config_minmax.yaml")

    def forward() -> None:
        with torch.no_grad():
            for batch in data:
                model(batch)

    forward()  # warm-up: kernels, allocator
    run_calibration(model, data[:1], config)
    forwards, calibrations = [], []
    for _ in range(repeats):
        forwards.append(timed(forward))
        calibrations.append(timed(lambda: run_calibration(model, data, config)))
    gpu = device.startswith("cuda")
    before = torch.cuda.memory_allocated() if gpu else 0
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    run = run_calibration(model, data, config)
    gpu_added_mb = (torch.cuda.max_memory_allocated() - before) / 2**20 if gpu else float("nan")

    guide: dict[str, float] = {}
    for row in GUIDE_ROWS:
        qvit = QuantViT(model, row_config(row))

        def calibrate(q: QuantViT = qvit) -> None:
            q.calibrate(data)
            q.compute_quant_params()

        guide[row] = min(timed(calibrate) for _ in range(2))

    start = time.perf_counter()
    gpu_table = error_table(run)
    table_s = time.perf_counter() - start
    cpu_table = error_table(run_calibration(cpu_model, cpu_data, config))
    diff = (gpu_table["sqnr_db"] - cpu_table["sqnr_db"]).abs()
    forward_s, calibration_s = statistics.median(forwards), statistics.median(calibrations)
    return {
        "model": name,
        "batches": f"{batches} × {batch_size}",
        "forward_s": forward_s,
        "calibration_s": calibration_s,
        "ratio": calibration_s / forward_s,
        "gpu_added_mb": gpu_added_mb,
        "guide": {row: guide[row] / guide["MinMax"] for row in GUIDE_ROWS},
        "guide_minmax_s": guide["MinMax"],
        "error_table_s": table_s,
        "missing": int(gpu_table["mse"].isna().sum()),
        "max_sqnr_diff_db": float(diff.max()),
        "rows_over_0p1_db": int((diff > 0.1).sum()),
        "rows": len(diff),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 batches of 4 per model (smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run of the script itself")
    args = parser.parse_args()
    import torch

    from explorer.config import ConfigWarning

    warnings.simplefilter("ignore", ConfigWarning)  # the MinMax config's advice on intSoft, meant for users
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA GPU; none is visible here (--device cpu for a smoke run)")
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{where}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(
        "| model | batches | forward s | calibration s (×) | GPU MB added | guide path × MinMax (MinMax s) "
        "| error_table s | vs CPU: max ΔSQNR dB (rows > 0.1 dB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        batches, batch_size = (2, 4) if args.quick else MODELS[name]
        r = measure(name, batches, batch_size, args.repeats, args.device)
        guide = ", ".join(f"{row} {r['guide'][row]:.2f}×" for row in GUIDE_ROWS[1:])
        print(
            f"| {r['model']} | {r['batches']} | {r['forward_s']:.3f} | {r['calibration_s']:.2f} ({r['ratio']:.1f}×) "
            f"| {r['gpu_added_mb']:.0f} | {guide} ({r['guide_minmax_s']:.2f}) | {r['error_table_s']:.2f} "
            f"| {r['max_sqnr_diff_db']:.3f} ({r['rows_over_0p1_db']} of {r['rows']}; {r['missing']} missing) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
