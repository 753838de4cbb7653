"""Fixes for bugs in Hypercorn's trio worker (checked on 0.18) that an app cannot avoid.

Everything here patches Hypercorn in place, so it lives in this one module,
each fix names its upstream problem, and each has a test that fails without
it. ``apply()`` is idempotent; ``create_app()`` calls it. Delete a fix when
the Hypercorn version that ships the upstream repair is the minimum we require.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import h2.errors
import h2.events
import h2.exceptions
import hypercorn.trio
import hypercorn.trio.run
import trio
from hypercorn.config import Config, Sockets
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.middleware import ProxyFixMiddleware
from hypercorn.protocol.events import Request, StreamClosed
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.ws_stream import FrameTooLargeError, Handshake, WSStream
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import EventWrapper, WorkerContext
from hypercorn.typing import AppWrapper, ASGIFramework, ASGIReceiveEvent, ASGISendEvent, Scope
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Message, Ping, Pong
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import server_extensions_handshake

from .deflate import BoundedDeflate
from .pacing import FrameBudget

_DISCONNECTS: Final = frozenset({"websocket.disconnect", "http.disconnect"})

#: Once shutdown has begun, a write gets at most this long (seconds) before its
#: connection is dropped, so a stalled reader cannot hold the process up.
SHUTDOWN_SEND_GRACE: Final = 1.0

log = logging.getLogger("ticker")

_applied = False
#: A write's deadline (seconds) for an app that sets no ``WebsocketPolicy``;
#: ticker's own comes from ``TICKER_SEND_TIMEOUT`` through the server's Config.
_send_timeout: Final = 5.0


def apply() -> None:
    """Install every fix once per process; each app's settings travel on its server's Config."""
    global _applied
    if _applied:
        return
    _applied = True
    _deliver_disconnects_without_blocking()
    _bound_writes_and_protect_connection_bookkeeping()
    _tell_the_app_when_shutdown_begins()
    _close_connections_after_a_refused_handshake()
    _own_the_websocket_conversation()
    _bound_http2_flow_control_waits()


# ---------------------------------------------------------------------------
# Fix 1: a disconnect must never wait for the app to drain its queue.
#
# Upstream problem: Hypercorn hands events to the app through a bounded memory
# channel (``max_app_queue_size``, 10). When a write fails because the peer
# reset the connection, ``WSStream.handle(StreamClosed)`` puts
# ``websocket.disconnect`` into that channel *from the task that was writing*,
# which is the app's own task. If the client had sent frames faster than the
# app answered them, the channel is full, the only task that drains it is the
# one now waiting to put into it, and the connection hangs forever: its
# handler never ends, its socket is never closed.
# Test: tests/integration/test_server.py::
#     test_reset_during_a_burst_of_commands_leaves_no_connection_behind
#
# Fix: deliver a disconnect that does not fit at once from a helper task in
# the connection's own task group, which ends when the app ends.
#
# Upstream problem, the other way round: when the app ends while the channel
# is full (it closed the websocket with messages still queued), the reader
# waits in ``send`` for ever, so the connection's task group never exits and
# its memory stays (~37 KiB per connection, found by review).
# Fix: when the app ends, close the channel: the waiting reader wakes, and
# later events are dropped, as nobody is left to receive them.
# Test: tests/integration/test_hostile.py::
#     test_an_app_that_ends_with_its_queue_full_leaves_nothing_behind


def _deliver_disconnects_without_blocking() -> None:
    spawn_app = TaskGroup.spawn_app

    async def patched_spawn_app(
        self: TaskGroup,
        app: AppWrapper,
        config: Config,
        scope: Scope,
        send: Callable[[ASGISendEvent | None], Awaitable[None]],
    ) -> Callable[[ASGIReceiveEvent], Awaitable[None]]:
        pending: list[trio.CancelScope] = []
        channels: list[trio.MemorySendChannel[ASGIReceiveEvent]] = []

        async def app_then_drop_pending(*args: Any) -> None:
            try:
                await app(*args)
            finally:
                for delivery in pending:  # nobody is left to receive them
                    delivery.cancel()
                # Nor whatever the reader is waiting to put (the queue may be
                # full): closing wakes it, and later puts fail at once.
                for channel in channels:
                    channel.close()

        put = await spawn_app(self, app_then_drop_pending, config, scope, send)  # type: ignore[arg-type]
        channel: trio.MemorySendChannel[ASGIReceiveEvent] = put.__self__  # type: ignore[attr-defined]
        channels.append(channel)
        nursery = self._nursery
        assert nursery is not None

        async def deliver_later(event: ASGIReceiveEvent) -> None:
            with trio.CancelScope() as delivery:
                pending.append(delivery)
                try:
                    await channel.send(event)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                finally:
                    pending.remove(delivery)

        async def app_put(event: ASGIReceiveEvent) -> None:
            try:
                if event["type"] not in _DISCONNECTS:
                    await put(event)
                    return
                try:
                    channel.send_nowait(event)
                except trio.WouldBlock:
                    nursery.start_soon(deliver_later, event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the app has already finished: nobody to tell

        return app_put

    TaskGroup.spawn_app = patched_spawn_app  # type: ignore[method-assign]


# ---------------------------------------------------------------------------
# Fix 2: a peer that stops reading must not pin a task forever, and closing a
# connection must not be abandoned half-way.
#
# Upstream problems, both in ``TCPServer.protocol_send``:
# a) Every write is ``send_all`` under ``CancelScope(shield=True)`` with no
#    deadline (the shield keeps a cancelled app from leaving half a frame on
#    the wire). A client whose TCP window is full therefore blocks the writing
#    task for ever: cancelling a schedule, closing the websocket and even the
#    server's graceful-shutdown deadline all wait on it.
#    Tests: tests/integration/test_reliability.py::test_stalled_reader_*
# b) Hypercorn runs its connection bookkeeping (``Closed`` -> close the socket,
#    ``Updated`` -> start/stop the keep-alive timer) on the *app's* task.
#    Quart-Trio cancels that task as soon as Hypercorn reports the request's
#    end, so the socket close and the keep-alive timer are cancelled half-way:
#    ``Connection: close`` is ignored and idle connections live for ever.
#    Tests: tests/integration/test_reliability.py::test_http_connection_*
#
# Fix: the write stays shielded but gets a deadline (``TICKER_SEND_TIMEOUT``,
# or ``SHUTDOWN_SEND_GRACE`` once shutdown has begun, which also shortens
# writes already in flight); a write that misses it resets the connection,
# since a half-written frame cannot be taken back. The bookkeeping is shielded:
# it never blocks (closing a socket, starting or stopping a timer).
# While replacing ``protocol_send`` anyway, it gains a fast path: a frame the
# kernel accepts at once is written without yielding (BENCHMARKS.md).


class _ShutdownAwareEvent(EventWrapper):
    """``WorkerContext.terminated``: also cuts short the writes in flight when set."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: set[trio.CancelScope] = set()

    async def set(self) -> None:
        deadline = trio.current_time() + SHUTDOWN_SEND_GRACE
        for write in self.writes:
            write.deadline = min(write.deadline, deadline)
        await super().set()


