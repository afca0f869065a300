"""The app opened on a saved run ("Calibration file" source): every tab works from the file, and
Accuracy says what it needs when the model the file names does not load here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from explorer.analysis import DataIdentity, ModelIdentity, RunSource, run_calibration
from explorer.config import load_config
from explorer.ui.serving import SERVE_ENV

APP = Path(__file__).resolve().parents[1] / "app.py"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "recommended_config.yaml"
TIMEOUT_S = 900


@pytest.fixture(scope="module")
def run_files(
    demo_model: VisionTransformer, calib: list[Tensor], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The same small demo run saved twice: naming the demo, and naming a checkpoint that is not here."""
    folder = tmp_path_factory.mktemp("app_runs")
    run = run_calibration(demo_model, [b[:8] for b in calib], load_config(CONFIG))
    demo = RunSource(ModelIdentity("demo"), DataIdentity("demo"), 8)
    elsewhere = RunSource(ModelIdentity("checkpoint", "demo", path="/elsewhere/vit.pt", sha256="0" * 64), demo.data, 8)
    return {
        "demo": dataclasses.replace(run, source=demo).save(folder / "demo.run"),
        "elsewhere": dataclasses.replace(run, source=elsewhere).save(folder / "elsewhere.run"),
    }


def open_file(path: Path | str) -> AppTest:
    """The app started on the "Calibration file" source with ``path`` (nothing is calibrated)."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.session_state["start_from"] = "file"
    at.session_state["run_path"] = str(path)
    at.run()
    assert not at.exception, at.exception
    return at


def show_tab(at: AppTest, tab: str) -> None:
    at.session_state["view"] = tab
    at.run()
    assert not at.exception, at.exception


def test_every_tab_works_from_the_file(run_files: dict[str, Path]) -> None:
    at = open_file(run_files["demo"])
    assert any("Calibration file" in m.value and "demo.run" in m.value for m in at.markdown)
    assert "Tuned SQNR" in {m.label for m in at.metric}  # the Layer tab
    show_tab(at, "Compare")
    assert any("Where MinMax falls" in m.value for m in at.markdown)
    show_tab(at, "Accuracy")
    assert "Agreement with FP32" in {m.label for m in at.metric}  # the demo model loads here
    show_tab(at, "Export")
    at.checkbox(key="export_params").check().run()
    assert not at.exception, at.exception
    assert {"download_json", "download_safetensors"} <= {b.key for b in at.get("download_button")}


def test_accuracy_says_what_it_needs(run_files: dict[str, Path]) -> None:
    at = open_file(run_files["elsewhere"])
    show_tab(at, "Accuracy")
    assert any("Accuracy needs" in w.value and "/elsewhere/vit.pt" in w.value for w in at.warning)
    show_tab(at, "Compare")
    assert any("Where MinMax falls" in m.value for m in at.markdown)


def test_a_file_that_is_not_a_run(tmp_path: Path) -> None:
    notes = tmp_path / "notes.run"
    notes.write_text("not a run")
    at = open_file(notes)
    assert any("Could not open the calibration file" in e.value for e in at.error)


def test_served_mode_opens_uploads_only(monkeypatch: pytest.MonkeyPatch, run_files: dict[str, Path]) -> None:
    monkeypatch.setenv(SERVE_ENV, "1")
    at = open_file("")
    assert not [t for t in at.text_input if t.key == "run_path"]
    at.file_uploader(key="run_upload").upload("demo.run", run_files["demo"].read_bytes()).run()
    assert not at.exception, at.exception
    assert any("Calibration file" in m.value and "demo.run" in m.value for m in at.markdown)
