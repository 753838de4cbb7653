"""Fix 1: a disconnect must never wait for the app to drain its queue.

Upstream problem: Hypercorn hands events to the app through a bounded memory
channel (``max_app_queue_size``, 10). When a write fails because the peer
reset the connection, ``WSStream.handle(StreamClosed)`` puts
``websocket.disconnect`` into that channel *from the task that was writing*,
which is the app's own task. If the client had sent frames faster than the
app answered them, the channel is full, the only task that drains it is the
one now waiting to put into it, and the connection hangs forever: its
handler never ends, its socket is never closed.
Report: docs/upstream/trio-disconnect-into-full-queue.md
Tests: tests/integration/test_server.py::
           test_reset_during_a_burst_of_commands_leaves_no_connection_behind
       tests/integration/test_http2.py::
           test_reset_during_a_burst_of_commands_leaves_no_connection_behind_over_http2

Fix: deliver a disconnect that does not fit at once from a helper task in
the connection's own task group, which ends when the app ends.

Upstream problem, the other way round: when the app ends while the channel
is full (it closed the websocket with messages still queued), the reader
waits in ``send`` for ever, so the connection's task group never exits and
its memory stays (~37 KiB per connection, found by review).
Test: tests/integration/test_hostile.py::
          test_an_app_that_ends_with_its_queue_full_leaves_nothing_behind

Fix: when the app ends, close the channel: the waiting reader wakes, and
later events are dropped, as nobody is left to receive them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from hypercorn.config import Config
from hypercorn.trio.task_group import TaskGroup
from hypercorn.typing import AppWrapper, ASGIReceiveEvent, ASGISendEvent, Scope

from ._patching import Patch

_DISCONNECTS: Final = frozenset({"websocket.disconnect", "http.disconnect"})


def install(patch: Patch) -> None:
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

    patch(TaskGroup, "spawn_app", patched_spawn_app)
