"""`ticker watch` against a server that breaks docs/protocol.md: exit 1 and one line.

Never a traceback, and never a hang: each check is a real one, not an ``assert`` that
``python -O`` would remove, so every test runs the CLI both ways.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import pytest
import trio
import wsproto
import wsproto.events

from ..support import STEP_TIMEOUT

pytestmark = pytest.mark.slow

HELLO = {"type": "hello", "version": "0", "min_interval": 0.01, "max_interval": 9, "max_count": 9}
STARTED = {"type": "started", "id": 1, "interval": 0.5, "count": 3}
ANCHORED = {**STARTED, "anchor": 1764139200.25, "first": 5}


def compact(message: dict[str, object]) -> str:
    return json.dumps(message, separators=(",", ":"))


def tick(seq: object, **fields: object) -> dict[str, object]:
    return {"type": "tick", "id": 1, "seq": seq, "time": 1764139200.5, **fields}


async def serve_a_script(
    script: list[dict[str, object]], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Says hello, answers the first message with ``script``, then answers only pings and closes."""

    async def one(stream: trio.SocketStream) -> None:
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        answered = False
        while data := await stream.receive_some():
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, wsproto.events.Request):
                    await stream.send_all(ws.send(wsproto.events.AcceptConnection()))
                    await stream.send_all(ws.send(wsproto.events.TextMessage(compact(HELLO))))
                elif isinstance(event, wsproto.events.TextMessage) and not answered:
                    answered = True
                    for message in script:
                        await stream.send_all(ws.send(wsproto.events.TextMessage(compact(message))))
                elif isinstance(event, wsproto.events.Ping):
                    await stream.send_all(ws.send(event.response()))
                elif isinstance(event, wsproto.events.CloseConnection):
                    await stream.send_all(ws.send(event.response()))
                    return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(one, listeners)


