"""Real and hostile clients: compression offers, bombs, unanswered closes, silent peers, floods.

Each test is what a browser or an attacker actually sends, written as raw
frames where a polite library would refuse to; each fails on stock Hypercorn.
"""

from __future__ import annotations

import json
import socket
import struct
import zlib
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import wsproto.events
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import Opcode

from ticker.config import Settings

from ..support import (
    STEP_TIMEOUT,
    RawWebsocket,
    count_tasks,
    handshake_headers,
    raw_frame,
    run_server_command,
    serve_ticker,
    ticking_client,
    wait_for_connections,
    worker_pid,
)

pytestmark = pytest.mark.slow

#: What every Chromium (Chrome, Edge) offers in its handshake.
CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"
#: A bystander's interval, and the longest gap between its ticks that still
#: counts as keeping its rhythm on a busy machine (the benchmark holds 150 ms).
BYSTANDER_INTERVAL = 0.05
BYSTANDER_MAX_GAP = 0.3


def deflated(data: bytes) -> bytes:
    """``data`` as one permessage-deflate payload (RFC 7692 §7.2.1), valid for any window."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -9)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


async def read_until_eof(client: RawWebsocket) -> None:
    """Read (and drop) until the server closes TCP: FIN or reset."""
    with trio.fail_after(STEP_TIMEOUT * 3):
        while True:
            try:
                if not await client.stream.receive_some():
                    return
            except trio.BrokenResourceError:  # reset
                return


async def longest_gap(bystander: RawWebsocket, seconds: float) -> float:
    """Receive ticks for ``seconds``; the longest time between two of them."""
    gaps = []
    last = trio.current_time()
    with trio.move_on_after(seconds):
        while True:
            assert (await bystander.receive_json())["type"] == "tick"
            now = trio.current_time()
            gaps.append(now - last)
            last = now
    return max(gaps)


# --- compression -----------------------------------------------------------------------


async def test_compression_is_not_negotiated_by_default_whatever_a_browser_offers() -> None:
    async with serve_ticker() as server:
        headers = await handshake_headers(server, {"Sec-WebSocket-Extensions": CHROMIUM_OFFER})
    assert "sec-websocket-extensions" not in headers


async def test_with_compression_on_a_browser_gets_small_windows() -> None:
    async with serve_ticker(Settings(compression=True)) as server:
        headers = await handshake_headers(server, {"Sec-WebSocket-Extensions": CHROMIUM_OFFER})
    assert headers["sec-websocket-extensions"] == (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    )


async def test_a_compressed_frame_fails_the_connection_when_compression_is_off() -> None:
    async with serve_ticker() as server:
        client = await RawWebsocket.connect(server)
        await client.receive_json()
        payload = deflated(b'{"type":"start","interval":1}')
        await client.send_raw(raw_frame(Opcode.TEXT, payload, rsv1=True))
        assert await client.close_code() == 1002  # RFC 6455 §5.2: RSV1 without an extension
        await wait_for_connections(server, 0)
        await client.stream.aclose()


def peak_rss_mib(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")  # pragma: no cover


async def test_decompression_bombs_are_refused_after_inflating_little(tmp_path: Path) -> None:
    bomb = deflated(b"x" * (200 * 2**20))  # ~200 KB that inflate to 200 MiB
    env = {"TICKER_COMPRESSION": "on"}
    async with run_server_command(tmp_path, env=env) as running:
        bystander = await ticking_client(running.server, str(BYSTANDER_INTERVAL))
        worker = worker_pid(running.process.pid)
        before = peak_rss_mib(worker)
        attackers = [
            await RawWebsocket.connect(running.server, extensions=[PerMessageDeflate()])
            for _ in range(4)
        ]
        for attacker in attackers:
            await attacker.receive_json()
        async with trio.open_nursery() as nursery:
            for attacker in attackers:
                nursery.start_soon(attacker.send_raw, raw_frame(Opcode.TEXT, bomb, rsv1=True))
        for attacker in attackers:
            assert await attacker.close_code() == 1009
        growth = peak_rss_mib(worker) - before
        assert (await bystander.receive_json())["type"] == "tick"
        await wait_for_connections(running.server, 1)
        await bystander.abort()
    # Stock wsproto inflates each bomb whole: 800 MiB. Bounded: a few KiB each.
    assert growth < 50, f"peak RSS grew by {growth:.0f} MiB"
    assert "message too big: over 4096 bytes inflated: closed with 1009" in running.text


# --- closing ---------------------------------------------------------------------------


async def test_an_unanswered_close_frees_its_slot_at_once_and_its_socket_in_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="ticker")
    async with serve_ticker(Settings(close_timeout=1.0)) as server:
        client = await RawWebsocket.connect(server)
        await client.receive_json()
        await client.send_raw(raw_frame(Opcode.TEXT, b"x" * 65536))  # over the 4096 limit
        assert await client.close_code() == 1009
        # Never answered: the handler has ended all the same, and the slot is free.
        await wait_for_connections(server, 0)
        closed_at = trio.current_time()
        await read_until_eof(client)
        waited = trio.current_time() - closed_at
        await client.stream.aclose()
    assert waited < 1.0 + 4.0  # the 1 s close timeout, not the default 10 s
    assert "closed with 1009 (message too big: over 4096 bytes)" in caplog.text
    assert "did not answer the close frame within 1 s" in caplog.text


async def test_a_client_that_answers_the_close_is_let_go_at_once() -> None:
    async with serve_ticker(Settings(close_timeout=60.0)) as server:
        client = await RawWebsocket.connect(server)
        await client.receive_json()
        await client.send_raw(raw_frame(Opcode.TEXT, b"x" * 65536))
        event = await client.next_event()
        while not isinstance(event, wsproto.events.CloseConnection):
            event = await client.next_event()
        await client.send_raw(client.ws.send(event.response()))
        await read_until_eof(client)  # within STEP_TIMEOUT: long before the 60 s
        await client.stream.aclose()


# --- keepalive -------------------------------------------------------------------------


async def test_keepalive_closes_a_silent_peer_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="ticker")
    settings = Settings(ping_interval=0.5, ping_timeout=0.5, close_timeout=1.0)
    async with serve_ticker(settings) as server:
        client = await RawWebsocket.connect(server)
        await client.receive_json()
        await client.send_text("300")  # nothing to write for five minutes
        pings = 0
        with trio.fail_after(STEP_TIMEOUT):
            while not isinstance(
                event := await client.next_event(), wsproto.events.CloseConnection
            ):
                pings += isinstance(event, wsproto.events.Ping)  # never answered
        assert pings == 1
        assert event.code == 1011
        assert event.reason == "keepalive ping timeout"
        await wait_for_connections(server, 0)
        await read_until_eof(client)
        await client.stream.aclose()
    assert "sent no pong within 0.5 s" in caplog.text
    assert "closed with 1011 (keepalive ping timeout)" in caplog.text


async def test_keepalive_keeps_a_client_that_answers() -> None:
    # The client runs in the server's process: a pause of the process longer than
    # ping_timeout would wake the timeout before the client had read its ping.
    # 1 s is a rare pause; a pong not counted would still end the connection at
    # 1.2 s, well inside the 2 s watched.
    async with serve_ticker(Settings(ping_interval=0.2, ping_timeout=1.0)) as server:
        client = await RawWebsocket.connect(server)
        await client.receive_json()
        pings = 0
        with trio.move_on_after(2.0):
            while True:
                event = await client.next_event()
                assert isinstance(event, wsproto.events.Ping), event
                pings += 1
                await client.send_raw(client.ws.send(event.response()))
        assert pings >= 3
        await client.send_text('{"type":"stop"}')
        assert (await client.receive_json())["type"] == "stopped"
        await client.abort()


# --- a bounded share per connection ------------------------------------------------------


async def test_a_flood_of_frames_is_read_at_the_frame_rate_and_still_answered() -> None:
    rate = 1000  # frames per second, and twice that at once
    async with serve_ticker(Settings(frame_rate=rate)) as server:
        bystander = await ticking_client(server, str(BYSTANDER_INTERVAL))
        client = await RawWebsocket.connect(server)
        await client.receive_json()
        frames = 6000  # a fragmented message of one character: an invalid command
        flood = raw_frame(Opcode.TEXT, b"x", fin=False)
        flood += raw_frame(Opcode.CONTINUATION, b"", fin=False) * (frames - 2)
        flood += raw_frame(Opcode.CONTINUATION, b"", fin=True)
        answers: list[tuple[float, dict[str, object]]] = []

        async def answer() -> None:
            with trio.fail_after(STEP_TIMEOUT):
                message = await client.receive_json()
            answers.append((trio.current_time(), message))

        sent_at = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_raw, flood)
            nursery.start_soon(answer)
            gap = await longest_gap(bystander, 3.0)
        await client.abort()
        await bystander.abort()
    [(answered_at, reply)] = answers
    answered_after = answered_at - sent_at
    assert reply["code"] == "invalid_json"
    # Read no faster than the rate: (6000 - 2000) frames at 1000 per second.
    assert answered_after >= (frames - 2 * rate) / rate * 0.9
    assert gap < BYSTANDER_MAX_GAP


async def test_a_client_that_floods_pings_and_never_reads_is_cut_off() -> None:
    async with serve_ticker(Settings(send_timeout=1.0)) as server:
        bystander = await ticking_client(server, str(BYSTANDER_INTERVAL))
        client = await RawWebsocket.connect(server, receive_buffer=4096)
        await client.receive_json()
        ping = raw_frame(Opcode.PING, b"p" * 125)
        async with trio.open_nursery() as nursery:

            async def flood() -> None:
                with trio.move_on_after(STEP_TIMEOUT):
                    try:
                        for _ in range(100):
                            await client.send_raw(ping * 200)
                    except trio.BrokenResourceError:
                        return  # reset by the server, as it should be
                raise AssertionError("never cut off")

            nursery.start_soon(flood)
            gap = await longest_gap(bystander, 2.0)
            await wait_for_connections(server, 1)  # only the bystander
        await client.stream.aclose()
        await bystander.abort()
    assert gap < BYSTANDER_MAX_GAP


async def test_trickled_http_headers_are_dropped_after_the_keep_alive_timeout() -> None:
    async with serve_ticker(keep_alive_timeout=1.0) as server:
        request = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        streams = [await trio.open_tcp_stream(server.host, server.port) for _ in range(20)]
        started = trio.current_time()

        async def trickle(stream: trio.SocketStream) -> None:
            with trio.fail_after(STEP_TIMEOUT):
                for byte in request:
                    try:
                        await stream.send_all(bytes([byte]))
                    except trio.BrokenResourceError:
                        return
                    if await _closed_within(stream, 0.1):
                        return
                raise AssertionError("the whole request trickled in without a close")

        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(trickle, stream)
        took = trio.current_time() - started
        for stream in streams:
            await stream.aclose()
    assert took < 1.0 + STEP_TIMEOUT / 2


async def _closed_within(stream: trio.SocketStream, seconds: float) -> bool:
    with trio.move_on_after(seconds):
        try:
            return await stream.receive_some() == b""
        except trio.BrokenResourceError:
            return True
    return False


# --- found by review: races and leaks ------------------------------------------------


async def test_handshakes_reset_while_being_answered_do_not_end_the_keepalive() -> None:
    # A reset that lands while the 101 goes out closes the stream before it
    # is registered for keepalive; the next ping into its finished connection
    # ended the server's keepalive task, and with it the whole server.
    settings = Settings(ping_interval=0.1, ping_timeout=0.1)
    request = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    async with serve_ticker(settings) as server:
        for attempt in range(100):
            sock = trio.socket.socket()
            await sock.connect((server.host, server.port))
            await sock.send(request)
            await trio.sleep(attempt % 4 / 1000)  # 0-3 ms: some resets land mid-answer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        await trio.sleep(0.5)  # several pings' worth
        client = await RawWebsocket.connect(server)
        assert (await client.receive_json())["type"] == "hello"
        assert isinstance(await client.next_event(), wsproto.events.Ping)  # keepalive lives
        await client.abort()


async def test_an_app_that_ends_with_its_queue_full_leaves_nothing_behind() -> None:
    # The session closes with 1009 (8,000 bytes of UTF-8 in 4,000 characters,
    # under Hypercorn's character count) while Hypercorn's queue to the app is
    # full: the reader then waited for ever to put the next message.
    async with serve_ticker(Settings(close_timeout=1.0), keep_alive_timeout=0.5) as server:
        await trio.sleep(0.6)
        before = count_tasks()
        clients = []
        for _ in range(10):
            client = await RawWebsocket.connect(server)
            await client.receive_json()
            burst = RawWebsocket.encode_text("x") * 30 + RawWebsocket.encode_text("é" * 4000)
            await client.send_raw(burst + RawWebsocket.encode_text("x") * 60)
            clients.append(client)
        for client in clients:
            assert await client.close_code() == 1009
            await client.stream.aclose()
        await wait_for_connections(server, 0)
        with trio.fail_after(STEP_TIMEOUT):
            while count_tasks() > before:  # noqa: ASYNC110 - tasks have no events
                await trio.sleep(0.1)


async def test_with_compression_a_browser_that_answers_pings_is_still_understood() -> None:
    # A pong used to leave permessage-deflate believing the next message was
    # not compressed: 1007 for every browser after its first keepalive ping.
    settings = Settings(compression=True, ping_interval=0.1, ping_timeout=1.0)
    async with serve_ticker(settings) as server:
        client = await RawWebsocket.connect(server, extensions=[PerMessageDeflate()])
        await client.receive_json()
        event = await client.next_event()
        assert isinstance(event, wsproto.events.Ping)
        await client.send_raw(client.ws.send(event.response()))
        await client.send_text('{"type":"stop"}')  # compressed, after the pong
        while isinstance(event := await client.next_event(), wsproto.events.Ping):
            await client.send_raw(client.ws.send(event.response()))
        assert isinstance(event, wsproto.events.TextMessage), event
        assert json.loads(event.data) == {"type": "stopped", "id": None}
        await client.abort()
