"""Fix 10: an HTTP/2 stream whose flow-control window stays shut must be cut off.

Upstream problem: when Hypercorn terminates TLS it offers h2 (ALPN) and
SETTINGS_ENABLE_CONNECT_PROTOCOL, so browsers may open websockets as HTTP/2
streams (RFC 8441). A stream's writes then never reach the socket directly:
``H2Protocol.stream_send`` appends them to the stream's ``StreamBuffer`` and
the connection's ``send_task`` sends what the peer's flow-control window
allows (hypercorn/protocol/h2.py, ``_send_data``). A client that keeps
reading the socket but never sends WINDOW_UPDATE keeps that window at 0 for
ever: fix 2's deadline never applies (nothing is being written, the socket
is fine) and nothing else notices. The stream, its handler and its
connection slot live as long as the client likes, and the buffer grows by
every message sent: ``pop(0)`` on a window-less stream sets the buffer's
"paused" event, so ``push`` never waits, even far past its high-water mark.
A close (``EndData``) waits in ``StreamBuffer.drain()`` for ever.
Report: docs/upstream/write-without-deadline.md (with fix 2: the same missing deadline)
Tests: tests/integration/test_http2.py::
           test_a_client_that_stops_granting_window_is_cut_off_after_the_send_timeout
       tests/integration/test_http2.py::
           test_a_client_that_grants_window_by_the_byte_is_cut_off_once_its_buffer_is_full

Fix: when the send task finds data waiting on a stream without window, or
more than ``MAX_STREAM_BUFFER`` of it, a watchdog starts for that stream; it
is called off as soon as data can move again (window granted, or nothing
left to send) or the stream closes. If it
is still stalled after the send timeout (``shutdown.SHUTDOWN_SEND_GRACE`` once
shutdown has begun, which shortens watchdogs already running, as fix 2's
writes), the stream is reset (RST_STREAM, CANCEL) and then closed as a
client's own RST_STREAM closes it: the app gets ``websocket.disconnect``,
its handler ends, the send task drops the stream's buffer.

Upstream problem, the same waits once the connection is gone: when the
connection closes (fix 2's reset of a peer that stopped reading, a TCP
reset), ``H2Protocol.handle(Closed)`` tells the streams but leaves their
buffers open, and the send task, the only one that releases a writer waiting
in ``push`` (over the high-water mark) or ``drain``, has ended. The app's
task waits there for ever; Quart's reader, its queue full, never reaches
the disconnect; the handler holds its slot until shutdown cancels it.
Report: docs/upstream/http2-writers-stuck-after-close.md
Test: tests/integration/test_http2.py::
          test_a_client_that_stops_reading_over_http2_is_reset_after_the_send_timeout

Fix: once the connection is closed, close every stream's buffer: waiting
writers return, later writes are dropped (``BufferCompleteError``, which
``stream_send`` ignores).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Final

import h2.errors
import h2.exceptions
import trio
from hypercorn.events import Closed, Event
from hypercorn.protocol.h2 import H2Protocol

from ..addresses import format_peer
from ._patching import Patch
from .shutdown import shortened_at_shutdown, timeout_for

log = logging.getLogger("ticker")


#: Bytes an HTTP/2 stream may have waiting for window and still count as
#: making progress; a client granting window by the byte would otherwise grow
#: its buffer for ever (Hypercorn's high-water mark never applies, see above).
MAX_STREAM_BUFFER: Final = 64 * 1024


def install(patch: Patch) -> None:
    send_data = H2Protocol._send_data
    close_stream = H2Protocol._close_stream
    handle = H2Protocol.handle

    def watchdogs(self: H2Protocol) -> dict[int, trio.CancelScope]:
        """The connection's running watchdogs, by stream id."""
        found: dict[int, trio.CancelScope] = vars(self).setdefault("_ticker_stalls", {})
        return found

    def stalled(self: H2Protocol, stream_id: int) -> bool:
        buffer = self.stream_buffers.get(stream_id)
        if buffer is None or not buffer.buffer:
            return False  # nothing waits
        if len(buffer.buffer) > MAX_STREAM_BUFFER:
            return True  # a trickle of window is not keeping up: no progress
        try:
            return self.connection.local_flow_control_window(stream_id) <= 0
        except h2.exceptions.ProtocolError:
            return False  # the stream is closed: ``_send_data`` drops its buffer

    async def cut_off_unless_granted(
        self: H2Protocol, stream_id: int, watchdog: trio.CancelScope
    ) -> None:
        timeout = timeout_for(self.context)
        shortened = shortened_at_shutdown(self.context)
        with watchdog:
            watchdog.deadline = trio.current_time() + timeout
            shortened.add(watchdog)
            try:
                await trio.sleep_forever()
            finally:
                shortened.discard(watchdog)
        stalls = watchdogs(self)
        if stalls.get(stream_id) is not watchdog:
            return  # called off: the window opened, or the stream closed
        del stalls[stream_id]
        if self.closed or stream_id not in self.streams:
            return
        log.warning(
            "%s stopped granting HTTP/2 flow-control window: stream %d reset after %.1f s"
            " without progress",
            format_peer(self.client),
            stream_id,
            timeout,
        )
        with trio.CancelScope(shield=True):
            with contextlib.suppress(h2.exceptions.ProtocolError):  # closed meanwhile
                self.connection.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            await self._flush()
            # As for a client's RST_STREAM (``_handle_events``, ``StreamReset``).
            await self._close_stream(stream_id)
            await self._window_updated(stream_id)

    async def watched_send_data(self: H2Protocol, stream_id: int) -> None:
        stalls = watchdogs(self)
        if stalled(self, stream_id):
            if stream_id not in stalls:
                stalls[stream_id] = watchdog = trio.CancelScope()
                self.task_group.spawn(cut_off_unless_granted, self, stream_id, watchdog)
        elif (called_off := stalls.pop(stream_id, None)) is not None:
            called_off.cancel()  # progress
        await send_data(self, stream_id)

    async def unwatched_close_stream(self: H2Protocol, stream_id: int) -> None:
        if (watchdog := watchdogs(self).pop(stream_id, None)) is not None:
            watchdog.cancel()
        await close_stream(self, stream_id)

    async def handle_then_release_writers(self: H2Protocol, event: Event) -> None:
        await handle(self, event)
        if isinstance(event, Closed):
            for buffer in list(self.stream_buffers.values()):
                await buffer.close()  # nobody is left to send what they hold

    patch(H2Protocol, "_send_data", watched_send_data)
    patch(H2Protocol, "_close_stream", unwatched_close_stream)
    patch(H2Protocol, "handle", handle_then_release_writers)
