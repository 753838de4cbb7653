"""The page has no limits of its own: the form takes them from the server's hello."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from .conftest import HypercornProcess

pytestmark = pytest.mark.slow

HELLO = {"type": "hello", "version": "9.9", "min_interval": 0.5, "max_interval": 60, "max_count": 7}


def start(page: Page, interval: str, count: str) -> None:
    page.get_by_label("Interval (seconds)").fill(interval)
    page.get_by_label("Count (empty = unlimited)").fill(count)
    page.get_by_role("button", name="Start").click()


def test_before_hello_the_form_has_no_limits_and_starts_nothing_then_takes_hellos(
    page: Page, server: HypercornProcess
) -> None:
    # A stand-in for the server's websocket that says hello only when told to,
    # and answers a start as ticker would.
    sockets: list[WebSocketRoute] = []
    received: list[str | bytes] = []

    def stand_in(ws: WebSocketRoute) -> None:
        def on_message(message: str | bytes) -> None:
            received.append(message)
            asked = json.loads(message)
            started = {"type": "started", "id": 1, "interval": asked["interval"], "count": 7}
            ws.send(json.dumps(started))

        ws.on_message(on_message)
        sockets.append(ws)

    page.route_web_socket(re.compile(r"/ws$"), stand_in)
    page.goto(server.url)
    status = page.get_by_role("status")
    expect(status).to_have_text("Connected")  # open, and no hello yet
    interval = page.get_by_label("Interval (seconds)")
    count = page.get_by_label("Count (empty = unlimited)")
    assert (interval.get_attribute("min"), interval.get_attribute("max")) == (None, None)
    assert count.get_attribute("max") is None
    start(page, "1", "7")
    expect(page.get_by_role("alert")).to_have_text(
        "Not connected yet: try again when the status says “Connected to ticker”."
    )
    expect(interval).not_to_have_attribute("aria-invalid", "true")
    assert received == []

    sockets[0].send(json.dumps(HELLO))
    expect(status).to_have_text("Connected to ticker 9.9")
    expect(interval).to_have_attribute("min", "0.5")
    expect(interval).to_have_attribute("max", "60")
    expect(count).to_have_attribute("max", "7")
    start(page, "61", "7")
    expect(page.get_by_role("alert")).to_have_text(
        "The interval must be a number of seconds between 0.5 and 60."
    )
    start(page, "1", "8")
    expect(page.get_by_role("alert")).to_have_text(
        "The count must be a whole number from 1 to 7, or empty for no limit."
    )
    start(page, "1", "7")
    expect(page.get_by_role("alert")).to_have_text("")
    expect(page.get_by_text("(#1: every 1 s, 7 ticks)")).to_be_visible()
    assert [json.loads(message) for message in received] == [
        {"type": "start", "interval": 1, "count": 7}
    ]
