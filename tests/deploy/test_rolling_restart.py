"""A rolling restart of two hosts behind nginx, as deploy/README.md describes it, costs
each client only the slots due while it reconnected: the page in Chromium and
``ticker watch --reconnect`` stay on one anchored grid and end on their planned slot.

The stack and the procedure come from the README's own blocks (``fleet.py``).
Both clients connect through nginx over TLS and run a counted schedule aligned
to the clock (``anchor: 0``), long enough to outlast both restarts. What each
received is read off the wire (the page's frames through Playwright, the
watch's ``--json`` lines), timestamped on arrival with the wall clock, which
is the hosts' clock too.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import trio
from playwright.sync_api import WebSocket, expect, sync_playwright

from ..browser.conftest import chromium_executable
from ..support import STEP_TIMEOUT
from .conftest import TLS
from .fleet import Fleet, open_fleet

pytestmark = pytest.mark.slow

TICKER = Path(sys.executable).with_name("ticker")  # the [project.scripts] entry point

INTERVAL = 0.2
#: 70 s: both restarts (each: a stop, a start of two workers, /healthz) must
#: end well before the last slot, on a busy machine too (each took 1-10 s).
COUNT = 350
#: A received tick's server ``time`` may be this much after its slot's due time
#: (a busy machine stalls a process now and then)...
LATENESS = 0.5
#: ... and never before it, but for this: the server maps the grid onto its
#: monotonic clock once, at each start, and reports the wall clock's ``time``,
#: which NTP may slew meanwhile (at most 0.5 ms/s). A seq off by one would be
#: a whole interval out.
EARLY = 0.05
#: A reconnect (a 1001, then the first retry after 0.5 s ± 20 %, a TLS handshake
#: through nginx, `started`) must take no longer than this.
RECONNECT_BOUND = 5.0
#: The rolling restart must end this long before the schedule's last slot, so
#: that the clients are seen back on their feet (else COUNT is too small).
MARGIN = 3.0
#: How long the README's procedure may take (two hosts, each at most
#: TimeoutStopSec and 30 curl tries of up to 5 s, a second apart), with room.
PROCEDURE_TIMEOUT = 2 * (10 + 30 * 6) + 30
#: The whole test, once the hosts are up: Chromium's start, the procedure, the schedule.
TEST_TIMEOUT = STEP_TIMEOUT * 6 + PROCEDURE_TIMEOUT + COUNT * INTERVAL + STEP_TIMEOUT * 3

#: Chromium as tests/browser/conftest.py launches it (root in a container needs
#: --no-sandbox; the rest keeps it from calling home), plus trust in exactly
#: nginx's test certificate.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_TIMEOUT = 15_000  # ms, as tests/browser: an upper bound for each page wait
CONNECTED = re.compile(r"^Connected")
DONE = re.compile(r"done: (\d+) received, (\d+) skipped")


@dataclass
class Message:
    """One server message as a client had it: when (wall clock), and what."""

    at: float
    data: dict[str, object]

    @property
    def type(self) -> object:
        return self.data.get("type")


@dataclass
class Record:
    """What one client saw: its connections' messages, and what it printed or showed."""

    name: str
    connections: list[list[Message]] = field(default_factory=list)
    sent: list[list[dict[str, object]]] = field(default_factory=list)  # the page's frames
    output: list[str] = field(default_factory=list)  # printed to the test's log
    problems: list[str] = field(default_factory=list)
    state: str = ""  # the page's schedule state, or the watch's summary line
    #: The page's tick list, oldest first (it keeps the newest 200): once both
    #: restarts are over (so both gaps are still in it), and at the end.
    shown_restarted: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the watch's stderr
    exit_code: int | None = None


# ---------------------------------------------------------------------------
# The clients


