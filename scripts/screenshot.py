"""Screenshots of the app for the README: ``docs/screenshot.png`` (1500 px wide) and ``docs/screenshot-1100.png``.

Starts ``streamlit run app.py`` on a free port, opens it in headless Chromium (Playwright, with
Debian's ``/usr/bin/chromium`` when present), waits until the script has finished running, and
saves a full-page screenshot at each width. Run from anywhere: ``python scripts/screenshot.py``.
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from explorer.ui.local_server import IDLE, app_server

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = Path("/usr/bin/chromium")
WIDTHS = {1500: DOCS / "screenshot.png", 1100: DOCS / "screenshot-1100.png"}
READY_TIMEOUT_MS = 600_000


def shoot(page: Page, url: str, width: int, path: Path) -> None:
    """Open the app at ``width`` and save a full-page screenshot to ``path``.

    Streamlit scrolls inside its main block, not the document, so the viewport is made as tall
    as the main block's content before the screenshot.
    """
    page.set_viewport_size({"width": width, "height": 1200})
    page.goto(url)
    page.wait_for_selector("text=Tuned SQNR", timeout=READY_TIMEOUT_MS)
    page.wait_for_selector(IDLE, timeout=READY_TIMEOUT_MS)
    height = page.evaluate("document.querySelector(\"[data-testid='stMain']\").scrollHeight")
    page.set_viewport_size({"width": width, "height": int(height) + 40})
    page.wait_for_timeout(1500)  # let the charts redraw at the new size
    page.screenshot(path=str(path), full_page=True)


def main() -> None:
    """Take every screenshot of :data:`WIDTHS`."""
    DOCS.mkdir(exist_ok=True)
    with sync_playwright() as playwright, app_server() as url:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM) if CHROMIUM.exists() else None,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            for width, path in WIDTHS.items():
                shoot(page, url, width, path)
                print(f"{path.relative_to(ROOT)}: {width} px wide")
        finally:
            browser.close()


if __name__ == "__main__":
    main()
