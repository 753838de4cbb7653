"""The page as a person uses it, found only by roles and accessible names."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, Page, expect

from .conftest import HypercornProcess

pytestmark = pytest.mark.slow

CONNECTED = re.compile(r"^Connected")


def open_page(page: Page, server: HypercornProcess) -> None:
    page.goto(server.url)
    expect(page.get_by_role("status")).to_have_text(CONNECTED)


def ticks(page: Page) -> Locator:
    return page.get_by_role("list", name="Ticks").get_by_role("listitem")


def start(page: Page, interval: str, count: str = "") -> None:
    page.get_by_label("Interval (seconds)").fill(interval)
    page.get_by_label("Count (empty = unlimited)").fill(count)
    page.get_by_role("button", name="Start").click()


def expect_newest_slot(page: Page, slot: int) -> None:
    """The top item (newest first) is `slot`: as a tick or, on a machine busy
    enough to fall an interval behind, as the skipped range that ends there."""
    newest = re.compile(rf"^(#{slot} ·|skipped slots? (\d+\u2013)?{slot} )")
    expect(ticks(page).first).to_have_text(newest)


def shown_ticks(page: Page) -> Locator:
    """The items that are ticks, not skipped ranges."""
    return ticks(page).filter(has_text=re.compile(r"^#"))


DONE = re.compile(r"\(done: (\d+) received, (\d+) skipped\)")


def expect_done(page: Page, count: int, last: int | None = None) -> int:
    """Wait for the end of a counted schedule of at most 200; how many ticks it received.

    Every slot is accounted for, as a tick shown or as a skipped range: on a busy
    machine the server may skip a slot (its tick due after the next deadline), and
    the page must then say so. On a quiet machine nothing is skipped. `last`: the
    seq of its final slot, when the schedule does not start at slot 1 (an anchor).
    """
    state = page.get_by_text(DONE)
    expect(state).to_be_visible()
    found = DONE.search(state.inner_text())
    assert found is not None
    received, skipped = int(found.group(1)), int(found.group(2))
    assert received + skipped == count
    assert received > 0
    expect(summary(page, "Received")).to_have_text(str(received))
    expect(summary(page, "Skipped")).to_have_text(str(skipped))
    expect(shown_ticks(page)).to_have_count(received)
    expect_newest_slot(page, count if last is None else last)
    return received


def next_frame(page: Page) -> None:
    """Return once the page has drawn its next animation frame (two, to be sure it ran)."""
    page.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def summary(page: Page, term: str) -> Locator:
    return page.get_by_role("term").filter(has_text=re.compile(f"^{term}$")).locator("+ dd")


def test_page_has_one_status_and_the_named_controls(page: Page, server: HypercornProcess) -> None:
    open_page(page, server)
    expect(page.get_by_role("status")).to_have_count(1)
    expect(page.get_by_role("status")).to_have_text(re.compile(r"^Connected to ticker \d"))
    expect(page.get_by_role("button", name="Start")).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    expect(page.get_by_role("img", name="Tick timing chart")).to_be_visible()
    expect(page.get_by_role("list", name="Ticks")).to_be_attached()


def test_counted_schedule_shows_every_tick_then_done(page: Page, server: HypercornProcess) -> None:
    open_page(page, server)
    start(page, "0.1", "10")
    expect_done(page, 10)
    # Newest first, each with its seq, arrival time, the server's time and deviation in ms.
    expect(shown_ticks(page).first).to_have_text(
        re.compile(
            r"^#\d+ · \d\d:\d\d:\d\d\.\d{3} · server \d\d:\d\d:\d\d\.\d{3} · [+±]\d+\.\d ms$"
        )
    )
    expect(ticks(page).last).to_have_text(re.compile(r"^(#1 ·|skipped slots? 1(\u2013\d+)? )"))
    expect(summary(page, "Mean deviation")).to_have_text(re.compile(r"\d+\.\d ms$"))
    expect(summary(page, "p95 deviation")).to_have_text(re.compile(r"\d+\.\d ms$"))
    expect(page.get_by_role("alert")).to_have_text("")


def test_enter_starts_an_unbounded_schedule_and_stop_ends_it(
    page: Page, server: HypercornProcess
) -> None:
    open_page(page, server)
    page.get_by_label("Interval (seconds)").fill("0.02")
    page.get_by_label("Count (empty = unlimited)").fill("")
    page.get_by_label("Interval (seconds)").press("Enter")
    expect(ticks(page).nth(14)).to_be_attached()  # at least 15, and growing
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text("(stopped)")).to_be_visible()
    next_frame(page)  # ticks that arrived before `stopped` are drawn then
    shown = ticks(page).count()
    page.wait_for_timeout(500)
    assert ticks(page).count() == shown


def test_invalid_interval_shows_an_alert_and_starts_nothing(
    page: Page, server: HypercornProcess
) -> None:
    open_page(page, server)
    start(page, "0.001")
    expect(page.get_by_role("alert")).to_have_text(
        "The interval must be a number of seconds between 0.01 and 86400."
    )
    expect(page.get_by_label("Interval (seconds)")).to_have_attribute("aria-invalid", "true")
    start(page, "1", "2.5")
    expect(page.get_by_role("alert")).to_contain_text("The count must be a whole number")
    page.wait_for_timeout(300)
    expect(ticks(page)).to_have_count(0)
    # A valid start clears the alert.
    start(page, "0.05", "1")
    expect(page.get_by_role("alert")).to_have_text("")
    expect(ticks(page)).to_have_count(1)


@pytest.mark.parametrize(
    "server_env",
    [{"TICKER_MIN_INTERVAL": "0.05", "TICKER_MAX_COUNT": "20"}],
    ids=["min interval 0.05, max count 20"],
)
def test_limits_come_from_the_servers_hello(page: Page, server: HypercornProcess) -> None:
    open_page(page, server)
    interval = page.get_by_label("Interval (seconds)")
    expect(interval).to_have_attribute("min", "0.05")
    expect(page.get_by_label("Count (empty = unlimited)")).to_have_attribute("max", "20")
    start(page, "0.02")
    expect(page.get_by_role("alert")).to_have_text(
        "The interval must be a number of seconds between 0.05 and 86400."
    )


def test_tick_list_keeps_only_the_newest_200(page: Page, server: HypercornProcess) -> None:
    open_page(page, server)
    start(page, "0.02", "300")
    expect(page.get_by_text(re.compile(r"\(done: "))).to_be_visible(timeout=30_000)
    expect(ticks(page)).to_have_count(200)
    expect_newest_slot(page, 300)


def test_chart_is_drawn(page: Page, server: HypercornProcess) -> None:
    open_page(page, server)
    chart = page.get_by_role("img", name="Tick timing chart")
    count_pixels = """canvas => {
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let painted = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted += 1;
        return painted;
    }"""
    before = chart.evaluate(count_pixels)
    start(page, "0.02", "30")
    expect(page.get_by_text(re.compile(r"\(done: "))).to_be_visible()
    next_frame(page)  # the last ticks are drawn then, however long a busy machine takes
    after = chart.evaluate(count_pixels)
    assert after > before + 200  # a target line and 29 dots, not just the hint text
