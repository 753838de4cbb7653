"""``ticker``: the terminal client. ``ticker watch`` starts a schedule and prints its ticks.

With ``--reconnect`` a watch outlives its connection: when the server goes
away (1001) or the connection drops, it reconnects with the page's backoff
and resumes the same grid (docs/protocol.md: ``anchor`` and ``last``), so a
rolling restart costs only the slots due while it was away. Its numbers are
those of the whole run: every slot of the grid from the first one is either
received or skipped, and lateness is one fit over every connection
(``client_stats.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, TextIO
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)
from wsproto.frame_protocol import CloseReason

from . import __version__
from .client_stats import LatenessFit, LatenessRecorder, Summary

DEFAULT_URL: Final = "ws://127.0.0.1:8000/ws"
CONNECT_TIMEOUT: Final = 10.0  # seconds to open the websocket
CLOSE_TIMEOUT: Final = 2.0  # seconds to wait for the server's close reply on exit
#: Keepalive, the server's own defaults: a dead server (or a dead network in
#: between) is noticed within interval + timeout, however long the schedule.
PING_INTERVAL: Final = 20.0  # seconds between pings; 0 turns them off
PING_TIMEOUT: Final = 20.0  # seconds a pong may take
#: Reconnecting (``--reconnect``): the page's backoff (static/js/connection.js).
BACKOFF_FIRST: Final = 0.5  # seconds before the first attempt
BACKOFF_MAX: Final = 10.0  # seconds, the longest wait between attempts
BACKOFF_JITTER: Final = 0.2  # ± this share of each wait, so clients do not return in step
RECONNECT_TIMEOUT: Final = 60.0  # seconds after a loss before giving up (exit 1)
#: Closes after which a new connection may well work: the server going away
#: or restarting, the connection dropped (1006: no close frame), an internal
#: error or keepalive timeout on the server's side (1011). Not a complaint
#: about what this client sent (1002, 1007, 1008, 1009…), which a new
#: connection would only repeat.
RECONNECT_CODES: Final = frozenset(
    {
        CloseReason.GOING_AWAY,
        CloseReason.ABNORMAL_CLOSURE,
        CloseReason.INTERNAL_ERROR,
        CloseReason.SERVICE_RESTART,
        CloseReason.TRY_AGAIN_LATER,
        1014,  # bad gateway: a proxy's upstream failed (IANA registry; not in wsproto)
    }
)

EXIT_DONE: Final = 0
EXIT_CONNECTION: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as a shell reports it


class WatchError(Exception):
    """Ends a watch with an exit code and one line for stderr."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


class _Disconnected(Exception):
    """One connection's end that ``--reconnect`` may cure: ``message`` for stderr,
    ``reason`` for the line that names the last of several attempts."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class _Unreachable(_Disconnected):
    """A connection attempt failed: refused, timed out, HTTP 503…"""


class _Lost(_Disconnected):
    """An open connection dropped, or the server closed it with a RECONNECT_CODES code."""


def backoff_delay(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0, 1, 2…).

    0.5 s doubling to at most 10 s, with ±20 % jitter, as the page does
    (``backoffDelay`` in static/js/connection.js). ``rng`` returns [0, 1).
    """
    base = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** min(attempt, 32))
    return min(BACKOFF_MAX, base * (1 - BACKOFF_JITTER + 2 * BACKOFF_JITTER * rng()))


@dataclass
class Gap:
    """From a lost connection to the schedule resuming: the attempts, and when to give up.

    Attempts go on, backing off, until ``limit`` seconds after the loss; the
    last one is made at that moment. Only a resumed schedule ends a gap: a
    server that accepts and drops the connection before ``started`` is one
    more failed attempt, so a crash-looping server is not hammered.
    """

    lost_at: float  # trio.current_time() when the loss was seen
    cause: str  # the loss, in words: "1001 GOING_AWAY: server shutting down"
    limit: float = RECONNECT_TIMEOUT
    rng: Callable[[], float] = random.random
    attempts: int = 0

    def next_delay(self, now: float) -> float | None:
        """Seconds to wait before the next attempt, or None: give up."""
        left = self.lost_at + self.limit - now
        if left <= 0:
            return None
        delay = min(backoff_delay(self.attempts, self.rng), left)
        self.attempts += 1
        return delay


