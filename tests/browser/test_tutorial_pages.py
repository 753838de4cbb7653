"""The tutorial's two pages (docs/tutorial/static/) in headless Chromium, against its steps.

Each step runs as the tutorial says, ``hypercorn docs/tutorial/STEP.py:app --worker-class
trio``, from the top of the checkout, on a free port.
"""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from ..tutorial_programs import ROOT, STEP1, STEP4, STEP5
from .conftest import STARTUP_TIMEOUT, PageProblems, watched_page


@pytest.fixture
def step(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of the step named by the test's parameter, served by the real `hypercorn`."""
    app: str = request.param
    command = [sys.executable, "-m", "hypercorn", app, "--worker-class", "trio"]
    process = subprocess.Popen(
        [*command, "--bind", "127.0.0.1:0", "--graceful-timeout", "1"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            lines.put(line)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        while not (
            found := re.search(
                r"Running on http://127\.0\.0\.1:(\d+)", lines.get(timeout=STARTUP_TIMEOUT)
            )
        ):
            pass
        yield f"http://127.0.0.1:{found.group(1)}/"
    finally:
        process.terminate()
        process.wait(timeout=30)
        thread.join(timeout=30)  # the pipe ends with the process
        assert process.stderr is not None
        process.stderr.close()
    assert "Traceback" not in "".join(log)


@pytest.fixture
def page(step: str, browser: Browser, problems: PageProblems) -> Iterator[Page]:
    """A page for ``step``, closed (and its console checked) while the step still runs."""
    del step
    yield from watched_page(browser, problems)


def shown(page: Page, text: str) -> None:
    expect(page.get_by_role("listitem").filter(has_text=text)).to_have_count(1)


@pytest.mark.parametrize("step", [STEP1], indirect=True)
def test_echo_page_shows_what_the_server_sends_back(page: Page, step: str) -> None:
    page.goto(step)
    page.get_by_label("Message").fill("hello, trio")
    page.get_by_role("button", name="Send").click()
    shown(page, "hello, trio")


@pytest.mark.parametrize("step", [STEP4, STEP5], indirect=True)
def test_client_page_shows_every_tick_then_done(page: Page, step: str) -> None:
    page.goto(step)
    page.get_by_label("Interval (s)").fill("0.1")
    page.get_by_label("Count").fill("3")
    page.get_by_role("button", name="Start").click()
    shown(page, "done: 3 sent, 0 skipped")
    for seq in (1, 2, 3):
        shown(page, f"tick {seq}")


@pytest.mark.parametrize("step", [STEP5], indirect=True)
def test_client_page_shows_hello_and_the_servers_error(page: Page, step: str) -> None:
    page.goto(step)
    shown(page, "hello: intervals from 0.01 to 86400 s")
    page.get_by_label("Interval (s)").fill("0")
    page.get_by_role("button", name="Start").click()
    shown(page, "error invalid_interval: The interval must be between 0.01 and 86400")