def drive_page(
    fleet: Fleet,
    spki: str,
    record: Record,
    ready: Callable[[], None],
    restarted: threading.Event,
    abort: threading.Event,
) -> None:
    """Open the page through nginx, start an aligned counted schedule, wait for its end.

    Runs in a thread of its own (Playwright's sync API); ``ready`` is called
    once ticks flow; ``restarted``: both restarts are over; ``abort``: the test
    failed meanwhile, end now.
    """

    def on_websocket(socket: WebSocket) -> None:
        received: list[Message] = []
        sent: list[dict[str, object]] = []
        record.connections.append(received)
        record.sent.append(sent)

        def on_received(payload: str | bytes) -> None:
            received.append(Message(time.time(), json.loads(payload)))

        def on_sent(payload: str | bytes) -> None:
            sent.append(json.loads(payload))

        socket.on("framereceived", on_received)
        socket.on("framesent", on_sent)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable(),
            args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki}"],
        )
        try:
            context = browser.new_context(viewport={"width": 1000, "height": 900})
            page = context.new_page()
            page.set_default_timeout(WAIT_TIMEOUT)
            page.on("websocket", on_websocket)
            page.on(
                "console",
                lambda message: (
                    record.problems.append(f"console: {message.text}")
                    if message.type == "error"
                    else None
                ),
            )
            page.on("pageerror", lambda error: record.problems.append(f"page error: {error}"))
            page.on("requestfailed", lambda request: record.problems.append(request.url))
            page.goto(fleet.page_url)
            status = page.get_by_role("status")
            expect(status).to_have_text(CONNECTED, timeout=WAIT_TIMEOUT)
            page.get_by_label("Interval (seconds)").fill(f"{INTERVAL:g}")
            page.get_by_label("Count (empty = unlimited)").fill(str(COUNT))
            page.get_by_label("Align to the clock").check()
            page.get_by_role("button", name="Start").click()
            deadline = time.monotonic() + WAIT_TIMEOUT / 1000
            while sum(m.type == "tick" for c in record.connections for m in c) < 5:
                assert time.monotonic() < deadline, "the page received no ticks"
                assert not abort.is_set()
                page.wait_for_timeout(50)
            ready()
            # Each status change (polled, so a brief one may be missed), for the log.
            said: list[str] = []
            done = page.get_by_text(DONE)
            items = page.get_by_role("list", name="Ticks").get_by_role("listitem")
            deadline = time.monotonic() + COUNT * INTERVAL + PROCEDURE_TIMEOUT
            while not done.is_visible():
                assert time.monotonic() < deadline, "the page's schedule never ended"
                assert not abort.is_set()
                text = status.inner_text()
                if not said or said[-1] != text:
                    said.append(text)
                if restarted.is_set() and not record.shown_restarted:
                    record.shown_restarted = items.all_inner_texts()[::-1]
                page.wait_for_timeout(50)
            record.state = done.inner_text()
            record.shown = items.all_inner_texts()[::-1]
            record.output += [f"status: {text}" for text in said]
            # The tick list after the restarts, oldest first, around each skipped range.
            record.output += excerpt(
                record.shown_restarted, lambda item: item.startswith("skipped")
            )
            record.output.append(f"... at the end: {record.shown[-1]}")
            record.output.append(f"schedule: {record.state}")
            record.problems += [
                f"alert: {text}" for text in page.get_by_role("alert").all_inner_texts() if text
            ]
            context.close()
        finally:
            browser.close()


async def run_watch(fleet: Fleet, tls: TLS, record: Record, ready: trio.Event) -> None:
    """``ticker watch --align --reconnect --json`` through nginx, until it exits."""
    command = [str(TICKER), "watch", fleet.wss_url, "-i", f"{INTERVAL:g}", "-n", str(COUNT)]
    command += ["--align", "--reconnect", "--json"]
    record.output.append("$ " + " ".join(["ticker", *command[1:]]))
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                command,
                env={**os.environ, "SSL_CERT_FILE": str(tls.authority)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
            )
        )
        assert process.stdout is not None
        assert process.stderr is not None
        errors: list[str] = []
        nursery.start_soon(_lines, process.stderr, errors, None)
        lines: list[str] = []
        await _lines(process.stdout, lines, partial(_on_json, record, ready))
        await process.wait()
    record.exit_code = process.returncode
    record.output += excerpt(lines, lambda line: '"type":"tick"' not in line)
    record.output += [f"stderr: {line}" for line in errors]
    record.errors = errors
    record.output.append(f"exit status {process.returncode}")
    record.state = errors[-1] if errors else ""


def _on_json(record: Record, ready: trio.Event, line: str) -> None:
    message = Message(time.time(), json.loads(line))
    if message.type == "hello":
        record.connections.append([])
    record.connections[-1].append(message)
    ticks = sum(m.type == "tick" for c in record.connections for m in c)
    if ticks >= 5:
        ready.set()


async def _lines(
    stream: trio.abc.ReceiveStream, into: list[str], each: Callable[[str], None] | None
) -> None:
    pending = b""
    while chunk := await stream.receive_some():
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            line = raw.decode()
            into.append(line)
            if each is not None:
                each(line)


