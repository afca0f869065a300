"""The command line: calibrate → report/export on the demo, exit statuses, and distributed
calibration (2 CPU processes with gloo under torchrun) equal to one process."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

from explorer.analysis import ExplorerRun, point_summary
from explorer.cli import main
from explorer.observers import observer_names

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "quant_config_percentile.yaml"
CALIBRATE = ["calibrate", "--batches", "3", "--batch-size", "8"]


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-process demo run: 3 batches of 8 (an odd count, so two ranks get unequal shares)."""
    out = tmp_path_factory.mktemp("cli") / "one.run"
    assert main([*CALIBRATE, "--out", str(out)]) == 0
    return out


def test_calibrate_writes_exactly_the_run_file(run_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert [p.name for p in run_file.parent.iterdir()] == ["one.run"]
    run = ExplorerRun.load(run_file)
    assert (run.batches, run.num_blocks, run.source.batch_size, run.source.model.kind) == (3, 4, 8, "demo")


def test_report_is_self_contained_and_names_every_point(run_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(run_file), "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "Plotly" in page and not re.search(r"<script[^>]*\bsrc=", page)  # plotly.js inlined, nothing fetched
    run = ExplorerRun.load(run_file)
    for block, point in run.points:
        assert f"Block {block} · {point}" in page
    assert "Where MinMax falls" in page and "points won" in page


def test_export_json_and_safetensors(run_file: Path, tmp_path: Path) -> None:
    as_json, as_tensors = tmp_path / "p.json", tmp_path / "p.safetensors"
    assert main(["export", str(run_file), "--config", str(CONFIG), "--out", str(as_json)]) == 0
    assert main(["export", str(run_file), "--config", str(CONFIG), "--out", str(as_tensors)]) == 0
    document = json.loads(as_json.read_text())
    assert document["model"]["kind"] == "demo" and "PercentileObserver" in document["config"]
    assert len(document["points"]) == 32
    qkv = document["points"]["0.attn_qkv"]
    assert set(qkv) == {
        "observer_type",
        "bits",
        "signed",
        "calibration_mode",
        "scale",
        "zero_point",
        "clip_min",
        "clip_max",
    }
    assert qkv["calibration_mode"] == "channel_wise" and len(qkv["scale"]) == 192
    soft = document["points"]["2.intSoft"]
    assert soft["calibration_mode"] == "layer_wise" and isinstance(soft["scale"], float)
    tensors = safetensors.torch.load_file(str(as_tensors))
    assert tensors["0.attn_qkv.scale"].tolist() == pytest.approx(qkv["scale"])
    assert int(tensors["2.intSoft.bits"]) == soft["bits"]


@pytest.mark.parametrize(
    "argv",
    [
        ["calibrate", "--batches", "0", "--out", "x.run"],
        ["calibrate", "--device", "tpu", "--out", "x.run"],
        ["calibrate", "--data", "/no/such/folder", "--out", "x.run"],
        ["calibrate", "--model", "/no/such/model.pt", "--out", "x.run"],
        ["calibrate", "--alpha-floor", "2", "--batches", "1", "--batch-size", "2", "--out", "{tmp}/x.run"],
        ["calibrate", "--out", "/no/such/folder/x.run"],
        ["report", "{tmp}/missing.run", "--out", "{tmp}/r.html"],
        ["report", "{tmp}/notes.txt", "--out", "{tmp}/r.html"],
        ["export", "{run}", "--config", str(CONFIG), "--out", "{tmp}/p.yaml"],
        ["export", "{run}", "--config", "{tmp}/notes.txt", "--out", "{tmp}/p.json"],
        ["frobnicate"],
    ],
)
def test_bad_usage_or_input_is_one_line_and_status_2(
    argv: list[str], run_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("not a run: {\n")
    status = main([a.format(tmp=tmp_path, run=run_file) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("observer-explorer: error") and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "x.run").exists()


def test_internal_error_is_status_1(monkeypatch: pytest.MonkeyPatch, run_file: Path, tmp_path: Path) -> None:
    def broken(*args: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr("explorer.report.report_html", broken)
    assert main(["report", str(run_file), "--out", str(tmp_path / "r.html")]) == 1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_processes_equal_one(run_file: Path, tmp_path: Path) -> None:
    """torchrun, 2 CPU ranks with gloo on loopback: same statistics (tails in global batch order) and
    the same parameters for every point × observer as one process on the same batches."""
    out = tmp_path / "two.run"
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), "-m", "explorer", *CALIBRATE, "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout
    one, two = ExplorerRun.load(run_file), ExplorerRun.load(out)
    assert (two.batches, two.capture.errors) == (one.batches, one.capture.errors)
    for key in one.points:
        a, b = one.stats(key).state_dict(), two.stats(key).state_dict()
        assert a.keys() == b.keys(), key
        for name in a:
            if name == "sumsq":  # float64 sums in another order
                torch.testing.assert_close(a[name], b[name], rtol=1e-12, atol=0)
            else:
                assert torch.equal(a[name], b[name]), (key, name)
        for observer_type in observer_names():
            s1 = point_summary(one, key, one.point_config(observer_type, key))
            s2 = point_summary(two, key, two.point_config(observer_type, key))
            assert (s1.scale.tolist(), s1.zero_point.tolist()) == (s2.scale.tolist(), s2.zero_point.tolist())
            assert (s1.clip_min.tolist(), s1.clip_max.tolist()) == (s2.clip_min.tolist(), s2.clip_max.tolist())
