"""Fixes for bugs in Hypercorn's trio worker (checked on 0.18) that an app cannot avoid.

Everything here patches Hypercorn in place, so it lives in this one module,
each fix names its upstream problem, and each has a test that fails without
it. ``apply()`` is idempotent; ``create_app()`` calls it. Delete a fix when
the Hypercorn version that ships the upstream repair is the minimum we require.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from hypercorn.config import Config
from hypercorn.trio.task_group import TaskGroup
from hypercorn.typing import AppWrapper, ASGIReceiveEvent, ASGISendEvent, Scope

_DISCONNECTS: Final = frozenset({"websocket.disconnect", "http.disconnect"})

_applied = False


def apply() -> None:
    """Install every fix once per process."""
    global _applied
    if _applied:
        return
    _applied = True
    _deliver_disconnects_without_blocking()


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
