"""Refresh docs/screenshot.png: the page after a short schedule. ``nox -s screenshot``."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from .conftest import HypercornProcess, chromium_executable


def main(output: Path) -> None:
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        server = HypercornProcess(Path(folder), {})
        server.start()
        try:
            browser = playwright.chromium.launch(
                executable_path=chromium_executable(), args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 900, "height": 1000})
            page.goto(server.url)
            expect(page.get_by_role("status")).to_contain_text(
                "Connected to ticker", timeout=15_000
            )
            page.get_by_label("Interval (seconds)").fill("0.05")
            page.get_by_label("Count (empty = unlimited)").fill("")
            page.get_by_role("button", name="Start").click()
            page.wait_for_timeout(7_000)
            page.screenshot(path=str(output), full_page=True)
            browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot.png"))
