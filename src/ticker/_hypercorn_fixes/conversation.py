"""Fixes 6, 7 and 9: the websocket conversation, as real and hostile clients have it.

Upstream problems, all in ``WSStream`` (hypercorn/protocol/ws_stream.py):

6. Compression is always accepted, with 15-bit windows at zlib's default
   memory level (3x the memory of a connection without it), and a compressed
   message is inflated whole before its size is checked: one 200 KB message
   that inflates to 200 MiB costs 200 MiB.
   Report: docs/upstream/websocket-deflate-unbounded.md
   Fix: the handshake negotiates what the app's policy says: nothing (the
   default; a frame with RSV1 set then fails the connection, RFC 6455 §5.2)
   or ``deflate.BoundedDeflate`` (small windows, inflation capped).
   Tests: tests/integration/test_hostile.py::
              test_decompression_bombs_are_refused_after_inflating_little
          tests/integration/test_hostile.py::test_with_compression_on_a_browser_gets_small_windows
          tests/integration/test_hostile.py::
              test_a_compressed_frame_fails_the_connection_when_compression_is_off
7. A close the server starts never ends. When Hypercorn refuses a message
   (1009), the app is not told: its handler runs on and holds its slot for as
   long as the client keeps TCP open. A frame wsproto cannot parse (RSV1 set,
   bad UTF-8) drops TCP without any close frame. And when the app closes, TCP
   is closed at once, so a client still sending gets a reset, which can
   destroy the close frame before it is read.
   Report: docs/upstream/websocket-server-close-never-ends.md
   Fix: the server sends the close frame (1002, 1007, 1009), tells the app at
   once with a ``websocket.disconnect`` carrying that code and reason, and
   closes TCP when the client answers, or after ``close_timeout``.
   Tests: tests/integration/test_hostile.py::
              test_an_unanswered_close_frees_its_slot_at_once_and_its_socket_in_time
          tests/integration/test_hostile.py::test_a_client_that_answers_the_close_is_let_go_at_once
9. One connection can take the worker: all frames of a read (64 KiB: 11,000
   empty ones) are parsed without a checkpoint, as fast as a client sends.
   Report: docs/upstream/websocket-frames-without-checkpoint.md
   Fix: a checkpoint every ``FRAMES_PER_CHECKPOINT`` frames, and a reader
   that sleeps once a connection exceeds ``frame_rate`` frames per second
   (twice that at once): TCP backpressure, nothing is lost.
   Tests: tests/integration/test_hostile.py::
              test_a_flood_of_frames_is_read_at_the_frame_rate_and_still_answered

All of it applies only to the streams of a server whose app registered a
``WebsocketPolicy`` (``registry``); other servers keep Hypercorn's behaviour.
"""

from __future__ import annotations

from typing import Any, Final

import trio
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.ws_stream import FrameTooLargeError, Handshake, WSStream
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Message, Ping, Pong
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import server_extensions_handshake

from ..deflate import BoundedDeflate
from ..pacing import FrameBudget
from ._patching import Patch
from .policy import WebsocketPolicy
from .registry import current_server
from .streams import (
    FAILED_CLOSE_WAIT,
    Conversation,
    close_deadline,
    conversation,
    refusal,
    server_close,
)

#: Frames a connection's reader parses between two checkpoints.
FRAMES_PER_CHECKPOINT: Final = 256


def _stop_keepalive(stream: WSStream) -> None:
    server = current_server()
    if server is not None and server.keepalive is not None:
        server.keepalive.discard(stream)


