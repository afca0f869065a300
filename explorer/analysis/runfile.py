"""Saved calibration runs: one safetensors file holding every point's statistics and, in its
header, JSON metadata (where the run came from, its config, versions, format).

A run is calibrated where the model and data are (a GPU server) and explored elsewhere; the file
is read with safetensors only, so loading never executes code. Reading checks everything before
building anything: a truncated, foreign, newer-format or inconsistent file raises
:class:`RunFileError` and nothing is half-loaded.

Tensors are named ``<block>.<point>.<name>`` for each entry of ``PointStats.state_dict()``; the
metadata key ``"observer_explorer_run"`` holds the JSON described by :func:`run_metadata`.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import warnings
from datetime import datetime, timezone
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
from torch import Tensor

from explorer.analysis.explore import POINTS, ExplorerRun
from explorer.analysis.provenance import DataIdentity, ModelIdentity, RunSource
from explorer.config import WEIGHT_POINTS, ConfigError, ConfigWarning, dump_config, load_config, module_type_of
from explorer.stats import PointStats
from explorer.vit import CaptureResult, PointKey

FORMAT = "observer-explorer-run"
FORMAT_VERSION = 2
"""The layout this build writes and reads (2: the whole point's per-batch ends are stored as the
values beyond its channels' ends; 1 stored them whole)."""
METADATA_KEY = "observer_explorer_run"
VERSIONED_PACKAGES = ("observer-explorer", "torch", "timm", "safetensors")


class RunFileError(ValueError):
    """A file that cannot be read as a run: not safetensors, not a run, a newer format, or inconsistent."""


def point_prefix(key: PointKey) -> str:
    """``"<block>.<point>"``, the prefix of a point's tensors (and its name in exported parameters)."""
    return f"{key[0]}.{key[1]}"


def capture_tensors(capture: CaptureResult) -> dict[str, Tensor]:
    """Every point's state as CPU tensors named ``<block>.<point>.<name>``."""
    return {
        f"{point_prefix(key)}.{name}": tensor.detach().cpu().contiguous()
        for key, stats in capture.stats.items()
        for name, tensor in stats.state_dict().items()
    }


def parse_point(prefix: str) -> PointKey:
    block, _, point = prefix.partition(".")
    if not block.isdigit() or point not in POINTS:
        raise RunFileError(f"{prefix!r} is not a point: expected '<block>.<point>', point one of {', '.join(POINTS)}")
    return int(block), point


def capture_from_tensors(
    tensors: dict[str, Tensor], errors: dict[PointKey, str], batches: int, alpha_floor: float
) -> CaptureResult:
    """The :class:`CaptureResult` whose :func:`capture_tensors` are ``tensors`` (RunFileError naming
    the point whose state does not fit together)."""
    states: dict[PointKey, dict[str, Tensor]] = {}
    for name, tensor in tensors.items():
        block, point, rest = (name.split(".", 2) + ["", ""])[:3]
        states.setdefault(parse_point(f"{block}.{point}"), {})[rest] = tensor
    stats: dict[PointKey, PointStats] = {}
    for key, state in states.items():
        point_stats = PointStats(module_type_of(key[1]), alpha_floor)
        try:
            point_stats.load_state_dict(state)
        except ValueError as exc:
            raise RunFileError(f"point {point_prefix(key)}: {exc}") from exc
        unexpected = set(state) - set(point_stats.state_dict())
        if unexpected:
            raise RunFileError(f"point {point_prefix(key)}: unexpected tensors {', '.join(sorted(unexpected))}")
        stats[key] = point_stats
    return CaptureResult(stats, dict(errors), batches)


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def run_metadata(run: ExplorerRun) -> dict[str, Any]:
    """The JSON header of a run file: format, provenance, config, batches and which points failed."""
    source = run.source
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "source": None
        if source is None
        else {"model": source.model.as_dict(), "data": source.data.as_dict(), "batch_size": source.batch_size},
        "batches": run.batches,
        "num_blocks": run.num_blocks,
        "alpha_floor": run.alpha_floor,
        "config": dump_config(run.config),
        "points": sorted(point_prefix(key) for key in run.capture.stats),
        "errors": {point_prefix(key): why for key, why in run.capture.errors.items()},
    }


