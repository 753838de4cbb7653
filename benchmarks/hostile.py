"""Hostile clients against a ticker server: what attackers and browsers cost it.

Each scenario starts its own server (``hypercorn ticker.app:app --worker-class trio``
on a free port), attacks it with raw sockets and hand-made websocket frames
(wsproto parses what comes back), measures the worker process (RSS and CPU from
``/proc``), a bystander client's longest gap between ticks and ``/healthz``
response times, prints one JSON line per scenario and a table at the end, and
stops the server. The server's output goes to a log file whose path is printed.

Run it from the checkout::

    python benchmarks/hostile.py [--scenario bomb] [--env TICKER_COMPRESSION=on]

Scenarios: idle-plain, idle-browser, bomb, unanswered-close, flood-continuation,
flood-ping, flood-commands, slowloris, silent-peer (default: all, one after the
other, each against a fresh server). Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, TextMessage
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

#: Exactly what Chromium offers.
CHROMIUM_OFFER: Final = "permessage-deflate; client_max_window_bits"
BYSTANDER_INTERVAL: Final = 0.05
MIB: Final = 1 << 20
OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_PING: Final = 0x9
SCENARIOS: Final = (
    "idle-plain",
    "idle-browser",
    "bomb",
    "unanswered-close",
    "flood-continuation",
    "flood-ping",
    "flood-commands",
    "slowloris",
    "silent-peer",
)
Result = dict[str, Any]


# ---------------------------------------------------------------------------
# Frames, written by hand (RFC 6455 section 5.2)


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``key``."""
    if not payload:
        return b""
    n = len(payload)
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False, key: bytes | None = None
) -> bytes:
    """One masked client frame."""
    key = os.urandom(4) if key is None else key
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([first, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + mask(payload, key)


def deflate_bomb(size: int, byte: bytes = b"a", window_bits: int = 15) -> bytes:
    """Raw deflate (RFC 7692) of ``size`` bytes of ``byte``, without the 00 00 ff ff tail."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -window_bits)
    chunk = byte * MIB
    parts = [compressor.compress(chunk) for _ in range(size // MIB)]
    parts.append(compressor.compress(byte * (size % MIB)))
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    data = b"".join(parts)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


# ---------------------------------------------------------------------------
# The server process and /proc


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, via /proc/PID/task/*/children."""
    found: list[int] = []
    todo = [pid]
    for _ in range(1000):
        if not todo:
            break
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            for child in _read(str(task / "children")).split():
                found.append(int(child))
                todo.append(int(child))
    return found


def cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        match = re.search(r"^VmRSS:\s+(\d+) kB", _read(f"/proc/{pid}/status"), re.MULTILINE)
        if match:
            total += int(match.group(1))
    return total


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids``."""
    ticks = 0
    for pid in pids:
        stat = _read(f"/proc/{pid}/stat")
        if stat:
            fields = stat.rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(eq=False)
class Server:
    """A hypercorn subprocess serving ticker; ``workers`` are the pids that serve connections."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log_file: IO[bytes]
    workers: list[int] = field(default_factory=list)

    @classmethod
    def launch(cls, env: dict[str, str], log_dir: Path, name: str) -> Server:
        port = free_port()
        fd, path = tempfile.mkstemp(prefix=f"hostile-{name}-", suffix=".log", dir=log_dir)
        os.close(fd)
        log_file = open(path, "wb")  # noqa: SIM115 (closed in stop())
        command = [sys.executable, "-m", "hypercorn", "ticker.app:app"]
        command += ["--worker-class", "trio", "--bind", f"127.0.0.1:{port}"]
        proc = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return cls(proc, port, Path(path), log_file)

    def find_workers(self) -> list[int]:
        below = descendants(self.proc.pid)
        spawned = [pid for pid in below if "spawn_main" in cmdline(pid)]
        return spawned or [self.proc.pid]  # --workers 0 would serve in the main process

    def rss_kib(self) -> int:
        return rss_kib(self.workers)

    def cpu(self) -> float:
        return cpu_seconds(self.workers)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own session: hypercorn + worker
                self.proc.wait(5)
        for pid in self.workers:  # a worker that outlived its parent
            if Path(f"/proc/{pid}").exists() and "spawn_main" in cmdline(pid):
                os.kill(pid, signal.SIGKILL)
        self.log_file.close()

    def notable_log_lines(self, limit: int = 12) -> list[str]:
        """Distinct WARNING/ERROR/Traceback lines of the log (timestamps and ports stripped)."""
        seen: Counter[str] = Counter()
        for line in self.log_path.read_text(errors="replace").splitlines():
            if re.search(r"WARNING|ERROR|CRITICAL|Traceback|Error:|Exception", line):
                line = re.sub(r"^\[[^]]*\] \[\d+\] ", "", line)
                seen[re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:*", line)[:240]] += 1
        return [f"{n}x {line}" for line, n in seen.most_common(limit)]

    async def ready(self) -> None:
        """Wait (bounded) until /healthz answers and the worker process is known."""
        for _ in range(200):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                status, _ = await http_get(self.port, "/healthz", limit=1.0)
            except (OSError, trio.TooSlowError, ValueError):
                await trio.sleep(0.1)
                continue
            if status == 200:
                break
        else:
            raise RuntimeError(f"/healthz never answered; see {self.log_path}")
        self.workers = self.find_workers()


# ---------------------------------------------------------------------------
# HTTP and websocket clients


async def http_get(port: int, path: str, limit: float = 5.0) -> tuple[int, bytes]:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    buf = bytearray()
    with trio.fail_after(limit):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request.encode())
            for _ in range(10_000):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                buf += chunk
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        out = bytearray()
        for _ in range(10_000):
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            body = rest[size + 2 :]
        body = bytes(out)
    return status, body


async def healthz_connections(port: int) -> int | None:
    try:
        status, body = await http_get(port, "/healthz", limit=5.0)
        if status != 200:
            return None
        count: int = json.loads(body)["connections"]
    except (OSError, trio.TooSlowError, ValueError, KeyError, IndexError):
        return None
    return count


class Gone(Exception):
    """The TCP connection ended under us (reset, or closed while we were writing)."""


@dataclass
class Message:
    text: str | None
    data: bytes | None


class HandshakeError(Exception):
    pass


@dataclass(eq=False)
class WsClient:
    """A client websocket on a raw trio socket; frames can also be written by hand."""

    stream: trio.SocketStream
    conn: Connection
    status: int
    headers: dict[str, str]
    answer_pings: bool = True
    answer_close: bool = True
    report_pings: bool = False
    pings: int = 0
    close_code: int | None = None
    _queue: deque[Event] = field(default_factory=deque)
    _text: list[str] = field(default_factory=list)
    _data: list[bytes] = field(default_factory=list)
    #: One writer at a time: a pong goes out between two of an attacker's chunks.
    _sending: trio.Lock = field(default_factory=trio.Lock)

    @property
    def accepted_extensions(self) -> str | None:
        return self.headers.get("sec-websocket-extensions")

    @classmethod
    async def open(
        cls, port: int, *, offer: str | None = None, rcvbuf: int | None = None, limit: float = 10
    ) -> WsClient:
        with trio.fail_after(limit):
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            try:
                await sock.connect(("127.0.0.1", port))
            except BaseException:
                sock.close()
                raise
            stream = trio.SocketStream(sock)
            key = base64.b64encode(os.urandom(16)).decode()
            lines = [
                "GET /ws HTTP/1.1",
                f"Host: 127.0.0.1:{port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
            ]
            if offer is not None:
                lines.append(f"Sec-WebSocket-Extensions: {offer}")
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
            buf = bytearray()
            for _ in range(1000):
                if b"\r\n\r\n" in buf or len(buf) > 65536:
                    break
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                buf += chunk
        head, sep, rest = bytes(buf).partition(b"\r\n\r\n")
        if not sep:
            await stream.aclose()
            raise HandshakeError(f"no complete response: {bytes(buf[:200])!r}")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 101:
            await stream.aclose()
            raise HandshakeError(f"HTTP {status}")
        extensions: list[Extension] = []
        accepted = headers.get("sec-websocket-extensions")
        if accepted and accepted.split(";")[0].strip() == "permessage-deflate":
            deflate = PerMessageDeflate()
            deflate.finalize(accepted)
            extensions.append(deflate)
        conn = Connection(ConnectionType.CLIENT, extensions=extensions, trailing_data=rest)
        client = cls(stream, conn, status, headers)
        client._queue.extend(conn.events())  # frames that came with the 101
        return client

    async def send_raw(self, data: bytes) -> None:
        try:
            async with self._sending:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise Gone(type(exc).__name__) from exc

    async def send_text(self, text: str) -> None:
        await self.send_raw(self.conn.send(TextMessage(text)))

    async def receive(self) -> Message | CloseConnection | Ping | None:
        """The next whole message, close frame (or ping, if reported); None at EOF.

        Raises:
            Gone: the connection was reset.
        """
        for _ in range(10_000_000):
            while self._queue:
                event = self._queue.popleft()
                if isinstance(event, TextMessage):
                    self._text.append(event.data)
                    if event.message_finished:
                        text, self._text = "".join(self._text), []
                        return Message(text, None)
                elif isinstance(event, BytesMessage):
                    self._data.append(bytes(event.data))
                    if event.message_finished:
                        data, self._data = b"".join(self._data), []
                        return Message(None, data)
                elif isinstance(event, Ping):
                    self.pings += 1
                    if self.answer_pings and self.conn.state is ConnectionState.OPEN:
                        await self.send_raw(self.conn.send(event.response()))
                    if self.report_pings:
                        return event
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                    if self.answer_close and self.conn.state is ConnectionState.REMOTE_CLOSING:
                        await self.send_raw(self.conn.send(event.response()))
                    return event
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise Gone(type(exc).__name__) from exc
            if not data:
                return None
            try:
                self.conn.receive_data(data)
            except LocalProtocolError:  # data after the close handshake: ignore it
                continue
            self._queue.extend(self.conn.events())
        raise RuntimeError("receive loop bound reached")

    async def receive_json(self, limit: float = 10) -> dict[str, Any]:
        with trio.fail_after(limit):
            for _ in range(1000):
                got = await self.receive()
                if isinstance(got, Message) and got.text is not None:
                    value: dict[str, Any] = json.loads(got.text)
                    return value
                if got is None or isinstance(got, CloseConnection):
                    raise Gone(f"closed: {got}")
        raise RuntimeError("no text message")

    async def wait_eof(self, limit: float) -> tuple[str, float | None]:
        """Read raw bytes until the server ends TCP: ("eof"|"reset"|"open", seconds)."""
        start = time.monotonic()
        with trio.move_on_after(limit):
            for _ in range(10_000_000):
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return "reset", time.monotonic() - start
                if not data:
                    return "eof", time.monotonic() - start
        return "open", None

    async def aclose(self) -> None:
        with trio.move_on_after(2):
            with contextlib.suppress(trio.BrokenResourceError, OSError):
                await self.stream.aclose()


async def outcome_of(client: WsClient, limit: float) -> tuple[str, float | None]:
    """Read until the server closes: ("close 1009" | "eof" | "reset" | "open", seconds)."""
    start = time.monotonic()
    with trio.move_on_after(limit):
        try:
            for _ in range(1_000_000):
                got = await client.receive()
                if isinstance(got, CloseConnection):
                    return f"close {got.code}", time.monotonic() - start
                if got is None:
                    return "eof without close frame", time.monotonic() - start
        except Gone:
            return "reset", time.monotonic() - start
        except RemoteProtocolError as exc:
            return f"protocol error: {exc}", time.monotonic() - start
    return "open", None


# ---------------------------------------------------------------------------
# Bystander, samplers, the frame of every attack


@dataclass(eq=False)
class Bystander:
    """A plain client on a 0.05 s schedule; records when each tick arrived."""

    port: int
    arrivals: list[float] = field(default_factory=list)
    ended: str | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        client = await WsClient.open(self.port)
        try:
            await client.receive_json()
            await client.send_text(json.dumps({"type": "start", "interval": BYSTANDER_INTERVAL}))
            started = await client.receive_json()
            assert started["type"] == "started", started
            task_status.started()
            with trio.move_on_after(3600):
                for _ in range(10_000_000):
                    got = await client.receive()
                    if isinstance(got, Message):
                        if got.text is not None and '"tick"' in got.text:
                            self.arrivals.append(time.monotonic())
                    elif got is None or isinstance(got, CloseConnection):
                        self.ended = f"server closed it: {got}"
                        return
        except Gone as exc:
            self.ended = f"reset: {exc}"
        finally:
            await client.aclose()

    def max_gap(self, start: float, end: float) -> float | None:
        """Longest time without a tick within [start, end] (seconds)."""
        times = [t for t in self.arrivals if start <= t <= end]
        before = [t for t in self.arrivals if t < start]
        edges = ([before[-1]] if before else [start]) + times + [end]
        return max(b - a for a, b in itertools.pairwise(edges))


@dataclass(eq=False)
class Sampler:
    """Samples the worker's RSS every 20 ms."""

    server: Server
    samples: list[tuple[float, int]] = field(default_factory=list)

    async def run(self) -> None:
        with trio.move_on_after(3600):
            for _ in range(10_000_000):
                self.samples.append((time.monotonic(), self.server.rss_kib()))
                await trio.sleep(0.02)

    def peak(self, start: float, end: float) -> int:
        return max((kib for t, kib in self.samples if start <= t <= end), default=0)


@dataclass(eq=False)
class HealthProbe:
    """Asks /healthz every 0.25 s: response time and the websocket count."""

    port: int
    samples: list[tuple[float, float | None, int | None]] = field(default_factory=list)

    async def run(self) -> None:
        with trio.move_on_after(3600):
            for _ in range(1_000_000):
                start = time.monotonic()
                count = await healthz_connections(self.port)
                took = time.monotonic() - start if count is not None else None
                self.samples.append((start, took, count))
                await trio.sleep(0.25)

    def during(self, start: float, end: float) -> list[tuple[float, float | None, int | None]]:
        return [s for s in self.samples if start <= s[0] <= end]


@dataclass(eq=False)
class Attack:
    """What every attack scenario measures around its attacker(s)."""

    server: Server
    bystander: Bystander
    sampler: Sampler
    probe: HealthProbe
    rss0: int = 0
    cpu0: float = 0.0
    start: float = 0.0
    end: float = 0.0
    cpu1: float = 0.0

    def begin(self) -> None:
        self.rss0 = self.server.rss_kib()
        self.cpu0 = self.server.cpu()
        self.start = time.monotonic()

    def finish(self) -> None:
        self.end = time.monotonic()
        self.cpu1 = self.server.cpu()

    def connections_seen(self) -> list[tuple[float, int | None]]:
        """(seconds since the attack began, /healthz connections), once a second."""
        out: list[tuple[float, int | None]] = []
        next_t = 0.0
        for t, _, count in self.probe.samples:
            rel = t - self.start
            if rel >= next_t:
                out.append((round(rel, 1), count))
                next_t = rel + 1.0
        return out

    def report(self) -> Result:
        gap = self.bystander.max_gap(self.start, self.end)
        health = self.probe.during(self.start, self.end)
        times = [took for _, took, _ in health if took is not None]
        return {
            "attack_s": round(self.end - self.start, 2),
            "cpu_s": round(self.cpu1 - self.cpu0, 2),
            "rss_peak_delta_mib": round(
                (self.sampler.peak(self.start, self.end) - self.rss0) / 1024, 1
            ),
            "rss_after_delta_mib": round((self.server.rss_kib() - self.rss0) / 1024, 1),
            "bystander_max_gap_ms": None if gap is None else round(gap * 1000),
            "bystander_ended": self.bystander.ended,
            "healthz_max_ms": round(max(times) * 1000) if times else None,
            "healthz_failed": len(health) - len(times),
        }


async def with_attack(server: Server, attack: Callable[[Attack], Awaitable[Result]]) -> Result:
    """Run ``attack`` with a bystander, an RSS sampler and a /healthz probe around it."""
    async with trio.open_nursery() as nursery:
        bystander = Bystander(server.port)
        await nursery.start(bystander.run)
        sampler, probe = Sampler(server), HealthProbe(server.port)
        nursery.start_soon(sampler.run)
        nursery.start_soon(probe.run)
        await trio.sleep(1.0)
        ctx = Attack(server, bystander, sampler, probe)
        ctx.begin()
        try:
            result = await attack(ctx)
        finally:
            if not ctx.end:
                ctx.finish()
        await trio.sleep(1.0)  # settle, then read RSS "after"
        result.update(ctx.report())
        nursery.cancel_scope.cancel()
    return result


# ---------------------------------------------------------------------------
# Scenarios


async def idle(server: Server, args: argparse.Namespace, offer: str | None) -> Result:
    n: int = args.connections
    await trio.sleep(1.0)
    rss0 = server.rss_kib()
    clients: list[WsClient] = []
    failures: Counter[str] = Counter()
    limiter = trio.CapacityLimiter(50)

    async def open_one() -> None:
        async with limiter:
            try:
                client = await WsClient.open(server.port, offer=offer)
                await client.receive_json()
            except (Gone, HandshakeError, OSError, trio.TooSlowError) as exc:
                failures[type(exc).__name__] += 1
                return
            clients.append(client)

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(open_one)
    await trio.sleep(1.0)
    rss1 = server.rss_kib()
    ticks: Counter[int] = Counter()

    async def tick_twenty(client: WsClient) -> None:
        try:
            await client.send_text(json.dumps({"type": "start", "interval": 0.05, "count": 20}))
            with trio.move_on_after(30):
                for _ in range(1000):
                    message = await client.receive_json()
                    if message["type"] == "tick":
                        ticks[id(client)] += 1
                    elif message["type"] == "done":
                        return
        except (Gone, trio.TooSlowError) as exc:
            failures[f"ticks: {type(exc).__name__}"] += 1

    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(tick_twenty, client)
    await trio.sleep(1.0)
    rss2 = server.rss_kib()
    open_count = await healthz_connections(server.port)
    accepted = Counter(str(c.accepted_extensions) for c in clients)
    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(client.aclose)
    k = max(1, len(clients))
    per_open = (rss1 - rss0) / k
    per_ticked = (rss2 - rss0) / k
    return {
        "offered": offer,
        "accepted_extension": dict(accepted),
        "connections": len(clients),
        "healthz_connections": open_count,
        "failures": dict(failures),
        "ticks_received": sum(ticks.values()),
        "rss_before_mib": round(rss0 / 1024, 1),
        "kib_per_conn_idle": round(per_open, 1),
        "kib_per_conn_after_20_ticks": round(per_ticked, 1),
        "outcome": f"{per_open:.0f} KiB/conn idle, {per_ticked:.0f} after ticks; "
        f"ext={next(iter(accepted), None)}",
    }


async def bomb(server: Server, args: argparse.Namespace) -> Result:
    size = args.bomb_mib * MIB
    k: int = args.bombers

    async def attack(ctx: Attack) -> Result:
        clients: list[WsClient] = []
        for _ in range(k):
            client = await WsClient.open(server.port, offer=CHROMIUM_OFFER)
            await client.receive_json()
            clients.append(client)
        # The window the server allowed us (client_max_window_bits=N), else zlib's largest.
        bits = re.search(r"client_max_window_bits=(\d+)", clients[0].accepted_extensions or "")
        window_bits = int(bits.group(1)) if bits else 15
        compressed = deflate_bomb(size, window_bits=window_bits)
        message = frame(OP_TEXT, compressed, rsv1=True)
        ctx.begin()  # the sampler's baseline: after the attackers' handshakes
        outcomes: list[dict[str, Any]] = []
        go = trio.Event()

        async def one(client: WsClient) -> None:
            await go.wait()
            start = time.monotonic()
            sent: str = "sent"
            try:
                await client.send_raw(message)
            except Gone as exc:
                sent = f"send failed: {exc}"
            what, after = await outcome_of(client, 60)
            ended = (None if after is None else after) if what == "open" else after
            tcp, tcp_after = ("n/a", None)
            if what.startswith("close"):
                tcp, tcp_after = await client.wait_eof(30)
            outcomes.append(
                {
                    "send": sent,
                    "saw": what,
                    "ended_after_s": None if ended is None else round(ended, 2),
                    "tcp_end": tcp,
                    "tcp_end_after_close_s": None if tcp_after is None else round(tcp_after, 2),
                    "total_s": round(time.monotonic() - start, 2),
                }
            )
            await client.aclose()

        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(one, client)
            await trio.sleep(0.1)
            ctx.begin()
            go.set()
        ctx.finish()
        saw = Counter(o["saw"] for o in outcomes)
        accepted = Counter(str(c.accepted_extensions) for c in clients)
        return {
            "offered": CHROMIUM_OFFER,
            "accepted_extension": dict(accepted),
            "inflates_to_mib": args.bomb_mib,
            "compressed_bytes": len(compressed),
            "window_bits": window_bits,
            "attackers": outcomes,
            "outcome": f"{dict(saw)}; ext={next(iter(accepted), None)}; "
            f"ended in max {max((o['total_s'] for o in outcomes), default=None)} s",
        }

    return await with_attack(server, attack)


async def unanswered_close(server: Server, args: argparse.Namespace) -> Result:
    async def attack(ctx: Attack) -> Result:
        client = await WsClient.open(server.port)
        client.answer_close = False
        await client.receive_json()
        before = await healthz_connections(server.port)
        ctx.begin()
        await client.send_raw(frame(OP_TEXT, b"x" * 65536))
        what, after = await outcome_of(client, 10)
        tcp, tcp_after = "n/a", None
        if what.startswith("close"):
            tcp, tcp_after = await client.wait_eof(args.close_wait)
        ctx.finish()
        await trio.sleep(1.5)
        later = await healthz_connections(server.port)
        await client.aclose()
        await trio.sleep(1.5)
        after_we_left = await healthz_connections(server.port)
        tcp_text = (
            f"server ended TCP ({tcp}) {tcp_after:.2f} s after its close frame"
            if tcp_after is not None
            else f"TCP still open after {args.close_wait:g} s"
        )
        return {
            "sent_bytes": 65536,
            "saw": what,
            "close_after_s": None if after is None else round(after, 3),
            "tcp": tcp,
            "tcp_end_after_close_s": None if tcp_after is None else round(tcp_after, 2),
            "healthz_connections_before": before,
            "healthz_connections_over_time": ctx.connections_seen(),
            "healthz_connections_at_end": later,
            "healthz_connections_after_we_closed": after_we_left,
            "outcome": f"{what}; {tcp_text}; healthz {before}->{later}",
        }

    return await with_attack(server, attack)


async def first_message(client: WsClient, limit: float) -> tuple[str, Message | None, float]:
    """Read (answering pings) until a message: ("answered" | how it ended, message, seconds)."""
    start = time.monotonic()
    with trio.move_on_after(limit):
        try:
            for _ in range(1_000_000):
                got = await client.receive()
                if isinstance(got, Message):
                    return "answered", got, time.monotonic() - start
                if isinstance(got, CloseConnection):
                    return f"close {got.code} {got.reason}", None, time.monotonic() - start
                if got is None:
                    return "eof without close frame", None, time.monotonic() - start
        except Gone as exc:
            return f"reset ({exc})", None, time.monotonic() - start
    return f"nothing within {limit:g} s", None, time.monotonic() - start


async def flood_continuation(server: Server, args: argparse.Namespace) -> Result:
    n: int = args.frames
    batch = 1000  # frames per write, so a pong can go out between two writes
    key = os.urandom(4)
    empty = bytes([OP_CONTINUATION, 0x80]) + key

    async def attack(ctx: Attack) -> Result:
        client = await WsClient.open(server.port)
        await client.receive_json()
        ctx.begin()
        written = 0
        written_s: float | None = None
        write_error: str | None = None

        async def writer() -> None:
            nonlocal written, written_s, write_error
            try:
                await client.send_raw(frame(OP_TEXT, b"x", fin=False))
                for i in range(0, n, batch):
                    count = min(batch, n - i)
                    await client.send_raw(empty * count)
                    written += count
                await client.send_raw(frame(OP_CONTINUATION, b"", fin=True))
                written_s = time.monotonic() - ctx.start
            except Gone as exc:
                write_error = f"{exc} after {time.monotonic() - ctx.start:.2f} s"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            what, got, after = await first_message(client, args.flood_wait)
            nursery.cancel_scope.cancel()
        ctx.finish()
        await client.aclose()
        answer = None if got is None or got.text is None else got.text[:120]
        return {
            "frames": n + 2,
            "bytes": len(empty) * n + 13,
            "empty_frames_written": written,
            "written_after_s": None if written_s is None else round(written_s, 2),
            "write_error": write_error,
            "saw": what,
            "answer": answer,
            "answer_or_end_after_s": round(after, 2),
            "outcome": f"{what} after {after:.1f} s: {answer}; wrote {written} empty frames"
            + (f", write failed: {write_error}" if write_error else ""),
        }

    return await with_attack(server, attack)


async def flood_ping(server: Server, args: argparse.Namespace) -> Result:
    n: int = args.pings
    ping = frame(OP_PING, os.urandom(125))
    batch = 1000

    async def attack(ctx: Attack) -> Result:
        client = await WsClient.open(server.port, rcvbuf=4096)
        await client.receive_json()  # the hello; never read again
        ctx.begin()
        sent = 0
        dropped: str | None = None
        dropped_s: float | None = None
        with trio.move_on_after(60):
            try:
                for _ in range(n // batch):
                    await client.send_raw(ping * batch)
                    sent += batch
            except Gone as exc:
                dropped, dropped_s = f"send failed ({exc})", time.monotonic() - ctx.start
        all_sent_s = time.monotonic() - ctx.start
        if dropped is None:  # written without trouble: did the server drop it since?
            with trio.move_on_after(30):
                for _ in range(300):
                    if await healthz_connections(server.port) == 1:
                        dropped = "gone from /healthz"
                        dropped_s = time.monotonic() - ctx.start
                        break
                    await trio.sleep(0.1)
        ctx.finish()
        final, _ = await client.wait_eof(0.5) if dropped else ("open", None)
        await client.aclose()
        return {
            "pings_written": sent,
            "bytes_written": sent * len(ping),
            "writing_took_s": round(all_sent_s, 2),
            "dropped": dropped,
            "dropped_after_s": None if dropped_s is None else round(dropped_s, 2),
            "socket_at_end": final,
            "outcome": f"{sent} pings written; dropped: {dropped} after "
            f"{dropped_s and round(dropped_s, 2)} s",
        }

    return await with_attack(server, attack)


async def flood_commands(server: Server, args: argparse.Namespace) -> Result:
    n: int = args.commands // 1000 * 1000
    batch = 1000
    command = frame(OP_TEXT, b'{"type":"stop"}')

    async def attack(ctx: Attack) -> Result:
        client = await WsClient.open(server.port)
        await client.receive_json()
        answers = 0
        last_answer = 0.0
        written = 0
        written_s: float | None = None
        write_error: str | None = None
        ended: str | None = None
        ctx.begin()

        async def writer() -> None:
            nonlocal written, written_s, write_error
            try:
                for _ in range(n // batch):
                    await client.send_raw(command * batch)
                    written += batch
                written_s = time.monotonic() - ctx.start
            except Gone as exc:
                write_error = f"{exc} after {time.monotonic() - ctx.start:.2f} s"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            with trio.move_on_after(args.flood_wait):
                try:
                    for _ in range(n + 100):
                        got = await client.receive()
                        if isinstance(got, Message):
                            answers += 1
                            last_answer = time.monotonic()
                            if answers >= n:
                                break
                        elif got is None or isinstance(got, CloseConnection):
                            ended = (
                                f"server closed: {got} after {time.monotonic() - ctx.start:.1f} s"
                            )
                            break
                except Gone as exc:
                    ended = f"reset ({exc}) after {time.monotonic() - ctx.start:.1f} s"
            nursery.cancel_scope.cancel()
        ctx.finish()
        await client.aclose()
        took = last_answer - ctx.start if answers else None
        rate = answers / took if took else None
        return {
            "commands": n,
            "written": written,
            "written_after_s": None if written_s is None else round(written_s, 2),
            "write_error": write_error,
            "answers": answers,
            "last_answer_after_s": None if took is None else round(took, 2),
            "answers_per_s": None if rate is None else round(rate),
            "ended": ended,
            "outcome": f"{answers} answers in {took and round(took, 1)} s, "
            f"{rate and round(rate)}/s; {ended or 'all answered'}",
        }

    return await with_attack(server, attack)


async def slowloris(server: Server, args: argparse.Namespace) -> Result:
    n: int = args.slow_connections
    wait: float = args.slowloris_wait
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()

    async def attack(ctx: Attack) -> Result:
        ends: list[tuple[float, str, int]] = []
        still_open = 0
        failed_connect = 0

        async def one() -> None:
            nonlocal still_open, failed_connect
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            except OSError:
                failed_connect += 1
                return
            start = time.monotonic()
            sent = 0
            how = "open"
            async with trio.open_nursery() as nursery:

                async def trickle() -> None:
                    nonlocal sent
                    for i in range(len(request)):
                        await stream.send_all(request[i : i + 1])
                        sent += 1
                        await trio.sleep(1.0)

                async def trickle_safely() -> None:
                    with contextlib.suppress(
                        trio.BrokenResourceError, trio.ClosedResourceError, OSError
                    ):
                        await trickle()

                nursery.start_soon(trickle_safely)
                with trio.move_on_after(wait):
                    try:
                        first = await stream.receive_some(4096)
                        status_line = first.split(b"\r\n")[0].decode("latin-1")
                        how = f"response {status_line!r}" if first else "eof"
                    except (trio.BrokenResourceError, OSError):
                        how = "reset"
                nursery.cancel_scope.cancel()
            if how == "open":
                still_open += 1
            else:
                ends.append((time.monotonic() - start, how, sent))
            with trio.move_on_after(1):
                with contextlib.suppress(OSError):
                    await stream.aclose()

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
            await trio.sleep(min(5.0, wait / 2))
            mid_rss = server.rss_kib()
            mid_count = await healthz_connections(server.port)
        ctx.finish()
        times = sorted(t for t, _, _ in ends)
        hows = Counter(how for _, how, _ in ends)
        closed_text = (
            f"closed after min {times[0]:.1f} / median {statistics.median(times):.1f} / "
            f"max {times[-1]:.1f} s"
            if times
            else "none closed"
        )
        return {
            "connections": n,
            "request_bytes": len(request),
            "failed_connect": failed_connect,
            "closed": len(ends),
            "still_open_after_s": wait if still_open else None,
            "still_open": still_open,
            "how_closed": dict(hows),
            "close_after_s": {
                "min": round(times[0], 1) if times else None,
                "median": round(statistics.median(times), 1) if times else None,
                "max": round(times[-1], 1) if times else None,
            },
            "bytes_sent_median": statistics.median([s for _, _, s in ends]) if ends else None,
            "rss_delta_at_5s_mib": round((mid_rss - ctx.rss0) / 1024, 1),
            "healthz_connections_at_5s": mid_count,
            "outcome": f"{closed_text} ({dict(hows)}); {still_open} still open after {wait:g} s",
        }

    return await with_attack(server, attack)


async def silent_peer(server: Server, args: argparse.Namespace) -> Result:
    wait: float = args.silent_wait

    async def attack(ctx: Attack) -> Result:
        client = await WsClient.open(server.port)
        await client.receive_json()
        await client.send_text(json.dumps({"type": "start", "interval": 300}))
        await client.receive_json()
        client.answer_pings = False
        client.answer_close = False  # silent means silent
        ctx.begin()
        what, after = await outcome_of(client, wait)
        ctx.finish()
        await client.aclose()
        return {
            "wait_s": wait,
            "saw": what,
            "closed_after_s": None if after is None else round(after, 2),
            "pings_received": client.pings,
            "outcome": f"{what} after {after and round(after, 2)} s; "
            f"{client.pings} pings unanswered"
            + (f"; still open after {wait:g} s" if after is None else ""),
        }

    return await with_attack(server, attack)


async def run_scenario(name: str, server: Server, args: argparse.Namespace) -> Result:
    await server.ready()
    runners: dict[str, Callable[[], Awaitable[Result]]] = {
        "idle-plain": lambda: idle(server, args, None),
        "idle-browser": lambda: idle(server, args, CHROMIUM_OFFER),
        "bomb": lambda: bomb(server, args),
        "unanswered-close": lambda: unanswered_close(server, args),
        "flood-continuation": lambda: flood_continuation(server, args),
        "flood-ping": lambda: flood_ping(server, args),
        "flood-commands": lambda: flood_commands(server, args),
        "slowloris": lambda: slowloris(server, args),
        "silent-peer": lambda: silent_peer(server, args),
    }
    with trio.fail_after(args.scenario_timeout):
        result = await runners[name]()
    result["worker_pids"] = server.workers
    return result


# ---------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="repeatable")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--log-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--connections", type=int, default=300, help="idle-*")
    parser.add_argument("--bombers", type=int, default=10, help="bomb")
    parser.add_argument("--bomb-mib", type=int, default=200, help="bomb: inflated size")
    parser.add_argument("--close-wait", type=float, default=30.0, help="unanswered-close")
    parser.add_argument("--frames", type=int, default=200_000, help="flood-continuation")
    parser.add_argument("--pings", type=int, default=100_000, help="flood-ping")
    parser.add_argument("--commands", type=int, default=100_000, help="flood-commands")
    parser.add_argument("--slow-connections", type=int, default=200, help="slowloris")
    parser.add_argument("--slowloris-wait", type=float, default=60.0, help="slowloris")
    parser.add_argument("--silent-wait", type=float, default=60.0, help="silent-peer")
    parser.add_argument(
        "--flood-wait", type=float, default=300.0, help="flood-continuation/commands"
    )
    parser.add_argument("--scenario-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    for item in args.env:
        if "=" not in item:
            parser.error(f"--env wants NAME=VALUE, got {item!r}")
    return args


def table(results: list[Result]) -> str:
    columns = ("scenario", "env", "RSS Δ", "CPU s", "gap ms", "healthz ms", "outcome")
    rows = [columns]
    for r in results:
        if "kib_per_conn_idle" in r:
            rss = f"{r['kib_per_conn_idle']}/{r['kib_per_conn_after_20_ticks']} KiB/conn"
        elif "rss_peak_delta_mib" in r:
            rss = f"peak {r['rss_peak_delta_mib']}, after {r['rss_after_delta_mib']} MiB"
        else:
            rss = "-"
        rows.append(
            (
                r["scenario"],
                r["env"] or "-",
                rss,
                str(r.get("cpu_s", "-")),
                str(r.get("bystander_max_gap_ms", "-")),
                str(r.get("healthz_max_ms", "-")),
                str(r.get("outcome", r.get("error", ""))),
            )
        )
    widths = [max(len(row[i]) for row in rows[:]) for i in range(len(columns) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def server_source() -> str:
    """The commit of the ticker being served, and whether src/ differs from it."""
    import ticker

    repo = Path(ticker.__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted src changes' if dirty else ''}"


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    results: list[Result] = []
    for name in args.scenario or SCENARIOS:
        source = server_source()
        server = Server.launch(env, args.log_dir, name)
        result: Result
        try:
            result = trio.run(run_scenario, name, server, args)
        except Exception as exc:  # one broken scenario must not hide the others
            traceback.print_exception(exc, file=sys.stderr)
            result = {"error": "; ".join(f"{type(e).__name__}: {e}" for e in leaves(exc))}
        finally:
            server.stop()
        result = {
            "scenario": name,
            "env": " ".join(args.env),
            **result,
            "server_source": source,
            "server_log": str(server.log_path),
            "server_log_notable": server.notable_log_lines(),
        }
        results.append(result)
        print(json.dumps(result), flush=True)
        print(f"# server log: {server.log_path}", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(table(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
