"""Helpers for tests that use real sockets: an in-process Hypercorn and tiny clients."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

import hypercorn.trio
import trio
import trio.lowlevel
import wsproto
import wsproto.events
from hypercorn.config import Config
from wsproto.extensions import Extension
from wsproto.frame_protocol import FrameProtocol, Opcode

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
async def serve_ticker(
    settings: Settings | None = None,
    *,
    keep_alive_timeout: float = 5.0,
    certificate: tuple[Path, Path] | None = None,
) -> AsyncIterator[Server]:
    """Run the real app on Hypercorn's trio worker at 127.0.0.1, on a free port.

    ``certificate`` (certificate chain, key files) serves TLS instead.
    """
    config = Config()
    config.bind = ["127.0.0.1:0"]
    if certificate is not None:
        config.certfile, config.keyfile = (str(path) for path in certificate)
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = keep_alive_timeout
    config.accesslog = None
    shutdown = trio.Event()
    app = create_app(Settings() if settings is None else settings)
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(
            partial(hypercorn.trio.serve, app, config, shutdown_trigger=shutdown.wait)
        )
        host, _, port = urls[0].partition("://")[2].rpartition(":")
        yield Server(host, int(port))
        shutdown.set()


#: The README's server command, run by this interpreter.
HYPERCORN = [sys.executable, "-m", "hypercorn", "ticker.app:app", "--worker-class", "trio"]


@dataclass
class ServerProcess:
    """The README's command running in a subprocess; ``log`` collects its stderr."""

    server: Server
    process: trio.Process
    log: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.log)


@asynccontextmanager
async def run_server_command(
    cwd: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> AsyncIterator[ServerProcess]:
    """``hypercorn ticker.app:app --worker-class trio`` on a free port, from ``cwd``.

    In its own session (process group), so a test can send a terminal's Ctrl-C.
    """
    command = [*HYPERCORN, "--bind", "127.0.0.1:0", *args]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                command,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                stderr=subprocess.PIPE,
                check=False,
                start_new_session=True,
            )
        )
        assert process.stderr is not None
        handle = ServerProcess(Server("127.0.0.1", 0), process)
        pending = b""
        with trio.fail_after(STEP_TIMEOUT * 3):
            while not (found := re.search(r"Running on http://127\.0\.0\.1:(\d+)", handle.text)):
                chunk = await process.stderr.receive_some()
                if not chunk:
                    raise RuntimeError(f"server exited before listening: {handle.text}")
                pending += chunk
                *lines, partial_line = pending.split(b"\n")
                handle.log.extend(line.decode() + "\n" for line in lines)
                pending = partial_line
        handle.server = Server("127.0.0.1", int(found.group(1)))
        nursery.start_soon(collect_lines, process.stderr, handle.log)
        try:
            yield handle
        finally:
            await stop_server_command(process)


async def stop_server_command(process: trio.Process) -> None:
    """SIGTERM, as an operator would; SIGKILL to the whole group if that does not end it."""
    if process.returncode is None:
        process.terminate()
    with trio.move_on_after(STEP_TIMEOUT):
        await process.wait()
        return
    os.killpg(process.pid, signal.SIGKILL)  # the worker too: it holds our stderr pipe
    await process.wait()


async def collect_lines(stream: trio.abc.ReceiveStream, log: list[str]) -> None:
    """Append ``stream``'s lines to ``log`` as they arrive, until it ends."""
    pending = b""
    while chunk := await stream.receive_some():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        log.extend(line.decode() + "\n" for line in lines)
    if pending:
        log.append(pending.decode())


