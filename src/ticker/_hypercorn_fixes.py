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
from functools import partial
from typing import Any, Final

import hypercorn.trio
import hypercorn.trio.run
import trio
from hypercorn.config import Config, Sockets
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.middleware import ProxyFixMiddleware
from hypercorn.protocol.events import Request, StreamClosed
from hypercorn.protocol.ws_stream import FrameTooLargeError, WebsocketBuffer, WSStream
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import EventWrapper, WorkerContext
from hypercorn.typing import AppWrapper, ASGIFramework, ASGIReceiveEvent, ASGISendEvent, Scope

_DISCONNECTS: Final = frozenset({"websocket.disconnect", "http.disconnect"})

#: Once shutdown has begun, a write gets at most this long (seconds) before its
#: connection is dropped, so a stalled reader cannot hold the process up.
SHUTDOWN_SEND_GRACE: Final = 1.0

log = logging.getLogger("ticker")

_applied = False
_send_timeout = 5.0  # seconds; set by apply()


def apply(send_timeout: float) -> None:
    """Install every fix once per process; ``send_timeout`` is the latest app's setting."""
    global _applied, _send_timeout
    _send_timeout = send_timeout
    if _applied:
        return
    _applied = True
    _deliver_disconnects_without_blocking()
    _bound_writes_and_protect_connection_bookkeeping()
    _tell_the_app_when_shutdown_begins()
    _close_connections_after_a_refused_handshake()


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

        async def app_then_drop_pending(*args: Any) -> None:
            try:
                await app(*args)
            finally:
                for delivery in pending:  # nobody is left to receive them
                    delivery.cancel()

        put = await spawn_app(self, app_then_drop_pending, config, scope, send)  # type: ignore[arg-type]
        channel: trio.MemorySendChannel[ASGIReceiveEvent] = put.__self__  # type: ignore[attr-defined]
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
            if event["type"] not in _DISCONNECTS:
                await put(event)
                return
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                nursery.start_soon(deliver_later, event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the app has already finished

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
        timeout = SHUTDOWN_SEND_GRACE if terminated.is_set() else _send_timeout
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
        # Also: let Hypercorn's reader enforce the app's message limit, so an
        # oversized message is refused (1009) as it arrives instead of being
        # buffered up to Hypercorn's own 16 MiB default first.
        limit = getattr(framework, "max_message_size", None)
        if isinstance(limit, int):
            config.websocket_max_message_size = min(config.websocket_max_message_size, limit)
            _warn_when_a_message_is_too_big()
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
            await worker_serve(
                app,
                config,
                sockets=sockets,
                shutdown_trigger=shutdown_trigger,
                task_status=task_status,
            )

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
# Test: tests/integration/test_reliability.py::
#     test_a_refused_websocket_handshake_closes_its_connection


def _close_connections_after_a_refused_handshake() -> None:
    handle = WSStream.handle

    async def patched_handle(self: WSStream, event: Any) -> None:
        was_closed = self.closed
        await handle(self, event)
        refused = isinstance(event, Request) and self.closed and self.app_put is None
        if refused and not was_closed:
            await self.send(StreamClosed(stream_id=self.stream_id))

    WSStream.handle = patched_handle  # type: ignore[method-assign]


def _warn_when_a_message_is_too_big() -> None:
    """Hypercorn closes with 1009 silently; the operator should hear about it."""
    extend = WebsocketBuffer.extend
    if getattr(extend, "_ticker_warns", False):
        return

    def warning_extend(self: WebsocketBuffer, event: Any) -> None:
        try:
            extend(self, event)
        except FrameTooLargeError:
            log.warning(
                "a client sent a message over %d characters: closed with 1009", self.max_length
            )
            raise

    warning_extend._ticker_warns = True  # type: ignore[attr-defined]
    WebsocketBuffer.extend = warning_extend  # type: ignore[method-assign]


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
