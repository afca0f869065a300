"""End to end: the real ``streamlit run app.py`` server in a headless Chromium.

Skipped cleanly when Chromium or Playwright is missing. The server always stops.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SERVER_START_S = 120
APP_READY_MS = 600_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def app_server() -> Iterator[str]:
    """``streamlit run app.py`` on a free port; yields its URL once it answers its health check."""
    port = _free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                output = server.stdout.read().decode(errors="replace") if server.stdout else ""
                pytest.fail(f"streamlit exited with {server.returncode}:\n{output[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer within {SERVER_START_S} s")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def wait_until_idle(page: object, timeout_ms: int = APP_READY_MS) -> None:
    """Wait until the script has finished running (and the app has drawn something)."""
    page.wait_for_selector(  # type: ignore[attr-defined]
        "[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout_ms
    )


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
        assert page.locator(".js-plotly-plot").count() >= 3  # type: ignore[attr-defined]
        page.screenshot(path=str(tmp_path / "layer.png"), full_page=True)  # type: ignore[attr-defined]

        page.get_by_role("tab", name="Compare").click()  # type: ignore[attr-defined]
        page.wait_for_selector("text=Least MSE: points won", timeout=APP_READY_MS)  # type: ignore[attr-defined]
        wait_until_idle(page)
        assert page.locator("[data-testid='stException']").count() == 0  # type: ignore[attr-defined]
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)  # type: ignore[attr-defined]
    assert (tmp_path / "layer.png").stat().st_size > 10_000
    assert (tmp_path / "compare.png").stat().st_size > 10_000