def _socket(stream: Any) -> Any:
    """The trio socket under a (possibly TLS) stream, or None."""
    return getattr(getattr(stream, "transport_stream", stream), "socket", None)


def _peer(stream: Any) -> str:
    sock = _socket(stream)
    try:
        host, port, *_ = sock.getpeername() if sock is not None else ("unknown peer", "")
    except OSError:
        return "unknown peer"
    return f"{host}:{port}"


def _reset(stream: Any) -> None:
    """Make the coming close a reset: drop unsent data instead of lingering."""
    sock = _socket(stream)
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _bound_writes_and_protect_connection_bookkeeping() -> None:
    WorkerContext.event_class = _ShutdownAwareEvent

    async def write_bounded(self: TCPServer, data: bytes) -> None:
        """Write under the shield, with a deadline; reset the connection if it passes.

        The caller holds ``self.send_lock``.
        """
        terminated = self.context.terminated
        send_timeout = getattr(self.config, "ticker_send_timeout", _send_timeout)
        timeout = SHUTDOWN_SEND_GRACE if terminated.is_set() else send_timeout
        writes = terminated.writes if isinstance(terminated, _ShutdownAwareEvent) else set()
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
                    await write_bounded(self, event.data)
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
                    await write_bounded(self, data[sent:])
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

    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]