def excerpt(lines: list[str], marked: Callable[[str], bool], context: int = 2) -> list[str]:
    """The first and last lines, and those around each marked one; "..." for the rest."""
    keep = {*range(context), *range(len(lines) - context, len(lines))}
    for index, line in enumerate(lines):
        if marked(line):
            keep.update(range(index - context, index + context + 1))
    shown, previous = [], -1
    for index in sorted(k for k in keep if 0 <= k < len(lines)):
        if index != previous + 1:
            shown.append("...")
        shown.append(lines[index])
        previous = index
    if previous != len(lines) - 1:
        shown.append("...")
    return shown


# ---------------------------------------------------------------------------
# What both must show


@dataclass
class Gap:
    lost: range  # slots
    sigterm: float  # wall clock: the restart that closed the connection
    back: float  # wall clock: the new connection's `started`


def check_one_grid(record: Record, sigterms: list[float]) -> list[Gap]:
    """Every tick on the first `started`'s grid, gaps only while reconnecting, the planned end."""
    name = record.name
    messages = [m for c in record.connections for m in c]
    assert not [m for m in messages if m.type == "error"], f"{name}: errors"
    starts = []
    for index, connection in enumerate(record.connections):
        assert connection, f"{name}: connection {index} received nothing"
        assert connection[0].type == "hello", f"{name}: {connection[0]}"
        found = [m for m in connection if m.type == "started"]
        assert len(found) == 1, f"{name}: connection {index}: {found}"
        starts.append(found[0])
    original = starts[0].data
    anchor, first = original["anchor"], original["first"]
    assert anchor == 0, f"{name}: aligned to the clock: {original}"  # --align / the checkbox
    assert isinstance(first, int)
    assert original["count"] == COUNT, original
    last = first + COUNT - 1
    for started in starts[1:]:  # each resume: the same grid, the same final slot
        data = started.data
        assert (data["anchor"], data["interval"]) == (anchor, INTERVAL), data
        count, resumed_first = data["count"], data["first"]
        assert isinstance(count, int)
        assert isinstance(resumed_first, int)
        assert resumed_first + count - 1 == last, data

    previous = first - 1
    skipped_inside = 0
    gaps = []
    latenesses: list[float] = []
    for index, (connection, started) in enumerate(zip(record.connections, starts, strict=True)):
        schedule = started.data["id"]
        resumed_first = started.data["first"]
        assert isinstance(resumed_first, int)
        if index > 0:
            # The slots lost between two connections: due after the restart
            # began (none lost before it), all before the client was back.
            assert resumed_first > previous, f"{name}: resumed at #{resumed_first}"
            lost = range(previous + 1, resumed_first)
            closed_by = [t for t in sigterms if t < started.at]
            assert closed_by, f"{name}: connection {index} opened before any restart"
            gap = Gap(lost, closed_by[-1], started.at)
            assert gap.back - gap.sigterm < RECONNECT_BOUND, (name, gap)
            if lost:
                assert float(anchor) + lost[0] * INTERVAL > gap.sigterm - INTERVAL - LATENESS
                assert float(anchor) + lost[-1] * INTERVAL < gap.back, (name, gap)
            gaps.append(gap)
            previous = resumed_first - 1
        ticks = [m for m in connection if m.type == "tick"]
        assert all(m.data["id"] == schedule for m in ticks), f"{name}: another schedule's tick"
        for tick in ticks:
            seq, sent_at = tick.data["seq"], tick.data["time"]
            assert isinstance(seq, int)
            assert isinstance(sent_at, float | int)
            assert resumed_first <= seq <= last, (name, tick)
            assert seq > previous, f"{name}: #{seq} after #{previous}"  # forward only
            skipped_inside += seq - previous - 1  # the server's slow-receiver rule
            previous = seq
            lateness = sent_at - (float(anchor) + seq * INTERVAL)
            assert -EARLY <= lateness <= LATENESS, f"{name}: #{seq} {lateness * 1000:.1f} ms late"
            latenesses.append(lateness)
        done = [m for m in connection if m.type == "done"]
        if index < len(record.connections) - 1:
            assert not done, f"{name}: done before the last connection"
        else:
            assert len(done) == 1, f"{name}: the last connection did not end with done"
            sent, skipped = done[0].data["sent"], done[0].data["skipped"]
            assert isinstance(sent, int)
            assert isinstance(skipped, int)
            assert sent == len(ticks)
            assert sent + skipped == started.data["count"]
            # The planned last slot: received, or (busy machine) skipped at the end.
            assert previous == last or (skipped > 0 and previous >= last - skipped), previous
    assert gaps, f"{name}: never reconnected: the restarts did not reach it"
    assert len({gap.sigterm for gap in gaps}) == len(gaps), f"{name}: two gaps for one restart"
    # Typically on time to a few ms: the bound above is for a busy machine's stalls.
    assert statistics.median(latenesses) < 0.02, f"{name}: median lateness"
    # A busy machine may skip the odd slot (the server's slow-receiver rule);
    # many would mean the restarts disturbed the clients that stayed connected.
    assert skipped_inside <= COUNT // 20, f"{name}: {skipped_inside} slots skipped"
    return gaps


