"""Helpers for tests that use real sockets: an in-process Hypercorn and tiny clients."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import hypercorn.trio
import trio
import wsproto
import wsproto.events
from hypercorn.config import Config
from wsproto.frame_protocol import FrameProtocol

from ticker.app import create_app
from ticker.config import Settings

#: Upper bound for any single network step in a test; far above normal, so a
#: loaded 2-core machine does not flake, but a hang fails instead of stalling CI.
STEP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Server:
    host: str
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@asynccontextmanager
async def serve_ticker(settings: Settings | None = None) -> AsyncIterator[Server]:
    """Run the real app on Hypercorn's trio worker at 127.0.0.1, on a free port."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 2.0
    config.accesslog = None
    shutdown = trio.Event()
    app = create_app(Settings() if settings is None else settings)
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(
            partial(hypercorn.trio.serve, app, config, shutdown_trigger=shutdown.wait)
        )
        host, _, port = urls[0].removeprefix("http://").rpartition(":")
        yield Server(host, int(port))
        shutdown.set()


@dataclass
class HTTPResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


async def http_get(
    server: Server, path: str, headers: dict[str, str] | None = None
) -> HTTPResponse:
    """A minimal HTTP/1.1 GET that reads exactly Content-Length bytes of body."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {server.host}:{server.port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with trio.fail_after(STEP_TIMEOUT):
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some()
                if not chunk:
                    raise ConnectionError(f"connection closed in headers: {data!r}")
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            response_headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                response_headers[name.strip().lower()] = value.strip()
            length = int(response_headers.get("content-length", "0"))
            while len(body) < length:
                chunk = await stream.receive_some()
                if not chunk:
                    raise ConnectionError("connection closed in body")
                body += chunk
    return HTTPResponse(int(status_line.split()[1]), response_headers, body)


async def open_connections(server: Server) -> int:
    """What /healthz says about open websockets."""
    health = (await http_get(server, "/healthz")).json()
    assert isinstance(health, dict)
    connections = health["connections"]
    assert isinstance(connections, int)
    return connections


async def wait_for_connections(server: Server, expected: int) -> None:
    """Poll /healthz (bounded) until it reports ``expected`` open websockets."""
    with trio.fail_after(STEP_TIMEOUT):
        # Polling is the point: this is what an outside observer of /healthz sees.
        while await open_connections(server) != expected:  # noqa: ASYNC110
            await trio.sleep(0.02)


class RawWebsocket:
    """A bare wsproto client, for what polite clients never do (resets, huge frames)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)

    @classmethod
    async def connect(cls, server: Server) -> RawWebsocket:
        client, event = await cls.handshake(server)
        assert isinstance(event, wsproto.events.AcceptConnection), event
        return client

    @classmethod
    async def handshake(cls, server: Server) -> tuple[RawWebsocket, wsproto.events.Event]:
        """Open the websocket; the event says whether it was accepted or rejected."""
        stream = await trio.open_tcp_stream(server.host, server.port)
        client = cls(stream)
        await client._send(wsproto.events.Request(host=server.host, target="/ws"))
        return client, await client.next_event()

    @staticmethod
    def encode_text(text: str) -> bytes:
        """One masked client text frame, for writing many at once."""
        return bytes(FrameProtocol(client=True, extensions=[]).send_data(text, fin=True))

    async def _send(self, event: wsproto.events.Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def send_text(self, text: str) -> None:
        await self._send(wsproto.events.TextMessage(data=text))

    async def next_event(self) -> wsproto.events.Event:
        with trio.fail_after(STEP_TIMEOUT):
            while True:
                for event in self.ws.events():
                    return event
                data = await self.stream.receive_some()
                self.ws.receive_data(data or None)

    async def send_bytes(self, data: bytes) -> None:
        await self._send(wsproto.events.BytesMessage(data=data))

    async def receive_json(self) -> dict[str, object]:
        event = await self.next_event()
        assert isinstance(event, wsproto.events.TextMessage), event
        message = json.loads(event.data)
        assert isinstance(message, dict)
        return message

    async def abort(self) -> None:
        """Reset the TCP connection: no close frame, no FIN."""
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()
