"""Reproduce, against STOCK Hypercorn, the bugs that ticker's Hypercorn fixes patch.

Each scenario serves a tiny ASGI app with ``hypercorn.trio.serve`` in this
process on 127.0.0.1 (the ``workers-*`` ones start ``python -m hypercorn``
instead), attacks it with a raw-socket client (HTTP/1.1 by hand, HTTP/2 over
TLS with h2), and prints one JSON line:
``{"scenario": ..., "bug_present": true/false, "evidence": {...}}``.

    python tools/hypercorn_repro.py disconnect-into-full-queue     # fix 1
    python tools/hypercorn_repro.py full-queue-outlives-app        # fix 1
    python tools/hypercorn_repro.py stalled-reader-pins-writer     # fixes 2, 10
    python tools/hypercorn_repro.py h2-window-never-granted        # fixes 2, 10
    python tools/hypercorn_repro.py bookkeeping-cancelled          # fix 2
    python tools/hypercorn_repro.py shutdown-not-told              # fix 3
    python tools/hypercorn_repro.py workers-sigterm-main           # fix 3
    python tools/hypercorn_repro.py workers-sigterm-group          # fix 3
    python tools/hypercorn_repro.py refused-handshake-stays-open   # fix 4
    python tools/hypercorn_repro.py h2-refused-stream-stays-busy   # fix 4
    python tools/hypercorn_repro.py h2-data-after-close            # fix 4
    python tools/hypercorn_repro.py proxy-fix-websocket-scheme     # fix 5
    python tools/hypercorn_repro.py deflate-unbounded              # fix 6
    python tools/hypercorn_repro.py close-never-ends               # fix 7
    python tools/hypercorn_repro.py pongs-ignored                  # fix 8
    python tools/hypercorn_repro.py frames-without-checkpoint      # fix 9
    python tools/hypercorn_repro.py h2-writers-stuck-after-close   # fix 10
    python tools/hypercorn_repro.py worker-exit-status-lost        # no fix (report only)
    python tools/hypercorn_repro.py all                            # each in a fresh process

docs/upstream/README.md maps every scenario to its report and fix. It imports
nothing from ticker (whose import would patch Hypercorn): only the standard
library, trio, wsproto, h11, h2, hypercorn, and trustme for a throwaway TLS
certificate. ``bug_present: false`` means the Hypercorn it imported no longer
has the bug: see docs/upstream/README.md. Run with ``PYTHONPATH`` pointing at a
patched copy of Hypercorn to check a report's patch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from typing import Any, Final

import h2.config
import h2.connection
import h2.events
import h2.settings
import hypercorn.trio
import trio
import trustme
from hypercorn.config import Config
from hypercorn.middleware import ProxyFixMiddleware
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from wsproto.frame_protocol import Frame, FrameProtocol, Opcode

#: Upper bound for any single wait; a hang fails the scenario instead of stalling.
STEP: Final = 10.0
#: How long the unanswered close and the unanswered pings are watched (seconds).
WATCH: Final = 3.0
MAX_MESSAGE_SIZE: Final = 4096
CHROMIUM_OFFER: Final = "permessage-deflate; client_max_window_bits"
BOMB_SIZE: Final = 64 * 1024 * 1024
FLOOD_FRAMES: Final = 20_000
MiB: Final = 1024 * 1024
#: Hypercorn's default ``max_app_queue_size``: events queued for an app that is not reading.
APP_QUEUE: Final = 10
#: The settings that reports' patches add, which stock Hypercorn ignores (seconds).
WRITE_TIMEOUT: Final = 1.0
CLOSE_TIMEOUT: Final = 1.0
PING_TIMEOUT: Final = 0.5
GRACEFUL_TIMEOUT: Final = 1.0
KEEP_ALIVE_TIMEOUT: Final = 1.0
#: A worker process's graceful_timeout, long enough to see it killed half-way.
WORKER_GRACEFUL_TIMEOUT: Final = 3


# --------------------------------------------------------------------------- the app


@dataclass
class AppRecord:
    """What the bare app saw, with times from ``trio.current_time()``."""

    accepted: trio.Event = field(default_factory=trio.Event)
    messages: int = 0
    message: trio.Event = field(default_factory=trio.Event)
    disconnected: trio.Event = field(default_factory=trio.Event)
    disconnect_code: int | None = None
    disconnect_at: float | None = None


def make_app(
    record: AppRecord,
) -> Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]:
    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
        record.accepted.set()
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                record.disconnect_code = event["code"]
                record.disconnect_at = trio.current_time()
                record.disconnected.set()
                return
            if event["type"] == "websocket.receive":
                record.messages += 1
                record.message.set()

    return app


def stock_config(**settings: Any) -> Config:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0
    for name, value in settings.items():
        setattr(config, name, value)
    return config


# --------------------------------------------------------------------------- the client


async def open_tcp(port: int, receive_buffer: int | None = None) -> trio.SocketStream:
    sock = trio.socket.socket()
    if receive_buffer is not None:  # before connecting, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


def abort(sock: trio.socket.SocketType) -> None:
    """Close with a TCP reset, as a crashed or unplugged client's kernel would."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def frame(opcode: Opcode, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A masked client frame, built by hand so it can carry what wsproto would refuse."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode.value])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 2**16:
        head += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + length.to_bytes(8, "big")
    keystream = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(
        length, "big"
    )
    return head + mask + masked


def close_frame(code: int) -> bytes:
    return frame(Opcode.CLOSE, code.to_bytes(2, "big"))


