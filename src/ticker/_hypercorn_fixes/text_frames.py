"""Not a fix but a lever: the app's text frames as ready bytes, straight to the connection's writer.

Every tick used to pass five layers: Quart's ``websocket.send`` (a blinker
signal, its ASGI send), Hypercorn's ``WSStream.app_send`` (state checks),
wsproto (a ``Message`` event, its frame serialisation), ``H11Protocol.
stream_send`` and finally ``TCPServer.protocol_send``. Without compression a
server's text frame is fixed bytes: no mask (RFC 6455 §5.1), a header, the
UTF-8 payload. So the server offers the app, in each websocket scope's
``extensions`` under ``EXTENSION``, a ``send`` that makes those bytes and
hands them on as the very ``Data`` event wsproto's path ends in: the same
writer, so the same per-connection order (its lock), the same stalled-reader
deadline (fix 2) and the same shutdown. When the shortcut does not apply
(compression agreed, a close begun, no registered policy) it takes the full
path, so the app may use it for every text frame.
Tests: tests/unit/test_text_frames.py::test_frames_are_the_bytes_wsproto_writes
       tests/integration/test_boundary.py::test_ticks_take_the_text_frame_shortcut_unless_compressed
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Final

from hypercorn.protocol.events import Data
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from wsproto.connection import ConnectionState

#: The websocket scope's ``extensions`` key: ``{"send": async (text) -> None}``.
EXTENSION: Final = "ticker.send_text"

_FIN_TEXT: Final = 0x81  # FIN, opcode 1 (text)


def text_frame(text: str) -> bytes:
    """One unmasked, unfragmented server text frame (RFC 6455 §5.2)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", _FIN_TEXT, 126, size) + payload
    return struct.pack("!BBQ", _FIN_TEXT, 127, size) + payload


def sender_for(stream: WSStream) -> Callable[[str], Awaitable[None]]:
    """The shortcut ``send(text)`` for ``stream``'s app."""

    async def send_text(text: str) -> None:
        if (
            getattr(stream, "_ticker_plain", False)  # accepted with a policy, no extension
            and stream.state is ASGIWebsocketState.CONNECTED
            and not stream.closed
            and stream.connection.state is ConnectionState.OPEN
        ):
            await stream.send(Data(stream_id=stream.stream_id, data=text_frame(text)))
        else:
            await stream.app_send({"type": "websocket.send", "bytes": None, "text": text})

    return send_text