async def watch(
    script: list[dict[str, object]], *args: str, optimize: bool
) -> tuple[str, subprocess.CompletedProcess[bytes]]:
    """``ticker watch -i 0.5 -n 3 *args`` against ``script``: its URL and the finished process."""
    command = [sys.executable, *(["-O"] if optimize else []), "-m", "ticker"]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_a_script, script))
        url = f"ws://127.0.0.1:{port}/ws"
        with trio.fail_after(STEP_TIMEOUT * 3):
            result = await trio.run_process(
                [*command, "watch", url, "-i", "0.5", "-n", "3", *args],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        nursery.cancel_scope.cancel()
    return url, result


optimized = pytest.mark.parametrize("optimize", [False, True], ids=["asserts", "python -O"])


@optimized
@pytest.mark.parametrize(
    ("script", "invalid"),
    [
        pytest.param([{**STARTED, "id": "1"}], "id", id="started id a string"),
        pytest.param([{**STARTED, "id": True}], "id", id="started id a boolean"),
        pytest.param([{**STARTED, "id": 0}], "id", id="started id 0"),
        pytest.param([{k: v for k, v in STARTED.items() if k != "id"}], "id", id="no started id"),
        pytest.param([{**STARTED, "interval": "0.5"}], "interval", id="interval a string"),
        pytest.param([{**STARTED, "interval": 0}], "interval", id="interval 0"),
        pytest.param([{**STARTED, "interval": None}], "interval", id="interval null"),
        pytest.param([{**STARTED, "count": 0}], "count", id="count 0"),
        pytest.param([{**STARTED, "count": "3"}], "count", id="count a string"),
        pytest.param([{**STARTED, "first": 1}], "anchor", id="first without anchor"),
        pytest.param([{**ANCHORED, "anchor": "0"}], "anchor", id="anchor a string"),
        pytest.param([{**ANCHORED, "anchor": True}], "anchor", id="anchor a boolean"),
        pytest.param([{**ANCHORED, "anchor": -1}], "anchor", id="anchor negative"),
        pytest.param([{**STARTED, "anchor": 0}], "first", id="anchor without first"),
        pytest.param([{**ANCHORED, "first": 0}], "first", id="first 0"),
        pytest.param([{**ANCHORED, "first": 2.5}], "first", id="first not whole"),
        pytest.param([ANCHORED, tick(4)], "seq", id="seq before first"),
        pytest.param([STARTED, tick("1")], "seq", id="seq a string"),
        pytest.param([STARTED, tick(True)], "seq", id="seq a boolean"),
        pytest.param([STARTED, tick(0)], "seq", id="seq 0"),
        pytest.param([STARTED, tick(1.5)], "seq", id="seq not whole"),
        pytest.param([STARTED, {"type": "done", "id": 1, "sent": 0}], "skipped", id="no skipped"),
        pytest.param(
            [STARTED, {"type": "done", "id": 1, "sent": 3, "skipped": -1}],
            "skipped",
            id="skipped -1",
        ),
    ],
)
async def test_a_message_with_an_invalid_field_exits_1_naming_it(
    script: list[dict[str, object]], invalid: str, optimize: bool
) -> None:
    url, result = await watch(script, optimize=optimize)
    assert result.returncode == 1, result.stderr
    bad = script[-1]
    assert result.stderr.decode().splitlines() == [
        f"ticker: {url} sent a {bad['type']} message with an invalid {invalid}: {compact(bad)}"
    ]


@optimized
async def test_a_tick_that_goes_back_exits_1_after_the_summary(optimize: bool) -> None:
    url, result = await watch([STARTED, tick(2), tick(1)], optimize=optimize)
    assert result.returncode == 1, result.stderr
    assert result.stderr.decode().splitlines() == [f"ticker: {url} sent tick #1 after tick #2"]
    assert result.stdout.decode().splitlines()[-1].startswith("received 1, skipped 1, ")


@optimized
async def test_a_repeated_tick_exits_1(optimize: bool) -> None:
    url, result = await watch([STARTED, tick(1), tick(1)], optimize=optimize)
    assert result.returncode == 1, result.stderr
    assert result.stderr.decode().splitlines() == [f"ticker: {url} sent tick #1 after tick #1"]


@optimized
async def test_messages_before_started_or_for_other_ids_are_not_counted(optimize: bool) -> None:
    # Without an id a tick names no schedule; `true` is not the id 1.
    stray = [{"type": "tick", "seq": 1}, tick(2, id=True), tick(2, id=7)]
    done = {"type": "done", "id": 1, "sent": 3, "skipped": 0}
    script = [stray[0], STARTED, *stray[1:], tick(1), tick(2), tick(3), done]
    _, result = await watch(script, optimize=optimize)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode().splitlines()
    assert [line.split()[0] for line in out[1:-1]] == ["#1", "#2", "#3"]
    assert out[-1].startswith("received 3, skipped 0, ")
    assert result.stderr == b""


@optimized
@pytest.mark.parametrize("flag", ["--align", "--reconnect"])
async def test_a_server_without_anchors_is_named_for_flags_that_need_them(
    flag: str, optimize: bool
) -> None:
    url, result = await watch([STARTED], flag, optimize=optimize)
    assert result.returncode == 1, result.stderr
    assert result.stderr.decode().splitlines() == [
        f"ticker: {url} does not report its schedules' anchor "
        f"(a ticker server older than {flag} needs)"
    ]


@optimized
async def test_slots_are_counted_from_the_first_slot_of_an_anchored_schedule(
    optimize: bool,
) -> None:
    # Slots 5-7: 6 was skipped. Nothing before 5 is counted, sent or skipped.
    done = {"type": "done", "id": 1, "sent": 2, "skipped": 1}
    _, result = await watch([ANCHORED, tick(5), tick(7), done], "--align", optimize=optimize)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode().splitlines()
    assert [line.split()[0] for line in out[1:-1]] == ["#5", "#7"]
    assert "(skipped 1: #6)" in out[2]
    assert out[-1].startswith("received 2, skipped 1, ")
