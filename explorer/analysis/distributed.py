"""Calibration over several processes (``torchrun``): each rank gathers the statistics of its own
batches and rank 0 combines them into the run a single process would have produced.

Rank ``r`` of ``K`` takes global batches ``r, r + K, …``. Statistics travel as the run file's
tensors (safetensors bytes, no pickling) through ``torch.distributed.gather`` (gloo on CPU, NCCL
on CUDA). Histograms, min/max and counts merge in any order; the per-batch tails and raw values
are put back in global batch order, so Percentile's EMA sees the batches as one process would.
Weights are read once, by rank 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import safetensors.torch
import torch
import torch.distributed as dist
from torch import Tensor

from explorer.analysis.runfile import capture_from_tensors, capture_tensors, parse_point, point_prefix
from explorer.config import WEIGHT_POINTS
from explorer.stats import PointStats
from explorer.vit import CaptureResult, PointKey

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the calibrating processes, and the device it calibrates on."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def join(device: str) -> Ranks:
    """This process's :class:`Ranks`: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is
    started: gloo for ``cpu``; NCCL for ``cuda``, each process on its own GPU (``LOCAL_RANK``), so a
    machine must have a GPU per process (ValueError otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(device=device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        gpus = torch.cuda.device_count()
        if int(os.environ.get("LOCAL_WORLD_SIZE", world)) > gpus:
            raise ValueError(f"NCCL needs one GPU per process: {gpus} GPU(s) here; run at most {gpus} per machine")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Ranks(rank, world, device)


def leave() -> None:
    """Shut down the process group :func:`join` started, if any."""
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(batches: Sequence[T], ranks: Ranks) -> list[T]:
    """The batches this rank calibrates: global batches ``rank, rank + world, …``."""
    return list(batches[ranks.rank :: ranks.world])


def _global_order(counts: Sequence[int]) -> list[int]:
    """Positions of the rank-ordered concatenation of ``counts[r]`` batches per rank, in global order."""
    world = len(counts)
    index = [r + world * i for r, n in enumerate(counts) for i in range(n)]
    return sorted(range(len(index)), key=index.__getitem__)


def merge_in_global_order(parts: Sequence[PointStats]) -> PointStats:
    """One point's statistics from each rank (rank order) merged as one process would have built
    them from the global batch sequence (only float64 sum-of-squares rounding may differ)."""
    merged = PointStats(parts[0].module_type, parts[0].alpha_floor)
    for part in parts:
        merged.merge(part)
    order = _global_order([part.num_batches for part in parts])
    merged.reorder_batches(order)
    return merged


def combine(captures: Sequence[CaptureResult]) -> CaptureResult:
    """The captures of every rank (rank order) as one: weights from rank 0, activations merged in
    global batch order; a point refused on any rank is refused."""
    errors: dict[PointKey, str] = {}
    for capture in captures:
        for key, why in capture.errors.items():
            errors.setdefault(key, why)
    stats: dict[PointKey, PointStats] = {}
    for key in captures[0].stats:
        if key in errors:
            continue
        if key[1] in WEIGHT_POINTS:
            stats[key] = captures[0].stats[key]
        else:
            stats[key] = merge_in_global_order([capture.stats[key] for capture in captures])
    return CaptureResult(stats, errors, sum(capture.batches for capture in captures))


HEADER = "__capture__"
"""The payload tensor that carries a capture's errors and batch count (JSON as bytes)."""


def _to_bytes(capture: CaptureResult, ranks: Ranks) -> bytes:
    """The capture as safetensors bytes (weights only from rank 0; errors and batches as JSON)."""
    tensors = capture_tensors(
        CaptureResult({k: s for k, s in capture.stats.items() if ranks.is_main or k[1] not in WEIGHT_POINTS})
    )
    header = {"errors": {point_prefix(k): why for k, why in capture.errors.items()}, "batches": capture.batches}
    tensors[HEADER] = torch.frombuffer(bytearray(json.dumps(header).encode()), dtype=torch.uint8)
    return safetensors.torch.save(tensors)


def _from_bytes(data: bytes, alpha_floor: float) -> CaptureResult:
    """The capture :func:`_to_bytes` wrote."""
    tensors = safetensors.torch.load(data)
    header = json.loads(tensors.pop(HEADER).numpy().tobytes())
    errors = {parse_point(k): why for k, why in header["errors"].items()}
    return capture_from_tensors(tensors, errors, header["batches"], alpha_floor)


def gather(capture: CaptureResult, ranks: Ranks, alpha_floor: float) -> CaptureResult | None:
    """Every rank's capture combined on rank 0 (returned there; None on the other ranks)."""
    if ranks.world == 1:
        return capture
    payload = torch.frombuffer(bytearray(_to_bytes(capture, ranks)), dtype=torch.uint8).to(ranks.device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=ranks.device) for _ in range(ranks.world)]
    dist.all_gather(sizes, torch.tensor([payload.numel()], dtype=torch.int64, device=ranks.device))
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=ranks.device)
    padded[: payload.numel()] = payload
    received: list[Tensor] | None = None
    if ranks.is_main:
        received = [torch.empty_like(padded) for _ in range(ranks.world)]
    dist.gather(padded, received, dst=0)
    if received is None:
        return None
    return combine(
        [_from_bytes(t[: int(n)].cpu().numpy().tobytes(), alpha_floor) for t, n in zip(received, sizes, strict=True)]
    )