@dataclass
class Client:
    """A raw websocket client: hand-made frames out, wsproto's frame parser in."""

    stream: trio.SocketStream
    parser: FrameProtocol = field(default_factory=lambda: FrameProtocol(True, []))
    eof: bool = False

    @classmethod
    async def connect(
        cls,
        port: int,
        extensions: str | None = None,
        *,
        extra_headers: tuple[str, ...] = (),
        receive_buffer: int | None = None,
    ) -> tuple[Client, str | None]:
        """Open a websocket; also returns the server's Sec-WebSocket-Extensions, if any.

        A small ``receive_buffer`` (bytes) makes a client that stops reading fill
        its TCP window quickly.
        """
        stream = await open_tcp(port, receive_buffer)
        lines = [
            "GET / HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
            *extra_headers,
        ]
        if extensions is not None:
            lines.append(f"Sec-WebSocket-Extensions: {extensions}")
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = b""
        while b"\r\n\r\n" not in response:
            data = await stream.receive_some(65536)
            if not data:
                raise RuntimeError(f"handshake: EOF after {response!r}")
            response += data
        head, _, rest = response.partition(b"\r\n\r\n")
        status, *header_lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in f"{status} ":
            raise RuntimeError(f"handshake refused: {status}")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines)
        }
        client = cls(stream)
        client.parser.receive_bytes(rest)
        return client, headers.get("sec-websocket-extensions")

    async def next_frame(self) -> Frame | None:
        """The next frame from the server, or None at EOF."""
        while True:
            for received in self.parser.received_frames():
                return received
            if self.eof:
                return None
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                self.eof = True
                return None
            self.parser.receive_bytes(data)

    async def until_close(self) -> int | None:
        """Read until the server's close frame; its code (None if TCP ended first)."""
        while (received := await self.next_frame()) is not None:
            if received.opcode is Opcode.CLOSE and isinstance(received.payload, tuple):
                return int(received.payload[0])
        return None

    async def until_eof(self) -> None:
        while await self.next_frame() is not None:
            pass

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def aclose(self) -> None:
        await self.stream.aclose()

    def abort(self) -> None:
        """Reset the TCP connection (RST): no close frame, no FIN."""
        abort(self.stream.socket)


# --------------------------------------------------------------------------- the harness


Scenario = Callable[[int, AppRecord], Awaitable[tuple[bool, dict[str, Any]]]]