# ---------------------------------------------------------------------------
# Fix 3: tell the app when graceful shutdown begins.
#
# Upstream problem: on SIGTERM/Ctrl-C the trio worker stops accepting, waits
# up to ``graceful_timeout`` for open connections to end by themselves, then
# cancels them; the app hears nothing until the lifespan shutdown, which runs
# only after the connections are gone. A websocket app cannot say goodbye, so
# every client sees an abnormal closure (1006) instead of 1001 "going away".
# Test: tests/integration/test_reliability.py::test_sigterm_closes_websockets_with_1001
#
# Fix: wrap ``worker_serve`` so that, when its shutdown trigger fires, an app
# with ``begin_shutdown()`` is called first; it closes its websockets with
# 1001, the connections end, and Hypercorn's wait ends early. The same wrapper
# hands an app's ``max_message_size`` to Hypercorn (whose own limit comes from
# its command line, default 16 MiB).
# Test: tests/integration/test_reliability.py::
#     test_an_oversized_message_is_refused_before_it_has_all_arrived
#
# Upstream problem, with ``--workers N``: a worker process keeps the default
# SIGTERM action (die at once). Hypercorn's main process SIGTERMs the workers
# still shutting down as soon as the first one has exited, and systemd
# (KillMode=control-group, its default) SIGTERMs every process at once: either
# way workers die mid-shutdown, their clients see 1006 instead of 1001 and
# ``--graceful-timeout`` means nothing.
# Test: tests/integration/test_reliability.py::
#     test_sigterm_to_every_process_of_a_multi_worker_server_still_closes_with_1001
#
# Fix: in a worker, SIGTERM is one more shutdown trigger, caught for the
# worker's whole life, so a second one changes nothing.


