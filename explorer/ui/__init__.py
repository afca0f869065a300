"""The Streamlit app (``streamlit run app.py``): views as functions, with state and caching helpers."""

from explorer.ui.main import main

__all__ = ["main"]