def page_slots(slots: range) -> str:
    """How the page names a range of slots (static/js/main.js)."""
    if len(slots) == 1:
        return f"slot {slots[0]}"
    return f"slots {slots[0]}\N{EN DASH}{slots[-1]}"


def watch_slots(slots: range) -> str:
    """How ``ticker watch`` names a range of slots (cli.format_slots)."""
    if not slots:
        return "no slots"
    if len(slots) == 1:
        return f"1 slot (#{slots[0]})"
    return f"{len(slots)} slots (#{slots[0]}-#{slots[-1]})"


def describe(record: Record, gaps: list[Gap]) -> list[str]:
    lines = []
    for index, connection in enumerate(record.connections):
        seqs = [m.data["seq"] for m in connection if m.type == "tick"]
        ended = "done" if connection[-1].type == "done" else "closed by the restart"
        lines.append(
            f"{record.name}: connection {index + 1}: {len(seqs)} ticks "
            f"#{seqs[0] if seqs else '-'}..#{seqs[-1] if seqs else '-'}, {ended}"
        )
    for gap in gaps:
        slots = f"#{gap.lost[0]}-#{gap.lost[-1]}" if gap.lost else "none"
        lines.append(
            f"{record.name}: back {gap.back - gap.sigterm:.2f} s after SIGTERM; "
            f"lost {len(gap.lost)} slots ({len(gap.lost) * INTERVAL:.1f} s): {slots}"
        )
    return lines


async def _set_when_cancelled(event: threading.Event) -> None:
    try:
        await trio.sleep_forever()
    finally:
        event.set()


async def _then_set(run: Callable[[], Awaitable[object]], event: trio.Event) -> None:
    await run()
    event.set()


def report(
    fleet: Fleet, procedure: subprocess.CompletedProcess[bytes] | None, records: list[Record]
) -> None:
    """Everything the test saw, in its log: what to read when it fails, or to quote."""
    print("\n--- the rolling restart (deploy/README.md)\n" + fleet.script)
    if procedure is not None:
        print(procedure.stdout.decode() + procedure.stderr.decode())
    for at, what in fleet.journal():
        print(f"journal {at:.3f} {what}")
    for record in records:
        print(f"\n--- {record.name}")
        print("\n".join(record.output))
        print(f"problems: {record.problems}")
    for host in fleet.hosts:
        print(f"\n--- host {host.name} ({host.address}), exits {host.exits}")
        print(host.text)
    print("\n--- nginx errors\n" + fleet.nginx_log.read_text())


# ---------------------------------------------------------------------------


