"""The page on the server's grid: resume with the anchor, the server's own seq, align.

Against the real server (a restart between two hypercorns on one port), and
against a stand-in websocket where the test decides exactly what the server
says: slots lost during a reconnect, a schedule that ended while the page was
away, a seq that goes back.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, WebSocket, WebSocketRoute, expect

from .conftest import HypercornProcess, PageProblems
from .test_page import CONNECTED, expect_done, open_page, start, summary, ticks

pytestmark = pytest.mark.slow

#: Milliseconds to wait for the page to reconnect to a server that is back:
#: its backoff reaches several seconds when the server took a while to return.
RECONNECT_TIMEOUT = 40_000

#: Seconds a tick's server ``time`` may lag its slot's due time on this busy,
#: shared machine, when the median over a schedule's ticks is taken.
LATENESS_BOUND = 0.15

Frame = dict[str, Any]


@dataclass
class Connection:
    """One websocket the page opened: the JSON frames each way, in order."""

    sent: list[Frame] = field(default_factory=list)
    received: list[Frame] = field(default_factory=list)

    def of_type(self, kind: str) -> list[Frame]:
        return [frame for frame in self.received if frame["type"] == kind]


def watch_wire(page: Page) -> list[Connection]:
    """Every websocket ``page`` opens from now on, as it opens them."""
    connections: list[Connection] = []

    def on_websocket(ws: WebSocket) -> None:
        connection = Connection()
        connections.append(connection)

        def on_sent(payload: str | bytes) -> None:
            connection.sent.append(json.loads(payload))

        def on_received(payload: str | bytes) -> None:
            connection.received.append(json.loads(payload))

        ws.on("framesent", on_sent)
        ws.on("framereceived", on_received)

    page.on("websocket", on_websocket)
    return connections


def wait_until(page: Page, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Let the page run until ``condition()`` holds (Playwright delivers events meanwhile)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {timeout} s: {condition.__doc__ or condition}")
        page.wait_for_timeout(50)


def schedule_state(page: Page) -> Locator:
    return page.get_by_role("heading", name=re.compile(r"^Current schedule"))


# ---------------------------------------------------------------------------
# The real server, restarted


def test_a_counted_schedule_resumes_on_its_grid_after_a_server_restart(
    page: Page, server: HypercornProcess, problems: PageProblems
) -> None:
    problems.allow_websocket_failures = True  # Chromium logs each refused attempt
    wire = watch_wire(page)
    open_page(page, server)
    start(page, "0.05", "400")  # 20 s: time enough for a slow restart and reconnect
    expect(ticks(page).nth(9)).to_be_attached()
    server.stop()
    expect(page.get_by_role("status")).to_have_text("Disconnected: reconnecting…")
    server.start()
    expect(page.get_by_role("status")).to_have_text(CONNECTED, timeout=RECONNECT_TIMEOUT)
    expect(schedule_state(page)).to_contain_text(re.compile(r", resumed at slot \d+\)"))
    lost = page.get_by_text(re.compile(r"^skipped slots \d+\u2013\d+ \(lost while reconnecting\)$"))
    expect(lost).to_be_visible()
    lost_text = lost.inner_text()
    expect(page.get_by_text(re.compile(r"\(done: "))).to_be_visible(timeout=30_000)

    # The resume asked for the same grid and the same final slot, nothing more.
    first, second = wire[0], wire[-1]
    (started,) = first.of_type("started")
    assert (started["first"], started["count"]) == (1, 400)
    assert second.sent == [
        {"type": "start", "interval": 0.05, "anchor": started["anchor"], "last": 400}
    ]
    (resumed,) = second.of_type("started")
    assert resumed["anchor"] == started["anchor"]
    assert resumed["count"] == 400 - resumed["first"] + 1
    # The lost range is exactly the slots between the two servers' ticks.
    last_before = first.of_type("tick")[-1]["seq"]
    assert lost_text == (
        f"skipped slots {last_before + 1}\u2013{resumed['first'] - 1} (lost while reconnecting)"
    )
    # The second server's ticks are on the first one's grid: the server's seq is
    # shown, numbering ends at 400, and every slot is received or skipped.
    after = second.of_type("tick")
    lateness = [tick["time"] - (started["anchor"] + tick["seq"] * 0.05) for tick in after]
    assert min(lateness) > -0.01
    assert statistics.median(lateness) < LATENESS_BOUND
    expect(ticks(page).first).to_have_text(re.compile(r"^(#400 ·|skipped slots? (\d+\u2013)?400 )"))
    received = len(first.of_type("tick")) + len(after)
    expect(
        page.get_by_text(f"(done: {received} received, {400 - received} skipped)")
    ).to_be_visible()
    expect(summary(page, "Received")).to_have_text(str(received))
    expect(summary(page, "Skipped")).to_have_text(str(400 - received))
    expect(summary(page, "Out of order")).to_have_text("0")


def test_a_schedule_whose_last_slot_passed_during_the_restart_ended_while_away(
    page: Page, server: HypercornProcess, problems: PageProblems
) -> None:
    problems.allow_websocket_failures = True
    wire = watch_wire(page)
    open_page(page, server)
    start(page, "0.05", "40")
    expect(ticks(page).nth(4)).to_be_attached()
    server.stop()
    (started,) = wire[0].of_type("started")
    end = started["anchor"] + 40 * 0.05
    time.sleep(max(0.0, end - time.time()) + 0.5)  # the wall clock must pass the final slot
    server.start()
    ended = page.get_by_text(
        re.compile(r"\(ended while disconnected: (\d+) received, (\d+) skipped\)")
    )
    expect(ended).to_be_visible(timeout=RECONNECT_TIMEOUT)
    assert wire[-1].sent == [
        {"type": "start", "interval": 0.05, "anchor": started["anchor"], "last": 40}
    ]
    assert [frame["code"] for frame in wire[-1].of_type("error")] == ["schedule_over"]
    found = re.search(r"(\d+) received, (\d+) skipped", ended.inner_text())
    assert found is not None
    received, skipped = int(found.group(1)), int(found.group(2))
    assert received == len(wire[0].of_type("tick"))
    assert received + skipped == 40
    last_before = wire[0].of_type("tick")[-1]["seq"]
    expect(ticks(page).first).to_have_text(
        f"skipped slots {last_before + 1}\u201340 (lost while reconnecting)"
    )
    expect(page.get_by_role("alert")).to_have_text("")  # not a problem: the schedule is over


def test_align_to_the_clock_ticks_on_whole_multiples_of_the_interval(
    page: Page, server: HypercornProcess
) -> None:
    wire = watch_wire(page)
    open_page(page, server)
    page.get_by_role("checkbox", name="Align to the clock").check()
    start(page, "0.5", "4")
    expect(page.get_by_text(re.compile(r"\(done: "))).to_be_visible()
    assert wire[0].sent == [{"type": "start", "interval": 0.5, "count": 4, "anchor": 0}]
    (started,) = wire[0].of_type("started")
    assert started["anchor"] == 0
    sent = wire[0].of_type("tick")
    assert sent
    # Slot n is due at n * 0.5 s since the epoch, so `seq` is the slot of the
    # Unix time itself, and each tick leaves within the bound after its slot.
    lateness = [tick["time"] - tick["seq"] * 0.5 for tick in sent]
    assert min(lateness) > -0.01
    assert statistics.median(lateness) < LATENESS_BOUND
    assert abs(sent[0]["seq"] * 0.5 - time.time()) < 60
    last = started["first"] + 3
    expect_done(page, 4, last=last)
    expect(ticks(page).first).to_have_text(
        re.compile(rf"^(#{last} ·|skipped slots? (\d+\u2013)?{last} )")
    )


# ---------------------------------------------------------------------------
# A stand-in server: the test says what the server says

HELLO = {
    "type": "hello",
    "version": "9.9",
    "min_interval": 0.01,
    "max_interval": 86400,
    "max_count": 1000,
}
ANCHOR = 1764139200.123456


class StandIn:
    """The page's websocket, answered by the test: one ``Connection`` per socket."""

    def __init__(self, page: Page) -> None:
        self.sockets: list[WebSocketRoute] = []
        self.connections: list[Connection] = []
        page.route_web_socket(re.compile(r"/ws$"), self._accept)

    def _accept(self, ws: WebSocketRoute) -> None:
        connection = Connection()

        def on_message(message: str | bytes) -> None:
            connection.sent.append(json.loads(message))

        ws.on_message(on_message)
        self.sockets.append(ws)
        self.connections.append(connection)
        ws.send(json.dumps(HELLO))

    def send(self, *frames: Frame) -> None:
        for frame in frames:
            self.sockets[-1].send(json.dumps(frame))

    def wait_for_start(self, page: Page, connection: int) -> Frame:
        """The first frame the page sends on its ``connection``-th socket (from 0)."""

        def sent() -> bool:
            """the page sent a frame on that socket"""
            return len(self.connections) > connection and bool(self.connections[connection].sent)

        wait_until(page, sent)
        return self.connections[connection].sent[0]


