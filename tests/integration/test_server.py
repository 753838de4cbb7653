"""The real app on a real Hypercorn (trio worker) over loopback, with trio-websocket clients."""

from __future__ import annotations

import json
import logging
import time

import pytest
import trio
import trio.lowlevel
import wsproto.events
from trio_websocket import WebSocketConnection, open_websocket_url

import ticker
from ticker.config import Settings
from ticker.protocol import Limits

from ..support import (
    STEP_TIMEOUT,
    RawWebsocket,
    http_get,
    open_connections,
    serve_ticker,
    wait_for_connections,
)

pytestmark = pytest.mark.slow


async def receive(ws: WebSocketConnection) -> dict[str, object]:
    with trio.fail_after(STEP_TIMEOUT):
        message = json.loads(await ws.get_message())
    assert isinstance(message, dict)
    return message


async def test_page_and_health_over_http() -> None:
    async with serve_ticker() as server:
        page = await http_get(server, "/")
        assert page.status == 200
        assert b"<title>ticker" in page.body
        health = await http_get(server, "/healthz")
        assert health.json() == {
            "status": "ok",
            "version": ticker.__version__,
            "connections": 0,
            "client": "127.0.0.1",
        }


async def test_counted_schedule_arrives_on_time_without_drift() -> None:
    interval, count = 0.05, 60
    async with serve_ticker() as server, open_websocket_url(server.ws_url) as ws:
        assert (await receive(ws))["type"] == "hello"
        # The server's clock is ours (one process), and it starts the schedule
        # after this moment: no tick may arrive before t0 + seq * interval.
        t0 = trio.current_time()
        await ws.send_message(json.dumps({"type": "start", "interval": interval, "count": count}))
        started = await receive(ws)
        now = time.time()
        assert started == {
            "type": "started",
            "id": 1,
            "interval": interval,
            "count": count,
            "anchor": pytest.approx(now, abs=5),  # the wall clock at acceptance
            "first": 1,
        }
        lateness = []
        seqs = []
        while (message := await receive(ws))["type"] == "tick":
            seq = message["seq"]
            assert isinstance(seq, int)
            seqs.append(seq)
            lateness.append(trio.current_time() - (t0 + seq * interval))
        assert message["type"] == "done"
        skipped = message["skipped"]
        assert isinstance(skipped, int)
        assert message["sent"] == len(seqs)
        assert len(seqs) + skipped == count
        assert seqs == sorted(set(seqs))
        assert seqs[-1] == count or skipped > 0
        assert min(lateness) >= 0  # never early: exact, whatever the machine's load
        # Generous bounds for a loaded 2-core machine; what matters is that the
        # last tick is as close to its absolute deadline as the first (no drift).
        # Medians of ten, so a stall or two of a busy machine cannot move them;
        # drift, which delays every later tick more, does. (Exact no-drift is
        # proved on a virtual clock in tests/unit/test_session.py.)
        assert max(lateness) < 0.5
        assert abs(sorted(lateness[-10:])[5] - sorted(lateness[:10])[5]) < 0.1


async def test_anchor_zero_puts_ticks_on_the_wall_clock_grid() -> None:
    interval = 0.1
    async with serve_ticker() as server, open_websocket_url(server.ws_url) as ws:
        await receive(ws)
        await ws.send_message(json.dumps({"interval": interval, "anchor": 0, "count": 10}))
        started = await receive(ws)
        assert (started["anchor"], started["count"]) == (0, 10)
        first = started["first"]
        assert isinstance(first, int)
        assert first == pytest.approx(time.time() / interval, abs=50)  # the epoch's grid
        seqs = []
        while (message := await receive(ws))["type"] == "tick":
            seq, sent_at = message["seq"], message["time"]
            assert isinstance(seq, int)
            assert isinstance(sent_at, float)
            seqs.append(seq)
            # Sent at its slot of the epoch grid: never early (1 ms for the
            # microsecond rounding of `time`), late only by a busy machine's stall.
            assert -0.001 <= sent_at - seq * interval < 0.5
        assert seqs[0] == first
        assert message == {"type": "done", "id": 1, "sent": len(seqs), "skipped": 10 - len(seqs)}


async def test_a_resume_after_the_last_slot_is_schedule_over_and_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with serve_ticker() as server, open_websocket_url(server.ws_url) as ws:
        await receive(ws)
        late = {"interval": 1, "anchor": time.time() - 3600, "last": 10}  # ended an hour ago
        await ws.send_message(json.dumps(late))
        error = await receive(ws)
        assert error["code"] == "schedule_over"
        await ws.send_message('{"interval":1,"last":0}')  # a real mistake still warns
        assert (await receive(ws))["code"] == "invalid_last"
    over = [r for r in caplog.records if "resumed a schedule that is over" in r.getMessage()]
    assert [r.levelno for r in over] == [logging.INFO]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "sent an invalid frame (invalid_last)" in warnings[0]