async def test_a_rolling_restart_costs_clients_only_the_slots_due_while_they_reconnect(
    tmp_path: Path, tls: TLS
) -> None:
    page = Record("page")
    watch = Record("ticker watch")
    restarted, abort = threading.Event(), threading.Event()
    procedure: subprocess.CompletedProcess[bytes] | None = None
    fleet: Fleet | None = None
    try:
        async with open_fleet(tmp_path, tls) as fleet:
            with trio.fail_after(TEST_TIMEOUT):
                async with trio.open_nursery() as nursery:
                    # Whatever fails, the page's thread (which cannot be cancelled) is told.
                    nursery.start_soon(_set_when_cancelled, abort)
                    page_ready, watch_ready = trio.Event(), trio.Event()
                    page_done, watch_done = trio.Event(), trio.Event()

                    def page_is_ready() -> None:
                        trio.from_thread.run_sync(page_ready.set)

                    page_client = partial(
                        trio.to_thread.run_sync,
                        drive_page,
                        fleet,
                        tls.spki_sha256,
                        page,
                        page_is_ready,
                        restarted,
                        abort,
                    )
                    nursery.start_soon(_then_set, page_client, page_done)
                    watch_client = partial(run_watch, fleet, tls, watch, watch_ready)
                    nursery.start_soon(_then_set, watch_client, watch_done)
                    with trio.fail_after(STEP_TIMEOUT * 6):  # Chromium's start, busy machine
                        await page_ready.wait()
                        await watch_ready.wait()
                    # The README's procedure, verbatim but for the hosts and systemctl.
                    with trio.fail_after(PROCEDURE_TIMEOUT):
                        procedure = await trio.run_process(
                            ["sh", "-c", fleet.script],
                            capture_stdout=True,
                            capture_stderr=True,
                            check=False,
                        )
                    restarted_at = time.time()
                    restarted.set()
                    await page_done.wait()
                    await watch_done.wait()
                    nursery.cancel_scope.cancel()
    finally:
        # After the hosts' last exits, whatever happened: the log to read or quote.
        if fleet is not None:
            report(fleet, procedure, [page, watch])
    journal = fleet.journal()
    hosts = fleet.hosts
    nginx_errors = fleet.nginx_log.read_text()

    assert procedure is not None
    assert procedure.returncode == 0
    assert procedure.stdout.decode().count('"status":"ok"') == 2
    sigterms = [at for at, what in journal if " SIGTERM " in what]
    assert len(sigterms) == 2
    assert not [what for _, what in journal if "SIGKILL" in what]
    for host in hosts:
        # Stopped by the restart (and at the end): exit 0, no traceback.
        assert [exit.returncode for exit in host.exits] == [0, 0], host.exits
        assert "Traceback" not in host.text
    assert "no live upstreams" not in nginx_errors  # nginx always had a host to offer
    for record in (page, watch):
        ended = max(m.at for c in record.connections for m in c)
        assert ended - restarted_at > MARGIN, f"{record.name}: ended as the restarts did"

    reports = []
    gaps = {}
    for record in (page, watch):
        gaps[record.name] = check_one_grid(record, sigterms)
        reports += describe(record, gaps[record.name])
    print("\n" + "\n".join(reports))
    # Every connection a restart ended was closed with 1001 (the hosts' logs).
    going_away = sum(host.text.count("closed with 1001") for host in hosts)
    assert going_away == len(page.connections) - 1 + len(watch.connections) - 1

    # The page: each resume asked for the original grid and final slot.
    assert page.problems == []
    original = page.sent[0]
    assert original == [{"type": "start", "interval": INTERVAL, "count": COUNT, "anchor": 0}], (
        original
    )
    (first,) = (m.data["first"] for m in page.connections[0] if m.type == "started")
    assert isinstance(first, int)
    for sent in page.sent[1:]:
        assert sent == [
            {"type": "start", "interval": INTERVAL, "anchor": 0, "last": first + COUNT - 1}
        ], sent
    ticks = {
        record.name: sum(m.type == "tick" for c in record.connections for m in c)
        for record in (page, watch)
    }
    # It shows the server's seq, and each gap as the range lost while reconnecting.
    wire = [seq for c in page.connections for m in c if isinstance(seq := m.data.get("seq"), int)]
    assert page.shown_restarted, "the page's list was not read after the restarts"
    for shown in (page.shown_restarted, page.shown):
        seqs = [int(item[1:].split()[0]) for item in shown if item.startswith("#")]
        assert seqs == [seq for seq in wire if seqs[0] <= seq <= seqs[-1]], "not the server's"
    # The gaps still in the list (it keeps the newest 200 items): the last one at least.
    lost_shown = [item for item in page.shown_restarted if item.endswith("while reconnecting)")]
    expected = [
        f"skipped {page_slots(gap.lost)} (lost while reconnecting)"
        for gap in gaps["page"]
        if gap.lost
    ]
    assert lost_shown or not expected, "the page shows none of its gaps"
    assert lost_shown == expected[len(expected) - len(lost_shown) :], (lost_shown, expected)
    counted = DONE.search(page.state)
    assert counted is not None, page.state
    assert (int(counted.group(1)), int(counted.group(1)) + int(counted.group(2))) == (
        ticks["page"],
        COUNT,
    )
    # ticker watch: done across reconnects exits 0; one stderr line per gap;
    # the summary counts the whole run.
    assert watch.exit_code == 0, watch.output[-5:]
    # Its own account of each gap: the 1001, and exactly the slots lost on the wire.
    gap_lines = [line for line in watch.errors if " lost (" in line]
    assert len(gap_lines) == len(gaps["ticker watch"]), gap_lines
    for line, gap in zip(gap_lines, gaps["ticker watch"], strict=True):
        assert "lost (1001 " in line, line
        resumed = rf"; resumed after \d+\.\d s, lost {re.escape(watch_slots(gap.lost))}$"
        assert re.search(resumed, line), line
    summary = re.search(r"received (\d+), skipped (\d+)", watch.state)
    assert summary is not None, watch.state
    assert (int(summary.group(1)), int(summary.group(1)) + int(summary.group(2))) == (
        ticks["ticker watch"],
        COUNT,
    )
