"""Fix 8: keepalive pings whose pongs are checked.

Upstream problem: ``--websocket-ping-interval`` pings but ignores pongs, so a
dead peer is noticed only when a write fails, hours later for a long
interval. Report: docs/upstream/websocket-pongs-ignored.md
Tests: tests/integration/test_hostile.py::test_keepalive_closes_a_silent_peer_with_1011
       tests/integration/test_hostile.py::test_keepalive_keeps_a_client_that_answers

Fix: ping every ``ping_interval``; without a pong (or any other frame) within
``ping_timeout`` the connection is closed with 1011. One task per server
does it for all connections (``Keepalive``); the registry starts it when the
app registers a policy with pings on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from hypercorn.protocol.ws_stream import WSStream
from wsproto.events import Ping
from wsproto.frame_protocol import CloseReason

from .policy import WebsocketPolicy
from .streams import Conversation, client, server_close

log = logging.getLogger("ticker")

#: The payload of keepalive pings; any pong counts as an answer (RFC 6455 §5.5.3).
PING_PAYLOAD: Final = b"ticker"


@dataclass(eq=False)
class Keepalive:
    """One server's keepalive: a single task pings all its websockets.

    A task per connection would cost ~4 KiB each (BENCHMARKS.md); one scan of
    a dict per ``_tick`` costs well under a microsecond per connection.
    """

    policy: WebsocketPolicy
    streams: dict[WSStream, Conversation] = field(default_factory=dict)

    @property
    def _tick(self) -> float:
        """How often the task looks: a quarter of the shorter of interval and timeout
        (not more than 20 times a second, whatever the settings: each look is a scan)."""
        return max(0.05, min(1.0, self.policy.ping_interval / 4, self.policy.ping_timeout / 4))

    def add(self, stream: WSStream, talk: Conversation) -> None:
        talk.next_ping = trio.current_time() + self.policy.ping_interval
        self.streams[stream] = talk

    def discard(self, stream: WSStream) -> None:
        self.streams.pop(stream, None)

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
                        _spawn(stream, stream._send_wsproto_event, Ping(PING_PAYLOAD))
                # A client read slowly (fix 9) may have its pong queued behind
                # its own frames; frames arriving prove it alive just as well.
                elif talk.pong or talk.frames != talk.frames_at_ping:
                    talk.next_ping = talk.pinged_at + policy.ping_interval
                    talk.pinged_at = None
                elif now >= talk.pinged_at + policy.ping_timeout:
                    del self.streams[stream]
                    log.warning("%s sent no pong within %g s", client(stream), policy.ping_timeout)
                    timeout = CloseReason.INTERNAL_ERROR  # 1011
                    _spawn(stream, server_close, stream, timeout, "keepalive ping timeout")


def _spawn(stream: WSStream, function: Callable[..., Awaitable[object]], *args: Any) -> None:
    """Start ``function`` in the stream's connection, unless that has ended meanwhile.

    The keepalive task serves the whole server: an error here would end it.
    """
    # No nursery any more (AttributeError), or a closed one (RuntimeError).
    with contextlib.suppress(AttributeError, RuntimeError):
        stream.task_group.spawn(function, *args)
