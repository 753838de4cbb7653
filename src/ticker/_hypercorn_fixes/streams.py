"""What one websocket stream gains from fixes 6-9, and the close the server starts (fix 7)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

import trio
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.ws_stream import WSStream
from wsproto.events import CloseConnection
from wsproto.frame_protocol import CloseReason

from ..addresses import format_peer
from ..pacing import FrameBudget
from .policy import WebsocketPolicy

log = logging.getLogger("ticker")

#: Seconds a connection whose frames no longer parse gets for reading our close
#: frame before TCP is closed (RFC 6455 §7.1.7 allows closing at once).
FAILED_CLOSE_WAIT: Final = 1.0


@dataclass(eq=False)
class Conversation:
    """One websocket stream's state for fixes 6-9, kept on the stream as ``_ticker``."""

    policy: WebsocketPolicy
    budget: FrameBudget
    frames: int = 0  # read so far: also a sign of life while a pong is awaited
    #: Keepalive (fix 8): when the next ping is due; when the one in flight
    #: went out (None: none is), with the frame count then; a pong seen.
    next_ping: float = 0.0
    pinged_at: float | None = None
    frames_at_ping: int = 0
    pong: bool = False
    #: The close deadline's scope, once the server has sent its close frame.
    closing: trio.CancelScope | None = None
    #: Seconds the close deadline waits: ``close_timeout``, or less when the
    #: client's answer could never be read (its frames no longer parse).
    close_wait: float | None = None


def conversation(stream: WSStream) -> Conversation | None:
    """The stream's ``Conversation``; None on a server whose app registered no policy."""
    return getattr(stream, "_ticker", None)


def client(stream: WSStream) -> str:
    return format_peer(stream.client)


def refusal(event: CloseConnection, policy: WebsocketPolicy) -> str:
    """The reason to send for a frame wsproto could not parse (its own say "error in …")."""
    if event.code == CloseReason.MESSAGE_TOO_BIG:
        return f"message too big: over {policy.max_message_size} bytes inflated"
    if event.code == CloseReason.INVALID_FRAME_PAYLOAD_DATA:
        return "invalid frame payload: not UTF-8, or not deflate"
    return f"protocol error: {event.reason or 'invalid frame'}"


async def server_close(stream: WSStream, code: int, reason: str) -> None:
    """Close with ``code`` and tell the app at once, so its handler ends and frees its slot."""
    code = int(code)  # a plain int in the ASGI event, whatever enum it came as
    log.warning("%s: %s: closed with %d", client(stream), reason, code)
    await stream._send_wsproto_event(CloseConnection(code=code, reason=reason))
    if stream.app_put is not None:  # fix 1 delivers it without waiting
        await stream.app_put({"type": "websocket.disconnect", "code": code, "reason": reason})


async def close_deadline(stream: WSStream, talk: Conversation, scope: trio.CancelScope) -> None:
    """End the TCP connection if the client has not answered our close frame in time."""
    timeout = talk.policy.close_timeout if talk.close_wait is None else talk.close_wait
    with scope:
        await trio.sleep(timeout)
    if scope.cancelled_caught:
        return  # the client answered, or the connection ended
    log.warning("%s did not answer the close frame within %g s: dropped", client(stream), timeout)
    with trio.CancelScope(shield=True):
        await stream.send(StreamClosed(stream_id=stream.stream_id))