async def test_replace_and_stop_over_a_real_socket() -> None:
    async with serve_ticker() as server, open_websocket_url(server.ws_url) as ws:
        await receive(ws)
        await ws.send_message('{"interval":0.02}')
        assert (await receive(ws))["id"] == 1
        assert (await receive(ws))["type"] == "tick"
        await ws.send_message('{"interval":"0.03","count":"100"}')
        while (message := await receive(ws))["type"] != "started":
            assert message["id"] == 1
        assert message == {"type": "started", "id": 2, "interval": 0.03, "count": 100} | {
            "anchor": message["anchor"],
            "first": 1,
        }
        assert (await receive(ws))["id"] == 2
        await ws.send_message('{"type":"stop"}')
        while (message := await receive(ws))["type"] != "stopped":
            assert message["id"] == 2
        assert message == {"type": "stopped", "id": 2}
        with trio.move_on_after(0.3):
            extra = await ws.get_message()
            pytest.fail(f"message after stopped: {extra!r}")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{nope", "invalid_json"),
        ('{"interval":NaN}', "invalid_json"),
        ("[1]", "invalid_message"),
        ('{"type":"pause"}', "unknown_type"),
        ('{"interval":"fast"}', "invalid_interval"),
        ('{"interval":1,"count":2.5}', "invalid_count"),
        (b"\x00\x01", "binary_not_supported"),
    ],
)
async def test_invalid_frames_get_an_error_and_the_connection_stays_open(
    frame: str | bytes, code: str
) -> None:
    async with serve_ticker() as server, open_websocket_url(server.ws_url) as ws:
        await receive(ws)
        await ws.send_message('{"interval":0.05}')
        await receive(ws)
        await ws.send_message(frame)
        while (message := await receive(ws))["type"] == "tick":
            pass
        assert message["type"] == "error"
        assert message["code"] == code
        assert isinstance(message["message"], str)
        assert message["message"]
        # The schedule goes on, and the connection answers.
        assert (await receive(ws))["type"] == "tick"
        await ws.send_message('{"type":"stop"}')
        while (message := await receive(ws))["type"] != "stopped":
            pass
        assert message["id"] == 1


# trio-websocket's client leaks its socket when the server closes or rejects the
# connection (it waits for a TCP close it never performs), so these two tests
# speak wsproto directly.


async def test_frame_over_max_message_size_closes_with_1009() -> None:
    async with serve_ticker() as server:
        client = await RawWebsocket.connect(server)
        async with client.stream:
            await client.receive_json()
            await client.send_text('{"interval":1,"pad":"' + "x" * 4096 + '"}')
            event = await client.next_event()
            assert isinstance(event, wsproto.events.CloseConnection)
            assert event.code == 1009
        await wait_for_connections(server, 0)


async def test_connection_limit_refuses_with_503_and_frees_slots() -> None:
    async with serve_ticker(Settings(max_connections=2)) as server:
        async with open_websocket_url(server.ws_url) as first:
            await receive(first)
            async with open_websocket_url(server.ws_url) as second:
                await receive(second)
                assert await open_connections(server) == 2
                refused, event = await RawWebsocket.handshake(server)
                async with refused.stream:
                    assert isinstance(event, wsproto.events.RejectConnection)
                    assert event.status_code == 503
                    body = await refused.next_event()
                    assert isinstance(body, wsproto.events.RejectData)
                    assert b"limit of 2 connections" in body.data
                assert await open_connections(server) == 2
                # Existing connections are unaffected.
                await first.send_message("0.01")
                assert (await receive(first))["type"] == "started"
            await wait_for_connections(server, 1)
            async with open_websocket_url(server.ws_url) as third:
                assert (await receive(third))["type"] == "hello"
        await wait_for_connections(server, 0)


async def test_hello_carries_the_configured_limits() -> None:
    settings = Settings(limits=Limits(min_interval=0.5, max_interval=60, max_count=7))
    async with serve_ticker(settings) as server, open_websocket_url(server.ws_url) as ws:
        assert await receive(ws) == {
            "type": "hello",
            "version": ticker.__version__,
            "min_interval": 0.5,
            "max_interval": 60,
            "max_count": 7,
        }


async def test_disconnects_in_every_state_leave_nothing_and_log_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with serve_ticker() as server:
        for round_ in range(10):
            clients = [await RawWebsocket.connect(server) for _ in range(10)]
            for index, client in enumerate(clients):
                await client.receive_json()  # hello
                if index % 2:
                    await client.send_text('{"interval":0.01}')
                    await client.receive_json()  # started
                if index % 3 == 0:
                    await client.send_text("garbage")
            await wait_for_connections(server, 10)
            for index, client in enumerate(clients):
                if (index + round_) % 2:
                    await client.abort()  # TCP reset, mid-tick for half of them
                else:
                    await client.stream.aclose()  # plain close, no close frame
            await wait_for_connections(server, 0)
    # The only warnings are for the garbage frames; disconnects are not problems.
    problems = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "sent an invalid frame" not in r.getMessage()
    ]
    assert problems == []
    assert "Traceback" not in caplog.text
    opened = [r for r in caplog.records if r.getMessage().endswith("open)")]
    closed = [r for r in caplog.records if " disconnected after " in r.getMessage()]
    assert len(opened) == len(closed) == 100


async def test_reset_during_a_burst_of_commands_leaves_no_connection_behind() -> None:
    # A client floods starts without reading, then resets the TCP connection.
    # The server's answer hits the dead socket while its receive queues are
    # full; hypercorn then delivers the disconnect into a full queue from the
    # very task that should drain it (see ticker/_hypercorn_fixes/disconnects.py).
    async with serve_ticker() as server:
        frame = RawWebsocket.encode_text('{"interval":0.01}')
        for attempt in range(60):
            client = await RawWebsocket.connect(server)
            await client.receive_json()
            for _ in range(10):
                await client.stream.send_all(frame * 20)
                await trio.lowlevel.checkpoint()
            await trio.sleep(attempt % 6 * 0.002)  # reset at varying points of the backlog
            await client.abort()
        await wait_for_connections(server, 0)
