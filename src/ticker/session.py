"""One websocket connection: a receiver that reads commands and a sender that ticks.

The session talks to its transport through two callables, so the same code
runs under Quart-Trio in production and over memory channels in the tests.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from . import __version__
from .protocol import (
    CloseCode,
    Limits,
    MessageTooBig,
    ProtocolError,
    Start,
    encode_done,
    encode_error,
    encode_hello,
    encode_started,
    encode_stopped,
    encode_tick,
    parse,
    plan,
)
from .schedule import Schedule
from .server_tally import Tally
from .timer import Timer

#: Sends one text frame to the client. Frames must reach the client in the
#: order ``send`` was called, also when two tasks' calls overlap (Hypercorn's
#: per-connection write lock guarantees it), and whole.
Send = Callable[[str], Awaitable[None]]
#: Waits for the client's next frame: ``str`` (text), ``bytes`` (binary) or
#: ``None`` (an empty binary frame). On disconnect the transport either cancels
#: the session or raises ``trio.EndOfChannel``.
Receive = Callable[[], Awaitable[str | bytes | None]]


@dataclass(frozen=True, slots=True)
class Close:
    """The session asks the transport to close the connection with this code."""

    code: CloseCode
    reason: str


@dataclass(slots=True, eq=False)
class _Run:
    """One accepted start, from ``started`` until its sender task has exited."""

    id: int
    schedule: Schedule
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    finished: trio.Event = field(default_factory=trio.Event)
    completed: bool = False  # ``done`` was sent


class Session:
    """The state of one connection: schedule ids and the running schedule."""

    def __init__(
        self,
        send: Send,
        limits: Limits,
        on_protocol_error: Callable[[ProtocolError], None] | None = None,
        tally: Tally | None = None,
        timer: Timer | None = None,
        unix_time: Callable[[], float] = time.time,
    ) -> None:
        self._send = send
        #: The wall clock, for anchors and each tick's ``time`` (a test's own, on
        #: the virtual clock); deadlines use Trio's monotonic clock.
        self._unix_time = unix_time
        #: How the sender waits for a deadline: the worker's ``Timer`` (no
        #: ``Cancelled`` per tick), else Trio's own ``sleep_until``.
        self._sleep_until = trio.sleep_until if timer is None else timer.sleep_until
        self._on_protocol_error = on_protocol_error
        self._tally = tally  # the worker's counts, for metrics; None when they are off
        self.protocol_errors = 0
        self._limits = limits
        self._last_id = 0
        self._running: _Run | None = None

    @property
    def schedules_started(self) -> int:
        return self._last_id

    async def run(self, receive: Receive) -> Close | None:
        """Serve the connection in its own nursery until the client leaves or must be closed.

        Returns the close the transport should perform, or None when the client
        went away. Client disconnects arrive as cancellation, which propagates.
        """
        async with trio.open_nursery() as nursery:
            close = await self._receive_commands(receive, nursery)
            nursery.cancel_scope.cancel()  # the running sender, if any
        return close

    async def _receive_commands(self, receive: Receive, nursery: trio.Nursery) -> Close | None:
        """Answer frames until the client leaves (None) or must be closed (Close)."""
        await self._send(encode_hello(__version__, self._limits))
        while True:
            try:
                frame = await receive()
            except trio.EndOfChannel:
                return None
            try:
                command = parse(frame, self._limits)
                if isinstance(command, Start):
                    await self._start(command, nursery)
                else:
                    await self._send(encode_stopped(await self._cancel_running()))
            except MessageTooBig as error:
                return Close(CloseCode.MESSAGE_TOO_BIG, f"message too big: {error}")
            except ProtocolError as error:
                self.protocol_errors += 1
                if self._tally is not None:
                    self._tally.protocol_errors[error.code] += 1
                if self._on_protocol_error is not None:
                    self._on_protocol_error(error)
                await self._send(encode_error(error))

    async def _start(self, command: Start, nursery: trio.Nursery) -> None:
        # Planned before anything is cancelled: a start refused for its
        # anchor or last slot leaves the running schedule alone (rule 3).
        accepted = plan(command, self._limits, now=trio.current_time(), unix_now=self._unix_time())
        await self._cancel_running()
        self._last_id += 1
        if self._tally is not None:
            self._tally.schedules_started += 1
        run = _Run(self._last_id, accepted.schedule)
        # ``started`` goes out before the sender exists, and the previous
        # sender has exited: nothing of an older id can follow it.
        await self._send(encode_started(run.id, accepted))
        self._running = run
        nursery.start_soon(self._tick, run)

    async def _cancel_running(self) -> int | None:
        """Stop the running schedule and wait until its sender has exited.

        Returns its id, or None if nothing was running (also after ``done``).
        """
        run, self._running = self._running, None
        if run is None:
            return None
        run.cancel_scope.cancel()
        await run.finished.wait()
        return None if run.completed else run.id

    async def _tick(self, run: _Run) -> None:
        schedule = run.schedule
        tally = self._tally
        sleep_until = self._sleep_until
        unix_time = self._unix_time
        end = sys.maxsize if schedule.last is None else schedule.last + 1  # first non-slot
        seq = schedule.first
        sent = 0
        try:
            with run.cancel_scope:
                while schedule.has_slot(seq):
                    due = schedule.due(seq)
                    await sleep_until(due)
                    sending = trio.current_time() if tally is not None else due
                    await self._send(encode_tick(run.id, seq, round(unix_time(), 6)))
                    sent += 1
                    next_seq = schedule.next_seq(seq, trio.current_time())
                    if tally is not None:
                        # Lateness: the server's, when the tick starts out (a
                        # slow client's blocked write shows up as skips).
                        tally.tick_sent(sending - due, min(next_seq, end) - seq - 1)
                    seq = next_seq
                if schedule.count is not None:
                    await self._send(encode_done(run.id, sent, schedule.count - sent))
                    run.completed = True
                    if self._running is run:
                        self._running = None
        finally:
            run.finished.set()


async def run_session(
    send: Send,
    receive: Receive,
    limits: Limits,
    tally: Tally | None = None,
    timer: Timer | None = None,
    unix_time: Callable[[], float] = time.time,
) -> Close | None:
    """Serve one connection with a fresh ``Session``; see ``Session.run``."""
    return await Session(send, limits, tally=tally, timer=timer, unix_time=unix_time).run(receive)
