"""The app's page: sidebar, calibration (automatic on first load, then on "Calibrate"), header,
point selector and the Layer / Compare / Sensitivity / Recommend / Accuracy / Export tabs.

A failed calibration (bad model, data or config) is reported and changes nothing: the last good
model, run and tuned config stay on screen.
"""

from __future__ import annotations

import streamlit as st

from explorer.analysis import POINTS, RunFileError
from explorer.config import ConfigError
from explorer.data import DataLoadError, ModelLoadError
from explorer.ui import keys
from explorer.ui.accuracy_view import accuracy_tab
from explorer.ui.analysis_view import recommend_tab, sensitivity_tab
from explorer.ui.compare_view import compare_tab
from explorer.ui.explain import POINT_DESCRIPTIONS
from explorer.ui.export_view import export_tab
from explorer.ui.layer_view import layer_tab
from explorer.ui.runfile_source import RunFileSource, open_run_file
from explorer.ui.session import Loaded, calibrate
from explorer.ui.sidebar import SidebarResult, sidebar
from explorer.ui.sources import Settings, model_summary

DEFAULT_POINT = "mlp_act"
"""The point shown first: the GELU output, where activation outliers typically live."""
TABS = ("Layer", "Compare", "Sensitivity", "Recommend", "Accuracy", "Export")
CALIBRATION_ERRORS = (
    ModelLoadError,
    DataLoadError,
    ConfigError,
    ValueError,
    TypeError,
    RuntimeError,
    OSError,
    MemoryError,
)
"""What loading and calibrating raise on bad input (ConfigError is a ValueError; CUDA OOM a RuntimeError)."""


def _calibrate(settings: Settings) -> Loaded | None:
    """Calibrate with a progress bar; on failure remember and show why, and return None."""
    bar = st.progress(0.0, text="Calibrating…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Calibrating all four observers: batch {done} of {total}")

    try:
        loaded = calibrate(settings, progress)
    except CALIBRATION_ERRORS as exc:
        st.session_state[keys.FAILED] = (settings, f"{type(exc).__name__}: {exc}")
        return None
    finally:
        bar.empty()
    st.session_state.pop(keys.FAILED, None)
    return loaded


def _adopt(loaded: Loaded) -> None:
    """Make ``loaded`` current; the tuned config restarts from its base config when that changed
    or when it overrides blocks the new model lacks."""
    previous: Loaded | None = st.session_state.get(keys.LOADED)
    tuned = st.session_state.get(keys.TUNED)
    stale = tuned is None or any(i >= loaded.run.num_blocks for i in tuned.block_indices)
    if stale or previous is None or previous.settings.config != loaded.settings.config:
        if previous is not None and tuned != previous.settings.config:
            st.toast("The tuned config restarts from the new base config (export the old one first if needed).")
        st.session_state[keys.TUNED] = loaded.settings.config
    st.session_state[keys.LOADED] = loaded


def _open_file(source: RunFileSource, device: str, loaded: Loaded | None) -> Loaded | None:
    """The run saved in ``source`` made current; on failure say why and keep the last good run."""
    if not source.given:
        st.info("Upload a calibration file (saved by `observer-explorer calibrate`) or enter its path.")
        return loaded
    try:
        opened = open_run_file(repr(source), device, source)
    except (RunFileError, OSError) as exc:
        kept = " The last good calibration is still shown." if loaded is not None else ""
        st.error(f"Could not open the calibration file — {exc}.{kept}")
        return loaded
    if opened is not loaded:
        _adopt(opened)
    return opened


def current_run(request: SidebarResult) -> Loaded | None:
    """The calibration to show: a run file when one is chosen; else calibrate on first load and on
    "Calibrate". The last good one is kept."""
    loaded: Loaded | None = st.session_state.get(keys.LOADED)
    if request.run_file is not None:
        return _open_file(request.run_file, request.device, loaded)
    failed = st.session_state.get(keys.FAILED)
    wanted = request.settings
    first_try = loaded is None and (failed is None or failed[0] != wanted)
    if wanted is not None and (request.calibrate or first_try):
        new = _calibrate(wanted)
        if new is not None:
            _adopt(new)
            loaded = new
    elif request.calibrate:
        st.error("Calibration needs valid settings: fix what the sidebar reports first.")
    failed = st.session_state.get(keys.FAILED)
    if failed is not None and failed[0] == wanted:
        kept = " The last good calibration is still shown." if loaded is not None else ""
        st.error(f"Calibration failed — {failed[1]}.{kept}")
    return loaded