async def run_scenario(scenario: Scenario, settings: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Serve the bare app with stock Hypercorn, run ``scenario(port, record)``, shut down."""
    config = stock_config(**settings)
    record = AppRecord()
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(STEP):
            urls: list[str] = await nursery.start(
                partial(
                    hypercorn.trio.serve, make_app(record), config, shutdown_trigger=shutdown.wait
                )
            )
        port = int(urls[0].rpartition(":")[2])
        try:
            result = await scenario(port, record)
        finally:
            shutdown.set()
    return result


async def finish(client: Client, record: AppRecord, *, answer_close: bool) -> None:
    """End the connection cleanly: answer (or send) a close, wait for EOF, then for the app."""
    try:
        with trio.move_on_after(2):
            if answer_close:
                await client.send(close_frame(1000))
                await client.until_eof()
    except trio.BrokenResourceError:
        pass
    finally:
        await client.aclose()
    with trio.fail_after(STEP):
        await record.disconnected.wait()


def maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def traced_peak_kib() -> int:
    """The peak of Python's allocations since ``tracemalloc.start()`` (independent of
    how the allocator reuses pages, unlike the RSS high-water mark)."""
    return tracemalloc.get_traced_memory()[1] // 1024


def bomb(size: int) -> bytes:
    """A raw-deflate message payload inflating to ``size`` bytes of "a" (RFC 7692 §7.2.1).

    Compressed from one reused 1 MiB chunk, so the client itself stays small.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -9)
    chunk = b"a" * MiB
    parts = [compressor.compress(chunk) for _ in range(size // MiB)]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    payload = b"".join(parts)
    assert payload.endswith(b"\x00\x00\xff\xff")
    return payload[:-4]


# --------------------------------------------------------------------------- scenarios


async def deflate_unbounded(port: int, record: AppRecord) -> tuple[bool, dict[str, Any]]:
    """Fix 6: one compressed message is inflated whole before its size is checked."""
    payload = bomb(BOMB_SIZE)
    message = frame(Opcode.TEXT, payload, rsv1=True)
    with trio.fail_after(STEP):
        client, agreed = await Client.connect(port, CHROMIUM_OFFER)
        await record.accepted.wait()
        before = maxrss_kib()
        tracemalloc.start()
        await client.send(message)
        code = await client.until_close()
    peak = traced_peak_kib()
    tracemalloc.stop()
    growth = maxrss_kib() - before
    await finish(client, record, answer_close=True)
    evidence = {
        "max_message_size": MAX_MESSAGE_SIZE,
        "offer": CHROMIUM_OFFER,
        "accepted_extensions": agreed,
        "compressed_bytes": len(payload),
        "inflates_to_bytes": BOMB_SIZE,
        "close_code": code,
        "peak_rss_growth_kib": growth,
        "peak_rss_growth_mib": round(growth / 1024, 1),
        "peak_allocated_mib": round(peak / 1024, 1),
    }
    return peak > 32 * 1024, evidence


async def close_never_ends(port: int, record: AppRecord) -> tuple[bool, dict[str, Any]]:
    """Fix 7: after refusing a message (1009) the app is not told and TCP stays open."""
    with trio.fail_after(STEP):
        client, _ = await Client.connect(port)
        await record.accepted.wait()
        await client.send(frame(Opcode.TEXT, b"x" * 65536))
        code = await client.until_close()
    closed_at = trio.current_time()
    with trio.move_on_after(WATCH):  # never answer the close; watch for EOF
        await client.until_eof()
    eof = client.eof
    app_told = record.disconnected.is_set()
    told_at = record.disconnect_at
    app_told_after = None if told_at is None else round(told_at - closed_at, 3)
    await finish(client, record, answer_close=False)
    evidence = {
        "max_message_size": MAX_MESSAGE_SIZE,
        "sent_bytes": 65536,
        "close_code": code,
        "watched_s": WATCH,
        "app_got_disconnect": app_told,
        "app_disconnect_after_s": app_told_after,
        "client_saw_eof": eof,
        "app_disconnect_code_once_client_left": record.disconnect_code,
    }
    return code == 1009 and not app_told and not eof, evidence


async def pongs_ignored(port: int, record: AppRecord) -> tuple[bool, dict[str, Any]]:
    """Fix 8: Hypercorn pings on its interval but never notices that no pong comes."""
    pings = 0
    close_code: int | None = None
    with trio.fail_after(STEP):
        client, _ = await Client.connect(port)
        await record.accepted.wait()
    with trio.move_on_after(WATCH):  # read everything, answer nothing
        while (received := await client.next_frame()) is not None:
            if received.opcode is Opcode.PING:
                pings += 1
            elif received.opcode is Opcode.CLOSE and isinstance(received.payload, tuple):
                close_code = int(received.payload[0])
                break
    eof = client.eof
    app_told = record.disconnected.is_set()
    await finish(client, record, answer_close=True)
    evidence = {
        "websocket_ping_interval": 0.2,
        "watched_s": WATCH,
        "pings_seen": pings,
        "pongs_sent": 0,
        "server_close_code": close_code,
        "client_saw_eof": eof,
        "app_got_disconnect": app_told,
    }
    return close_code is None and not eof and not app_told and pings >= 5, evidence


class LongestStep(trio.abc.Instrument):
    """The longest single task step in CPU time, except the steps of the tasks in ``ignore``.

    CPU time of this thread, not wall time: on a busy machine a step that the
    kernel descheduled would otherwise look long, and the fixed server would
    look as if it still parsed a whole flood in one step.
    """

    def __init__(self, ignore: set[trio.lowlevel.Task]) -> None:
        self.ignore = ignore
        self.started = 0.0
        self.longest = 0.0
        self.longest_task = ""
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.started = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        took = time.thread_time() - self.started
        if task in self.ignore:
            return
        self.steps += 1
        if took > self.longest:
            self.longest, self.longest_task = took, task.name


async def frames_without_checkpoint(port: int, record: AppRecord) -> tuple[bool, dict[str, Any]]:
    """Fix 9: all the frames of one read are parsed in one task step."""
    flood = frame(Opcode.TEXT, b"a", fin=False) + b"".join(
        frame(Opcode.CONTINUATION, b"", fin=False) for _ in range(FLOOD_FRAMES)
    )
    with trio.fail_after(STEP):
        client, _ = await Client.connect(port)
        await record.accepted.wait()
    instrument = LongestStep({trio.lowlevel.current_task()})
    trio.lowlevel.add_instrument(instrument)
    try:
        with trio.fail_after(STEP):
            await client.send(flood)
            await client.send(frame(Opcode.CONTINUATION, b"b"))  # end the message
            await record.message.wait()  # the server has parsed every frame
    finally:
        trio.lowlevel.remove_instrument(instrument)
    await finish(client, record, answer_close=True)
    longest_ms = round(instrument.longest * 1000, 1)
    evidence = {
        "frames": FLOOD_FRAMES + 2,
        "bytes_in_one_send_all": len(flood),
        "longest_step_ms": longest_ms,
        "longest_step_task": instrument.longest_task,
        "server_steps": instrument.steps,
        "app_got_message": record.messages == 1,
    }
    return longest_ms > 20, evidence


# --------------------------------------------------------------------------- more harness

Result = tuple[bool, dict[str, Any]]
ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


def with_lifespan(handler: ASGIApp) -> ASGIApp:
    """``handler`` for http and websocket scopes; lifespan answered at once."""

    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "lifespan":
            await handler(scope, receive, send)
            return
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


@dataclass
class Served:
    """A running ``hypercorn.trio.serve``: set ``shutdown`` to begin its graceful shutdown."""

    port: int = 0
    shutdown: trio.Event = field(default_factory=trio.Event)
    stopped: trio.Event = field(default_factory=trio.Event)
    #: What ended the whole server, if anything did (``"KeyError: 1"``).
    errors: list[str] = field(default_factory=list)

    async def stopped_within(self, seconds: float) -> bool:
        with trio.move_on_after(seconds):
            await self.stopped.wait()
        return self.stopped.is_set()


def leaves(group: BaseExceptionGroup[Exception]) -> Iterator[Exception]:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from leaves(error)
        else:
            yield error


@asynccontextmanager
async def serving(app: ASGIApp, config: Config) -> AsyncIterator[Served]:
    """Serve ``app`` with stock ``hypercorn.trio.serve``; shut it down on the way out."""
    served = Served()

    async def serve(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await hypercorn.trio.serve(
                app, config, shutdown_trigger=served.shutdown.wait, task_status=task_status
            )
        except* Exception as group:  # the worker died: evidence, not a crash of the repro
            served.errors.extend(f"{type(error).__name__}: {error}" for error in leaves(group))
        finally:
            served.stopped.set()

    async with trio.open_nursery() as nursery:
        with trio.fail_after(STEP):
            urls: list[str] = await nursery.start(serve)
        served.port = int(urls[0].rpartition(":")[2])
        try:
            yield served
        finally:
            served.shutdown.set()


def count_tasks(fragment: str) -> int:
    """How many tasks of this trio run have ``fragment`` in their name."""

    def walk(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
        yield task
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                yield from walk(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return sum(fragment in task.name for task in walk(root))


async def wait_until(done: Callable[[], bool], seconds: float) -> bool:
    """Poll ``done`` (for state that has no event) every 10 ms for at most ``seconds``."""
    with trio.move_on_after(seconds):
        while not done():  # noqa: ASYNC110 - what it polls has no event
            await trio.sleep(0.01)
    return done()


def queue_of(receive: ASGIReceiveCallable) -> Any:
    """The memory channel behind a trio worker's ``receive`` (its bound method's owner)."""
    return getattr(receive, "__self__", None)


def queue_full(receive: ASGIReceiveCallable) -> bool:
    """Hypercorn's queue to this app is full and its reader waits to put one more."""
    stats = queue_of(receive).statistics()
    return bool(stats.current_buffer_used >= APP_QUEUE and stats.tasks_waiting_send > 0)


async def read_response_head(stream: trio.SocketStream) -> tuple[str, dict[str, str]]:
    """The status line and headers of one HTTP/1.1 response (its body is not read)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise RuntimeError(f"EOF after {data!r}")
        data += chunk
    status, *lines = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines)
    }
    return status, headers


async def eof_within(stream: trio.abc.ReceiveStream, seconds: float) -> float | None:
    """Read and drop until EOF; how long it took (None: still open after ``seconds``)."""
    began = trio.current_time()
    with trio.move_on_after(seconds):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        return round(trio.current_time() - began, 3)
    return None


# --------------------------------------------------------------------------- HTTP/2 over TLS


@dataclass
class TLS:
    """A throwaway CA and a server certificate for 127.0.0.1, as files Hypercorn can load."""

    ca: trustme.CA
    directory: tempfile.TemporaryDirectory[str]
    certfile: str
    keyfile: str

    @classmethod
    def make(cls) -> TLS:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        directory = tempfile.TemporaryDirectory(prefix="hypercorn-repro-")
        certfile, keyfile = f"{directory.name}/cert.pem", f"{directory.name}/key.pem"
        cert.cert_chain_pems[0].write_to_path(certfile)
        cert.private_key_pem.write_to_path(keyfile)
        return cls(ca, directory, certfile, keyfile)

    def config(self, **settings: Any) -> Config:
        return stock_config(certfile=self.certfile, keyfile=self.keyfile, **settings)

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        context.set_alpn_protocols(["h2"])
        return context


@dataclass
class H2Client:
    """One HTTP/2 connection with h2: every event it read is kept, in order."""

    stream: trio.SSLStream[trio.SocketStream]
    sock: trio.socket.SocketType
    connection: h2.connection.H2Connection
    events: list[h2.events.Event] = field(default_factory=list)
    ended: bool = False  # EOF, reset or GOAWAY

    @classmethod
    async def connect(cls, port: int, tls: TLS, *, window: int | None = None) -> H2Client:
        """TLS with ALPN h2, SETTINGS both ways; ``window``: our SETTINGS_INITIAL_WINDOW_SIZE."""
        sock = trio.socket.socket()
        await sock.connect(("127.0.0.1", port))
        stream = trio.SSLStream(
            trio.SocketStream(sock), tls.client_context(), server_hostname="127.0.0.1"
        )
        await stream.do_handshake()
        if stream.selected_alpn_protocol() != "h2":
            raise RuntimeError("the server did not choose h2")
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        if window is not None:
            connection.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        client = cls(stream, sock, connection)
        connection.initiate_connection()
        await client.flush()
        await client.until(lambda event: isinstance(event, h2.events.RemoteSettingsChanged))
        return client

    async def flush(self) -> None:
        if data := self.connection.data_to_send():
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.ended = True

    async def read(self) -> None:
        """One read; never grants flow-control window (nothing here acknowledges DATA)."""
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            self.ended = True
            return
        for event in self.connection.receive_data(data):
            self.events.append(event)
            if isinstance(event, h2.events.ConnectionTerminated):
                self.ended = True
        await self.flush()

    async def until(self, found: Callable[[h2.events.Event], bool]) -> h2.events.Event | None:
        """Read until an event ``found`` accepts has arrived (None: the connection ended)."""
        seen = 0
        while True:
            for event in self.events[seen:]:
                if found(event):
                    return event
            seen = len(self.events)
            if self.ended:
                return None
            await self.read()

    async def open_websocket(self, *, version: str = "13") -> tuple[int, int]:
        """An RFC 8441 extended CONNECT; its stream id and the status it was answered with."""
        stream_id = self.connection.get_next_available_stream_id()
        self.connection.send_headers(
            stream_id,
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "https"),
                (":path", "/"),
                (":authority", "127.0.0.1"),
                ("sec-websocket-version", version),
            ],
        )
        await self.flush()
        response = await self.until(
            lambda event: (
                isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id
            )
        )
        if response is None:
            raise RuntimeError("no response to the extended CONNECT")
        assert isinstance(response, h2.events.ResponseReceived)
        headers = {str(name): str(value) for name, value in response.headers}  # utf-8: str
        return stream_id, int(headers[":status"])

    async def send_data(self, stream_id: int, data: bytes) -> None:
        self.connection.send_data(stream_id, data)
        await self.flush()

    def abort(self) -> None:
        abort(self.sock)

    def of_stream(self, kind: type[h2.events.Event], stream_id: int) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and getattr(e, "stream_id", None) == stream_id
        ]


# --------------------------------------------------------------------------- fix 1


# Fix 1's app (a dataclass: its events are what the scenarios look at).
@dataclass
class QueueApp:
    """A websocket app that stops reading until Hypercorn's queue to it is full."""

    accepted: trio.Event = field(default_factory=trio.Event)
    queue_full: trio.Event = field(default_factory=trio.Event)
    go: trio.Event = field(default_factory=trio.Event)  # the client has reset: write now
    send_returned: trio.Event = field(default_factory=trio.Event)
    disconnected: trio.Event = field(default_factory=trio.Event)
    received: int = 0
    end_when_full: bool = False

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
        self.accepted.set()
        with trio.fail_after(STEP):
            while not queue_full(receive):  # noqa: ASYNC110 - a queue has no such event
                await trio.sleep(0.01)
        self.queue_full.set()
        if self.end_when_full:
            return  # ends with its queue full, as an app that closes mid-burst does
        await self.go.wait()
        await send(
            {"type": "websocket.send", "bytes": None, "text": "tick"}
        )  # meets the client's reset
        self.send_returned.set()
        while (await receive())["type"] != "websocket.disconnect":
            self.received += 1
        self.disconnected.set()


async def disconnect_into_full_queue() -> Result:
    """Fix 1: a write that finds the peer gone puts the disconnect into the app's full queue
    from the app's own task: the connection hangs for ever."""
    app = QueueApp()
    async with serving(
        with_lifespan(app), stock_config(graceful_timeout=GRACEFUL_TIMEOUT)
    ) as served:
        with trio.fail_after(STEP):
            client, _ = await Client.connect(served.port)
            await app.accepted.wait()
            await client.send(b"".join(frame(Opcode.TEXT, b"x") for _ in range(3 * APP_QUEUE)))
            await app.queue_full.wait()  # 10 queued, the reader waits to put the 11th
        client.abort()
        app.go.set()
        with trio.move_on_after(WATCH):
            await app.send_returned.wait()
            await app.disconnected.wait()
    return not app.send_returned.is_set(), {
        "max_app_queue_size": APP_QUEUE,
        "messages_sent_before_reset": 3 * APP_QUEUE,
        "watched_s": WATCH,
        "app_send_returned": app.send_returned.is_set(),
        "app_got_disconnect": app.disconnected.is_set(),
    }


async def full_queue_outlives_app() -> Result:
    """Fix 1: an app that ends with its queue full: Hypercorn's close frame goes out, but
    the disconnect it then puts into that queue waits for ever, and so does its reader."""
    app = QueueApp(end_when_full=True)
    async with serving(
        with_lifespan(app), stock_config(graceful_timeout=GRACEFUL_TIMEOUT)
    ) as served:
        with trio.fail_after(STEP):
            client, _ = await Client.connect(served.port)
            await app.accepted.wait()
            await client.send(b"".join(frame(Opcode.TEXT, b"x") for _ in range(3 * APP_QUEUE)))
            code = await client.until_close()
        with trio.move_on_after(WATCH):
            await client.until_eof()
        # Its socket closed, a connection's tasks end within moments, or never.
        ended = await wait_until(lambda: count_tasks("_run_handler") == 0, 1.0)
        left = count_tasks("_run_handler")
        await client.aclose()
    return not ended, {
        "max_app_queue_size": APP_QUEUE,
        "messages_sent": 3 * APP_QUEUE,
        "close_code": code,
        "watched_s": WATCH,
        "client_saw_eof": client.eof,
        "connection_handlers_left": left,
    }


# --------------------------------------------------------------------------- fixes 2 and 10


# The app of fixes 2 and 10 (a dataclass: its events are what the scenarios look at).
@dataclass
class StreamingApp:
    """A websocket app that sends ``chunk``-byte messages until told to stop or disconnected."""

    chunk: int
    messages: int | None = None  # then close; None: until disconnected
    accepted: trio.Event = field(default_factory=trio.Event)
    closing: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)  # its close returned
    disconnected: trio.Event = field(default_factory=trio.Event)
    disconnect_code: int | None = None
    sent: int = 0
    last_send: float = 0.0

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
        self.accepted.set()
        self.last_send = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._until_disconnect, receive, nursery.cancel_scope)
            payload = b"x" * self.chunk
            while self.messages is None or self.sent < self.messages:
                await send({"type": "websocket.send", "bytes": payload, "text": None})
                self.sent += 1
                self.last_send = trio.current_time()
                await trio.lowlevel.checkpoint()
            self.closing.set()
            await send({"type": "websocket.close", "code": 1000, "reason": None})
            self.closed.set()
            await self.disconnected.wait()

    async def _until_disconnect(
        self, receive: ASGIReceiveCallable, scope: trio.CancelScope
    ) -> None:
        while (event := await receive())["type"] != "websocket.disconnect":
            pass
        self.disconnect_code = event["code"]
        self.disconnected.set()
        scope.cancel()


async def stalled_reader_pins_writer() -> Result:
    """Fixes 2 and 10: a write to a client that stopped reading has no deadline; not even
    graceful_timeout ends it, so the server never finishes shutting down."""
    app = StreamingApp(chunk=16 * 1024)
    config = stock_config(graceful_timeout=GRACEFUL_TIMEOUT, write_timeout=WRITE_TIMEOUT)
    async with serving(with_lifespan(app), config) as served:
        with trio.fail_after(STEP):
            client, _ = await Client.connect(served.port, receive_buffer=4096)
            await app.accepted.wait()  # from now on the client reads nothing
            while trio.current_time() - app.last_send < 0.5:  # noqa: ASYNC110 - until a write is stuck
                await trio.sleep(0.05)
        stuck_at = app.last_send
        served.shutdown.set()
        stopped = await served.stopped_within(GRACEFUL_TIMEOUT + 2)
        stopped_after = round(trio.current_time() - stuck_at, 3) if stopped else None
        code = app.disconnect_code
        client.abort()  # what finally ends the write, and the server
        with trio.fail_after(STEP):
            await served.stopped.wait()
    return not stopped, {
        "sent_before_stall_kib": app.sent * app.chunk // 1024,
        "graceful_timeout_s": GRACEFUL_TIMEOUT,
        "write_timeout_s": WRITE_TIMEOUT,
        "server_stopped_after_stall_s": stopped_after,
        "app_disconnect_code": code,
    }


async def h2_window_never_granted() -> Result:
    """Fixes 2 and 10: over HTTP/2 a client that grants no flow-control window stalls its
    stream for ever: the app's sends pile up unbounded and its close never returns."""
    tls = TLS.make()
    app = StreamingApp(chunk=16 * 1024, messages=64)
    config = tls.config(graceful_timeout=GRACEFUL_TIMEOUT, write_timeout=WRITE_TIMEOUT)
    async with serving(with_lifespan(app), config) as served:
        with trio.fail_after(STEP):
            client = await H2Client.connect(served.port, tls, window=0)
            stream_id, status = await client.open_websocket()
            await app.accepted.wait()
        async with trio.open_nursery() as reading:
            reading.start_soon(client.until, lambda event: False)  # read all, grant nothing
            with trio.move_on_after(WATCH):
                await app.closed.wait()
            reading.cancel_scope.cancel()
        resets = client.of_stream(h2.events.StreamReset, stream_id)
        stuck = app.closing.is_set() and not app.closed.is_set()
        code = app.disconnect_code
        client.abort()
    return not resets and code is None, {
        "status": status,
        "initial_window_size": 0,
        "window_granted_bytes": 0,
        "messages_sent": app.sent,
        "sent_mib": round(app.sent * app.chunk / MiB, 2),
        "watched_s": WATCH,
        "write_timeout_s": WRITE_TIMEOUT,
        "app_close_stuck": stuck,
        "stream_reset_by_server": [int(reset.error_code) for reset in resets],
        "app_disconnect_code": code,
    }


async def h2_writers_stuck_after_close() -> Result:
    """Fix 10: once an HTTP/2 connection is gone, a writer waiting for its stream's buffer
    to drain waits for ever: the app's close never returns, its handler never ends."""
    tls = TLS.make()
    app = StreamingApp(chunk=1024, messages=1)
    async with serving(with_lifespan(app), tls.config(graceful_timeout=GRACEFUL_TIMEOUT)) as served:
        with trio.fail_after(STEP):
            client = await H2Client.connect(served.port, tls, window=0)
            _, status = await client.open_websocket()
            await app.closing.wait()  # its close now waits for window that never comes
        client.abort()  # the connection is gone (a TCP reset)
        with trio.move_on_after(WATCH):
            await app.closed.wait()
            await app.disconnected.wait()
    return not app.closed.is_set(), {
        "status": status,
        "initial_window_size": 0,
        "watched_s": WATCH,
        "app_close_returned": app.closed.is_set(),
        "app_got_disconnect": app.disconnected.is_set(),
    }


# --------------------------------------------------------------------------- fix 2


async def bookkeeping_cancelled() -> Result:
    """Fix 2: Hypercorn closes the socket, and restarts the keep-alive timer, on the app's
    task; an app that ends as soon as it hears http.disconnect (Quart-Trio does) cancels
    that half-way: ``Connection: close`` is ignored and idle connections never time out."""

    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        async with trio.open_nursery() as nursery:

            async def until_disconnect() -> None:  # Quart-Trio's handle_messages
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_disconnect)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"2")],
                }
            )
            await send({"type": "http.response.body", "body": b"ok", "more_body": False})

    config = stock_config(keep_alive_timeout=KEEP_ALIVE_TIMEOUT)
    async with serving(with_lifespan(app), config) as served:
        answers = {}
        for name, extra in (("connection_close", "Connection: close\r\n"), ("keep_alive", "")):
            stream = await open_tcp(served.port)
            with trio.fail_after(STEP):
                await stream.send_all(f"GET / HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
                status, _ = await read_response_head(stream)
            closed_after = await eof_within(stream, WATCH)
            answers[name] = {"status": status, "server_closed_after_s": closed_after}
            await stream.aclose()
    return all(answer["server_closed_after_s"] is None for answer in answers.values()), {
        "keep_alive_timeout_s": KEEP_ALIVE_TIMEOUT,
        "watched_s": WATCH,
        **answers,
    }


# --------------------------------------------------------------------------- fix 3


async def shutdown_not_told() -> Result:
    """Fix 3: graceful shutdown tells a websocket app nothing: it is cancelled after
    graceful_timeout and its client sees TCP end without a close frame (1006)."""
    record = AppRecord()
    cancelled_untold = False

    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        nonlocal cancelled_untold
        try:
            await make_app(record)(scope, receive, send)
        except trio.Cancelled:
            cancelled_untold = scope["type"] == "websocket" and not record.disconnected.is_set()
            raise

    async with serving(app, stock_config(graceful_timeout=GRACEFUL_TIMEOUT)) as served:
        with trio.fail_after(STEP):
            client, _ = await Client.connect(served.port)
            await record.accepted.wait()
        begun = trio.current_time()
        served.shutdown.set()
        with trio.fail_after(STEP):
            code = await client.until_close()  # None: TCP ended without a close frame
            heard_after = round(trio.current_time() - begun, 3)
            if code is not None:
                with suppress(trio.BrokenResourceError):
                    await client.send(close_frame(code))  # a well-behaved client answers
            await client.until_eof()
            await served.stopped.wait()
        stopped_after = round(trio.current_time() - begun, 3)
        await client.aclose()
    return code is None and record.disconnect_code is None, {
        "graceful_timeout_s": GRACEFUL_TIMEOUT,
        "client_close_code": code if code is not None else "none (1006)",
        "client_heard_after_s": heard_after,
        "app_disconnect_code": record.disconnect_code,
        "app_cancelled_without_being_told": cancelled_untold,
        "server_stopped_after_s": stopped_after,
    }


WORKER_APP: Final = """
import os

NOTES = os.environ["REPRO_NOTES"]


def note(what):
    with open(NOTES, "a") as notes:
        notes.write(f"{os.getpid()} {what}\\n")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                note("lifespan.shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        note("websocket")
        while (await receive())["type"] != "websocket.disconnect":
            pass
"""


async def workers_sigterm(*, workers: int, to_group: bool) -> Result:
    """``python -m hypercorn --workers N``; one websocket; SIGTERM to the main process or,
    as systemd does, to the whole process group. Did the websocket's worker finish?"""
    with tempfile.TemporaryDirectory(prefix="hypercorn-repro-") as directory:
        notes = trio.Path(directory, "notes")
        await trio.Path(directory, "workerapp.py").write_text(WORKER_APP)
        command = [
            sys.executable, "-m", "hypercorn", "--workers", str(workers), "--worker-class",
            "trio", "--bind", "127.0.0.1:0", "--graceful-timeout", str(WORKER_GRACEFUL_TIMEOUT),
            f"{directory}/workerapp:app",
        ]  # fmt: skip
        env = {**os.environ, "REPRO_NOTES": str(notes)}
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process, command, env=env, cwd=directory, check=False,
                    start_new_session=True,
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                )
            )  # fmt: skip
            try:
                with trio.fail_after(STEP * 3):  # each worker imports everything afresh
                    port = await listening_port(process, workers)
                    client, _ = await Client.connect(port)
                    while "websocket" not in await read_notes(notes):  # noqa: ASYNC110
                        await trio.sleep(0.05)
                holder = (await read_notes(notes)).split()[0]  # that worker's pid
                begun = trio.current_time()
                if to_group:
                    os.killpg(process.pid, signal.SIGTERM)
                else:
                    process.send_signal(signal.SIGTERM)
                with trio.fail_after(STEP + WORKER_GRACEFUL_TIMEOUT):
                    code = await client.until_close()
                    client_ended_after = round(trio.current_time() - begun, 3)
                    returncode = await process.wait()
                await client.aclose()
            finally:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # whatever is left of it
        finished = f"{holder} lifespan.shutdown" in await read_notes(notes)
    return not finished, {
        "workers": workers,
        "sigterm_to": "the process group" if to_group else "the main process",
        "graceful_timeout_s": WORKER_GRACEFUL_TIMEOUT,
        "client_close_code": code if code is not None else "none (1006)",
        "client_saw_the_end_after_s": client_ended_after,
        "websocket_worker_finished_shutdown": finished,
        "main_process_exit_status": returncode,
    }


