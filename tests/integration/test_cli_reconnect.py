"""`ticker watch --align` and `--reconnect`: the grid, resumed across connections and servers.

Two kinds of server. A scripted one (wsproto) plays one scene per connection, so
what is lost, resumed and counted is exact. The real app on Hypercorn is
stopped (its clients get 1001) and started again on the same port: a rolling
restart, with the real protocol's anchors. A socket bound to that port with
``SO_REUSEPORT``, never listening, holds it for the whole test, so while no
server runs, connecting is refused and no other test's server can take it.
"""

from __future__ import annotations

import json
import math
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import hypercorn.trio
import pytest
import trio
import wsproto
import wsproto.events
from hypercorn.config import Config

from ticker.app import create_app
from ticker.config import Settings

from ..support import STEP_TIMEOUT

pytestmark = pytest.mark.slow

TICKER = Path(sys.executable).with_name("ticker")
SUMMARY = re.compile(r"^received (\d+), skipped (\d+), lateness p50 .+, p99 .+, max .+$")
GAP = re.compile(
    r"^ticker: connection to (?P<url>\S+) lost \((?P<cause>.+)\); "
    r"(?P<outcome>resumed|the schedule ended while away) after (?P<seconds>\d+\.\d) s, "
    r"lost (?:no slots|1 slot \(#(?P<only>\d+)\)|\d+ slots \(#(?P<first>\d+)-#(?P<last>\d+)\))$"
)
GOING_AWAY = "1001 GOING_AWAY: server shutting down"


def lost_range(match: re.Match[str]) -> range:
    """The slots a gap line says were lost."""
    if match["only"] is not None:
        return range(int(match["only"]), int(match["only"]) + 1)
    if match["first"] is not None:
        return range(int(match["first"]), int(match["last"]) + 1)
    return range(0)


def summary_counts(line: str) -> tuple[int, int]:
    match = SUMMARY.match(line)
    assert match is not None, line
    return int(match[1]), int(match[2])


# A scripted server ------------------------------------------------------------


def compact(message: dict[str, object]) -> str:
    return json.dumps(message, separators=(",", ":"))


HELLO = {
    "type": "hello",
    "version": "0",
    "min_interval": 0.01,
    "max_interval": 9,
    "max_count": 100,
}


@dataclass
class Scene:
    """One connection to the scripted server: its answer to the client's start, then its end.

    ``end``: a close code; "drop" closes TCP without a close frame; "stay" answers
    until the client closes. ``pings``: whether the client's pings are answered.
    """

    answer: list[dict[str, object]]
    end: int | Literal["drop", "stay"] = "stay"
    pings: bool = True


@dataclass
class Script:
    """What the scripted server plays, and what it was sent. Beyond the scenes, HTTP 503."""

    scenes: list[Scene]
    starts: list[dict[str, object]] = field(default_factory=list)
    handshakes: int = 0


async def serve_script(
    script: Script, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    async def one(stream: trio.SocketStream) -> None:
        scene = script.scenes[script.handshakes] if script.handshakes < len(script.scenes) else None
        script.handshakes += 1
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        closing = False
        while data := await stream.receive_some():
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, wsproto.events.Request):
                    if scene is None:
                        await stream.send_all(ws.send(wsproto.events.RejectConnection(503)))
                        return
                    await stream.send_all(ws.send(wsproto.events.AcceptConnection()))
                    await stream.send_all(ws.send(wsproto.events.TextMessage(compact(HELLO))))
                elif isinstance(event, wsproto.events.TextMessage) and scene is not None:
                    script.starts.append(json.loads(event.data))
                    for message in scene.answer:
                        await stream.send_all(ws.send(wsproto.events.TextMessage(compact(message))))
                    if scene.end == "drop":
                        return  # the caller closes TCP: no close frame
                    if isinstance(scene.end, int):
                        reason = "server shutting down" if scene.end == 1001 else "scripted"
                        close = wsproto.events.CloseConnection(scene.end, reason)
                        await stream.send_all(ws.send(close))
                        closing = True
                elif isinstance(event, wsproto.events.Ping) and scene is not None and scene.pings:
                    await stream.send_all(ws.send(event.response()))
                elif isinstance(event, wsproto.events.CloseConnection):
                    if not closing:
                        await stream.send_all(ws.send(event.response()))
                    return

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            await one(stream)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