def format_slots(slots: range) -> str:
    """``3 slots (#4-#6)``, ``1 slot (#4)``, ``no slots``."""
    if not slots:
        return "no slots"
    first, last = slots[0], slots[-1]
    if len(slots) == 1:
        return f"1 slot (#{first})"
    return f"{len(slots)} slots (#{first}-#{last})"


def format_gap(url: str, cause: str, seconds: float, lost: range, *, ended: bool) -> str:
    """The one stderr line for a gap: its cause, how long it lasted, which slots it cost."""
    outcome = "the schedule ended while away" if ended else "resumed"
    return (
        f"ticker: connection to {url} lost ({cause}); {outcome} after {seconds:.1f} s, "
        f"lost {format_slots(lost)}"
    )


@dataclass(frozen=True)
class Grid:
    """The watched schedule, as the first ``started`` reported it: what a resume asks for."""

    interval: float
    anchor: float | None  # None from a server older than anchors: it cannot be resumed
    first: int
    last: int | None  # the final slot of a counted schedule

    def resume(self) -> dict[str, object]:
        """The start that resumes this grid, ending on the same final slot."""
        start: dict[str, object] = {
            "type": "start",
            "interval": self.interval,
            "anchor": self.anchor,
        }
        if self.last is not None:
            start["last"] = self.last
        return start

    def due_by(self, unix_time: float) -> int:
        """The last slot due at ``unix_time`` (by this machine's clock), at most ``last``."""
        assert self.anchor is not None
        due = math.floor((unix_time - self.anchor) / self.interval)
        return due if self.last is None else min(due, self.last)


@dataclass(frozen=True)
class Style:
    """ANSI colour, or nothing: only on a terminal, and never with NO_COLOR set."""

    enabled: bool

    @classmethod
    def for_stream(cls, stream: TextIO) -> Style:
        return cls(stream.isatty() and not os.environ.get("NO_COLOR"))

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def good(self, text: str) -> str:
        return self._wrap("32", text)

    def warn(self, text: str) -> str:
        return self._wrap("33", text)

    def bad(self, text: str) -> str:
        return self._wrap("31", text)


def format_ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def format_summary(summary: Summary) -> str:
    return (
        f"received {summary.received}, skipped {summary.skipped}, lateness "
        f"p50 {format_ms(summary.p50)}, p99 {format_ms(summary.p99)}, "
        f"max {format_ms(summary.max)}"
    )