def _tell_the_app_when_shutdown_begins() -> None:
    worker_serve = hypercorn.trio.run.worker_serve

    async def patched_worker_serve(
        app: AppWrapper,
        config: Config,
        *,
        sockets: Sockets | None = None,
        shutdown_trigger: Callable[..., Awaitable[None]] | None = None,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        framework = getattr(app, "app", app)  # Hypercorn's ASGIWrapper keeps it here
        # Also: hand the app's websocket policy to the server (fixes 2, 6-9),
        # and let Hypercorn's reader enforce the app's message limit, so an
        # oversized message is refused (1009) as it arrives instead of being
        # buffered up to Hypercorn's own 16 MiB default first.
        policy = getattr(framework, "websocket_policy", None)
        if isinstance(policy, WebsocketPolicy):
            config.ticker_policy = policy  # type: ignore[attr-defined]
            config.ticker_send_timeout = policy.send_timeout  # type: ignore[attr-defined]
            config.websocket_max_message_size = min(
                config.websocket_max_message_size, policy.max_message_size
            )
            if policy.ping_interval > 0:
                config.ticker_keepalive = _Keepalive(policy)  # type: ignore[attr-defined]
        begin_shutdown = getattr(framework, "begin_shutdown", None)
        if shutdown_trigger is None or multiprocessing.parent_process() is None:
            # In-process (tests, ``hypercorn.trio.serve``): the caller owns signals.
            terms: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        else:
            terms = trio.open_signal_receiver(signal.SIGTERM)
        with terms as sigterms:
            if shutdown_trigger is not None:
                trigger = shutdown_trigger

                async def shutdown_trigger_then_tell_app() -> None:
                    if sigterms is None:
                        await trigger()
                    else:
                        await _first_of(trigger, partial(anext, sigterms))
                    if callable(begin_shutdown):
                        begin_shutdown()

                shutdown_trigger = shutdown_trigger_then_tell_app
            async with trio.open_nursery() as nursery:
                if (keepalive := _keepalive(config)) is not None:
                    nursery.start_soon(keepalive.serve)  # fix 8
                await worker_serve(
                    app,
                    config,
                    sockets=sockets,
                    shutdown_trigger=shutdown_trigger,
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()

    hypercorn.trio.run.worker_serve = patched_worker_serve
    hypercorn.trio.worker_serve = patched_worker_serve  # type: ignore[attr-defined]


async def _first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as one of ``waits`` returns; cancel the others."""
    async with trio.open_nursery() as nursery:

        async def wait_then_cancel(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(wait_then_cancel, wait)


# ---------------------------------------------------------------------------
# Fix 4: a refused websocket handshake must end its connection.
#
# Upstream problem: when ``WSStream`` refuses a handshake itself (a malformed
# upgrade request: 400; an unknown server name: 404) it answers with
# ``Connection: close`` and marks the stream closed, but never reports
# ``StreamClosed``, so the HTTP/1.1 connection is neither closed nor idle:
# it stays open for ever. A client can hold sockets this way at no cost.
# Over HTTP/2 the refused stream closes while ``H2Protocol._handle_events`` is
# still handling its request, which then reports the connection busy
# (hypercorn/protocol/h2.py:253-254) with no stream left to end that: its
# keep-alive timer never runs again. So after a batch of HTTP/2 events that
# opened streams, a connection left without streams is reported idle again.
# And DATA for a stream the server has already closed (a websocket the server
# closed, fix 7, to which the client still writes) is dropped: stock
# Hypercorn looks the stream up without a guard and the KeyError ends the
# worker (found by review; tests/integration/test_http2.py::
# test_data_after_the_server_closed_the_stream_is_dropped).
# Tests: tests/integration/test_reliability.py::
#     test_a_refused_websocket_handshake_closes_its_connection
#   tests/integration/test_http2.py::
#     test_a_refused_http2_handshake_gets_400_and_its_connection_can_idle_out


def _close_connections_after_a_refused_handshake() -> None:
    handle = WSStream.handle
    handle_h2_events = H2Protocol._handle_events

    async def patched_handle(self: WSStream, event: Any) -> None:
        was_closed = self.closed
        await handle(self, event)
        refused = isinstance(event, Request) and self.closed and self.app_put is None
        if refused and not was_closed:
            await self.send(StreamClosed(stream_id=self.stream_id))

    async def patched_h2_events(self: H2Protocol, events: list[Any]) -> None:
        for event in events:  # one at a time: any of them may close a stream
            if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                # Data for a stream the server has closed (a websocket after
                # its close, fix 7): stock Hypercorn's KeyError would end the
                # whole worker. Drop it, keep the connection's window open,
                # and tell the client the stream is gone.
                self.connection.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
                gone = h2.errors.ErrorCodes.STREAM_CLOSED
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.connection.reset_stream(event.stream_id, gone)
                await self._flush()
                continue
            await handle_h2_events(self, [event])
        opened = any(isinstance(event, h2.events.RequestReceived) for event in events)
        if opened and all(stream.idle for stream in self.streams.values()):
            await self.send(Updated(idle=True))

    WSStream.handle = patched_handle  # type: ignore[method-assign]
    H2Protocol._handle_events = patched_h2_events  # type: ignore[method-assign]


# ---------------------------------------------------------------------------
# Fixes 6-9: the websocket conversation, as real and hostile clients have it.
#
# Upstream problems, all in ``WSStream`` (hypercorn/protocol/ws_stream.py):
# 6. Compression is always accepted, with 15-bit windows at zlib's default
#    memory level (3x the memory of a connection without it), and a
#    compressed message is inflated whole before its size is checked: one
#    200 KB message that inflates to 200 MiB costs 200 MiB.
#    Fix: the handshake negotiates what the app's policy says: nothing (the
#    default; a frame with RSV1 set then fails the connection, RFC 6455 §5.2)
#    or ``deflate.BoundedDeflate`` (small windows, inflation capped).
#    Tests: tests/integration/test_hostile.py::test_compression_*, ::test_a_decompression_bomb_*
# 7. A close the server starts never ends. When Hypercorn refuses a message
#    (1009), the app is not told: its handler runs on and holds its slot for as
#    long as the client keeps TCP open. A frame wsproto cannot parse (RSV1 set,
#    bad UTF-8) drops TCP without any close frame. And when the app closes, TCP
#    is closed at once, so a client still sending gets a reset, which can
#    destroy the close frame before it is read.
#    Fix: the server sends the close frame (1002, 1007, 1009), tells the app
#    at once with a ``websocket.disconnect`` carrying that code and reason,
#    and closes TCP when the client answers, or after ``close_timeout``.
#    Tests: tests/integration/test_hostile.py::test_an_unanswered_close_*
# 8. Keepalive: ``--websocket-ping-interval`` pings but ignores pongs, so a
#    dead peer is noticed only when a write fails, hours later for a long
#    interval. Fix: ping every ``ping_interval``; without a pong (or any other
#    frame) within ``ping_timeout`` the connection is closed with 1011. One
#    task per server does it for all connections (``_Keepalive``).
#    Tests: tests/integration/test_hostile.py::test_keepalive_*
# 9. One connection can take the worker: all frames of a read (64 KiB: 11,000
#    empty ones) are parsed without a checkpoint, as fast as a client sends.
#    Fix: a checkpoint every ``FRAMES_PER_CHECKPOINT`` frames, and a reader
#    that sleeps once a connection exceeds ``frame_rate`` frames per second
#    (twice that at once): TCP backpressure, nothing is lost.
#    Tests: tests/integration/test_hostile.py::test_a_flood_of_*

#: Frames a connection's reader parses between two checkpoints.
FRAMES_PER_CHECKPOINT: Final = 256
#: Seconds a connection whose frames no longer parse gets for reading our close
#: frame before TCP is closed (RFC 6455 §7.1.7 allows closing at once).
FAILED_CLOSE_WAIT: Final = 1.0
#: The payload of keepalive pings; any pong counts as an answer (RFC 6455 §5.5.3).
_PING_PAYLOAD: Final = b"ticker"


@dataclass(frozen=True, slots=True)
class WebsocketPolicy:
    """What an app asks of the server for its websockets; travels on Hypercorn's Config."""

    max_message_size: int  # bytes, also after inflation
    send_timeout: float  # seconds a write may wait on a full TCP window
    compression: bool  # negotiate permessage-deflate when offered
    ping_interval: float  # seconds; 0 means no keepalive
    ping_timeout: float  # seconds a pong may take
    close_timeout: float  # seconds to wait for the answer to a close frame
    frame_rate: float  # frames per second a connection is read at, on average


def _policy(config: Config) -> WebsocketPolicy | None:
    policy = getattr(config, "ticker_policy", None)
    return policy if isinstance(policy, WebsocketPolicy) else None


@dataclass(eq=False)
class _Conversation:
    """What one websocket stream gains from fixes 6-9."""

    policy: WebsocketPolicy
    budget: FrameBudget
    frames: int = 0  # read so far: also a sign of life while a pong is awaited
    #: Keepalive (``_Keepalive``): when the next ping is due; when the one in
    #: flight went out (None: none is), with the frame count then; a pong seen.
    next_ping: float = 0.0
    pinged_at: float | None = None
    frames_at_ping: int = 0
    pong: bool = False
    #: The close deadline's scope, once the server has sent its close frame.
    closing: trio.CancelScope | None = None
    #: Seconds the close deadline waits: ``close_timeout``, or less when the
    #: client's answer could never be read (its frames no longer parse).
    close_wait: float | None = None


@dataclass(eq=False)
class _Keepalive:
    """One server's keepalive: a single task pings all its websockets.

    A task per connection would cost ~4 KiB each (BENCHMARKS.md); one scan of
    a dict per ``_tick`` costs well under a microsecond per connection.
    """

    policy: WebsocketPolicy
    streams: dict[WSStream, _Conversation] = field(default_factory=dict)

    @property
    def _tick(self) -> float:
        """How often the task looks: a quarter of the shorter of interval and timeout
        (not more than 20 times a second, whatever the settings: each look is a scan)."""
        return max(0.05, min(1.0, self.policy.ping_interval / 4, self.policy.ping_timeout / 4))

    def add(self, stream: WSStream, talk: _Conversation) -> None:
        talk.next_ping = trio.current_time() + self.policy.ping_interval
        self.streams[stream] = talk

    async def serve(self) -> None:
        """Ping each websocket when due; close one whose pong is ``ping_timeout`` late."""
        policy = self.policy
        while True:
            await trio.sleep(self._tick)
            now = trio.current_time()
            for stream, talk in list(self.streams.items()):
                if stream.closed:  # a safeguard: StreamClosed removes them
                    del self.streams[stream]
                elif talk.pinged_at is None:
                    if now >= talk.next_ping:
                        talk.pinged_at, talk.frames_at_ping, talk.pong = now, talk.frames, False
                        _spawn(stream, stream._send_wsproto_event, Ping(_PING_PAYLOAD))
                # A client read slowly (fix 9) may have its pong queued behind
                # its own frames; frames arriving prove it alive just as well.
                elif talk.pong or talk.frames != talk.frames_at_ping:
                    talk.next_ping = talk.pinged_at + policy.ping_interval
                    talk.pinged_at = None
                elif now >= talk.pinged_at + policy.ping_timeout:
                    del self.streams[stream]
                    log.warning("%s sent no pong within %g s", _client(stream), policy.ping_timeout)
                    _spawn(stream, _server_close, stream, 1011, "keepalive ping timeout")


def _spawn(stream: WSStream, function: Callable[..., Awaitable[object]], *args: Any) -> None:
    """Start ``function`` in the stream's connection, unless that has ended meanwhile.

    The keepalive task serves the whole server: an error here would end it.
    """
    # No nursery any more (AttributeError), or a closed one (RuntimeError).
    with contextlib.suppress(AttributeError, RuntimeError):
        stream.task_group.spawn(function, *args)


def _keepalive(config: Config) -> _Keepalive | None:
    keepalive = getattr(config, "ticker_keepalive", None)
    return keepalive if isinstance(keepalive, _Keepalive) else None


def _conversation(stream: WSStream) -> _Conversation | None:
    return getattr(stream, "_ticker", None)


def _client(stream: WSStream) -> str:
    if not stream.client:
        return "unknown peer"
    host, port = stream.client[0], stream.client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _own_the_websocket_conversation() -> None:
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
        return status, headers, Connection(ConnectionType.SERVER, extensions)

    async def accepting(self: WSStream, message: Any) -> None:
        policy = _policy(self.config)
        if policy is None:
            await accept(self, message)
            return
        self.handshake.ticker_policy = policy  # type: ignore[attr-defined]
        talk = _Conversation(policy, FrameBudget(policy.frame_rate, 2 * policy.frame_rate))
        self._ticker = talk  # type: ignore[attr-defined]
        await accept(self, message)
        # The connection may have ended while the handshake's answer went out.
        if not self.closed and (keepalive := _keepalive(self.config)) is not None:
            keepalive.add(self, talk)

    async def handling(self: WSStream, event: Any) -> None:
        talk = _conversation(self)
        if talk is not None and isinstance(event, StreamClosed):
            _stop_keepalive(self)
            if talk.closing is not None:
                talk.closing.cancel()
        await handle(self, event)

    async def handling_events(self: WSStream) -> None:
        talk = _conversation(self)
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
                    reason = _refusal(event, talk.policy)
                    await _server_close(self, event.code, reason)
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
                    await _server_close(self, 1009, f"message too big: over {limit} bytes")
                    return
                if event.message_finished:
                    await self.app_put(self.buffer.to_message())  # type: ignore[misc]
                    self.buffer.clear()
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, Pong):
                talk.pong = True

    async def app_sending(self: WSStream, message: Any) -> None:
        talk = _conversation(self)
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
        talk = _conversation(self)
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
            self.task_group.spawn(_close_deadline, self, talk, talk.closing)

    Handshake.accept = negotiating_accept  # type: ignore[method-assign]
    WSStream._accept = accepting  # type: ignore[method-assign]
    WSStream.handle = handling  # type: ignore[method-assign]
    WSStream._handle_events = handling_events  # type: ignore[method-assign]
    WSStream.app_send = app_sending  # type: ignore[method-assign]
    WSStream._send_wsproto_event = sending_event  # type: ignore[method-assign]


def _refusal(event: CloseConnection, policy: WebsocketPolicy) -> str:
    """The reason to send for a frame wsproto could not parse (its own say "error in …")."""
    if event.code == CloseReason.MESSAGE_TOO_BIG:
        return f"message too big: over {policy.max_message_size} bytes inflated"
    if event.code == CloseReason.INVALID_FRAME_PAYLOAD_DATA:
        return "invalid frame payload: not UTF-8, or not deflate"
    return f"protocol error: {event.reason or 'invalid frame'}"


async def _server_close(stream: WSStream, code: int, reason: str) -> None:
    """Close with ``code`` and tell the app at once, so its handler ends and frees its slot."""
    log.warning("%s: %s: closed with %d", _client(stream), reason, code)
    await stream._send_wsproto_event(CloseConnection(code=code, reason=reason))
    if stream.app_put is not None:  # fix 1 delivers it without waiting
        await stream.app_put({"type": "websocket.disconnect", "code": code, "reason": reason})


def _stop_keepalive(stream: WSStream) -> None:
    if (keepalive := _keepalive(stream.config)) is not None:
        keepalive.streams.pop(stream, None)


async def _close_deadline(stream: WSStream, talk: _Conversation, scope: trio.CancelScope) -> None:
    """End the TCP connection if the client has not answered our close frame in time."""
    timeout = talk.policy.close_timeout if talk.close_wait is None else talk.close_wait
    with scope:
        await trio.sleep(timeout)
    if scope.cancelled_caught:
        return  # the client answered, or the connection ended
    log.warning("%s did not answer the close frame within %g s: dropped", _client(stream), timeout)
    with trio.CancelScope(shield=True):
        await stream.send(StreamClosed(stream_id=stream.stream_id))


# ---------------------------------------------------------------------------
# Fix 5: behind a TLS proxy, websockets must still be websockets.
#
# Upstream problem (pgjones/hypercorn#198, open): ``ProxyFixMiddleware`` copies
# X-Forwarded-Proto into ``scope["scheme"]`` for websocket scopes too, so a
# websocket behind nginx gets scheme "https" where ASGI says "wss". Werkzeug's
# router, which Quart uses, takes "https" for plain HTTP and answers the
# handshake with 400 (``WebsocketMismatch``).
# Test: tests/app/test_app.py::test_proxy_hops_take_the_client_address_from_x_forwarded_for
#
# Fix: not a patch but a wrapper: after ProxyFixMiddleware, map a websocket's
# http/https back to ws/wss.

_WEBSOCKET_SCHEMES: Final = {"http": "ws", "https": "wss"}


def trust_proxies(app: ASGIFramework, hops: int) -> ASGIFramework:
    """``app`` behind Hypercorn's ProxyFixMiddleware (X-Forwarded-*, last ``hops`` entries)."""

    async def keep_websocket_schemes(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["scheme"] in _WEBSOCKET_SCHEMES:
            # ProxyFixMiddleware made this scope a copy of its own: safe to change.
            scope["scheme"] = _WEBSOCKET_SCHEMES[scope["scheme"]]
        await app(scope, receive, send)

    return ProxyFixMiddleware(keep_websocket_schemes, mode="legacy", trusted_hops=hops)


# ---------------------------------------------------------------------------
# Fix 10: an HTTP/2 stream whose flow-control window stays shut must be cut off.
#
# Upstream problem: when Hypercorn terminates TLS it offers h2 (ALPN) and
# SETTINGS_ENABLE_CONNECT_PROTOCOL, so browsers may open websockets as HTTP/2
# streams (RFC 8441). A stream's writes then never reach the socket directly:
# ``H2Protocol.stream_send`` appends them to the stream's ``StreamBuffer`` and
# the connection's ``send_task`` sends what the peer's flow-control window
# allows (hypercorn/protocol/h2.py, ``_send_data``). A client that keeps
# reading the socket but never sends WINDOW_UPDATE keeps that window at 0 for
# ever: fix 2's deadline never applies (nothing is being written, the socket
# is fine) and nothing else notices. The stream, its handler and its
# connection slot live as long as the client likes, and the buffer grows by
# every message sent: ``pop(0)`` on a window-less stream sets the buffer's
# "paused" event, so ``push`` never waits, even far past its high-water mark.
# A close (``EndData``) waits in ``StreamBuffer.drain()`` for ever.
# Test: tests/integration/test_http2.py::
#     test_a_client_that_stops_granting_window_is_cut_off_after_the_send_timeout
#
# Fix: when the send task finds data waiting on a stream without window, or
# more than ``MAX_STREAM_BUFFER`` of it, a watchdog starts for that stream; it
# is called off as soon as data can move again (window granted, or nothing
# left to send) or the stream closes. If it
# is still stalled after the send timeout (``SHUTDOWN_SEND_GRACE`` once
# shutdown has begun, which shortens watchdogs already running, as fix 2's
# writes), the stream is reset (RST_STREAM, CANCEL) and then closed as a
# client's own RST_STREAM closes it: the app gets ``websocket.disconnect``,
# its handler ends, the send task drops the stream's buffer.
#
# Upstream problem, the same waits once the connection is gone: when the
# connection closes (fix 2's reset of a peer that stopped reading, a TCP
# reset), ``H2Protocol.handle(Closed)`` tells the streams but leaves their
# buffers open, and the send task, the only one that releases a writer waiting
# in ``push`` (over the high-water mark) or ``drain``, has ended. The app's
# task waits there for ever; Quart's reader, its queue full, never reaches
# the disconnect; the handler holds its slot until shutdown cancels it.
# Test: tests/integration/test_http2.py::
#     test_a_client_that_stops_reading_over_http2_is_reset_after_the_send_timeout
#
# Fix: once the connection is closed, close every stream's buffer: waiting
# writers return, later writes are dropped (``BufferCompleteError``, which
# ``stream_send`` ignores).


#: Bytes an HTTP/2 stream may have waiting for window and still count as
#: making progress; a client granting window by the byte would otherwise grow
#: its buffer for ever (Hypercorn's high-water mark never applies, see above).
MAX_STREAM_BUFFER: Final = 64 * 1024


def _stream_send_timeout(config: Config) -> float:
    """How long (seconds) a stream may wait for window: the server's send timeout."""
    return float(getattr(config, "ticker_send_timeout", _send_timeout))


def _bound_http2_flow_control_waits() -> None:
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
        terminated = self.context.terminated
        timeout = SHUTDOWN_SEND_GRACE if terminated.is_set() else _stream_send_timeout(self.config)
        shortened = terminated.writes if isinstance(terminated, _ShutdownAwareEvent) else set()
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
        host, port = self.client if self.client is not None else ("unknown peer", "")
        log.warning(
            "%s:%s stopped granting HTTP/2 flow-control window: stream %d reset after %.1f s"
            " without progress",
            host,
            port,
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

    H2Protocol._send_data = watched_send_data  # type: ignore[method-assign]
    H2Protocol._close_stream = unwatched_close_stream  # type: ignore[method-assign]
    H2Protocol.handle = handle_then_release_writers  # type: ignore[method-assign]