def save_run(run: ExplorerRun, path: str | Path) -> Path:
    """Write ``run`` to ``path`` (through a temporary file in the same folder, renamed at the end,
    so an interrupted save never leaves a partial run under that name)."""
    path = Path(path)
    header = {METADATA_KEY: json.dumps(run_metadata(run))}
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        safetensors.torch.save_file(capture_tensors(run.capture), temporary, metadata=header)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_header(path: Path) -> dict[str, Any]:
    """The run metadata of ``path``, checked for format and version (RunFileError otherwise)."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise RunFileError(f"{path} is not a readable safetensors file ({exc})") from exc
    if METADATA_KEY not in header:
        raise RunFileError(f"{path} is safetensors but not an observer-explorer run (no {METADATA_KEY} metadata)")
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path}: the run metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RunFileError(f"{path}: the metadata does not describe a {FORMAT} file")
    version = meta.get("format_version")
    if not isinstance(version, int) or version != FORMAT_VERSION:
        remedy = (
            "calibrate again with this build"
            if isinstance(version, int) and version < FORMAT_VERSION
            else ("upgrade observer-explorer to read it")
        )
        raise RunFileError(
            f"{path} has run format version {version!r}; this build reads version {FORMAT_VERSION} ({remedy})"
        )
    return meta


def _field(meta: dict[str, Any], name: str, *kinds: type) -> Any:
    """``meta[name]`` when it is one of ``kinds`` (never a bool for numbers), else RunFileError."""
    value = meta.get(name)
    if not isinstance(value, kinds) or isinstance(value, bool):
        wanted = " or ".join(kind.__name__ for kind in kinds)
        raise RunFileError(f"the run metadata's {name!r} is missing or not a {wanted}")
    return value


def _source(data: Any) -> RunSource | None:
    """The run's :class:`RunSource` from its metadata (None when the run did not record one)."""
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) != {"model", "data", "batch_size"}:
        raise ValueError("'source' must hold model, data and batch_size")
    batch_size = data["batch_size"]
    if type(batch_size) is not int or batch_size < 0:
        raise ValueError(f"batch_size must be a non-negative integer, got {batch_size!r}")
    return RunSource(ModelIdentity.from_dict(data["model"]), DataIdentity.from_dict(data["data"]), batch_size)


def _check_counts(capture: CaptureResult, meta_points: set[PointKey], num_blocks: int) -> None:
    """The tensors hold exactly the points the metadata lists, each with the run's batches."""
    if set(capture.stats) != meta_points:
        raise RunFileError(
            f"the file's tensors hold {len(capture.stats)} point(s) but its metadata lists {len(meta_points)}"
        )
    covered = meta_points | set(capture.errors)
    expected = {(b, p) for b in range(num_blocks) for p in POINTS} if len(covered) == num_blocks * len(POINTS) else None
    if covered != expected or meta_points & set(capture.errors):
        raise RunFileError(f"the points and errors of the metadata do not cover the {num_blocks} block(s) exactly once")
    for key, stats in capture.stats.items():
        wanted = 1 if key[1] in WEIGHT_POINTS else capture.batches  # weights are read once
        if stats.num_batches != wanted:
            raise RunFileError(f"point {point_prefix(key)} has {stats.num_batches} batch(es), the metadata {wanted}")


def load_run(path: str | Path) -> ExplorerRun:
    """The run saved at ``path`` (RunFileError when it is not a complete, consistent run; FileNotFoundError
    when there is no file)."""
    path = Path(path)
    meta = read_header(path)
    text = _field(meta, "config", str)
    if "\n" not in text:  # dump_config's YAML always ends a line; a one-line string could name a file here
        raise RunFileError(f"{path}: the run metadata's 'config' is not YAML text")
    try:
        with warnings.catch_warnings():  # the config's advice was given when it was calibrated
            warnings.simplefilter("ignore", ConfigWarning)
            config = load_config(text)
        source = _source(meta.get("source"))
    except (ConfigError, ValueError) as exc:
        raise RunFileError(f"{path}: the run metadata is invalid: {exc}") from exc
    num_blocks, batches = _field(meta, "num_blocks", int), _field(meta, "batches", int)
    alpha_floor = float(_field(meta, "alpha_floor", int, float))
    errors = {parse_point(str(k)): str(v) for k, v in _field(meta, "errors", dict).items()}
    points = {parse_point(str(k)) for k in _field(meta, "points", list)}
    try:
        mapped = safetensors.torch.load_file(str(path))
    except Exception as exc:
        raise RunFileError(f"{path}: the tensors cannot be read ({exc}); the file may be truncated") from exc
    # load_file maps the file, and a mapped file cut short later (overwritten in place) kills the process
    # with SIGBUS on the next read: the run holds its own copies.
    tensors = {name: tensor.clone() for name, tensor in mapped.items()}
    del mapped
    capture = capture_from_tensors(tensors, errors, batches, alpha_floor)
    _check_counts(capture, points, num_blocks)
    return ExplorerRun(config, num_blocks, capture, alpha_floor, source)