def install(patch: Patch) -> None:
    accept_handshake = Handshake.accept
    accept = WSStream._accept
    handle = WSStream.handle
    handle_events = WSStream._handle_events
    app_send = WSStream.app_send
    send_event = WSStream._send_wsproto_event

    def negotiating_accept(
        self: Handshake, subprotocol: str | None, additional_headers: Any
    ) -> tuple[int, list[tuple[bytes, bytes]], Connection]:
        policy: WebsocketPolicy | None = getattr(self, "ticker_policy", None)
        if policy is None:
            return accept_handshake(self, subprotocol, additional_headers)
        offers, self.extensions = self.extensions, None  # so the stock code agrees to none
        try:
            status, headers, _ = accept_handshake(self, subprotocol, additional_headers)
        finally:
            self.extensions = offers
        extensions: list[Extension] = []
        if policy.compression and offers:
            deflate = BoundedDeflate(policy.max_message_size)
            agreed = server_extensions_handshake(offers, [deflate])
            if agreed:
                headers.append((b"sec-websocket-extensions", agreed))
                extensions.append(deflate)
        self.ticker_extensions = extensions  # type: ignore[attr-defined]
        return status, headers, Connection(ConnectionType.SERVER, extensions)

    async def accepting(self: WSStream, message: Any) -> None:
        server = current_server()
        policy = None if server is None else server.policy
        if server is None or policy is None:
            await accept(self, message)
            return
        self.handshake.ticker_policy = policy  # type: ignore[attr-defined]
        talk = Conversation(policy, FrameBudget(policy.frame_rate, 2 * policy.frame_rate))
        self._ticker = talk  # type: ignore[attr-defined]
        await accept(self, message)
        # Frames of its own can go out as ready bytes (text_frames.py).
        self._ticker_plain = not getattr(self.handshake, "ticker_extensions", True)  # type: ignore[attr-defined]
        # The connection may have ended while the handshake's answer went out.
        if not self.closed and server.keepalive is not None:
            server.keepalive.add(self, talk)

    async def handling(self: WSStream, event: Any) -> None:
        talk = conversation(self)
        if talk is not None and isinstance(event, StreamClosed):
            _stop_keepalive(self)
            if talk.closing is not None:
                talk.closing.cancel()
        await handle(self, event)

    async def handling_events(self: WSStream) -> None:
        talk = conversation(self)
        if talk is None:
            await handle_events(self)
            return
        connection = self.connection
        for event in connection.events():
            talk.frames += 1
            wait = talk.budget.take(trio.current_time())
            if wait > 0:  # too many frames: read this client more slowly
                await trio.sleep(wait)
            elif talk.frames % FRAMES_PER_CHECKPOINT == 0:
                await trio.lowlevel.checkpoint()
            if self.closed:  # ended while we waited (the close deadline, a reset)
                return
            if isinstance(event, CloseConnection):
                if connection.state is ConnectionState.OPEN:
                    # Not a close frame: wsproto could not parse what came,
                    # so it cannot find the client's answer either: wait only
                    # as long as the close frame needs to be read.
                    talk.close_wait = min(talk.policy.close_timeout, FAILED_CLOSE_WAIT)
                    await server_close(self, event.code, refusal(event, talk.policy))
                    return
                if connection.state is ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                # Else the answer to our close (or garbage after it): done.
                await self.send(StreamClosed(stream_id=self.stream_id))
                return
            if connection.state is not ConnectionState.OPEN:
                continue  # after our close frame, only the answer matters
            if isinstance(event, Message):
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    limit = talk.policy.max_message_size
                    too_big = CloseReason.MESSAGE_TOO_BIG  # 1009
                    await server_close(self, too_big, f"message too big: over {limit} bytes")
                    return
                if event.message_finished:
                    await self.app_put(self.buffer.to_message())  # type: ignore[misc]
                    self.buffer.clear()
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, Pong):
                talk.pong = True

    async def app_sending(self: WSStream, message: Any) -> None:
        talk = conversation(self)
        connection = getattr(self, "connection", None)
        if (
            message is None  # the app has ended
            and talk is not None
            and connection is not None
            and connection.state is ConnectionState.LOCAL_CLOSING
        ):
            return  # TCP closes when the client answers, or at the close deadline
        await app_send(self, message)

    async def sending_event(self: WSStream, event: Any) -> None:
        if not isinstance(event, CloseConnection):  # every tick: nothing more to do
            await send_event(self, event)
            return
        talk = conversation(self)
        connection = getattr(self, "connection", None)  # None: the handshake failed
        starts_close = (
            talk is not None and connection is not None and connection.state is ConnectionState.OPEN
        )
        await send_event(self, event)
        if (
            starts_close
            and not self.closed
            and self.connection.state is ConnectionState.LOCAL_CLOSING
        ):
            assert talk is not None
            _stop_keepalive(self)
            talk.closing = trio.CancelScope()
            self.task_group.spawn(close_deadline, self, talk, talk.closing)

    patch(Handshake, "accept", negotiating_accept)
    patch(WSStream, "_accept", accepting)
    patch(WSStream, "handle", handling)
    patch(WSStream, "_handle_events", handling_events)
    patch(WSStream, "app_send", app_sending)
    patch(WSStream, "_send_wsproto_event", sending_event)
