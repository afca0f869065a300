"""The Export tab: the tuned config as YAML, checked by loading it back, and offered as a download,
with the quantization parameters it gives (JSON or safetensors) next to it."""

from __future__ import annotations

import warnings

import pandas as pd
import streamlit as st

from explorer.analysis import ExplorerRun
from explorer.analysis.export import parameters_json, parameters_safetensors
from explorer.config import ConfigError, ConfigWarning, QuantConfig, changed_points, dump_config, load_config
from explorer.ui import keys
from explorer.ui.session import Loaded


def _shown(value: object) -> str:
    """A setting as the changes table shows it; a key that is not set reads "default"."""
    return "default" if value is None else str(value)


def changes_table(base: QuantConfig, tuned: QuantConfig, num_blocks: int) -> pd.DataFrame:
    """Every ``(block, point)`` whose resolved settings differ, one row each, with ``key: before → after``."""
    rows = [
        {
            "block": block,
            "point": name,
            "changes": "; ".join(f"{key}: {_shown(old)} → {_shown(new)}" for key, (old, new) in changes.items()),
        }
        for block, name, changes in changed_points(base, tuned, num_blocks)
    ]
    return pd.DataFrame(rows, columns=["block", "point", "changes"])


@st.cache_data(max_entries=4, show_spinner="Fitting the tuned config on every point…")
def parameter_files(_run: ExplorerRun, run_id: str, config_yaml: str, _config: QuantConfig) -> tuple[str, bytes]:
    """The tuned config's parameters for every point, as JSON text and safetensors bytes (cached per run and config)."""
    return parameters_json(_run, _config), parameters_safetensors(_run, _config)


def parameter_downloads(loaded: Loaded, tuned: QuantConfig, text: str) -> None:
    """On request, the tuned config's quantization parameters (what ``observer-explorer export`` writes)."""
    if not st.checkbox("Quantization parameters too (scales, zero points, clip ranges)", key=keys.EXPORT_PARAMS):
        return
    as_json, as_safetensors = parameter_files(loaded.run, loaded.settings.run_id, text, tuned)
    json_col, tensors_col = st.columns(2)
    json_col.download_button(
        "Download parameters (JSON)", as_json, file_name="params.json", mime="application/json", key=keys.DOWNLOAD_JSON
    )
    tensors_col.download_button(
        "Download parameters (safetensors)",
        as_safetensors,
        file_name="params.safetensors",
        mime="application/octet-stream",
        key=keys.DOWNLOAD_SAFETENSORS,
    )


def export_tab(loaded: Loaded, tuned: QuantConfig) -> None:
    """Show, validate and offer the tuned config, and its quantization parameters."""
    base, num_blocks = loaded.settings.config, loaded.run.num_blocks
    text = dump_config(tuned)
    try:
        with warnings.catch_warnings():  # the tuned config's warnings are shown below, and were logged once
            warnings.simplefilter("ignore", ConfigWarning)
            valid = load_config(text) == tuned
        problem = "it loads back as a different config"
    except (ConfigError, ValueError) as exc:
        valid, problem = False, str(exc)
    if valid:
        st.success("Validated: this YAML loads back with `load_config` into exactly the tuned config.")
    else:
        st.error(f"The exported YAML does not round-trip: {problem}")
    for warning in tuned.warnings:
        st.warning(warning)
    st.download_button(
        "Download YAML",
        text,
        file_name="tuned_config.yaml",
        mime="application/x-yaml",
        key=keys.DOWNLOAD_YAML,
        type="primary",
    )
    parameter_downloads(loaded, tuned, text)
    code_col, diff_col = st.columns([3, 2], gap="large")
    with code_col:
        st.code(text, language="yaml")
    with diff_col:
        st.markdown("##### Points changed from the base config")
        changes = changes_table(base, tuned, num_blocks)
        if changes.empty:
            st.caption("None yet: tune a point in the Layer tab and apply it.")
        else:
            st.dataframe(changes, hide_index=True, key=keys.EXPORT_CHANGES)
