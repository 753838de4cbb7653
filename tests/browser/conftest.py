"""Browser tier: the real page in headless Chromium (Playwright) against the real server command.

Playwright's sync API runs its own event loop, so the server runs in a
subprocess, exactly as a user starts it: ``hypercorn ticker.app:app --worker-class trio``.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

#: Chromium's own log line when a websocket cannot connect (the server is down):
#: expected while the page waits for a restarted server, never otherwise.
WEBSOCKET_FAILED = re.compile(r"^WebSocket connection to '.*' failed")

STARTUP_TIMEOUT = 30.0  # seconds for hypercorn to say "Running on"

#: Milliseconds any page action or ``expect`` may wait for what it waits for. Only
#: an upper bound (each returns as soon as its condition holds): Playwright's 5 s
#: default for ``expect`` is too close to what a busy 2-core machine can take to
#: start Chromium's renderer and deliver a page's first ticks.
WAIT_TIMEOUT = 15_000
expect.set_options(timeout=WAIT_TIMEOUT)


class HypercornProcess:
    """``hypercorn ticker.app:app --worker-class trio`` on 127.0.0.1, restartable on its port."""

    def __init__(self, cwd: Path, env: dict[str, str], args: Sequence[str] = ()) -> None:
        self.cwd = cwd
        self.env = {**os.environ, **env}
        #: More hypercorn options, e.g. ``--certfile``/``--keyfile`` (then the URL is https).
        self.args = list(args)
        self.port = 0
        self.log: list[str] = []
        self._process: subprocess.Popen[str] | None = None
        self._drain: threading.Thread

    @property
    def url(self) -> str:
        scheme = "https" if "--certfile" in self.args else "http"
        return f"{scheme}://127.0.0.1:{self.port}/"

    def start(self) -> None:
        command = [sys.executable, "-m", "hypercorn", "ticker.app:app", "--worker-class", "trio"]
        command += ["--bind", f"127.0.0.1:{self.port}", "--graceful-timeout", "1", *self.args]
        process = subprocess.Popen(
            command, cwd=self.cwd, env=self.env, stderr=subprocess.PIPE, text=True
        )
        self._process = process
        lines: queue.Queue[str] = queue.Queue()

        def drain() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                self.log.append(line)
                lines.put(line)

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        while True:
            try:
                line = lines.get(timeout=STARTUP_TIMEOUT)
            except queue.Empty:
                self.stop()
                pytest.fail(f"hypercorn did not start: {''.join(self.log)}")
            if found := re.search(r"Running on https?://127\.0\.0\.1:(\d+)", line):
                self.port = int(found.group(1))
                return

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._drain.join(timeout=30)  # the pipe ends with the process
            assert self._process.stderr is not None
            self._process.stderr.close()
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def server_env() -> dict[str, str]:
    """TICKER_* settings for ``server``; a test parametrizes this name to set its own."""
    return {}


@pytest.fixture
def server(tmp_path: Path, server_env: dict[str, str]) -> Iterator[HypercornProcess]:
    process = HypercornProcess(tmp_path, server_env)
    process.start()
    yield process
    process.stop()
    assert "Traceback" not in "".join(process.log)


def chromium_executable() -> str | None:
    """The Chromium to drive: $TICKER_CHROMIUM, else `chromium` on PATH, else Playwright's own."""
    return os.environ.get("TICKER_CHROMIUM") or shutil.which("chromium")


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=chromium_executable(),
        # Root in a container needs --no-sandbox; the rest keeps Chromium from
        # calling home on a machine without internet.
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )
    yield browser
    browser.close()


@dataclass
class PageProblems:
    """Console errors, page errors and failed requests seen during one test."""

    console: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    allow_websocket_failures: bool = False

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            if self.allow_websocket_failures and WEBSOCKET_FAILED.match(message.text):
                return
            self.console.append(message.text)


@pytest.fixture
def problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
def page(server: HypercornProcess, browser: Browser, problems: PageProblems) -> Iterator[Page]:
    """A page for ``server``.

    It depends on the server, so pytest sets the server up first and tears it down
    last, whatever the order of a test's arguments: the page is closed, and its
    console checked, while its server still runs. (A page left open past its
    server logs each refused reconnect, ERR_CONNECTION_REFUSED, as a console error.)
    A fixture giving a page for another server does the same: it depends on that
    server and yields from ``watched_page``.
    """
    del server  # needed only for the order of set-up and teardown
    yield from watched_page(browser, problems)


def watched_page(browser: Browser, problems: PageProblems) -> Iterator[Page]:
    """A fresh page whose console errors and failed requests fail the test at teardown.

    Only for a fixture that depends on the page's server (see ``page``).
    """
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_TIMEOUT)
    page.on("console", problems.on_console)
    page.on("pageerror", lambda error: problems.console.append(f"page error: {error}"))
    page.on("requestfailed", lambda request: problems.failed_requests.append(request.url))
    yield page
    context.close()
    assert problems.console == []
    assert problems.failed_requests == []