async def listening_port(process: trio.Process, workers: int) -> int:
    """The port, once every worker has logged that it is running on it."""
    assert process.stderr is not None
    log = b""
    while log.count(b"Running on http://") < workers:
        if not (chunk := await process.stderr.receive_some()):
            raise RuntimeError(f"hypercorn ended: {log.decode()}")
        log += chunk
    return int(log.split(b"Running on http://127.0.0.1:")[1].split(b" ")[0])


async def read_notes(notes: trio.Path) -> str:
    """What the worker app noted, one ``PID WHAT`` line each."""
    return await notes.read_text() if await notes.exists() else ""


# --------------------------------------------------------------------------- no fix: exit status

#: Throwaway app modules whose worker fails before it serves: a configuration error
#: (multiprocessing reports exit code 1), and a death by signal (SIGKILL, as the OOM
#: killer would), both at import, which only a worker process does with ``--workers N``.
FAILING_APPS: Final = {
    "badconfig": 'raise SystemExit("bad config")\n',
    "sigkilled": "import os, signal\n\nos.kill(os.getpid(), signal.SIGKILL)\n",
}
#: What ``worker_exit_status_lost`` runs: (app module, --worker-class, --workers). With
#: one worker the failure is always lost; with two it is lost unless the second worker has
#: also exited by the time the main process looks again (usually not), so only the
#: ``--workers 1`` runs decide ``bug_present``.
EXIT_STATUS_RUNS: Final = {
    "workers_1": ("badconfig", "trio", 1),
    "workers_2": ("badconfig", "trio", 2),
    "workers_1_asyncio": ("badconfig", "asyncio", 1),
    "workers_1_worker_sigkilled": ("sigkilled", "trio", 1),
    "workers_0": ("badconfig", "trio", 0),
    "workers_0_sigkilled": ("sigkilled", "trio", 0),
}


