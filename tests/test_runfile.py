"""Saved runs: a run file loads back into the same statistics, config and provenance, and every
damaged or foreign file is a RunFileError, never a half-loaded run."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import safetensors
import safetensors.torch
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from explorer.analysis import (
    DataIdentity,
    ExplorerRun,
    ModelIdentity,
    RunFileError,
    RunSource,
    point_summary,
    run_calibration,
)
from explorer.analysis.runfile import METADATA_KEY
from explorer.config import load_config
from explorer.observers import observer_names

SOURCE = RunSource(ModelIdentity("demo"), DataIdentity("demo"), 8)


@pytest.fixture(scope="module")
def run(demo_model: VisionTransformer, calib: list[Tensor]) -> ExplorerRun:
    """A small demo run with one point marked as refused (to check errors travel too)."""
    result = run_calibration(demo_model, [b[:8] for b in calib], load_config("configs/recommended_config.yaml"))
    del result.capture.stats[(1, "mlp_act")]
    result.capture.errors[(1, "mlp_act")] = "ValueError: refused for the test"
    return dataclasses.replace(result, source=SOURCE)


@pytest.fixture(scope="module")
def saved(run: ExplorerRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run.save(tmp_path_factory.mktemp("runs") / "demo.run")


def _rewrite(src: Path, dst: Path, edit_meta: Any = None, edit_tensors: Any = None) -> Path:
    """A copy of the run file ``src`` with its metadata JSON and/or tensors edited."""
    with safetensors.safe_open(str(src), framework="pt") as f:
        header = dict(f.metadata())
    tensors = safetensors.torch.load_file(str(src))
    meta = json.loads(header[METADATA_KEY])
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    safetensors.torch.save_file(tensors, str(dst), metadata={METADATA_KEY: json.dumps(meta)})
    return dst


def test_round_trip_is_exact(run: ExplorerRun, saved: Path) -> None:
    assert [p.name for p in saved.parent.iterdir()] == ["demo.run"]  # exactly the file, no temporary left
    loaded = ExplorerRun.load(saved)
    assert (loaded.config, loaded.num_blocks, loaded.batches, loaded.alpha_floor, loaded.source) == (
        run.config,
        run.num_blocks,
        run.batches,
        run.alpha_floor,
        run.source,
    )
    assert loaded.capture.errors == run.capture.errors
    assert loaded.capture.stats.keys() == run.capture.stats.keys()
    for key, stats in run.capture.stats.items():
        before, after = stats.state_dict(), loaded.capture.stats[key].state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[name], after[name]) for name in before), key
    for key in [(0, "attn_qkv"), (2, "intSoft"), (3, "mlp_act")]:
        for observer_type in observer_names():
            a = point_summary(run, key, run.point_config(observer_type, key))
            b = point_summary(loaded, key, loaded.point_config(observer_type, key))
            assert (a.scale.tolist(), a.zero_point.tolist(), a.mse) == (b.scale.tolist(), b.zero_point.tolist(), b.mse)


def test_a_run_without_source_loads_without_one(run: ExplorerRun, tmp_path: Path) -> None:
    path = dataclasses.replace(run, source=None).save(tmp_path / "bare.run")
    assert ExplorerRun.load(path).source is None


@pytest.mark.parametrize("keep", [0.5, 0.999, 20])
def test_truncated_file(saved: Path, tmp_path: Path, keep: float) -> None:
    data = saved.read_bytes()
    cut = tmp_path / "cut.run"
    cut.write_bytes(data[: int(keep * len(data)) if keep < 1 else int(keep)])
    with pytest.raises(RunFileError):
        ExplorerRun.load(cut)


def test_a_loaded_run_does_not_depend_on_its_file(saved: Path, tmp_path: Path) -> None:
    """A run loaded, then its file cut short (overwritten in place by another program): the run still
    reads every statistic. Were its tensors still mapped from the file, the process would die of
    SIGBUS, so this runs in a child process."""
    copy = tmp_path / "copy.run"
    copy.write_bytes(saved.read_bytes())
    code = (
        "import os, sys\n"
        "from explorer.analysis import ExplorerRun\n"
        "run = ExplorerRun.load(sys.argv[1])\n"
        "os.truncate(sys.argv[1], 100)\n"
        "print(sum(float(t.double().sum()) for s in run.capture.stats.values() for t in s.state_dict().values()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(copy)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    expected = ExplorerRun.load(saved)
    total = sum(float(t.double().sum()) for s in expected.capture.stats.values() for t in s.state_dict().values())
    assert float(done.stdout.strip().splitlines()[-1]) == pytest.approx(total, rel=1e-12)


def test_files_that_are_not_runs(tmp_path: Path) -> None:
    text = tmp_path / "notes.run"
    text.write_text("hello, not a run\n")
    with pytest.raises(RunFileError, match="not a readable safetensors"):
        ExplorerRun.load(text)
    weights = tmp_path / "weights.safetensors"
    safetensors.torch.save_file({"x": torch.zeros(3)}, str(weights))
    with pytest.raises(RunFileError, match="not an observer-explorer run"):
        ExplorerRun.load(weights)
    with pytest.raises(FileNotFoundError):
        ExplorerRun.load(tmp_path / "missing.run")


def test_newer_format_version(saved: Path, tmp_path: Path) -> None:
    newer = _rewrite(saved, tmp_path / "v3.run", edit_meta=lambda m: m.update(format_version=3))
    with pytest.raises(RunFileError, match="format version 3"):
        ExplorerRun.load(newer)


def test_older_format_version_asks_to_calibrate_again(saved: Path, tmp_path: Path) -> None:
    older = _rewrite(saved, tmp_path / "v1.run", edit_meta=lambda m: m.update(format_version=1))
    with pytest.raises(RunFileError, match="format version 1.*calibrate again"):
        ExplorerRun.load(older)


def _drop(tensors: dict[str, Tensor], prefix: str) -> None:
    for name in [n for n in tensors if n.startswith(prefix)]:
        del tensors[name]


@pytest.mark.parametrize(
    ("edit_meta", "edit_tensors", "match"),
    [
        (lambda m: m.update(batches=3), None, "batch"),
        (lambda m: m.update(num_blocks=5), None, "cover"),
        (lambda m: m.update(num_blocks=10**12), None, "cover"),
        (lambda m: m.update(points=[7]), None, "not a point"),
        (lambda m: m["errors"].clear(), None, "cover"),
        (lambda m: m.update(config="/etc/hostname"), None, "not YAML text"),
        (lambda m: m.update(config="default: {bits: 9}\n"), None, "metadata is invalid"),
        (lambda m: m["source"]["model"].update(kind="pickle"), None, "metadata is invalid"),
        (None, lambda t: _drop(t, "0.mlp_act."), "metadata lists"),
        (None, lambda t: t.update({"0.mlp_act.min": torch.zeros(3)}), "0.mlp_act"),
        (None, lambda t: t.update({"0.bogus.min": torch.zeros(3)}), "not a point"),
        (None, lambda t: t.update({"0.mlp_act.extra": torch.zeros(3)}), "unexpected tensors extra"),
    ],
)
def test_inconsistent_files(saved: Path, tmp_path: Path, edit_meta: Any, edit_tensors: Any, match: str) -> None:
    bad = _rewrite(saved, tmp_path / "bad.run", edit_meta, edit_tensors)
    with pytest.raises(RunFileError, match=match):
        ExplorerRun.load(bad)