def started(
    first: int, count: int | None, anchor: float, interval: float = 0.5
) -> dict[str, object]:
    return {
        "type": "started",
        "id": 1,
        "interval": interval,
        "count": count,
        "anchor": anchor,
        "first": first,
    }


def ticks(seqs: range, anchor: float, interval: float = 0.5) -> list[dict[str, object]]:
    return [
        {"type": "tick", "id": 1, "seq": seq, "time": round(anchor + seq * interval, 6)}
        for seq in seqs
    ]


def done(sent: int, skipped: int) -> dict[str, object]:
    return {"type": "done", "id": 1, "sent": sent, "skipped": skipped}


@dataclass
class Run:
    url: str
    returncode: int
    out: list[str]
    err: list[str]


async def watch_script(script: Script, *args: str) -> Run:
    """``ticker watch URL *args`` against the scripted server, to its end."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_script, script))
        url = f"ws://127.0.0.1:{port}/ws"
        with trio.fail_after(STEP_TIMEOUT * 3):
            result = await trio.run_process(
                [str(TICKER), "watch", url, *args],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        nursery.cancel_scope.cancel()
    return Run(
        url,
        result.returncode,
        result.stdout.decode().splitlines(),
        result.stderr.decode().splitlines(),
    )


ANCHOR = 1764139200.123456  # far in the past: every slot of these scripts is due


async def test_a_counted_schedule_resumes_after_1001_and_ends_on_its_last_slot() -> None:
    script = Script(
        [
            Scene([started(1, 10, ANCHOR), *ticks(range(1, 4), ANCHOR)], end=1001),
            Scene([started(6, 5, ANCHOR), *ticks(range(6, 11), ANCHOR), done(5, 0)]),
        ]
    )
    run = await watch_script(script, "-i", "0.5", "-n", "10", "--reconnect")
    assert run.returncode == 0, run.err
    assert script.starts == [
        {"type": "start", "interval": 0.5, "count": 10},
        {"type": "start", "interval": 0.5, "anchor": ANCHOR, "last": 10},
    ]
    (gap,) = run.err
    match = GAP.match(gap)
    assert match is not None, gap
    assert (match["url"], match["cause"], match["outcome"]) == (run.url, GOING_AWAY, "resumed")
    assert lost_range(match) == range(4, 6)
    assert [line.split()[0] for line in run.out[1:-1]] == [
        f"#{seq}" for seq in (1, 2, 3, 6, 7, 8, 9, 10)
    ]
    assert summary_counts(run.out[-1]) == (8, 2)


async def test_an_aligned_unbounded_watch_resumes_after_a_drop_and_exits_1_on_a_refusal() -> None:
    first = 3528278400  # slots of 0.5 s since the epoch
    script = Script(
        [
            Scene([started(first, None, 0), *ticks(range(first, first + 2), 0)], end="drop"),
            Scene([started(first + 5, None, 0), *ticks(range(first + 5, first + 7), 0)], end=1008),
        ]
    )
    run = await watch_script(script, "-i", "0.5", "--align", "--reconnect")
    assert run.returncode == 1, run.err
    assert script.starts == [
        {"type": "start", "interval": 0.5, "anchor": 0},
        {"type": "start", "interval": 0.5, "anchor": 0.0},
    ]
    gap, failure = run.err
    match = GAP.match(gap)
    assert match is not None, gap
    assert match["cause"] == "1006 ABNORMAL_CLOSURE"
    assert lost_range(match) == range(first + 2, first + 5)
    # 1008 is about what the client did: reconnecting would not help.
    assert failure == f"ticker: connection to {run.url} lost (1008 POLICY_VIOLATION: scripted)"
    assert (
        run.out[0]
        == f"watching {run.url}: every 0.5 s, on the clock's grid, reconnecting, until Ctrl-C"
    )
    assert summary_counts(run.out[-1]) == (4, 3)


async def test_a_last_slot_that_passed_while_away_ends_the_watch_with_the_rest_skipped() -> None:
    over: dict[str, object] = {
        "type": "error",
        "code": "schedule_over",
        "message": "The last slot, 10, has passed: the next slot due is 12. The schedule is over.",
    }
    script = Script(
        [
            Scene([started(1, 10, ANCHOR), *ticks(range(1, 4), ANCHOR)], end=1001),
            Scene([over]),
        ]
    )
    run = await watch_script(script, "-i", "0.5", "-n", "10", "--reconnect")
    assert run.returncode == 0, run.err
    (gap,) = run.err
    match = GAP.match(gap)
    assert match is not None, gap
    assert match["outcome"] == "the schedule ended while away"
    assert lost_range(match) == range(4, 11)
    assert summary_counts(run.out[-1]) == (3, 7)


async def test_attempts_that_fail_before_started_are_one_gap_and_the_backoff_grows() -> None:
    script = Script(
        [
            Scene([started(1, 6, ANCHOR), *ticks(range(1, 3), ANCHOR)], end=1001),
            Scene([], end="drop"),  # accepted, then dropped before `started`
            Scene([], end=1013),  # try again later
            Scene([started(5, 2, ANCHOR), *ticks(range(5, 7), ANCHOR), done(2, 0)]),
        ]
    )
    began = time.monotonic()
    run = await watch_script(script, "-i", "0.5", "-n", "6", "--reconnect")
    assert run.returncode == 0, run.err
    assert script.handshakes == 4
    (gap,) = run.err
    match = GAP.match(gap)
    assert match is not None, gap
    assert lost_range(match) == range(3, 5)
    # Three waits: at least 0.4 + 0.8 + 1.6 s (0.5, 1, 2 s, less 20 % jitter).
    assert float(match["seconds"]) >= 2.8 - 0.05
    assert time.monotonic() - began >= 2.8
    assert summary_counts(run.out[-1]) == (4, 2)


async def test_a_server_that_stops_answering_pings_is_left_for_another() -> None:
    script = Script(
        [
            Scene([started(1, 4, ANCHOR), *ticks(range(1, 3), ANCHOR)], pings=False),
            Scene([started(4, 1, ANCHOR), *ticks(range(4, 5), ANCHOR), done(1, 0)]),
        ]
    )
    args = ("--ping-interval", "0.3", "--ping-timeout", "0.5")
    run = await watch_script(script, "-i", "0.5", "-n", "4", "--reconnect", *args)
    assert run.returncode == 0, run.err
    (gap,) = run.err
    match = GAP.match(gap)
    assert match is not None, gap
    assert match["cause"] == "no answer to a keepalive ping within 0.5 s"
    assert lost_range(match) == range(3, 4)
    assert summary_counts(run.out[-1]) == (3, 1)


async def test_ticks_resent_by_a_server_whose_clock_is_behind_are_counted_once() -> None:
    script = Script(
        [
            Scene([started(1, 6, ANCHOR), *ticks(range(1, 5), ANCHOR)], end=1001),
            Scene([started(3, 4, ANCHOR), *ticks(range(3, 7), ANCHOR), done(4, 0)]),
        ]
    )
    run = await watch_script(script, "-i", "0.5", "-n", "6", "--reconnect")
    assert run.returncode == 0, run.err
    (gap,) = run.err
    match = GAP.match(gap)
    assert match is not None, gap
    assert lost_range(match) == range(0)
    assert [line.split()[0] for line in run.out[1:-1]] == [f"#{seq}" for seq in range(1, 7)]
    assert summary_counts(run.out[-1]) == (6, 0)


async def test_giving_up_exits_1_naming_the_url_after_the_summary() -> None:
    script = Script([Scene([started(1, 10, ANCHOR), *ticks(range(1, 4), ANCHOR)], end=1001)])
    began = time.monotonic()
    run = await watch_script(
        script, "-i", "0.5", "-n", "10", "--reconnect", "--reconnect-timeout", "2"
    )
    assert run.returncode == 1, run.err
    assert time.monotonic() - began >= 2.0
    (line,) = run.err
    prefix = (
        f"ticker: connection to {run.url} lost ({GOING_AWAY}); could not reconnect within 2 s ("
    )
    assert line.startswith(prefix), line
    assert line.endswith(" attempts, the last: HTTP 503)"), line
    assert script.handshakes >= 3  # 0.5, 1.5 s, and the last attempt at 2 s
    # The slots due while away were lost: here, all the rest of them.
    assert summary_counts(run.out[-1]) == (3, 7)


async def test_the_first_connection_is_not_retried() -> None:
    script = Script([])
    run = await watch_script(script, "-i", "0.5", "--reconnect")
    assert run.returncode == 1
    assert run.err == [f"ticker: {run.url} refused the websocket: HTTP 503"]
    assert script.handshakes == 1


async def test_a_resume_onto_another_grid_exits_1() -> None:
    script = Script(
        [
            Scene([started(1, 10, ANCHOR), *ticks(range(1, 3), ANCHOR)], end=1001),
            Scene([started(6, 5, ANCHOR + 0.25)]),
        ]
    )
    run = await watch_script(script, "-i", "0.5", "-n", "10", "--reconnect")
    assert run.returncode == 1
    assert run.err[-1].startswith(f"ticker: {run.url} resumed another schedule: ")


async def test_each_tick_line_shows_the_servers_time() -> None:
    anchor = 0.0
    first = 3528278400
    script = Script(
        [Scene([started(first, 1, anchor), *ticks(range(first, first + 1), anchor), done(1, 0)])]
    )
    run = await watch_script(script, "-i", "0.5", "-n", "1", "--align")
    assert run.returncode == 0, run.err
    server = time.strftime("%H:%M:%S", time.localtime(first * 0.5))
    assert re.match(
        rf"^#{first} +\d\d:\d\d:\d\d\.\d{{3}} +\+\d+\.\d ms  server {server}\.000$", run.out[1]
    ), run.out


# The real server, restarted on the same port ---------------------------------


def bound_socket(port: int) -> socket.socket:
    """A TCP socket bound to 127.0.0.1:``port`` that shares it (``SO_REUSEPORT``)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@contextmanager
