"""The quantization parameters of a config, fitted from a run's statistics, as files a deployment
toolchain reads: JSON (``{"model", "config", "points": {"<block>.<point>": {...}}}``) or
safetensors (tensors ``<block>.<point>.<field>``, the rest in its header).

Each point holds its observer type, bit width, signedness, calibration mode, and per-channel
``scale``, ``zero_point``, ``clip_min`` and ``clip_max`` (one value when layer-wise).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from explorer.analysis.explore import ExplorerRun, observer_for
from explorer.analysis.runfile import point_prefix
from explorer.config import QuantConfig, dump_config

TENSOR_FIELDS = ("scale", "zero_point", "clip_min", "clip_max")


@dataclass(frozen=True)
class PointParameters:
    """What one point is quantized with."""

    observer_type: str
    bits: int
    signed: bool
    calibration_mode: str
    tensors: dict[str, Tensor]  # TENSOR_FIELDS → [C] (or [1]) float32 on the CPU

    def as_json(self) -> dict[str, Any]:
        values = {name: [float(x) for x in t.tolist()] for name, t in self.tensors.items()}
        return {
            "observer_type": self.observer_type,
            "bits": self.bits,
            "signed": self.signed,
            "calibration_mode": self.calibration_mode,
            **{name: v if len(v) > 1 else v[0] for name, v in values.items()},
        }


def export_parameters(run: ExplorerRun, config: QuantConfig) -> tuple[dict[str, PointParameters], dict[str, str]]:
    """``(parameters, skipped)``: each point's parameters under ``config`` keyed ``"<block>.<point>"``,
    and the points that have none (their data was refused, or the observer failed) with why."""
    params: dict[str, PointParameters] = {}
    skipped: dict[str, str] = {}
    for key in run.points:
        point = config.point(key[1], key[0])
        try:
            observer = observer_for(run, key, point)
            scale, zero_point = observer.get_quantization_params()
        except (ValueError, RuntimeError) as exc:
            skipped[point_prefix(key)] = str(exc)
            continue
        tensors = dict(zip(TENSOR_FIELDS, (scale, zero_point, observer.clip_min, observer.clip_max), strict=True))
        params[point_prefix(key)] = PointParameters(
            point.observer_type,
            point.bit_type.bits,
            point.bit_type.signed,
            point.calibration_mode,
            {name: t.detach().reshape(-1).float().cpu() for name, t in tensors.items()},
        )
    return params, skipped


def _model(run: ExplorerRun) -> dict[str, Any] | None:
    return None if run.source is None else run.source.model.as_dict()


def parameters_json(run: ExplorerRun, config: QuantConfig) -> str:
    """The parameters of ``config`` as JSON text (``"skipped"`` lists points without parameters)."""
    params, skipped = export_parameters(run, config)
    document = {
        "model": _model(run),
        "config": dump_config(config),
        "points": {name: p.as_json() for name, p in params.items()},
        "skipped": skipped,
    }
    return json.dumps(document, indent=1)


def parameters_safetensors(run: ExplorerRun, config: QuantConfig) -> bytes:
    """The parameters of ``config`` as safetensors bytes: tensors ``<block>.<point>.<field>`` (the
    bit width and signedness as int64 scalars), model, config and observer settings in the header."""
    params, skipped = export_parameters(run, config)
    tensors: dict[str, Tensor] = {}
    settings: dict[str, dict[str, str]] = {}
    for name, p in params.items():
        tensors.update({f"{name}.{field}": t for field, t in p.tensors.items()})
        tensors[f"{name}.bits"] = torch.tensor(p.bits, dtype=torch.int64)
        tensors[f"{name}.signed"] = torch.tensor(int(p.signed), dtype=torch.int64)
        settings[name] = {"observer_type": p.observer_type, "calibration_mode": p.calibration_mode}
    header = {
        "model": json.dumps(_model(run)),
        "config": dump_config(config),
        "points": json.dumps(settings),
        "skipped": json.dumps(skipped),
    }
    return safetensors.torch.save(tensors, metadata=header)
