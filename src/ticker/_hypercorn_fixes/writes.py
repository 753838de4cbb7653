"""Fix 2: a peer that stops reading must not pin a task for ever, and closing a
connection must not be abandoned half-way.

Upstream problems, both in ``TCPServer.protocol_send``:

a) Every write is ``send_all`` under ``CancelScope(shield=True)`` with no
   deadline (the shield keeps a cancelled app from leaving half a frame on
   the wire). A client whose TCP window is full therefore blocks the writing
   task for ever: cancelling a schedule, closing the websocket and even the
   server's graceful-shutdown deadline all wait on it.
   Report: docs/upstream/write-without-deadline.md
   Tests: tests/integration/test_reliability.py::
              test_a_stalled_reader_is_reset_after_the_send_timeout
          tests/integration/test_reliability.py::test_stalled_readers_do_not_block_shutdown
b) Hypercorn runs its connection bookkeeping (``Closed`` -> close the socket,
   ``Updated`` -> start/stop the keep-alive timer) on the *app's* task.
   Quart-Trio cancels that task as soon as Hypercorn reports the request's
   end, so the socket close and the keep-alive timer are cancelled half-way:
   ``Connection: close`` is ignored and idle connections live for ever.
   Report: docs/upstream/trio-connection-bookkeeping-cancelled.md
   Tests: tests/integration/test_reliability.py::test_http_connection_close_is_honoured
          tests/integration/test_reliability.py::
              test_http_idle_keep_alive_connection_is_closed_after_the_timeout

Fix: the write stays shielded but gets a deadline (the app's
``send_timeout``, or ``shutdown.SHUTDOWN_SEND_GRACE`` once shutdown has
begun, which also shortens writes already in flight); a write that misses it
resets the connection, since a half-written frame cannot be taken back. The
bookkeeping is shielded: it never blocks (closing a socket, starting or
stopping a timer). While replacing ``protocol_send`` anyway (a full copy of
Hypercorn's, so its fingerprint matters most), it gains a fast path: a frame
the kernel accepts at once is written without yielding (BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
from typing import Any

import trio
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio.tcp_server import TCPServer

from ..addresses import format_peer
from ._patching import Patch
from .shutdown import shortened_at_shutdown, timeout_for

log = logging.getLogger("ticker")


def _socket(stream: Any) -> Any:
    """The trio socket under a (possibly TLS) stream, or None."""
    return getattr(getattr(stream, "transport_stream", stream), "socket", None)


def _peer(stream: Any) -> str:
    sock = _socket(stream)
    try:
        return format_peer(sock.getpeername() if sock is not None else None)
    except OSError:
        return "unknown peer"


def _reset(stream: Any) -> None:
    """Make the coming close a reset: drop unsent data instead of lingering."""
    sock = _socket(stream)
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _write_bounded(self: TCPServer, data: bytes) -> None:
    """Write under the shield, with a deadline; reset the connection if it passes.

    The caller holds ``self.send_lock``.
    """
    timeout = timeout_for(self.context)
    writes = shortened_at_shutdown(self.context)
    try:
        with trio.CancelScope(shield=True) as write:
            write.deadline = trio.current_time() + timeout
            writes.add(write)
            try:
                await self.stream.send_all(data)
            finally:
                writes.discard(write)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        stalled = False
    else:
        if not write.cancelled_caught:
            return
        stalled = True
    with trio.CancelScope(shield=True):
        if stalled:
            log.warning(
                "%s stopped reading: reset after %.1f s without progress",
                _peer(self.stream),
                timeout,
            )
            _reset(self.stream)
            await self.stream.aclose()
        await self.protocol.handle(Closed())


async def protocol_send(self: TCPServer, event: Event) -> None:
    if isinstance(event, RawData):
        lock = self.send_lock
        stream: Any = self.stream  # typed as TLS by Hypercorn; plain TCP when not
        if lock.locked() or not isinstance(stream, trio.SocketStream):
            async with lock:
                await _write_bounded(self, event.data)
            return
        # Fast path (plain TCP, nobody writing): hand the kernel what it
        # takes at once, without the two trips through the scheduler that
        # acquiring the lock and send_all cost even when the socket has room.
        lock.acquire_nowait()
        try:
            data = event.data
            try:
                sent = os.write(stream.socket.fileno(), data)
            except BlockingIOError:
                sent = 0
            except OSError:  # reset, broken pipe: report as Hypercorn would
                with trio.CancelScope(shield=True):
                    await self.protocol.handle(Closed())
                return
            if sent < len(data):  # the rest waits for room, lock still held
                await _write_bounded(self, data[sent:])
        finally:
            lock.release()
    elif isinstance(event, Closed):
        with trio.CancelScope(shield=True):
            await self._close()
            await self.protocol.handle(Closed())
    elif isinstance(event, Updated):
        with trio.CancelScope(shield=True):
            if event.idle:
                await self.idle_task.restart(self._task_group, self._idle_timeout)
            else:
                await self.idle_task.stop()


def install(patch: Patch) -> None:
    patch(TCPServer, "protocol_send", protocol_send)