def held_port() -> Iterator[int]:
    """A port for the whole test: bound, never listening, so refused while no server runs."""
    with bound_socket(0) as holder:
        yield holder.getsockname()[1]


@asynccontextmanager
async def serve_ticker_on(port: int) -> AsyncIterator[None]:
    """The real app on Hypercorn at 127.0.0.1:``port``; leaving stops it (clients get 1001)."""
    config = Config()
    config.bind = [f"fd://{bound_socket(port).detach()}"]  # Hypercorn listens, then closes it
    config.graceful_timeout = 2.0
    config.accesslog = None
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                hypercorn.trio.serve, create_app(Settings()), config, shutdown_trigger=shutdown.wait
            )
        )
        yield
        shutdown.set()


@dataclass
class Watcher:
    """A running ``ticker watch``, its stdout read as it comes."""

    process: trio.Process
    out: bytes = b""

    @property
    def lines(self) -> list[str]:
        return self.out.decode().splitlines()

    async def read_until(self, enough: Callable[[list[str]], bool]) -> None:
        assert self.process.stdout is not None
        with trio.fail_after(STEP_TIMEOUT):
            while not enough(self.lines):
                chunk = await self.process.stdout.receive_some()
                if not chunk:
                    raise AssertionError(f"ticker watch ended early: {self.out!r}")
                self.out += chunk

    async def finish(self) -> tuple[list[str], list[str], int]:
        """All of stdout and stderr, and the exit status."""
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        err = b""
        with trio.fail_after(STEP_TIMEOUT * 3):
            while chunk := await self.process.stdout.receive_some():
                self.out += chunk
            while chunk := await self.process.stderr.receive_some():
                err += chunk
            return self.lines, err.decode().splitlines(), await self.process.wait()


