"""The tutorial's programs, run as the tutorial says: with `python` and `hypercorn`, real clocks.

Their output is compared with what the tutorial shows (tests/tutorial_programs.py),
decimal numbers masked: on a busy machine a tick may come a few milliseconds late.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from ..support import STEP_TIMEOUT, Server, http_get, stop_server_command
from ..tutorial_programs import (
    AGAINST,
    ALONE,
    ROOT,
    STEP1,
    STEP4,
    STEP5,
    TUTORIAL,
    Against,
    Alone,
    expected,
    masked,
)

pytestmark = pytest.mark.slow


async def run_program(program: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``python docs/tutorial/PROGRAM ARGS...`` from the top of the checkout."""
    with trio.fail_after(STEP_TIMEOUT * 3):
        return await trio.run_process(
            [sys.executable, str(TUTORIAL / program), *args],
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


@asynccontextmanager
async def hypercorn(app: str) -> AsyncIterator[Server]:
    """``hypercorn APP --worker-class trio`` on a free port of 127.0.0.1, until the block ends."""
    command = [sys.executable, "-m", "hypercorn", app, "--worker-class", "trio"]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [*command, "--bind", "127.0.0.1:0"],
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stderr=subprocess.PIPE,
                check=False,
                start_new_session=True,
            )
        )
        assert process.stderr is not None
        log = b""
        try:
            with trio.fail_after(STEP_TIMEOUT * 3):
                while not (found := re.search(rb"Running on http://127\.0\.0\.1:(\d+)", log)):
                    chunk = await process.stderr.receive_some()
                    if not chunk:
                        raise RuntimeError(f"{app} exited before listening: {log.decode()}")
                    log += chunk
            nursery.start_soon(_drain, process.stderr)
            yield Server("127.0.0.1", int(found.group(1)))
        finally:
            await stop_server_command(process)


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some():
        pass


@pytest.mark.parametrize("case", ALONE, ids=[case.program for case in ALONE])
async def test_program_run_for_real_prints_the_shape_the_tutorial_shows(case: Alone) -> None:
    result = await run_program(case.program)
    assert (result.returncode, result.stderr) == (0, b"")
    assert masked(result.stdout.decode()) == masked(expected(case.output))


@pytest.mark.parametrize(
    "case", AGAINST, ids=[f"{case.program} {case.output} on {case.server}" for case in AGAINST]
)
async def test_client_against_its_server_prints_what_the_tutorial_shows(case: Against) -> None:
    async with hypercorn(case.server) as server:
        result = await run_program(case.program, *case.args, server.ws_url)
    assert (result.returncode, result.stderr) == (case.status, b"")
    assert masked(result.stdout.decode()) == masked(expected(case.output))


@pytest.mark.parametrize("app", [STEP1, STEP4, STEP5])
async def test_each_server_step_serves_its_page(app: str) -> None:
    async with hypercorn(app) as server:
        response = await http_get(server, "/")
    assert response.status == 200
    assert b"new WebSocket(" in response.body


async def _next(ws: WebSocketConnection) -> dict[str, object]:
    with trio.fail_after(STEP_TIMEOUT):
        message: dict[str, object] = json.loads(await ws.get_message())
    return message


async def test_step4_a_new_start_replaces_the_running_schedule_and_stop_ends_it() -> None:
    async with hypercorn(STEP4) as server, open_websocket_url(server.ws_url) as ws:
        await ws.send_message(json.dumps({"type": "start", "interval": 0.1}))
        assert [(await _next(ws))["seq"] for _ in range(2)] == [1, 2]
        await ws.send_message(json.dumps({"type": "start", "interval": 0.1, "count": 2}))
        messages = [await _next(ws)]
        while messages[-1]["type"] != "done":
            messages.append(await _next(ws))
        # At most one tick of the old schedule was already on its way (step 5 fixes that).
        assert messages[-3:] == [
            {"type": "tick", "seq": 1},
            {"type": "tick", "seq": 2},
            {"type": "done", "sent": 2, "skipped": 0},
        ]
        assert len(messages) <= 4
        await ws.send_message(json.dumps({"type": "start", "interval": 0.1}))
        assert (await _next(ws))["seq"] == 1
        await ws.send_message(json.dumps({"type": "stop"}))
        after_stop = []
        with trio.move_on_after(0.5):
            while True:
                after_stop.append(await ws.get_message())
        assert len(after_stop) <= 1  # one tick may already have been on its way


async def test_step5_answers_invalid_frames_and_keeps_the_schedule() -> None:
    async with hypercorn(STEP5) as server, open_websocket_url(server.ws_url) as ws:
        assert (await _next(ws))["type"] == "hello"
        await ws.send_message(json.dumps({"type": "start", "interval": 0.2, "count": 3}))
        assert (await _next(ws))["type"] == "started"
        await ws.send_message("not json")
        assert await _next(ws) == {
            "type": "error",
            "code": "invalid_json",
            "message": "A message must be JSON.",
        }
        assert [(await _next(ws)).get("seq") for _ in range(4)] == [1, 2, 3, None]
        await ws.send_message(json.dumps({"type": "stop"}))
        assert await _next(ws) == {"type": "stopped", "id": None}  # done: nothing to stop


async def test_echo_client_without_a_server_fails_as_the_tutorial_says() -> None:
    # The port stays bound, not listening, for the whole test: connecting is
    # refused, and no server of another test can take the port meanwhile.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        result = await run_program("echo_client.py", f"ws://127.0.0.1:{port}/ws")
    assert result.returncode == 1
    error = result.stderr.decode()
    assert f"OSError: all attempts to connect to 127.0.0.1:{port} failed" in error
    assert error.rstrip().endswith("trio_websocket._impl.HandshakeError")