def tick(seq: int, interval: float = 0.5, anchor: float = ANCHOR) -> Frame:
    return {"type": "tick", "id": 1, "seq": seq, "time": anchor + seq * interval + 0.000456}


def shown_clock(page: Page, unix_time: float) -> str:
    """``unix_time`` as the page shows it: its local time, to the millisecond (truncated)."""
    offset = page.evaluate("t => -new Date(t * 1000).getTimezoneOffset()", unix_time)
    moment = datetime.fromtimestamp(unix_time, timezone(timedelta(minutes=offset)))
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}"


def test_resume_sends_the_anchor_and_last_and_shows_the_lost_slots(
    page: Page, server: HypercornProcess
) -> None:
    stand_in = StandIn(page)
    open_page(page, server)
    start(page, "0.5", "10")
    assert stand_in.wait_for_start(page, 0) == {"type": "start", "interval": 0.5, "count": 10}
    started = {"type": "started", "id": 1, "interval": 0.5, "count": 10}
    stand_in.send({**started, "anchor": ANCHOR, "first": 1}, tick(1), tick(2), tick(3))
    expect(ticks(page).first).to_have_text(re.compile(r"^#3 · "))
    stand_in.sockets[0].close(code=1001, reason="server shutting down")

    # The new server is asked for the rest of the same grid: anchor and last slot.
    resumed = stand_in.wait_for_start(page, 1)
    assert resumed == {"type": "start", "interval": 0.5, "anchor": ANCHOR, "last": 10}
    stand_in.send({**started, "count": 4, "anchor": ANCHOR, "first": 7})
    expect(schedule_state(page)).to_have_text(
        "Current schedule (#1: every 0.5 s, 10 ticks, resumed at slot 7)"
    )
    expect(ticks(page).first).to_have_text("skipped slots 4\u20136 (lost while reconnecting)")
    stand_in.send(tick(7), tick(8), tick(9), tick(10))
    stand_in.send({"type": "done", "id": 1, "sent": 4, "skipped": 0})
    expect(page.get_by_text("(done: 7 received, 3 skipped)")).to_be_visible()
    expect(summary(page, "Received")).to_have_text("7")
    expect(summary(page, "Skipped")).to_have_text("3")
    expect(ticks(page)).to_have_count(8)
    # The server's own seq, and the server's own time next to the arrival.
    items = [ticks(page).nth(i).inner_text() for i in range(ticks(page).count())]
    assert [item.split(" · ")[0] for item in items] == [
        *("#10", "#9", "#8", "#7"),
        "skipped slots 4\u20136 (lost while reconnecting)",
        *("#3", "#2", "#1"),
    ]
    server_time = shown_clock(page, tick(10)["time"])
    assert re.fullmatch(
        rf"#10 · \d\d:\d\d:\d\d\.\d{{3}} · server {server_time} · [+±]\d+\.\d ms", items[0]
    ), items[0]


