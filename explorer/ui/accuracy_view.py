"""The Accuracy tab: FP32 vs the model quantized with the current tuned config."""

from __future__ import annotations

import streamlit as st

from explorer.config import ConfigError, QuantConfig, dump_config
from explorer.ui.session import Loaded, accuracy


def accuracy_tab(loaded: Loaded, config: QuantConfig) -> None:
    """Evaluate (cached per run and config) and show top-1, agreement and logit SQNR."""
    st.markdown("##### FP32 vs quantized with the tuned config")
    if loaded.model is None or loaded.holdout is None:
        st.warning(f"Accuracy needs {loaded.needs}. Every other tab works from the calibration file alone.")
        return
    try:
        report = accuracy(loaded, loaded.settings.run_id, dump_config(config), config)
    except (ConfigError, ValueError, TypeError, RuntimeError) as exc:
        st.error(f"Could not evaluate the quantized model: {exc}")
        return
    columns = st.columns(4)
    if report.fp32_top1 is not None and report.quant_top1 is not None and report.drop is not None:
        columns[0].metric("FP32 top-1", f"{report.fp32_top1:.2f} %")
        columns[1].metric("Quantized top-1", f"{report.quant_top1:.2f} %", delta=f"{-report.drop:+.2f} pts")
    else:
        columns[0].metric("FP32 top-1", "—", help="No labels for these images.")
        columns[1].metric("Quantized top-1", "—", help="No labels for these images.")
    columns[2].metric("Agreement with FP32", f"{100 * report.agreement:.2f} %", help="Same top-1 class as FP32.")
    columns[3].metric("Logit SQNR", f"{report.logit_sqnr_db:.2f} dB", help="Quantized vs FP32 logits.")
    st.caption(
        f"Measured on {report.num_images} images: {loaded.holdout.description}. Only the transformer blocks are "
        "quantized (weights and the four activation points); embeddings, norms and the head stay FP32."
    )
