"""The Export tab: the tuned config as YAML, checked by loading it back, and offered as a download."""

from __future__ import annotations

import warnings

import pandas as pd
import streamlit as st

from explorer.config import ConfigError, ConfigWarning, QuantConfig, changed_points, dump_config, load_config


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


def export_tab(base: QuantConfig, tuned: QuantConfig, num_blocks: int) -> None:
    """Show, validate and offer the tuned config."""
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
        "Download YAML", text, file_name="tuned_config.yaml", mime="application/x-yaml", key="download", type="primary"
    )
    code_col, diff_col = st.columns([3, 2], gap="large")
    with code_col:
        st.code(text, language="yaml")
    with diff_col:
        st.markdown("##### Points changed from the base config")
        changes = changes_table(base, tuned, num_blocks)
        if changes.empty:
            st.caption("None yet: tune a point in the Layer tab and apply it.")
        else:
            st.dataframe(changes, hide_index=True, key="export_changes")
