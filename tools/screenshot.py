"""Refresh docs/screenshot.png: the page during an unbounded 50 ms schedule. ``nox -s screenshot``.

    python tools/screenshot.py [OUTPUT]     # default docs/screenshot.png

Starts the real server command (``hypercorn ticker.app:app --worker-class trio``
on a free port of 127.0.0.1) and drives the page in headless Chromium:
$TICKER_CHROMIUM, else ``chromium`` on PATH, else Playwright's own. Needs the
package and Playwright installed (the ``browser`` dependency group).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from playwright.sync_api import expect, sync_playwright

STARTUP_TIMEOUT: Final = 30.0  # seconds for hypercorn to say "Running on"
RUNNING_ON: Final = re.compile(r"Running on (http://127\.0\.0\.1:\d+)")


@contextmanager
def running_server(folder: Path) -> Iterator[str]:
    """The server command on 127.0.0.1:0, until the block ends; yields the page's URL."""
    command = [sys.executable, "-m", "hypercorn", "ticker.app:app", "--worker-class", "trio"]
    command += ["--bind", "127.0.0.1:0", "--graceful-timeout", "1"]
    process = subprocess.Popen(command, cwd=folder, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr
    assert stderr is not None  # stderr=PIPE
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:
        """Read stderr to its end: a server whose pipe is full blocks."""
        for line in stderr:
            lines.put(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        log: list[str] = []
        while not (found := RUNNING_ON.search(log[-1] if log else "")):
            try:
                log.append(lines.get(timeout=STARTUP_TIMEOUT))
            except queue.Empty:
                raise SystemExit(f"hypercorn did not start:\n{''.join(log)}") from None
        yield found.group(1) + "/"
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(timeout=30)  # the pipe ends with the process
        stderr.close()


def main(output: Path) -> None:
    chromium = os.environ.get("TICKER_CHROMIUM") or shutil.which("chromium")
    with (
        tempfile.TemporaryDirectory() as folder,
        running_server(Path(folder)) as url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 900, "height": 1000})
        page.goto(url)
        expect(page.get_by_role("status")).to_contain_text("Connected to ticker", timeout=15_000)
        page.get_by_label("Interval (seconds)").fill("0.05")
        page.get_by_label("Count (empty = unlimited)").fill("")
        page.get_by_role("button", name="Start").click()
        page.wait_for_timeout(7_000)
        page.screenshot(path=str(output), full_page=True)
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot.png"))