async def hypercorn_exit_status(
    directory: str, module: str, worker_class: str, workers: int
) -> tuple[int, str]:
    """``python -m hypercorn module:app``'s exit status and the last line it logged."""
    command = [
        sys.executable, "-m", "hypercorn", "--workers", str(workers), "--worker-class",
        worker_class, "--bind", "127.0.0.1:0", f"{module}:app",
    ]  # fmt: skip
    log = b""
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process, command, cwd=directory, check=False,
                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
        )  # fmt: skip
        assert process.stderr is not None
        try:
            with trio.fail_after(STEP * 3):  # each worker imports everything afresh
                async for chunk in process.stderr:  # until every process has closed it
                    log += chunk
                returncode = await process.wait()
        finally:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever is left of it
    lines = log.decode(errors="replace").strip().splitlines()
    return returncode, lines[-1] if lines else ""


async def worker_exit_status_lost() -> Result:
    """No fix: a worker fails, and ``python -m hypercorn --workers N`` exits 0 all the same
    (the failure's code is overwritten in ``run()``). ``--workers 0`` for comparison."""
    found: dict[str, tuple[int, str]] = {}
    with tempfile.TemporaryDirectory(prefix="hypercorn-repro-") as directory:
        for module, source in FAILING_APPS.items():
            await trio.Path(directory, f"{module}.py").write_text(source)

        async def one(name: str, module: str, worker_class: str, workers: int) -> None:
            found[name] = await hypercorn_exit_status(directory, module, worker_class, workers)

        async with trio.open_nursery() as nursery:
            for name, run in EXIT_STATUS_RUNS.items():
                nursery.start_soon(one, name, *run)
    statuses = {name: found[name][0] for name in EXIT_STATUS_RUNS}
    one_worker = [statuses[name] for name, run in EXIT_STATUS_RUNS.items() if run[2] == 1]
    return 0 in one_worker, {
        "badconfig_app": FAILING_APPS["badconfig"].strip(),
        **{f"exit_status_{name}": status for name, status in statuses.items()},
        "last_log_line_workers_1": found["workers_1"][1],
        "last_log_line_workers_1_worker_sigkilled": found["workers_1_worker_sigkilled"][1],
    }