def metric_values(scrape: str) -> dict[str, float]:
    """``name{labels}`` -> value, for the ticker_ samples of a /metrics text."""
    values = {}
    for line in scrape.splitlines():
        if line.startswith("ticker_"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


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
    """A minimal HTTP/1.1 GET on a fresh connection."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {server.host}:{server.port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with trio.fail_after(STEP_TIMEOUT):
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(request)
            return await read_response(stream)


async def read_response(stream: trio.abc.ReceiveStream) -> HTTPResponse:
    """One HTTP/1.1 response: its head, then exactly Content-Length bytes of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        if not chunk:
            raise ConnectionError(f"connection closed in headers: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = await stream.receive_some()
        if not chunk:
            raise ConnectionError("connection closed in body")
        body += chunk
    return HTTPResponse(int(status_line.split()[1]), headers, body)


async def handshake_headers(server: Server, headers: dict[str, str]) -> dict[str, str]:
    """The response headers to a websocket handshake sent with exactly ``headers``."""
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: {server.host}:{server.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    with trio.fail_after(STEP_TIMEOUT):
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
            response = await read_response(stream)
    assert response.status == 101
    return response.headers


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


def close_sockets(sockets: Iterable[trio.socket.SocketType]) -> None:
    """Synchronous teardown of test clients' sockets: detach from trio (whose close
    needs a running loop), then close each descriptor that was still open."""
    for sock in sockets:
        descriptor = sock.detach()
        if descriptor >= 0:
            os.close(descriptor)


class RawWebsocket:
    """A bare wsproto client, for what polite clients never do (resets, huge frames)."""

    #: Every client made by a test, so the test's teardown can close what it left open.
    made: ClassVar[list[RawWebsocket]] = []

    def __init__(self, stream: trio.abc.Stream, sock: trio.socket.SocketType) -> None:
        self.stream = stream  # the socket's stream, or TLS over it
        self.sock = sock
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        RawWebsocket.made.append(self)

    @classmethod
    def close_all(cls) -> None:
        close_sockets(client.sock for client in cls.made)
        cls.made.clear()

    @classmethod
    async def connect(
        cls,
        server: Server,
        receive_buffer: int | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        source: str | None = None,
        extensions: list[Extension] | None = None,
        headers: dict[str, str] | None = None,
    ) -> RawWebsocket:
        client, event = await cls.handshake(
            server, receive_buffer, tls=tls, source=source, extensions=extensions, headers=headers
        )
        assert isinstance(event, wsproto.events.AcceptConnection), event
        return client

    @classmethod
    async def handshake(
        cls,
        server: Server,
        receive_buffer: int | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        source: str | None = None,
        extensions: list[Extension] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[RawWebsocket, wsproto.events.Event]:
        """Open the websocket; the event says whether it was accepted or rejected.

        A small ``receive_buffer`` (bytes) makes a client that stops reading
        fill its TCP window quickly. ``tls`` speaks wss://; ``source`` is the
        local address to connect from (any of 127.0.0.0/8 works on loopback).
        ``extensions`` are offered (wsproto's objects); ``headers`` are added
        as they are, e.g. a browser's exact ``Sec-WebSocket-Extensions`` or ``Origin``.
        """
        sock = trio.socket.socket()
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        if source is not None:
            await sock.bind((source, 0))
        await sock.connect((server.host, server.port))
        stream: trio.abc.Stream = trio.SocketStream(sock)
        if tls is not None:
            stream = trio.SSLStream(stream, tls, server_hostname=server.host)
        client = cls(stream, sock)
        extra = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
        request = wsproto.events.Request(
            host=server.host, target="/ws", extensions=extensions or [], extra_headers=extra
        )
        await client._send(request)
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
                self.ws.receive_data(bytes(data) or None)

    async def send_bytes(self, data: bytes) -> None:
        await self._send(wsproto.events.BytesMessage(data=data))

    async def send_raw(self, data: bytes) -> None:
        """Bytes on the wire as they are: frames built by hand."""
        await self.stream.send_all(data)

    async def close_code(self) -> int:
        """Skip messages until the server's close frame; its code."""
        while True:
            event = await self.next_event()
            if isinstance(event, wsproto.events.CloseConnection):
                return event.code

    async def receive_json(self) -> dict[str, object]:
        event = await self.next_event()
        assert isinstance(event, wsproto.events.TextMessage), event
        message = json.loads(event.data)
        assert isinstance(message, dict)
        return message

    async def abort(self) -> None:
        """Reset the TCP connection: no close frame, no FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()


async def ticking_client(server: Server, interval: str = "0.01") -> RawWebsocket:
    client = await RawWebsocket.connect(server)
    assert (await client.receive_json())["type"] == "hello"
    await client.send_text(interval)
    assert (await client.receive_json())["type"] == "started"
    return client


def raw_frame(opcode: Opcode, payload: bytes, fin: bool = True, *, rsv1: bool = False) -> bytes:
    """A masked client frame built by hand, so it can carry what wsproto would refuse.

    ``rsv1`` marks the payload as compressed (RFC 7692).
    """
    mask = os.urandom(4)
    header = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode.value])
    length = len(payload)
    if length < 126:
        header += bytes([0x80 | length])
    elif length < 2**16:
        header += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header += bytes([0x80 | 127]) + length.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def worker_pid(parent: int) -> int:
    """Hypercorn runs the app in a spawned child process; its pid."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    workers = [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        and b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()
    ]
    assert len(workers) == 1, children
    return workers[0]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")  # pragma: no cover


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) process ``pid`` has used so far."""
    # Fields after the command name, which may itself hold spaces and ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_until_idle(pid: int, window: float = 0.3, share: float = 0.1) -> None:
    """Wait (bounded) until process ``pid`` has done what it was given: under ``share``
    of one core over ``window`` seconds. A fixed sleep would be too short on a busy
    machine, and the work would overlap what the test measures next."""
    with trio.fail_after(STEP_TIMEOUT * 3):
        while True:
            before = cpu_seconds(pid)
            await trio.sleep(window)
            if cpu_seconds(pid) - before < share * window:
                return


def count_tasks() -> int:
    """Every Trio task alive in this run: a connection that leaves one behind leaks."""

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for n in task.child_nurseries for child in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)
