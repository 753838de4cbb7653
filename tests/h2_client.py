"""A minimal websocket-over-HTTP/2 client (RFC 8441 extended CONNECT), for tests.

It speaks TLS with ALPN ``h2`` to a Hypercorn that terminates TLS itself, opens
one websocket on one stream, and does what browsers never do on purpose: stop
granting flow-control window while still reading the socket, reset the stream,
drop the connection. h2 does the HTTP/2 framing; wsproto's ``FrameProtocol``
does the (masked) websocket frames carried in the stream's DATA frames.

Flow control: h2 grants the peer window only when ``acknowledge_received_data``
is called, so this client calls it for every DATA frame while ``granting`` is
true, and never once it is false (it still reads, so TCP keeps flowing).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import trio
from wsproto.frame_protocol import FrameProtocol, Opcode

from .support import close_sockets

#: Upper bound for one network step, as tests/support.py's STEP_TIMEOUT.
STEP_TIMEOUT = 10.0


@dataclass(frozen=True)
class WebsocketClose:
    """The server's websocket close frame."""

    code: int
    reason: str


@dataclass(frozen=True)
class StreamReset:
    """The server reset the websocket's stream (RST_STREAM)."""

    error_code: int


@dataclass(frozen=True)
class StreamEnded:
    """The server ended the stream (END_STREAM) without resetting it."""


@dataclass(frozen=True)
class ConnectionEnded:
    """The connection is gone: EOF, a TCP reset or GOAWAY."""


#: What ``next_event`` returns: a whole text or binary message, or how it ended.
Event = str | bytes | WebsocketClose | StreamReset | StreamEnded | ConnectionEnded


def client_tls(ca: ssl.SSLContext | None = None, *, alpn: str = "h2") -> ssl.SSLContext:
    """A TLS client context offering only ``alpn``; ``ca`` trusts the test CA if given."""
    context = ca if ca is not None else ssl.create_default_context()
    context.set_alpn_protocols([alpn])
    return context