# --------------------------------------------------------------------------- fix 4


async def refused_handshake_stays_open() -> Result:
    """Fix 4: Hypercorn refuses a malformed upgrade (400, ``Connection: close``) and then
    keeps the HTTP/1.1 connection open for ever."""
    async with serving(
        make_app(AppRecord()), stock_config(keep_alive_timeout=KEEP_ALIVE_TIMEOUT)
    ) as served:
        stream = await open_tcp(served.port)
        with trio.fail_after(STEP):
            await stream.send_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            )  # no Sec-WebSocket-Key, no Sec-WebSocket-Version
            status, headers = await read_response_head(stream)
        closed_after = await eof_within(stream, WATCH)
        await stream.aclose()
    return closed_after is None, {
        "status": status,
        "connection_header": headers.get("connection"),
        "keep_alive_timeout_s": KEEP_ALIVE_TIMEOUT,
        "watched_s": WATCH,
        "server_closed_after_s": closed_after,
    }


async def h2_refused_stream_stays_busy() -> Result:
    """Fix 4: over HTTP/2 a refused websocket stream leaves its connection busy for ever:
    the keep-alive timeout never closes it."""
    tls = TLS.make()
    async with serving(
        make_app(AppRecord()), tls.config(keep_alive_timeout=KEEP_ALIVE_TIMEOUT)
    ) as served:
        with trio.fail_after(STEP):
            client = await H2Client.connect(served.port, tls)
            _, status = await client.open_websocket(version="12")  # only 13 exists: 400
        began = trio.current_time()
        with trio.move_on_after(WATCH):
            await client.until(lambda event: False)  # until the connection ends
        closed_after = round(trio.current_time() - began, 3) if client.ended else None
        client.abort()
    return closed_after is None, {
        "status": status,
        "keep_alive_timeout_s": KEEP_ALIVE_TIMEOUT,
        "watched_s": WATCH,
        "server_closed_after_s": closed_after,
    }


