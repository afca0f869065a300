"""The Streamlit app (``streamlit run app.py``): views as functions, with state and caching helpers.

``main`` is imported on first use, so that the app's Streamlit-free helpers (sources, explanations)
can be used by the command line without loading Streamlit.
"""

from __future__ import annotations

from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    if name == "main":
        from explorer.ui.main import main

        globals()["main"] = main  # in place of the submodule, which its import bound to this name
        return main
    raise AttributeError(f"module 'explorer.ui' has no attribute {name!r}")
