"""The Hypercorn boundary from outside: registration survives middleware, every way out says 1001,
and an untested Hypercorn is refused by the real command in one line."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import hypercorn.trio
import pytest
import trio
from hypercorn.config import Config
from hypercorn.protocol.ws_stream import WSStream
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import Opcode

from ticker.app import create_app
from ticker.config import Settings

from ..support import (
    HYPERCORN,
    RawWebsocket,
    Server,
    handshake_headers,
    http_get,
    raw_frame,
    run_server_command,
    serve_ticker,
    ticking_client,
)

pytestmark = pytest.mark.slow

GRACEFUL_TIMEOUT = 3.0  # hypercorn's default --graceful-timeout, in seconds


def wrapped(app: Any) -> Any:
    """An ordinary ASGI middleware, as a user's, Sentry's or OpenTelemetry's would be."""

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        await app(dict(scope), receive, send)  # a copy, as many middlewares make

    return middleware


@asynccontextmanager
async def serve_wrapped(
    settings: Settings, **config_values: Any
) -> AsyncIterator[tuple[Server, trio.Event]]:
    """ticker inside a middleware on Hypercorn's trio worker; set the event to shut down."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.accesslog = None
    for name, value in config_values.items():
        setattr(config, name, value)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(
            partial(
                hypercorn.trio.serve,
                wrapped(create_app(settings)),
                config,
                shutdown_trigger=shutdown.wait,
            )
        )
        host, _, port = urls[0].partition("://")[2].rpartition(":")
        yield Server(host, int(port)), shutdown
        shutdown.set()


async def test_a_wrapped_app_still_closes_its_websockets_with_1001_at_shutdown() -> None:
    async with serve_wrapped(Settings()) as (server, shutdown):
        clients = [await ticking_client(server) for _ in range(3)]
        with trio.fail_after(GRACEFUL_TIMEOUT - 0.5):  # well before Hypercorn's own cancel
            shutdown.set()
            for client in clients:
                assert await client.close_code() == 1001


async def test_a_wrapped_app_still_refuses_an_oversized_message_before_it_has_all_arrived() -> None:
    async with serve_wrapped(Settings()) as (server, _):
        client = await RawWebsocket.connect(server)
        await client.receive_json()
        frame = raw_frame(Opcode.TEXT, b"1" * 2**20)
        await client.stream.send_all(frame[: 16 * 1024])  # the rest never comes
        assert await client.close_code() == 1009
        await client.stream.aclose()


async def test_a_request_for_an_unknown_server_name_gets_404_and_its_connection_closes() -> None:
    # Hypercorn refuses it itself; stock Hypercorn then left the connection
    # open for ever (keep-alive is long here, so only the fix can close it).
    values = {"server_names": ["ticker.example"], "keep_alive_timeout": 60.0}
    async with serve_wrapped(Settings(), **values) as (server, _):
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n")
            received = b""
            with trio.fail_after(10):  # far below the keep-alive
                while chunk := await stream.receive_some():
                    received += chunk
    assert received.startswith(b"HTTP/1.1 404")


async def test_two_servers_in_one_process_keep_their_own_policies() -> None:
    # No module globals: each server enforces what its own app registered.
    offer = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}
    async with (
        serve_ticker(Settings(compression=True)) as compressing,
        serve_ticker(Settings(compression=False)) as plain,
        serve_ticker(Settings(compression=True)) as compressing_too,
    ):
        agreed = [
            (await handshake_headers(server, offer)).get("sec-websocket-extensions")
            for server in (compressing, plain, compressing_too)
        ]
    small_windows = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    assert agreed == [small_windows, None, small_windows]


@pytest.mark.parametrize(
    "how", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C in its terminal", "SIGTERM"]
)
async def test_with_workers_0_shutdown_closes_with_1001(tmp_path: Path, how: int) -> None:
    # --workers 0: Hypercorn serves in its main process, with no shutdown
    # trigger of its own (Ctrl-C is a KeyboardInterrupt; SIGTERM killed it).
    async with run_server_command(tmp_path, args=("--workers", "0")) as running:
        clients = [await ticking_client(running.server) for _ in range(3)]
        os.killpg(running.process.pid, how)
        for client in clients:
            assert await client.close_code() == 1001
        with trio.fail_after(GRACEFUL_TIMEOUT + 5):
            assert await running.process.wait() == 0
    assert "closing 3 websockets with 1001" in running.text
    assert "Traceback" not in running.text


async def test_max_requests_recycling_closes_with_1001(tmp_path: Path) -> None:
    args = ("--workers", "1", "--max-requests", "1")
    async with run_server_command(tmp_path, args=args) as running:
        client = await ticking_client(running.server)  # request 1
        await http_get(running.server, "/healthz")  # request 2: over the limit
        assert await client.close_code() == 1001
        assert "closing 1 websockets with 1001" in running.text
        # Hypercorn starts a fresh worker in its place.
        with trio.fail_after(30):
            while True:
                try:
                    response = await http_get(running.server, "/healthz")
                except OSError:
                    await trio.sleep(0.1)
                    continue
                if response.status == 200:
                    break
    assert "Traceback" not in running.text


#: Makes ``importlib.metadata`` say Hypercorn is 0.19.0, in every process (workers too).
FAKE_VERSION = """
import importlib.metadata
real = importlib.metadata.version
importlib.metadata.version = lambda name: "0.19.0" if name == "hypercorn" else real(name)
"""


async def test_the_server_command_refuses_an_untested_hypercorn_in_one_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "sitecustomize.py").write_text(FAKE_VERSION)
    command = [*HYPERCORN, "--bind", "127.0.0.1:0"]
    with trio.fail_after(60):
        done = await trio.run_process(
            command,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    # Hypercorn 0.18's parent exits 0 even when its worker fails (run.py
    # overwrites the worker's exit code; see test_installed.py): the line is the contract.
    lines = done.stderr.decode().strip().splitlines()
    assert lines == [
        "ticker: hypercorn 0.19.0 is installed, but ticker's fixes for it were checked on"
        " hypercorn>=0.18.0,<0.19 only; install a supported version:"
        " pip install 'hypercorn>=0.18.0,<0.19'"
    ]


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "compressed"])
async def test_ticks_take_the_text_frame_shortcut_unless_compressed(
    monkeypatch: pytest.MonkeyPatch, compression: bool
) -> None:
    full_path: list[str] = []
    app_send = WSStream.app_send

    async def counting_app_send(self: WSStream, message: Any) -> None:
        if message is not None and message["type"] == "websocket.send":
            full_path.append(message["text"])
        await app_send(self, message)

    monkeypatch.setattr(WSStream, "app_send", counting_app_send)
    async with serve_ticker(Settings(compression=compression)) as server:
        extensions: list[Extension] = [PerMessageDeflate()] if compression else []
        client = await RawWebsocket.connect(server, extensions=extensions)
        assert (await client.receive_json())["type"] == "hello"
        await client.send_text('{"type": "start", "interval": 0.01, "count": 5}')
        kinds = [(await client.receive_json())["type"] for _ in range(7)]
        await client.abort()
    assert kinds == ["started", *["tick"] * 5, "done"]
    # hello, started, 5 ticks, done: all by the shortcut, or all the full way.
    assert len(full_path) == (8 if compression else 0)
