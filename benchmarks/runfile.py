"""Saved runs and distributed calibration: what a run file costs, and what merging ranks costs.

- vit_base_patch16_224 (timm, random init, seed 0; 4 batches of 16 random normal 224² images):
  ``ExplorerRun.save`` and ``ExplorerRun.load`` seconds (target ≤ 5 s each) and the file size;
- the demo (``observer-explorer calibrate``, ``--batches`` × ``--batch-size``) in 1 process and
  under ``torchrun`` with 2 CPU processes (gloo on 127.0.0.1), one thread per process (torchrun's
  default; on a busy machine two OpenMP threads can be many times slower than one): wall seconds of
  each command, the seconds the command itself reports (load, calibrate, merge, save; no
  interpreter start-up), and the merge alone.

Run: ``python benchmarks/runfile.py`` (``--quick``: 2 batches of 4 for vit_base, a smoke run).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def vit_base(batches: int, batch_size: int, folder: Path) -> None:
    """Calibrate vit_base, then time save and load."""
    import timm
    import torch

    from explorer.analysis import ExplorerRun, run_calibration
    from explorer.config import load_config

    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    images = [torch.randn(batch_size, 3, 224, 224) for _ in range(batches)]
    start = time.perf_counter()
    run = run_calibration(model, images, load_config(ROOT / "configs" / "recommended_config.yaml"))
    calibrated = time.perf_counter() - start
    path = folder / "vit_base.run"
    start = time.perf_counter()
    run.save(path)
    saved = time.perf_counter() - start
    start = time.perf_counter()
    ExplorerRun.load(path)
    loaded = time.perf_counter() - start
    size = path.stat().st_size / 1e6
    print(f"vit_base_patch16_224 {batches}×{batch_size}: calibration {calibrated:.1f} s")
    print(f"  save {saved:.2f} s ({'ok' if saved <= 5 else 'over'} ≤ 5 s), load {loaded:.2f} s "
          f"({'ok' if loaded <= 5 else 'over'} ≤ 5 s), file {size:.0f} MB")  # fmt: skip


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(command: list[str], threads: int) -> tuple[float, str]:
    """Wall seconds of ``command`` (``threads`` per process) and the timing its summary line reports."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    return wall, re.search(r"[\d.]+ s on \d+ process.*", done.stdout).group(0)  # type: ignore[union-attr]


def demo_processes(batches: int, batch_size: int, folder: Path) -> None:
    """The demo calibrated by 1 process and by torchrun with 2 CPU processes."""
    args = ["-m", "explorer", "calibrate", "--batches", str(batches), "--batch-size", str(batch_size)]
    one = _timed([sys.executable, *args, "--out", str(folder / "one.run")], 1)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    two = _timed([*torchrun, "--master_port", str(_free_port()), *args, "--out", str(folder / "two.run")], 1)
    print(f"demo {batches}×{batch_size}, 1 process × 1 thread: {one[0]:.1f} s wall; inside: {one[1]}")
    print(f"demo {batches}×{batch_size}, torchrun 2 processes × 1 thread: {two[0]:.1f} s wall; inside: {two[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="vit_base on 2 batches of 4 (a smoke run)")
    parser.add_argument("--demo-batches", type=int, default=8)
    parser.add_argument("--demo-batch-size", type=int, default=32)
    parser.add_argument("--demo-only", action="store_true", help="skip vit_base")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runfile-bench-") as folder:
        if not args.demo_only:
            vit_base(*((2, 4) if args.quick else (4, 16)), Path(folder))
        demo_processes(args.demo_batches, args.demo_batch_size, Path(folder))


if __name__ == "__main__":
    main()