def test_an_unbounded_schedule_resumes_with_its_anchor_alone(
    page: Page, server: HypercornProcess
) -> None:
    stand_in = StandIn(page)
    open_page(page, server)
    start(page, "0.5")
    assert stand_in.wait_for_start(page, 0) == {"type": "start", "interval": 0.5}
    started = {"type": "started", "id": 1, "interval": 0.5, "count": None, "anchor": ANCHOR}
    stand_in.send({**started, "first": 1}, tick(1))
    expect(ticks(page).first).to_have_text(re.compile(r"^#1 · "))
    stand_in.sockets[0].close(code=1001, reason="server shutting down")
    assert stand_in.wait_for_start(page, 1) == {"type": "start", "interval": 0.5, "anchor": ANCHOR}
    stand_in.send({**started, "id": 1, "first": 2}, tick(2))
    expect(ticks(page).first).to_have_text(re.compile(r"^#2 · "))
    expect(summary(page, "Skipped")).to_have_text("0")  # nothing was lost


def test_schedule_over_after_a_reconnect_means_the_schedule_ended_while_away(
    page: Page, server: HypercornProcess
) -> None:
    stand_in = StandIn(page)
    open_page(page, server)
    start(page, "0.5", "5")
    stand_in.wait_for_start(page, 0)
    started = {"type": "started", "id": 1, "interval": 0.5, "count": 5, "anchor": ANCHOR}
    stand_in.send({**started, "first": 1}, tick(1), tick(2))
    expect(ticks(page).first).to_have_text(re.compile(r"^#2 · "))
    stand_in.sockets[0].close(code=1001, reason="server shutting down")
    resumed = stand_in.wait_for_start(page, 1)
    assert resumed == {"type": "start", "interval": 0.5, "anchor": ANCHOR, "last": 5}
    message = "The last slot, 5, has passed: the next slot due is 9. The schedule is over."
    stand_in.send({"type": "error", "code": "schedule_over", "message": message})
    expect(page.get_by_text("(ended while disconnected: 2 received, 3 skipped)")).to_be_visible()
    expect(ticks(page).first).to_have_text("skipped slots 3\u20135 (lost while reconnecting)")
    expect(summary(page, "Skipped")).to_have_text("3")
    expect(page.get_by_role("alert")).to_have_text("")
    # Over, so not asked for again: another reconnect sends nothing.
    stand_in.sockets[1].close(code=1001, reason="server shutting down")
    wait_until(page, lambda: len(stand_in.connections) == 3)
    expect(page.get_by_role("status")).to_have_text("Connected to ticker 9.9")
    page.wait_for_timeout(500)
    assert stand_in.connections[2].sent == []


