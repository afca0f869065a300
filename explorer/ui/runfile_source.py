"""The sidebar's "Calibration file" source: a run saved by ``observer-explorer calibrate`` (or
``torchrun``), opened by upload or by server path, becomes the app's current calibration.

Every statistics-based tab works from the file alone. Accuracy also needs the model (and images
to run it on): the model the file names is loaded when it can be here (a checkpoint only when its
SHA-256 still matches); otherwise :attr:`~explorer.ui.session.Loaded.needs` says what is missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from torch import nn

from explorer.analysis import ExplorerRun, RunFileError
from explorer.analysis.provenance import ModelIdentity, file_sha256
from explorer.data import DataLoadError, ModelLoadError, model_input_config
from explorer.ui.session import Loaded
from explorer.ui.sources import (
    DataSource,
    Holdout,
    ModelSource,
    Settings,
    Upload,
    from_upload,
    holdout_images,
    load_images,
    load_model,
    server_path,
)

RUN_FILE_EXTENSIONS = ("run", "safetensors")


@dataclass(frozen=True)
class RunFileSource:
    """A run file to open: an upload, or a path on the machine running the app."""

    path: str = ""
    upload: Upload | None = None

    @property
    def name(self) -> str:
        return self.upload.name if self.upload is not None else Path(self.path).name

    @property
    def given(self) -> bool:
        return self.upload is not None or bool(self.path.strip())


def read_run(source: RunFileSource) -> ExplorerRun:
    """The run saved in ``source`` (RunFileError when unreadable; the path as the serving policy allows)."""
    if source.upload is not None:
        return from_upload(source.upload, ExplorerRun.load, RunFileError)
    try:
        return ExplorerRun.load(server_path(source.path, RunFileError, "upload a run file or enter its path"))
    except FileNotFoundError as exc:
        raise RunFileError(f"{source.path}: no such run file") from exc


def model_source(identity: ModelIdentity) -> ModelSource:
    """The app's model source for the model a run file names."""
    i = identity
    return ModelSource(i.kind, i.name, i.pretrained, i.path, outlier_channels=i.outlier_channels)


def _model(identity: ModelIdentity, device: str) -> nn.Module:
    """The model the run names (ModelLoadError when it does not load here, or is not the same checkpoint)."""
    if identity.kind == "checkpoint":
        path = server_path(identity.path, ModelLoadError, "the run names no checkpoint path")
        if not path.is_file():
            raise ModelLoadError(f"the checkpoint {identity.path} is not on this machine")
        if file_sha256(path) != identity.sha256:
            raise ModelLoadError(f"{identity.path} is not the calibrated checkpoint (its SHA-256 differs)")
    return load_model(model_source(identity), device)


def _holdout(settings: Settings, model: nn.Module, calibration_images: int) -> Holdout:
    """Images to measure accuracy on: from the run's data when it loads here, else the demo's test digits."""
    input_config = model_input_config(model)
    classes = getattr(model, "num_classes", None)
    try:
        images = load_images(settings.data, input_config, calibration_images)
        return holdout_images(settings.data, input_config, images, min(len(images), calibration_images), classes)
    except (DataLoadError, OSError):
        demo = DataSource()
        return holdout_images(demo, input_config, load_images(demo, input_config, 0), 0, classes)


@st.cache_resource(max_entries=2, show_spinner="Opening the calibration file…")
def open_run_file(source_id: str, device: str, _source: RunFileSource) -> Loaded:
    """The run file ``_source`` (identified by ``source_id``, its repr) as the app's current calibration,
    with its model and accuracy images on ``device`` when they load here."""
    start = time.perf_counter()
    run = read_run(_source)
    origin = run.source
    model_id = origin.model if origin is not None else ModelIdentity()
    data = DataSource(origin.data.kind, origin.data.path) if origin is not None else DataSource()
    settings = Settings(
        model_source(model_id),
        data,
        run.batches,
        origin.batch_size if origin is not None else 0,
        device,
        run.config,
        f"from {_source.name} ({source_id})",
        run.alpha_floor,
    )
    model: nn.Module | None = None
    holdout: Holdout | None = None
    needs = ""
    if origin is None:
        needs = "the file does not record its model: calibrate it here to measure accuracy"
    else:
        try:
            model = _model(model_id, device)
            holdout = _holdout(settings, model, run.batches * origin.batch_size)
        except (ModelLoadError, DataLoadError, OSError, ValueError, RuntimeError) as exc:
            needs = f"the model {model_id.describe()} loaded here ({exc})"
    images = run.batches * (origin.batch_size if origin is not None else 0)
    return Loaded(settings, model, run, time.perf_counter() - start, images, holdout, _source.name, needs)