@dataclass
class Watch:
    """One ``ticker watch`` run; its statistics outlive the connection for the summary."""

    url: str
    interval: float
    count: int | None
    as_json: bool
    ping_interval: float = PING_INTERVAL
    ping_timeout: float = PING_TIMEOUT
    align: bool = False  # start on the clock's grid: "anchor": 0
    reconnect: bool = False
    reconnect_timeout: float = RECONNECT_TIMEOUT
    rng: Callable[[], float] = random.random  # the backoff's jitter
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    recorder: LatenessRecorder = field(default_factory=LatenessRecorder)
    interrupted: bool = False
    failure: WatchError | None = None

    def __post_init__(self) -> None:
        self.style = Style.for_stream(self.out)
        self._grid: Grid | None = None  # from the first `started` on
        self._fit: LatenessFit | None = None  # likewise
        self._next = 1  # the first slot of the grid not yet received or skipped
        self._gap: Gap | None = None  # while reconnecting
        # This connection's schedule:
        self._schedule_id: int | None = None
        self._first = 1
        self._last_seq = 0  # the last tick received on this connection

    async def run(self) -> None:
        """Watch until done, interrupted (SIGINT) or failed (``self.failure``)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cancel_on_sigint, nursery.cancel_scope)
            try:
                await self._watch()
            except WatchError as error:
                self.failure = error
            nursery.cancel_scope.cancel()
        if self._gap is not None:
            self._lose_slots_due_by(time.time())

    async def _cancel_on_sigint(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                self.interrupted = True
                scope.cancel()

    async def _check_tls(self) -> None:
        """Shake hands once over TLS first, so that a bad certificate is named.

        trio-websocket reports a failed TLS handshake as a connect timeout
        (python-trio/trio-websocket#199): "timed out" where the truth is
        "certificate verify failed". Other failures are left to the real
        attempt, which reports them well.
        """
        url = urlsplit(self.url)
        if url.scheme != "wss" or url.hostname is None:
            return
        with trio.move_on_after(CONNECT_TIMEOUT) as waited:
            try:
                stream = await trio.open_ssl_over_tcp_stream(
                    url.hostname, url.port or 443, https_compatible=True
                )
                try:
                    await stream.do_handshake()
                finally:
                    await trio.aclose_forcefully(stream)
            except trio.BrokenResourceError as error:
                cause = error.__cause__
                if isinstance(cause, ssl.SSLCertVerificationError):
                    reason = f"certificate verify failed: {cause.verify_message}"
                elif isinstance(cause, ssl.SSLError):
                    reason = cause.reason or str(cause)
                else:
                    return
                raise WatchError(
                    EXIT_CONNECTION, f"cannot connect to {self.url}: TLS failed: {reason}"
                ) from None
            except OSError:
                pass  # refused, unreachable, …: the real attempt says which
        if waited.cancelled_caught:  # not twice the wait before saying so
            raise WatchError(
                EXIT_CONNECTION,
                f"cannot connect to {self.url}: timed out after {CONNECT_TIMEOUT:g} s",
            )

    async def _watch(self) -> None:
        await self._check_tls()
        lost: _Lost | None
        try:
            await self._connection()
        except _Lost as error:
            if not self.reconnect:
                raise WatchError(EXIT_CONNECTION, error.message) from None
            lost = error
        except _Unreachable as error:
            # The first connection is not retried: a wrong URL or a server
            # that is not running is said at once, with or without --reconnect.
            raise WatchError(EXIT_CONNECTION, error.message) from None
        else:
            return
        while lost is not None:
            lost = await self._reconnect(lost)

    async def _reconnect(self, lost: _Lost) -> _Lost | None:
        """Reconnect until the schedule resumes: None once it is done, or its next loss."""
        self._gap = gap = Gap(trio.current_time(), lost.reason, self.reconnect_timeout, self.rng)
        last_reason = lost.reason
        while (delay := gap.next_delay(trio.current_time())) is not None:
            await trio.sleep(delay)
            try:
                await self._connection()
            except _Lost as error:
                if self._gap is not gap:  # resumed, then lost again: a new gap
                    return error
                last_reason = error.reason
            except _Unreachable as error:
                last_reason = error.reason
            else:
                return None
        attempts = "1 attempt" if gap.attempts == 1 else f"{gap.attempts} attempts"
        raise WatchError(
            EXIT_CONNECTION,
            f"connection to {self.url} lost ({lost.reason}); could not reconnect within "
            f"{self.reconnect_timeout:g} s ({attempts}, the last: {last_reason})",
        )

    async def _connection(self) -> None:
        """One connection, from the handshake to ``done``; raises ``_Disconnected``."""
        self._schedule_id = None
        self._last_seq = 0
        try:
            async with open_websocket_url(
                self.url, connect_timeout=CONNECT_TIMEOUT, disconnect_timeout=CLOSE_TIMEOUT
            ) as ws:
                await self._converse_while_alive(ws)
        except ConnectionRejected as error:
            raise _Unreachable(
                f"{self.url} refused the websocket: HTTP {error.status_code}",
                f"HTTP {error.status_code}",
            ) from None
        except ConnectionTimeout:
            reason = f"timed out after {CONNECT_TIMEOUT:g} s"
            raise _Unreachable(f"cannot connect to {self.url}: {reason}", reason) from None
        except HandshakeError as error:
            reason = network_reason(error)
            raise _Unreachable(f"cannot connect to {self.url}: {reason}", reason) from None
        except ConnectionClosed as error:
            close = error.reason
            detail = f"{close.code} {close.name}" if close is not None else "closed"
            if close is not None and close.reason:
                detail += f": {close.reason}"
            message = f"connection to {self.url} lost ({detail})"
            if close is not None and close.code not in RECONNECT_CODES:
                raise WatchError(EXIT_CONNECTION, message) from None
            raise _Lost(message, detail) from None

    async def _converse_while_alive(self, ws: WebSocketConnection) -> None:
        """``_converse``, while keepalive pings check that the server is still there."""
        ended: list[WatchError | ConnectionClosed | _Lost] = []
        async with trio.open_nursery() as nursery:

            async def converse() -> None:
                try:
                    await self._converse(ws)
                except (WatchError, ConnectionClosed) as error:
                    ended.append(error)
                nursery.cancel_scope.cancel()

            nursery.start_soon(converse)
            if self.ping_interval > 0:
                nursery.start_soon(self._keep_alive, ws, ended, nursery.cancel_scope)
        if ended:
            raise ended[0]

    async def _keep_alive(
        self,
        ws: WebSocketConnection,
        ended: list[WatchError | ConnectionClosed | _Lost],
        conversation: trio.CancelScope,
    ) -> None:
        while True:
            await trio.sleep(self.ping_interval)
            with trio.move_on_after(self.ping_timeout) as waited:
                try:
                    await ws.ping()
                except ConnectionClosed:
                    return  # the conversation reports it
            if waited.cancelled_caught:
                reason = f"no answer to a keepalive ping within {self.ping_timeout:g} s"
                ended.append(_Lost(f"connection to {self.url} lost ({reason})", reason))
                conversation.cancel()
                return

    def _start_message(self) -> dict[str, object]:
        if self._grid is not None:  # resuming
            return self._grid.resume()
        start: dict[str, object] = {"type": "start", "interval": self.interval}
        if self.count is not None:
            start["count"] = self.count
        if self.align:
            start["anchor"] = 0
        return start

    async def _converse(self, ws: WebSocketConnection) -> None:
        hello = await self._receive(ws)
        if hello.get("type") != "hello":
            raise WatchError(EXIT_CONNECTION, f"{self.url} is not a ticker server: {hello}")
        await ws.send_message(json.dumps(self._start_message()))
        while True:
            message = await self._receive(ws)
            kind = message.get("type")
            if kind == "error" and self._schedule_id is None:
                if self._ended_while_away(message):
                    return
                raise WatchError(EXIT_USAGE, str(message.get("message")))
            if kind == "started":
                self._started(message)
            elif self._schedule_id is None or whole(message.get("id")) != self._schedule_id:
                continue  # not about our schedule (or before it started)
            elif kind == "tick":
                self._tick(message)
            elif kind == "done":
                self._done(message)
                return

    async def _receive(self, ws: WebSocketConnection) -> dict[str, object]:
        text = await ws.get_message()
        if isinstance(text, bytes):
            raise WatchError(EXIT_CONNECTION, f"{self.url} sent a binary frame")
        try:
            message = json.loads(text)
        except ValueError:
            raise WatchError(EXIT_CONNECTION, f"{self.url} sent something not JSON") from None
        if not isinstance(message, dict):
            raise WatchError(EXIT_CONNECTION, f"{self.url} sent an unexpected message: {text}")
        if self.as_json:
            print(json.dumps(message, separators=(",", ":")), file=self.out, flush=True)
        return message

    def _invalid(self, message: dict[str, object], name: str) -> WatchError:
        """A server message without a usable ``name``: not what a ticker server sends."""
        text = json.dumps(message, separators=(",", ":"))
        kind = message.get("type")
        return WatchError(
            EXIT_CONNECTION, f"{self.url} sent a {kind} message with an invalid {name}: {text}"
        )

    def _ended_while_away(self, error: dict[str, object]) -> bool:
        """``schedule_over`` answering a resume: the final slot passed while away (True)."""
        grid = self._grid
        if self._gap is None or grid is None or grid.last is None:
            return False
        if error.get("code") != "schedule_over":
            return False
        lost = self._lose(grid.last)
        print(self._gap_line(lost, ended=True), file=self.err, flush=True)
        self._gap = None
        return True

    def _gap_line(self, lost: range, *, ended: bool) -> str:
        assert self._gap is not None
        seconds = trio.current_time() - self._gap.lost_at
        return format_gap(self.url, self._gap.cause, seconds, lost, ended=ended)

    def _lose(self, through: int) -> range:
        """Count the slots not yet accounted for, through slot ``through``, as skipped."""
        lost = range(self._next, through + 1)
        self.recorder.skipped += len(lost)
        self._next = max(self._next, through + 1)
        return lost

    def _lose_slots_due_by(self, unix_time: float) -> None:
        """Ended while away (Ctrl-C, or no reconnection): the slots due meanwhile were lost."""
        if self._grid is not None and self._grid.anchor is not None:
            self._lose(self._grid.due_by(unix_time))

    def _started(self, message: dict[str, object]) -> None:
        now = trio.current_time()
        schedule_id = whole(message.get("id"))
        if schedule_id is None or schedule_id < 1:
            raise self._invalid(message, "id")
        interval = message.get("interval")
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not 0 < interval < math.inf
        ):
            raise self._invalid(message, "interval")
        count = whole(message.get("count"))
        if message.get("count") is not None and (count is None or count < 1):
            raise self._invalid(message, "count")
        anchor: float | None = None
        first = 1
        if "anchor" in message or "first" in message:
            value = message.get("anchor")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self._invalid(message, "anchor")
            if not 0 <= value < math.inf:
                raise self._invalid(message, "anchor")
            anchor = float(value)
            first_seq = whole(message.get("first"))
            if first_seq is None or first_seq < 1:
                raise self._invalid(message, "first")
            first = first_seq
        elif self.align or self.reconnect:
            flag = "--align" if self.align else "--reconnect"
            raise WatchError(
                EXIT_CONNECTION,
                f"{self.url} does not report its schedules' anchor "
                f"(a ticker server older than {flag} needs)",
            )
        last = None if count is None else first + count - 1
        grid = Grid(float(interval), anchor, first, last)
        self._schedule_id = schedule_id
        self._first = first
        if self._grid is None or self._fit is None:
            self._grid = grid
            self._next = first
            self._fit = LatenessFit(grid.interval, started=now, first=first)
            if self._gap is not None:  # lost before the first `started`: nothing was due yet
                print(self._gap_line(range(0), ended=False), file=self.err, flush=True)
                self._gap = None
            elif not self.as_json:
                print(self.style.dim(self._watching_line()), file=self.out, flush=True)
            return
        if (grid.interval, grid.last) != (self._grid.interval, self._grid.last) or (
            abs((anchor or 0.0) - (self._grid.anchor or 0.0)) > 1e-6
        ):
            text = json.dumps(message, separators=(",", ":"))
            raise WatchError(EXIT_CONNECTION, f"{self.url} resumed another schedule: {text}")
        self._fit.restarted(first, now)
        if self._gap is not None:
            lost = self._lose(first - 1)
            print(self._gap_line(lost, ended=False), file=self.err, flush=True)
            self._gap = None

    def _watching_line(self) -> str:
        total = "until Ctrl-C" if self.count is None else f"{self.count} ticks"
        options = "".join(
            [
                ", on the clock's grid" if self.align else "",
                ", reconnecting" if self.reconnect else "",
            ]
        )
        return f"watching {self.url}: every {self.interval:g} s{options}, {total}"

    def _tick(self, message: dict[str, object]) -> None:
        now = trio.current_time()
        seq = whole(message.get("seq"))
        if seq is None or seq < self._first:
            raise self._invalid(message, "seq")
        if seq <= self._last_seq:  # slots only go forward (docs/protocol.md)
            raise WatchError(
                EXIT_CONNECTION, f"{self.url} sent tick #{seq} after tick #{self._last_seq}"
            )
        self._last_seq = seq
        if seq < self._next:
            return  # received before a reconnect: resent by a server whose clock is behind
        assert self._fit is not None
        lateness = self._fit.lateness(seq, now)
        skipped = self._lose(seq - 1)
        self._next = seq + 1
        self.recorder.record(lateness)
        if self.as_json:
            return
        clock = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        late = f"+{lateness * 1000:.1f} ms"
        late = self.style.good(late) if lateness < 0.005 else self.style.warn(late)
        line = f"{self.style.dim('#')}{seq:<6} {clock}  {late:>10}"
        sent = message.get("time")
        if isinstance(sent, int | float) and not isinstance(sent, bool) and math.isfinite(sent):
            server = datetime.fromtimestamp(sent).strftime("%H:%M:%S.%f")[:-3]
            line += "  " + self.style.dim(f"server {server}")
        if skipped:
            first, last = skipped[0], skipped[-1]
            slots = f"#{first}" if first == last else f"#{first}-#{last}"
            line += "  " + self.style.bad(f"(skipped {len(skipped)}: {slots})")
        print(line, file=self.out, flush=True)

    def _done(self, message: dict[str, object]) -> None:
        skipped = whole(message.get("skipped"))
        if skipped is None or skipped < 0:
            raise self._invalid(message, "skipped")
        # The slots from the last tick to the final one were skipped. The
        # server's `skipped` is this connection's; the run's are counted on the grid.
        if self._grid is not None and self._grid.last is not None:
            self._lose(self._grid.last)

    def print_summary(self) -> None:
        stream = self.err if self.as_json else self.out
        print(format_summary(self.recorder.summary()), file=stream, flush=True)


def whole(value: object) -> int | None:
    """``value`` if it is a JSON whole number (``true`` is not one), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def network_reason(error: BaseException) -> str:
    """The most specific reason inside a connect error: "Connection refused", not a wrapper's."""
    reason = str(error) or type(error).__name__
    while True:
        if isinstance(error, OSError) and error.strerror:
            # Trio's strerror names the address ("Error connecting to ('127.0.0.1',
            # 1): Connection refused"), which the URL already does.
            return os.strerror(error.errno) if error.errno and error.errno > 0 else error.strerror
        if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        elif error.__cause__ is not None:
            error = error.__cause__
        else:
            return reason
        reason = str(error) or reason


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A positive number of seconds, or 0 for "off"."""
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass  # positive_float names the problem
    return positive_float(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def websocket_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not a ws:// or wss:// URL: {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ticker", description="Terminal client for a ticker websocket server."
    )
    parser.add_argument("--version", action="version", version=f"ticker {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    watch = commands.add_parser(
        "watch",
        help="start a schedule and print its ticks",
        description="Start a schedule on a ticker server and print each tick as it arrives.",
        epilog="Exit status: 0 done, 1 connection failed or lost (with --reconnect: not "
        "regained within --reconnect-timeout), 2 usage error or rejected by the server, "
        "130 interrupted (Ctrl-C).",
    )
    watch.add_argument(
        "url", nargs="?", default=DEFAULT_URL, type=websocket_url, help=f"(default {DEFAULT_URL})"
    )
    watch.add_argument("--interval", "-i", required=True, type=positive_float, metavar="SECONDS")
    watch.add_argument(
        "--count", "-n", type=positive_int, metavar="N", help="stop after N ticks (default: never)"
    )
    watch.add_argument(
        "--align",
        action="store_true",
        help="tick on whole multiples of the interval since the epoch (every second on the "
        "second); seq is then the slot's number on that grid",
    )
    watch.add_argument(
        "--reconnect",
        action="store_true",
        help="when the server goes away (1001) or the connection drops, reconnect "
        f"(backoff {BACKOFF_FIRST:g} s doubling to {BACKOFF_MAX:g} s) and resume the same "
        "schedule; each gap is one line on stderr",
    )
    watch.add_argument(
        "--reconnect-timeout",
        type=positive_float,
        metavar="SECONDS",
        help=f"with --reconnect: give up (exit 1) when a connection lost this long ago "
        f"has not been regained (default {RECONNECT_TIMEOUT:g})",
    )
    watch.add_argument(
        "--ping-interval",
        type=non_negative_float,
        default=PING_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between keepalive pings, 0 for none (default {PING_INTERVAL:g})",
    )
    watch.add_argument(
        "--ping-timeout",
        type=positive_float,
        default=PING_TIMEOUT,
        metavar="SECONDS",
        help=f"give up when a pong takes longer (default {PING_TIMEOUT:g})",
    )
    watch.add_argument(
        "--json",
        action="store_true",
        help="print every server message as JSON Lines on stdout; the summary goes to stderr",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with a usage line on bad input
    if args.reconnect_timeout is not None and not args.reconnect:
        parser.error("--reconnect-timeout needs --reconnect")
    watch = Watch(
        url=args.url,
        interval=args.interval,
        count=args.count,
        as_json=args.json,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        align=args.align,
        reconnect=args.reconnect,
        reconnect_timeout=args.reconnect_timeout or RECONNECT_TIMEOUT,
    )
    try:
        trio.run(watch.run)
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was listening
        watch.interrupted = True
    except BrokenPipeError:
        # The reader went away (`ticker watch ... | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_DONE
    if watch.failure is not None:
        if watch.recorder.received:  # e.g. a resumed schedule refused, or a server gone
            watch.print_summary()
        print(f"ticker: {watch.failure.message}", file=sys.stderr)
        return watch.failure.exit_code
    watch.print_summary()
    return EXIT_INTERRUPTED if watch.interrupted else EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