def test_a_seq_that_goes_back_is_counted_as_out_of_order(
    page: Page, server: HypercornProcess
) -> None:
    stand_in = StandIn(page)
    open_page(page, server)
    start(page, "0.5")
    stand_in.wait_for_start(page, 0)
    started = {"type": "started", "id": 1, "interval": 0.5, "count": None, "anchor": ANCHOR}
    stand_in.send({**started, "first": 1}, tick(1), tick(2), tick(3))
    expect(ticks(page).first).to_have_text(re.compile(r"^#3 · "))
    expect(summary(page, "Out of order")).to_have_text("0")
    stand_in.send(tick(2), tick(4))
    expect(ticks(page).first).to_have_text(re.compile(r"^#4 · "))
    expect(summary(page, "Out of order")).to_have_text("1")
    expect(ticks(page).nth(1)).to_have_text(re.compile(r"^#2 · .* · out of order$"))
    # Neither a gap nor a skip: 3 → 2 → 4 skipped nothing.
    expect(summary(page, "Skipped")).to_have_text("0")
    expect(summary(page, "Received")).to_have_text("5")


def test_align_to_the_clock_sends_anchor_0_and_shows_the_servers_seq(
    page: Page, server: HypercornProcess
) -> None:
    stand_in = StandIn(page)
    open_page(page, server)
    page.get_by_role("checkbox", name="Align to the clock").check()
    start(page, "1", "3")
    sent = stand_in.wait_for_start(page, 0)
    assert sent == {"type": "start", "interval": 1, "count": 3, "anchor": 0}
    first = 1_764_139_201
    stand_in.send(
        {"type": "started", "id": 1, "interval": 1, "count": 3, "anchor": 0, "first": first}
    )
    expect(schedule_state(page)).to_have_text(
        "Current schedule (#1: every 1 s, 3 ticks, aligned to the clock)"
    )
    stand_in.send(tick(first, 1, 0), tick(first + 2, 1, 0))
    stand_in.send({"type": "done", "id": 1, "sent": 2, "skipped": 1})
    expect(page.get_by_text("(done: 2 received, 1 skipped)")).to_be_visible()
    expect(ticks(page)).to_have_count(3)  # drawn at the next animation frame
    items = [ticks(page).nth(i).inner_text() for i in range(ticks(page).count())]
    assert [item.split(" · ")[0] for item in items] == [
        f"#{first + 2}",
        f"skipped slot {first + 1} (the connection was too slow)",
        f"#{first}",
    ]
