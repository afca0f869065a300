"""Observer Explorer: ``streamlit run app.py``."""

import streamlit as st

st.set_page_config(page_title="Observer Explorer", page_icon="🔭", layout="wide")

from explorer.ui import main  # noqa: E402  (page config first, before the app draws anything)

main()