def header(loaded: Loaded, wanted: Settings | None) -> None:
    """One line saying what is calibrated, plus notices about failed observers and pending settings."""
    s, run = loaded.settings, loaded.run
    batches = run.batches
    if loaded.file:
        origin = run.source
        st.markdown(
            f"**Calibration file** {loaded.file} · **Model** {origin.model.describe() if origin else 'not recorded'}"
            f" · **Data** {origin.data.description if origin else 'not recorded'}: {batches} batch(es), "
            f"{loaded.images_used} images · {run.num_blocks} blocks"
        )
    else:
        st.markdown(
            f"**Model** {s.model.describe()} — {model_summary(loaded.model)} · **Data** {s.data.describe()}: "
            f"{batches} batch(es), {loaded.images_used} images · **Calibrated** in {loaded.seconds:.1f} s on "
            f"{s.device} · **Config** {s.config_name}"
        )
    failures = run.capture.errors
    if failures:
        with st.expander(f"⚠️ {len(failures)} point(s) have no statistics: their data was refused"):
            for (block, point), why in failures.items():
                st.error(f"Block {block} {point}: {why}")
    if wanted is not None and wanted != s:
        st.info("The sidebar settings differ from the calibrated ones: press **Calibrate** to apply them.")


def point_selector(num_blocks: int) -> tuple[int, str]:
    """Block and point selectboxes (stable keys ``sel_block``/``sel_point``)."""
    if st.session_state.get(keys.SEL_BLOCK, 0) >= num_blocks:
        st.session_state[keys.SEL_BLOCK] = 0
    st.session_state.setdefault(keys.SEL_POINT, DEFAULT_POINT)
    col1, col2, _ = st.columns([1, 3, 2])  # the point column fits "attn_qkv_output — qkv linear output" at 1100 px
    block = col1.selectbox("Block", range(num_blocks), key=keys.SEL_BLOCK)
    point = col2.selectbox(
        "Quantization point", POINTS, key=keys.SEL_POINT, format_func=lambda p: f"{p} — {POINT_DESCRIPTIONS[p]}"
    )
    return int(block), str(point)


COMPACT_METRICS = (
    "<style>[data-testid='stMetricValue'] { font-size: clamp(0.85rem, 1.35vw, 1.6rem); }"
    ":is([data-testid='stMetricLabel'], [data-testid='stMetricValue'], [data-testid='stMetricDelta']) * "
    "{ white-space: normal !important; overflow-wrap: break-word; text-overflow: clip !important; }</style>"
)
"""Metric values at a size that fits five to a row beside the sidebar (a value such as 3.439e-05 on
one line at 1100 px); labels, values and deltas wrap between words instead of being cut, and inside a
word only when it alone is wider than its column."""


def main() -> None:
    """Draw the whole app."""
    st.html(COMPACT_METRICS)
    st.title("Observer Explorer", anchor=False)
    request = sidebar()
    loaded = current_run(request)
    if loaded is None:
        st.info("Nothing calibrated yet: fix the inputs in the sidebar and press **Calibrate**.")
        return
    header(loaded, request.settings)
    block, point = point_selector(loaded.run.num_blocks)
    layer, compare, sensitive, recommend, accuracy, export = st.tabs(TABS, key=keys.VIEW, on_change="rerun")
    if layer.open:
        with layer:
            layer_tab(loaded, block, point)
    if compare.open:
        with compare:
            compare_tab(loaded, block, point)
    if sensitive.open:
        with sensitive:
            sensitivity_tab(loaded, st.session_state[keys.TUNED])
    if recommend.open:
        with recommend:
            recommend_tab(loaded, st.session_state[keys.TUNED])
    if accuracy.open:
        with accuracy:
            accuracy_tab(loaded, st.session_state[keys.TUNED])
    if export.open:
        with export:
            export_tab(loaded, st.session_state[keys.TUNED])
