"""End to end: the real ``streamlit run app.py`` server in a headless Chromium.

Skipped cleanly when Chromium or Playwright is missing. The server always stops.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from explorer.ui.local_server import IDLE, app_server

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
APP_READY_MS = 600_000


def wait_until_idle(page: object, timeout_ms: int = APP_READY_MS) -> None:
    """Wait until the script has finished running (and the app has drawn something)."""
    page.wait_for_selector(IDLE, timeout=timeout_ms)  # type: ignore[attr-defined]


@pytest.fixture()
def browser_page() -> Iterator[object]:
    """A Chromium page (skips when Chromium or Playwright is unavailable)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            # tall enough for a whole tab: Streamlit scrolls inside its main block, not the document
            yield browser.new_page(viewport={"width": 1500, "height": 2300})
        finally:
            browser.close()


def test_app_shows_calibrated_demo_and_compare(browser_page: object, tmp_path: Path) -> None:
    page = browser_page
    with app_server() as url:
        page.goto(url)  # type: ignore[attr-defined]
        page.wait_for_selector("text=Tuned SQNR", timeout=APP_READY_MS)  # type: ignore[attr-defined]
        wait_until_idle(page)
        text = page.inner_text("[data-testid='stMain']")  # type: ignore[attr-defined]
        assert "demo ViT" in text and "Calibrated in" in text
        assert "Tuned clip max" in text and "What the data says" in text
        assert "Traceback" not in text
        assert page.locator("[data-testid='stException']").count() == 0  # type: ignore[attr-defined]
        page.wait_for_selector(".js-plotly-plot", timeout=APP_READY_MS)  # type: ignore[attr-defined]  # charts mount last
        assert page.locator(".js-plotly-plot").count() >= 3  # type: ignore[attr-defined]
        page.screenshot(path=str(tmp_path / "layer.png"), full_page=True)  # type: ignore[attr-defined]

        page.get_by_role("tab", name="Compare").click()  # type: ignore[attr-defined]
        page.wait_for_selector("text=Least MSE: points won", timeout=APP_READY_MS)  # type: ignore[attr-defined]
        wait_until_idle(page)
        assert page.locator("[data-testid='stException']").count() == 0  # type: ignore[attr-defined]
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)  # type: ignore[attr-defined]
    assert (tmp_path / "layer.png").stat().st_size > 10_000
    assert (tmp_path / "compare.png").stat().st_size > 10_000