async def h2_data_after_close() -> Result:
    """Fix 4: over HTTP/2, DATA for a stream the server has closed (the answer to the
    server's own websocket close) raises KeyError and ends the whole server."""
    tls = TLS.make()
    ended = trio.Event()

    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
        await send({"type": "websocket.close", "code": 1000, "reason": None})
        ended.set()

    async with serving(with_lifespan(app), tls.config()) as served:
        with trio.fail_after(STEP):
            client = await H2Client.connect(served.port, tls)
            stream_id, status = await client.open_websocket()
            await client.until(
                lambda event: (
                    isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id
                )
            )
            await ended.wait()
        await trio.sleep(0.2)  # Hypercorn forgets the stream once the app has returned
        await client.send_data(stream_id, close_frame(1000))  # the client's answer
        await served.stopped_within(WATCH)
        client.abort()
    return any(error.startswith("KeyError") for error in served.errors), {
        "status": status,
        "server_ended_stream": True,
        "client_sent": "its close frame, in a DATA frame",
        "server_died_of": served.errors,
    }


# --------------------------------------------------------------------------- fix 5


async def proxy_fix_websocket_scheme() -> Result:
    """Fix 5: behind a TLS proxy, ProxyFixMiddleware gives a websocket scope the scheme
    "https" (X-Forwarded-Proto) where ASGI allows only "ws" or "wss"."""
    schemes: dict[str, str] = {}

    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "lifespan":
            return
        schemes[scope["type"]] = scope["scheme"]
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
            await send({"type": "websocket.close", "code": 1000, "reason": None})
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    proxied = ProxyFixMiddleware(with_lifespan(app), mode="legacy", trusted_hops=1)
    forwarded = ("X-Forwarded-Proto: https", "X-Forwarded-For: 203.0.113.7")
    async with serving(proxied, stock_config()) as served:
        with trio.fail_after(STEP):
            client, _ = await Client.connect(served.port, extra_headers=forwarded)
            await client.until_close()
            await client.aclose()
            stream = await open_tcp(served.port)
            request = "GET / HTTP/1.1\r\nHost: x\r\n" + "".join(f"{h}\r\n" for h in forwarded)
            await stream.send_all(f"{request}\r\n".encode())
            await read_response_head(stream)
            await stream.aclose()
    websocket = schemes.get("websocket")
    return websocket in {"http", "https"}, {
        "x_forwarded_proto": "https",
        "websocket_scope_scheme": websocket,
        "asgi_allows_for_websocket": ["ws", "wss"],
        "http_scope_scheme": schemes.get("http"),
    }