class H2Websocket:
    """One websocket on one HTTP/2 stream of its own TLS connection."""

    #: Every client made, so a test's teardown can close what it left open.
    made: ClassVar[list[H2Websocket]] = []

    def __init__(
        self,
        stream: trio.SSLStream[trio.SocketStream],
        sock: trio.socket.SocketType,
        connection: h2.connection.H2Connection,
    ) -> None:
        self.stream = stream
        self.sock = sock
        self.connection = connection
        self.stream_id = 0
        self.status = 0
        self.response_headers: list[tuple[str, str]] = []
        #: While true, every DATA frame received is acknowledged (window granted).
        self.granting = True
        self.frames = FrameProtocol(client=True, extensions=[])
        self.events: deque[Event] = deque()
        self.ended = False  # the stream or the connection is over
        self.connection_ended = False
        self._settings_received = False
        self._message: list[str | bytes] = []
        H2Websocket.made.append(self)

    # --- opening -------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        tls: ssl.SSLContext,
        *,
        path: str = "/ws",
        version: str = "13",
        window: int | None = None,
        receive_buffer: int | None = None,
    ) -> H2Websocket:
        """Connect, then send the extended CONNECT; ``status`` says how it was answered.

        ``window`` is the stream window this client announces (SETTINGS_INITIAL_WINDOW_SIZE):
        small, and a client that stops granting is out of window quickly.
        ``version`` is the sec-websocket-version header (13 is the only valid one).
        A small ``receive_buffer`` (bytes) makes a client that stops reading the
        socket fill its TCP window quickly.
        """
        with trio.fail_after(STEP_TIMEOUT):
            sock = trio.socket.socket()
            if receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            await sock.connect((host, port))
            stream = trio.SSLStream(trio.SocketStream(sock), tls, server_hostname=host)
            await stream.do_handshake()
            if stream.selected_alpn_protocol() != "h2":
                sock.close()
                raise ConnectionError("the server did not choose h2 via ALPN")
            connection = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
            )
            if window is not None:
                connection.local_settings = h2.settings.Settings(
                    client=True,
                    initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window},
                )
            client = cls(stream, sock, connection)
            connection.initiate_connection()
            await client._flush()
            # RFC 8441: no extended CONNECT before the server's SETTINGS enable it.
            while not client._settings_received:
                await client.receive_more()
            if not connection.remote_settings.enable_connect_protocol:
                raise ConnectionError("the server did not send SETTINGS_ENABLE_CONNECT_PROTOCOL")
            client.stream_id = connection.get_next_available_stream_id()
            connection.send_headers(
                client.stream_id,
                [
                    (":method", "CONNECT"),
                    (":protocol", "websocket"),
                    (":scheme", "https"),
                    (":path", path),
                    (":authority", f"{host}:{port}"),
                    ("sec-websocket-version", version),
                ],
            )
            await client._flush()
            while not client.status and not client.ended:
                await client.receive_more()
        return client

    # --- sending -------------------------------------------------------------

    @staticmethod
    def encode_text(text: str) -> bytes:
        """One masked text frame, for sending many at once with ``send_raw``."""
        return bytes(FrameProtocol(client=True, extensions=[]).send_data(text, fin=True))

    async def send_text(self, text: str) -> None:
        """One masked text frame."""
        await self.send_raw(bytes(self.frames.send_data(text, fin=True)))

    async def send_close(self, code: int = 1000) -> None:
        await self.send_raw(bytes(self.frames.close(code)))

    async def send_raw(self, data: bytes) -> None:
        """``data`` (websocket frames, whole or in part) as DATA frames, within our window."""
        with trio.fail_after(STEP_TIMEOUT):
            while data:
                room = min(
                    self.connection.local_flow_control_window(self.stream_id),
                    self.connection.max_outbound_frame_size,
                )
                if room <= 0:
                    await self.receive_more()  # wait for the server's WINDOW_UPDATE
                    continue
                self.connection.send_data(self.stream_id, data[:room])
                data = data[room:]
                await self._flush()

    async def reset(self, error_code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """RST_STREAM: the websocket is gone, the connection stays."""
        self.connection.reset_stream(self.stream_id, error_code)
        await self._flush()

    async def abort(self) -> None:
        """Reset the TCP connection: no GOAWAY, no TLS close_notify, no FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    async def aclose(self) -> None:
        """Close the TLS connection (close_notify then FIN), without a GOAWAY."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.aclose()
        self.sock.close()  # aclose leaves it open if it failed half-way

    async def grant_connection_window(self, increment: int) -> None:
        """A WINDOW_UPDATE for the whole connection (its window starts at 65,535 bytes)."""
        self.connection.increment_flow_control_window(increment)
        await self._flush()

    async def grant_stream_window(self, increment: int) -> None:
        """A WINDOW_UPDATE of ``increment`` bytes for our stream, and one for the connection."""
        self.connection.increment_flow_control_window(increment, stream_id=self.stream_id)
        self.connection.increment_flow_control_window(increment)
        await self._flush()

    def stop_granting(self) -> None:
        """From now on, no WINDOW_UPDATE: the server's window for us only shrinks."""
        self.granting = False

    @property
    def window(self) -> int:
        """What the server may still send on our stream (our view of its window)."""
        return self.connection.remote_flow_control_window(self.stream_id)

    @classmethod
    def close_all(cls) -> None:
        """Synchronous teardown of every client's socket (a test may have left them open)."""
        close_sockets(client.sock for client in cls.made)
        cls.made.clear()

    # --- receiving -----------------------------------------------------------

    async def next_event(self) -> Event:
        """The next whole message, or how the websocket ended (repeated once it has)."""
        with trio.fail_after(STEP_TIMEOUT):
            return await self._next()

    async def _next(self) -> Event:
        while not self.events:
            if self.ended:
                return ConnectionEnded() if self.connection_ended else StreamEnded()
            await self.receive_more()
        return self.events.popleft()

    async def receive_json(self) -> dict[str, object]:
        event = await self.next_event()
        assert isinstance(event, str), event
        message = json.loads(event)
        assert isinstance(message, dict)
        return message

    async def close_code(self) -> int:
        """Skip messages until the server's close frame; its code."""
        while True:
            event = await self.next_event()
            if isinstance(event, WebsocketClose):
                return event.code
            assert isinstance(event, str | bytes), f"no close frame: {event}"

    async def until_ended(self) -> Event:
        """Read (granting or not, as set) until the stream or connection ends; how it did.

        Unbounded: the caller puts it under ``trio.fail_after``.
        """
        while True:
            event = await self._next()
            if not isinstance(event, str | bytes | WebsocketClose):
                return event

    async def _flush(self) -> None:
        data = self.connection.data_to_send()
        if data:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._end(connection=True)

    def _end(self, *, connection: bool) -> None:
        if not self.ended:
            self.ended = True
            self.connection_ended = connection
            if connection:
                self.events.append(ConnectionEnded())
        elif connection:
            self.connection_ended = True

    async def receive_more(self) -> None:
        """One read from the socket; h2's events become ours (``events``, ``ended``)."""
        if self.connection_ended:
            raise ConnectionError("the connection is gone")
        try:
            data = await self.stream.receive_some()
        except trio.BrokenResourceError:
            data = b""
        if not data:
            self._end(connection=True)
            return
        for event in self.connection.receive_data(data):
            self._handle(event)
        await self._flush()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self._settings_received = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._end(connection=True)
        elif getattr(event, "stream_id", None) != self.stream_id or self.stream_id == 0:
            return
        elif isinstance(event, h2.events.ResponseReceived):
            headers = [(str(name), str(value)) for name, value in event.headers]
            self.response_headers = headers
            self.status = int(dict(headers)[":status"])
        elif isinstance(event, h2.events.DataReceived):
            if self.granting:
                self.connection.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
            self._websocket_data(event.data)
        elif isinstance(event, h2.events.StreamReset):
            self.events.append(StreamReset(int(event.error_code)))
            self._end(connection=False)
        elif isinstance(event, h2.events.StreamEnded):
            self.events.append(StreamEnded())
            self._end(connection=False)

    def _websocket_data(self, data: bytes) -> None:
        self.frames.receive_bytes(data)
        for frame in self.frames.received_frames():
            payload = frame.payload
            if frame.opcode is Opcode.CLOSE:
                assert isinstance(payload, tuple)  # (code, reason), parsed by wsproto
                self.events.append(WebsocketClose(int(payload[0]), payload[1]))
            elif frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION):
                assert not isinstance(payload, tuple)
                self._message.append(payload)
                if frame.message_finished:
                    parts, self._message = self._message, []
                    if isinstance(parts[0], str):
                        self.events.append("".join(p for p in parts if isinstance(p, str)))
                    else:
                        self.events.append(b"".join(p for p in parts if isinstance(p, bytes)))
