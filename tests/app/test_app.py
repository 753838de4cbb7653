"""Routes through Quart-Trio's test client: no sockets, real app wiring."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing
from quart.testing.connections import WebsocketDisconnectError, WebsocketResponseError

import ticker
import ticker.app
import ticker.session
from ticker.app import create_app
from ticker.config import Settings
from ticker.protocol import Limits

from ..support import metric_values


async def test_index_serves_the_page() -> None:
    response = await create_app(Settings()).test_client().get("/")
    assert response.status_code == 200
    assert response.content_type == "text/html; charset=utf-8"
    assert "<title>ticker" in await response.get_data(as_text=True)


async def test_healthz_reports_version_and_open_connections() -> None:
    app = create_app(Settings())
    client = app.test_client()
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert await response.get_json() == {
        "status": "ok",
        "version": ticker.__version__,
        "connections": 0,
        "client": "<local>",  # what Quart's test client calls itself
    }
    async with client.websocket("/ws") as ws:
        await ws.receive()  # hello: the connection is open
        health = await (await client.get("/healthz")).get_json()
        assert health["connections"] == 1


async def test_unknown_path_is_404() -> None:
    response = await create_app(Settings()).test_client().get("/nope")
    assert response.status_code == 404


async def test_websocket_speaks_the_protocol() -> None:
    client = create_app(Settings(limits=Limits(max_count=5))).test_client()
    async with client.websocket("/ws") as ws:
        assert json.loads(await ws.receive()) == {
            "type": "hello",
            "version": ticker.__version__,
            "min_interval": 0.01,
            "max_interval": 86400,
            "max_count": 5,
        }
        await ws.send('{"interval":0.01,"count":2}')
        messages = [json.loads(await ws.receive()) for _ in range(4)]
        assert [m["type"] for m in messages] == ["started", "tick", "tick", "done"]
        await ws.send('{"interval":0.01,"count":6}')
        error = json.loads(await ws.receive())
        assert error["code"] == "invalid_count"
        assert "from 1 to 5" in error["message"]


async def test_binary_frames_get_an_error() -> None:
    client = create_app(Settings()).test_client()
    async with client.websocket("/ws") as ws:
        await ws.receive()
        await ws.send(b"\x01\x02")
        assert json.loads(await ws.receive())["code"] == "binary_not_supported"


async def test_oversized_frame_closes_with_1009() -> None:
    client = create_app(Settings(limits=Limits(max_message_size=100))).test_client()
    async with client.websocket("/ws") as ws:
        await ws.receive()
        await ws.send("1" + " " * 100)
        with pytest.raises(WebsocketDisconnectError) as info:
            await ws.receive()
        assert info.value.args[0] == 1009


async def test_handshake_beyond_the_connection_limit_gets_503() -> None:
    app = create_app(Settings(max_connections=1))
    client = app.test_client()
    async with client.websocket("/ws") as first:
        await first.receive()
        async with client.websocket("/ws") as second:
            with pytest.raises(WebsocketResponseError) as info:
                await second.receive()
        assert info.value.response.status_code == 503
        assert "limit of 1 connections" in await info.value.response.get_data(as_text=True)
        # The first connection is unaffected.
        await first.send("0.01")
        assert json.loads(await first.receive())["type"] == "started"
    # Its slot is free again.
    async with client.websocket("/ws") as third:
        assert json.loads(await third.receive())["type"] == "hello"
    health = await (await client.get("/healthz")).get_json()
    assert health["connections"] == 0


async def test_a_bug_in_the_session_closes_with_1011_and_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken_run(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(ticker.session.Session, "run", broken_run)
    client = create_app(Settings()).test_client()
    async with client.websocket("/ws") as ws:
        with pytest.raises(WebsocketDisconnectError) as info:
            await ws.receive()
        assert info.value.args[0] == 1011
    assert "session failed" in caplog.text
    assert "RuntimeError: boom" in caplog.text


async def test_metrics_count_what_a_connection_did() -> None:
    # Metrics are per process, shared by every app a test process makes: compare deltas.
    app = create_app(Settings())
    client = app.test_client()

    async def scrape() -> dict[str, float]:
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.content_type.startswith("text/plain; version=0.0.4")
        return metric_values(await response.get_data(as_text=True))

    before = await scrape()
    async with client.websocket("/ws") as ws:
        await ws.receive()  # hello
        during = await scrape()
        await ws.send(json.dumps({"type": "start", "interval": 0.01, "count": 3}))
        await ws.send("{")
        while (done := json.loads(await ws.receive()))["type"] != "done":
            pass
        after = await scrape()

    def delta(name: str) -> float:
        return after[name] - before[name]

    # On a real clock a busy machine may skip a slot (a tick due after the next
    # deadline): the metrics must count what `done` says was sent and skipped.
    sent, skipped = done["sent"], done["skipped"]
    assert sent + skipped == 3
    assert during["ticker_connections"] - before["ticker_connections"] == 1
    assert delta("ticker_schedules_started_total") == 1
    assert delta("ticker_ticks_sent_total") == sent
    assert delta("ticker_ticks_skipped_total") == skipped
    assert delta("ticker_tick_lateness_seconds_count") == sent
    assert delta('ticker_tick_lateness_seconds_bucket{le="+Inf"}') == sent
    assert delta('ticker_protocol_errors_total{code="invalid_json"}') == 1
    assert delta('ticker_protocol_errors_total{code="invalid_count"}') == 0
    assert (await scrape())["ticker_connections"] == before["ticker_connections"]


async def test_metrics_can_be_turned_off() -> None:
    app = create_app(Settings(metrics=False))
    response = await app.test_client().get("/metrics")
    assert response.status_code == 404
    assert await response.get_data(as_text=True) == "metrics are off (TICKER_METRICS=off)\n"
    assert app.tally is None


@pytest.mark.parametrize(
    ("hops", "logged"),
    [
        (0, "unknown peer connected"),  # header ignored (the test client has no address)
        (1, "203.0.113.9 connected"),  # the last entry, the one our proxy wrote
        (2, "198.51.100.7 connected"),
    ],
)
async def test_proxy_hops_take_the_client_address_from_x_forwarded_for(
    hops: int, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="ticker")
    client = create_app(Settings(proxy_hops=hops)).test_client()
    # nginx sends X-Forwarded-Proto: https also for websockets (a Hypercorn fix keeps wss).
    headers = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9", "X-Forwarded-Proto": "https"}
    async with client.websocket("/ws", headers=headers) as ws:
        await ws.receive()
    assert logged in caplog.text
    assert "connected" in caplog.text


async def test_a_worker_publishes_what_it_counted_when_it_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ticker.app, "PUBLISH_PERIOD", 3600.0)  # only the last publish counts
    app = create_app(Settings())
    assert app.metrics is not None

    def ticks_sent() -> float:
        assert app.metrics is not None
        return metric_values(app.metrics.render(None)[0].decode())["ticker_ticks_sent_total"]

    before = ticks_sent()
    async with app.test_app() as running:
        async with running.test_client().websocket("/ws") as ws:
            await ws.receive()  # hello
            await ws.send(json.dumps({"type": "start", "interval": 0.01, "count": 3}))
            while (done := json.loads(await ws.receive()))["type"] != "done":
                pass
        assert done["sent"] > 0  # (3, unless a busy machine skipped some)
        assert ticks_sent() == before  # counted, not yet published
    assert ticks_sent() == before + done["sent"]  # published as the app stopped serving


ALLOWED = Settings(allowed_origins=frozenset({"https://ticker.example.org"}))


@pytest.mark.parametrize(
    ("settings", "origin", "allowed"),
    [
        (Settings(), "https://elsewhere.example", True),  # default: any origin
        (ALLOWED, "https://ticker.example.org", True),
        (ALLOWED, "HTTPS://Ticker.Example.org", True),  # origins compare case-blind
        (ALLOWED, "https://ticker.example.org.evil.example", False),
        (ALLOWED, "http://ticker.example.org", False),  # another scheme is another origin
        (ALLOWED, "null", False),
        (ALLOWED, None, True),  # not a browser: allowed unless the list says otherwise
        (Settings(allowed_origins=frozenset(), require_origin=True), None, False),
    ],
)
async def test_only_listed_origins_may_open_a_websocket(
    settings: Settings, origin: str | None, allowed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    client = create_app(settings).test_client()
    headers = {} if origin is None else {"Origin": origin}
    async with client.websocket("/ws", headers=headers) as ws:
        if allowed:
            assert json.loads(await ws.receive())["type"] == "hello"
            return
        with pytest.raises(WebsocketResponseError) as info:
            await ws.receive()
    assert info.value.response.status_code == 403
    assert "may not open a websocket" in await info.value.response.get_data(as_text=True)
    assert f"refused: origin {origin or '(none)'} is not allowed" in caplog.text
    health = await (await client.get("/healthz")).get_json()
    assert health["connections"] == 0


async def test_stopping_waits_for_no_background_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # On the virtual clock a wait costs no wall time but shows in trio.current_time():
    # a task left running (the timer, the metrics publisher) would cost Quart-Trio's
    # 5 s background-task timeout at every worker stop.
    app = create_app(Settings())
    began = trio.current_time()
    async with app.test_app():
        pass
    assert trio.current_time() - began < 1.0