async def start_watch(nursery: trio.Nursery, *args: str) -> Watcher:
    process: trio.Process = await nursery.start(
        partial(
            trio.run_process,
            [str(TICKER), "watch", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
        )
    )
    return Watcher(process)


def messages(lines: list[str], kind: str) -> list[dict[str, object]]:
    parsed = [json.loads(line) for line in lines]
    return [message for message in parsed if message["type"] == kind]


def sent_times(lines: list[str]) -> list[tuple[int, float]]:
    """Each tick's seq and server ``time``, from JSON Lines."""
    found = []
    for tick in messages(lines, "tick"):
        seq, sent = tick["seq"], tick["time"]
        assert isinstance(seq, int)
        assert isinstance(sent, float)
        found.append((seq, sent))
    return found


def json_ticks_at_least(n: int) -> Callable[[list[str]], bool]:
    return lambda lines: len(messages(lines, "tick")) >= n


async def outage(seconds: float) -> None:
    """No server at all for a while: what a restart that takes time looks like."""
    await trio.sleep(seconds)


#: Generous for a busy 2-core machine: a tick's server ``time`` after its slot.
LATE = 0.25


async def test_align_ticks_on_whole_seconds_of_the_servers_clock() -> None:
    with held_port() as port:
        async with serve_ticker_on(port):
            url = f"ws://127.0.0.1:{port}/ws"
            with trio.fail_after(STEP_TIMEOUT * 3):
                result = await trio.run_process(
                    [str(TICKER), "watch", url, "--align", "-i", "1", "-n", "2", "--json"],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    (start,) = messages(lines, "started")
    assert start["anchor"] == 0
    received = sent_times(lines)
    assert received
    for seq, sent in received:
        assert seq == math.floor(sent)  # slot n of "anchor": 0 is the n-th second since the epoch
        assert -0.001 <= sent - seq < LATE


async def test_a_rolling_restart_costs_only_the_slots_due_while_away() -> None:
    interval, count = 0.05, 100
    with held_port() as port:
        url = f"ws://127.0.0.1:{port}/ws"
        async with trio.open_nursery() as nursery:
            async with serve_ticker_on(port):
                watcher = await start_watch(
                    nursery, url, "-i", str(interval), "-n", str(count), "--reconnect", "--json"
                )
                await watcher.read_until(json_ticks_at_least(5))
            await outage(0.3)
            async with serve_ticker_on(port):
                out, err, returncode = await watcher.finish()
    assert returncode == 0, err
    first, resumed = messages(out, "started")
    anchor, resumed_first, resumed_count = first["anchor"], resumed["first"], resumed["count"]
    assert isinstance(anchor, float)
    assert (first["first"], first["count"]) == (1, count)
    assert resumed["anchor"] == anchor
    assert isinstance(resumed_first, int)
    assert isinstance(resumed_count, int)
    assert resumed_first + resumed_count - 1 == count  # the same final slot
    gap_line, summary = err
    match = GAP.match(gap_line)
    assert match is not None, gap_line
    assert (match["url"], match["cause"]) == (url, GOING_AWAY)
    # One grid: every tick, from either server, is on the first schedule's slots.
    received = sent_times(out)
    seqs = [seq for seq, _ in received]
    assert seqs == sorted(set(seqs))
    for seq, sent in received:
        assert -0.001 <= sent - (anchor + seq * interval) < LATE
    # The gap line names exactly the slots that never came across it.
    before = [seq for seq in seqs if seq < resumed_first]
    assert lost_range(match) == range(max(before) + 1, resumed_first)
    # The gap lasted at least the outage (and a backoff), not the whole schedule.
    assert 0.3 - 0.05 <= float(match["seconds"]) < STEP_TIMEOUT
    received_count, skipped = summary_counts(summary)
    assert received_count == len(seqs)
    assert received_count + skipped == count
    assert len(lost_range(match)) <= skipped


async def test_an_unbounded_watch_rides_two_restarts_then_ctrl_c_exits_130() -> None:
    with held_port() as port:
        url = f"ws://127.0.0.1:{port}/ws"
        async with trio.open_nursery() as nursery:
            async with serve_ticker_on(port):
                watcher = await start_watch(nursery, url, "-i", "0.05", "--align", "--reconnect")
                await watcher.read_until(lambda lines: len(lines) >= 4)
            async with serve_ticker_on(port):
                seen = len(watcher.lines)
                await watcher.read_until(lambda lines: len(lines) >= seen + 3)
            await outage(0.2)
            async with serve_ticker_on(port):
                seen = len(watcher.lines)
                await watcher.read_until(lambda lines: len(lines) >= seen + 3)
                watcher.process.send_signal(signal.SIGINT)
                out, err, returncode = await watcher.finish()
    assert returncode == 130, err
    assert (
        out[0] == f"watching {url}: every 0.05 s, on the clock's grid, reconnecting, until Ctrl-C"
    )
    gaps = [GAP.match(line) for line in err]
    assert len(gaps) == 2, err
    seqs = [int(line.split()[0][1:]) for line in out[1:-1]]
    assert seqs == sorted(set(seqs))
    assert abs(seqs[0] * 0.05 - time.time()) < 60  # numbered on the epoch's grid
    received, skipped = summary_counts(out[-1])
    assert received == len(seqs)
    # Every slot from the first received to the last is received or skipped, and
    # nothing after the last one was due yet when Ctrl-C came... or was lost.
    assert received + skipped >= seqs[-1] - seqs[0] + 1
    for match in gaps:
        assert match is not None
        assert match["cause"] == GOING_AWAY
        assert set(lost_range(match)).isdisjoint(seqs)


async def test_a_server_gone_for_good_is_given_up_on() -> None:
    with held_port() as port:
        url = f"ws://127.0.0.1:{port}/ws"
        async with trio.open_nursery() as nursery:
            async with serve_ticker_on(port):
                watcher = await start_watch(
                    nursery, url, "-i", "0.05", "--reconnect", "--reconnect-timeout", "1.5"
                )
                await watcher.read_until(lambda lines: len(lines) >= 3)
            out, err, returncode = await watcher.finish()
    assert returncode == 1
    (line,) = err
    assert line.startswith(
        f"ticker: connection to {url} lost ({GOING_AWAY}); could not reconnect within 1.5 s ("
    )
    assert line.endswith("the last: Connection refused)"), line
    received, skipped = summary_counts(out[-1])
    assert received >= 2
    assert skipped >= 1.5 / 0.05 / 2  # the slots due while away, by this machine's clock


async def test_a_schedule_that_ends_during_the_restart_exits_0_with_the_rest_skipped() -> None:
    interval, count = 0.05, 20  # one second
    with held_port() as port:
        url = f"ws://127.0.0.1:{port}/ws"
        async with trio.open_nursery() as nursery:
            async with serve_ticker_on(port):
                watcher = await start_watch(
                    nursery, url, "-i", str(interval), "-n", str(count), "--reconnect"
                )
                await watcher.read_until(lambda lines: len(lines) >= 3)
            await outage(2.0)  # longer than what was left of the schedule
            async with serve_ticker_on(port):
                out, err, returncode = await watcher.finish()
    assert returncode == 0, err
    (line,) = err
    match = GAP.match(line)
    assert match is not None, line
    assert match["outcome"] == "the schedule ended while away"
    seqs = [int(line.split()[0][1:]) for line in out[1:-1]]
    assert lost_range(match) == range(seqs[-1] + 1, count + 1)
    received, skipped = summary_counts(out[-1])
    assert (received, received + skipped) == (len(seqs), count)