SCENARIOS: Final[dict[str, Callable[[], Awaitable[Result]]]] = {
    "deflate-unbounded": partial(
        run_scenario, deflate_unbounded, {"websocket_max_message_size": MAX_MESSAGE_SIZE}
    ),
    "close-never-ends": partial(
        run_scenario,
        close_never_ends,
        {"websocket_max_message_size": MAX_MESSAGE_SIZE, "websocket_close_timeout": CLOSE_TIMEOUT},
    ),
    "pongs-ignored": partial(
        run_scenario,
        pongs_ignored,
        {"websocket_ping_interval": 0.2, "websocket_ping_timeout": PING_TIMEOUT},
    ),
    "frames-without-checkpoint": partial(run_scenario, frames_without_checkpoint, {}),
    "disconnect-into-full-queue": disconnect_into_full_queue,
    "full-queue-outlives-app": full_queue_outlives_app,
    "stalled-reader-pins-writer": stalled_reader_pins_writer,
    "h2-window-never-granted": h2_window_never_granted,
    "bookkeeping-cancelled": bookkeeping_cancelled,
    "shutdown-not-told": shutdown_not_told,
    "workers-sigterm-main": partial(workers_sigterm, workers=2, to_group=False),
    "workers-sigterm-group": partial(workers_sigterm, workers=1, to_group=True),
    "refused-handshake-stays-open": refused_handshake_stays_open,
    "h2-refused-stream-stays-busy": h2_refused_stream_stays_busy,
    "h2-data-after-close": h2_data_after_close,
    "proxy-fix-websocket-scheme": proxy_fix_websocket_scheme,
    "h2-writers-stuck-after-close": h2_writers_stuck_after_close,
    "worker-exit-status-lost": worker_exit_status_lost,
}


def run(name: str) -> dict[str, Any]:
    bug_present, evidence = trio.run(SCENARIOS[name])
    evidence["hypercorn"] = version("hypercorn")
    evidence["wsproto"] = version("wsproto")
    return {"scenario": name, "bug_present": bug_present, "evidence": evidence}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    args = parser.parse_args(argv)
    if args.scenario != "all":
        print(json.dumps(run(args.scenario)), flush=True)
        return 0
    for name in SCENARIOS:  # each in a fresh process: ru_maxrss only ever grows
        subprocess.run([sys.executable, __file__, name], check=True, timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
