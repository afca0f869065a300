"""The Layer tab's convergence chart: how many calibration batches an observer's clip range needs."""

from __future__ import annotations

import streamlit as st

from explorer.analysis import convergence
from explorer.analysis.convergence import CONVERGENCE_OBSERVERS
from explorer.charts import convergence_figure
from explorer.observers import observer_label
from explorer.ui import keys
from explorer.ui.session import Loaded


def convergence_chart(loaded: Loaded, block: int, name: str) -> None:
    """Clip range against batches seen for MinMax and Percentile on one point (Layer tab)."""
    try:
        table = convergence(loaded.run, (block, name))
    except ValueError as exc:
        st.caption(f"Convergence not shown: {exc}")
        return
    labels = {t: observer_label(t) for t in CONVERGENCE_OBSERVERS}
    st.plotly_chart(convergence_figure(table, labels, "Clip range vs batches seen"), key=keys.CONVERGENCE)
    st.caption(
        "MinMax and Percentile with the calibrated config's settings, from the per-batch statistics. "
        "OMSE and KL search a histogram of all the data seen; the run keeps one histogram for all batches, "
        "not one per prefix, so their curves would need a new calibration."
    )
