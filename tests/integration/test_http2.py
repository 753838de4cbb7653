"""Websockets over HTTP/2 (RFC 8441): what a browser may use when Hypercorn terminates TLS.

Hypercorn offers h2 by ALPN and SETTINGS_ENABLE_CONNECT_PROTOCOL, so each of
ticker's Hypercorn fixes (src/ticker/_hypercorn_fixes/) either has an HTTP/2
test here or a note saying why HTTP/2 does not need it:

- Fix 1 (a disconnect never waits for the app's queue): a test, which holds,
  but HTTP/2 does not need the fix for it (the test passes with fix 1 disabled
  too; the HTTP/1.1 one hangs). Over HTTP/2 the app's messages are written by
  H2Protocol's own ``send_task`` (hypercorn/protocol/h2.py:143-180), not by
  the app's task, so the failed write that calls ``H2Protocol.handle(Closed())``
  -> ``WSStream.handle(StreamClosed)`` -> ``app_put(disconnect)``
  (h2.py:191-196, 396-400; ws_stream.py:244-251) runs in a task the app never
  waits for, and a full queue only delays it. The test stays as a guard.
- Fix 2 (bounded TCP writes, shielded bookkeeping): a test; it NEEDED AN
  HTTP/2 VARIANT, now in fix 10. The deadline itself works (it patches
  ``TCPServer.protocol_send``, under both protocols), but after its reset the
  handler hung until shutdown: ``H2Protocol.handle(Closed)`` leaves the stream
  buffers open while the send task, the only one that releases a writer
  waiting in ``StreamBuffer.push``/``drain``, has ended (h2.py:61-68, 147,
  191-196). HTTP/2 also adds a wait no TCP deadline sees, for flow-control
  window: fix 10's watchdog.
- Fix 3 (shutdown closes with 1001) and the early 1009: tests. Both act above
  the protocol (the app's ``begin_shutdown``; the Config's
  ``websocket_max_message_size``, which H2's ``WSStream`` reads as H1's does).
- Fix 4 (a refused handshake ends its connection): has an HTTP/2 part. Over
  HTTP/2 the 400 goes out
  fine (h2 strips Hypercorn's ``connection: close``, h2/utilities.py
  ``_strip_connection_headers``) and the fix's ``StreamClosed`` removes the
  refused stream from ``H2Protocol.streams``, which reports
  ``Updated(idle=True)``; but ``WSStream`` refuses while ``_create_stream``
  is still handling the request, and right after it ``_handle_events`` sends
  ``Updated(idle=False)`` (hypercorn/protocol/h2.py:253-254), which stops the
  keep-alive timer for good: an idle connection that never times out. (Without
  fix 4 the refused stream would also stay in ``streams`` for ever:
  ``WSStream.idle`` is false in state HANDSHAKE.) So fix 4 also reports
  ``Updated(idle=True)`` again after a batch of events that opened streams,
  when the connection is idle by then.
- Fix 5 (websocket schemes behind a proxy): not needed here: it concerns
  ProxyFixMiddleware behind a TLS proxy, and proxies speak HTTP/1.1 to us;
  with TLS at Hypercorn, ``WSStream`` sets the scheme to "wss" itself
  (ws_stream.py:190), under both protocols.
- Fixes 6-9 (the websocket conversation: compression, server-started
  closes, keepalive, frame rate): not examined over HTTP/2 here.
- Fix 10 (a stream whose window stays shut is cut off): HTTP/2 only.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import h2.errors
import pytest
import trio
import trio.lowlevel
import trustme
from wsproto.frame_protocol import Opcode

import ticker._hypercorn_fixes.http2_flow_control
import ticker._hypercorn_fixes.streams
from ticker.config import Settings

from ..h2_client import (
    ConnectionEnded,
    H2Websocket,
    StreamEnded,
    StreamReset,
    client_tls,
)
from ..support import (
    STEP_TIMEOUT,
    HTTPResponse,
    Server,
    raw_frame,
    read_response,
    serve_ticker,
)

pytestmark = pytest.mark.slow

#: Every test's bound: far above what any needs, so a hang fails instead of stalling CI.
TEST_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def certificate(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(certificate chain, key) files for 127.0.0.1, signed by ``ca``."""
    folder = tmp_path_factory.mktemp("tls")
    issued = ca.issue_cert("127.0.0.1")
    chain, key = folder / "chain.pem", folder / "key.pem"
    issued.private_key_and_cert_chain_pem.write_to_path(str(chain))
    issued.private_key_pem.write_to_path(str(key))
    return chain, key


@pytest.fixture(autouse=True)
def _close_h2_clients() -> Iterator[None]:
    yield
    H2Websocket.close_all()


def trusting(ca: trustme.CA, alpn: str = "h2") -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return client_tls(context, alpn=alpn)


async def connect(
    server: Server, ca: trustme.CA, *, window: int | None = None, version: str = "13"
) -> H2Websocket:
    return await H2Websocket.open(
        server.host, server.port, trusting(ca), window=window, version=version
    )


async def ticking(
    server: Server, ca: trustme.CA, interval: str = "0.02", *, window: int | None = None
) -> H2Websocket:
    client = await connect(server, ca, window=window)
    assert client.status == 200
    assert (await client.receive_json())["type"] == "hello"
    await client.send_text(interval)
    assert (await client.receive_json())["type"] == "started"
    return client


async def https_get(server: Server, ca: trustme.CA, path: str) -> HTTPResponse:
    """A GET over HTTP/1.1 with TLS, on a fresh connection."""
    request = f"GET {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n\r\n".encode()
    with trio.fail_after(STEP_TIMEOUT):
        stream = await trio.open_ssl_over_tcp_stream(
            server.host, server.port, ssl_context=trusting(ca, "http/1.1")
        )
        async with stream:
            await stream.send_all(request)
            return await read_response(stream)


async def open_connections(server: Server, ca: trustme.CA) -> int:
    """What /healthz says about open websockets."""
    health = (await https_get(server, ca, "/healthz")).json()
    assert isinstance(health, dict)
    connections = health["connections"]
    assert isinstance(connections, int)
    return connections


async def wait_for_connections(server: Server, ca: trustme.CA, expected: int) -> None:
    """Poll /healthz (bounded) until it reports ``expected`` open websockets."""
    with trio.fail_after(STEP_TIMEOUT):
        while await open_connections(server, ca) != expected:  # noqa: ASYNC110
            await trio.sleep(0.05)


# --- the protocol works ---------------------------------------------------------


async def test_hello_start_ticks_and_done_over_http2(
    certificate: tuple[Path, Path], ca: trustme.CA
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve_ticker(certificate=certificate) as server:
            client = await connect(server, ca)
            assert client.status == 200
            hello = await client.receive_json()
            assert hello["type"] == "hello"
            await client.send_text(json.dumps({"type": "start", "interval": 0.02, "count": 10}))
            started = await client.receive_json()
            assert started == {
                "type": "started",
                "id": 1,
                "interval": 0.02,
                "count": 10,
                "anchor": started["anchor"],  # the acceptance time (test_server.py checks it)
                "first": 1,
            }
            assert await open_connections(server, ca) == 1
            seqs = []
            while (message := await client.receive_json())["type"] == "tick":
                seqs.append(message["seq"])
            assert message["type"] == "done"
            assert message["sent"] == len(seqs)
            assert len(seqs) + message["skipped"] == 10  # type: ignore[operator]
            await client.send_close(1000)
            assert await client.close_code() == 1000
            assert isinstance(await client.until_ended(), StreamEnded | ConnectionEnded)
            await wait_for_connections(server, ca, 0)
            await client.aclose()


@pytest.mark.parametrize("how", ["RST_STREAM", "TCP reset", "TLS close"])
async def test_leaving_without_a_close_frame_frees_the_slot(
    certificate: tuple[Path, Path], ca: trustme.CA, how: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve_ticker(certificate=certificate) as server:
            client = await ticking(server, ca)
            assert (await client.receive_json())["type"] == "tick"
            await wait_for_connections(server, ca, 1)
            if how == "RST_STREAM":
                await client.reset()
            elif how == "TCP reset":
                await client.abort()
            else:
                await client.aclose()
            await wait_for_connections(server, ca, 0)
            await client.aclose()


# --- fix 1: a disconnect never waits for the app's queue -----------------------------


async def test_reset_during_a_burst_of_commands_leaves_no_connection_behind_over_http2(
    certificate: tuple[Path, Path], ca: trustme.CA
) -> None:
    # As tests/integration/test_server.py's HTTP/1.1 test: flood starts without
    # reading, then leave, by RST_STREAM or TCP reset, at varying points.
    frame = H2Websocket.encode_text('{"interval":0.01}')
    with trio.fail_after(TEST_TIMEOUT):
        async with serve_ticker(certificate=certificate) as server:
            for attempt in range(40):
                client = await connect(server, ca)
                await client.receive_json()
                for _ in range(10):
                    await client.send_raw(frame * 20)
                    await trio.lowlevel.checkpoint()
                await trio.sleep(attempt % 6 * 0.002)
                if attempt % 2:
                    await client.reset()
                    await client.aclose()
                else:
                    await client.abort()
            await wait_for_connections(server, ca, 0)


# --- fix 2: a client that stops reading the socket --------------------------------------


async def test_a_client_that_stops_reading_over_http2_is_reset_after_the_send_timeout(
    certificate: tuple[Path, Path], ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    # With window to spare (2**30 bytes), the server's writes fill the socket
    # and block there: fix 2's deadline, not fix 10's, ends the connection.
    async with serve_ticker(Settings(send_timeout=0.5), certificate=certificate) as server:
        with trio.fail_after(TEST_TIMEOUT):
            client = await H2Websocket.open(
                server.host, server.port, trusting(ca), window=2**30, receive_buffer=4096
            )
            await client.grant_connection_window(2**30)
            await client.receive_json()
            await client.send_text("0.01")
            await client.send_raw(H2Websocket.encode_text("not json") * 2000)  # error replies
            await wait_for_connections(server, ca, 1)
            await wait_for_connections(server, ca, 0)  # reset, without the client reading
            await client.abort()
    assert "stopped reading: reset after 0.5 s without progress" in caplog.text
    assert "flow-control window" not in caplog.text


# --- fix 3: shutdown says goodbye; and the early 1009 ------------------------------------


async def test_shutdown_closes_http2_websockets_with_1001(
    certificate: tuple[Path, Path], ca: trustme.CA
) -> None:
    codes: list[int] = []
    endings: list[object] = []

    async def goodbye(client: H2Websocket) -> None:
        codes.append(await client.close_code())
        await client.send_close(1001)  # answer, as a browser does
        endings.append(await client.until_ended())
        await client.aclose()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with serve_ticker(certificate=certificate) as server:
                clients = [await ticking(server, ca) for _ in range(3)]
                clients.append(await connect(server, ca))  # idle, no schedule
                for client in clients:
                    nursery.start_soon(goodbye, client)
                begun = trio.current_time()
            # Leaving serve_ticker shut the server down and waited for it.
            took = trio.current_time() - begun
    assert codes == [1001] * 4
    assert all(isinstance(end, StreamEnded | ConnectionEnded) for end in endings), endings
    assert took < 2.0  # serve_ticker's graceful timeout: every connection ended by itself


async def test_an_oversized_message_is_refused_over_http2_before_it_has_all_arrived(
    certificate: tuple[Path, Path], ca: trustme.CA
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve_ticker(certificate=certificate) as server:
            client = await connect(server, ca)
            await client.receive_json()
            frame = H2Websocket.encode_text("1" * 2**20)
            await client.send_raw(frame[: 16 * 1024])  # the rest never comes
            assert await client.close_code() == 1009
            await client.reset()
            await wait_for_connections(server, ca, 0)
            await client.aclose()


# --- fix 4: refused handshakes -------------------------------------------------------------


async def test_a_refused_http2_handshake_gets_400_and_its_connection_can_idle_out(
    certificate: tuple[Path, Path], ca: trustme.CA
) -> None:
    keep_alive = 0.5
    idled_out_after: float | None = None
    with trio.fail_after(TEST_TIMEOUT):
        async with serve_ticker(certificate=certificate, keep_alive_timeout=keep_alive) as server:
            client = await connect(server, ca, version="12")  # only 13 is valid
            assert client.status == 400
            assert await client.next_event() == StreamEnded()
            refused = trio.current_time()
            # The refused stream is gone, so the connection is idle and should
            # close after the keep-alive timeout (fix 4's HTTP/2 part).
            with trio.move_on_after(keep_alive + 5):
                while not client.connection_ended:
                    await client.receive_more()
                idled_out_after = trio.current_time() - refused
            await client.aclose()
    assert idled_out_after is not None, "the connection was never closed"
    assert idled_out_after >= keep_alive * 0.8


async def test_the_connection_limit_refuses_with_503_over_http2(
    certificate: tuple[Path, Path], ca: trustme.CA
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serve_ticker(Settings(max_connections=1), certificate=certificate) as server:
            first = await ticking(server, ca)
            refused = await connect(server, ca)
            assert refused.status == 503
            assert ("retry-after", "5") in refused.response_headers
            await refused.aclose()
            assert (await first.receive_json())["type"] == "tick"  # unaffected
            await first.reset()
            await wait_for_connections(server, ca, 0)
            await first.aclose()


# --- fix 10: flow control -------------------------------------------------------------------


@pytest.mark.parametrize("when", ["after some ticks", "from the start"])
async def test_a_client_that_stops_granting_window_is_cut_off_after_the_send_timeout(
    certificate: tuple[Path, Path],
    ca: trustme.CA,
    caplog: pytest.LogCaptureFixture,
    when: str,
) -> None:
    send_timeout = 1.0
    caplog.set_level(logging.INFO)
    with trio.fail_after(TEST_TIMEOUT):
        async with serve_ticker(Settings(send_timeout=send_timeout), certificate=certificate) as s:
            if when == "from the start":
                # A window of 0: the handshake (HEADERS) goes through, not even hello does.
                client = await connect(s, ca, window=0)
                assert client.status == 200
                client.stop_granting()
            else:
                client = await ticking(s, ca, "0.02", window=1024)
                # Short of window all the time but granting it: never cut off.
                with trio.move_on_after(send_timeout * 1.5):
                    while True:
                        assert (await client.receive_json())["type"] == "tick"
                client.stop_granting()
            await wait_for_connections(s, ca, 1)
            stopped = trio.current_time()
            with trio.fail_after(send_timeout + 5):
                ending = await client.until_ended()
            elapsed = trio.current_time() - stopped
            assert ending == StreamReset(h2.errors.ErrorCodes.CANCEL)
            assert elapsed >= send_timeout * 0.9
            # The handler ended (its slot is free) though the client's TCP
            # connection is still open: only the stream was cut off.
            await wait_for_connections(s, ca, 0)
            assert not client.connection_ended
            await client.aclose()
    assert (
        "stopped granting HTTP/2 flow-control window: stream 1 reset after 1.0 s without progress"
        in caplog.text
    )
    assert " disconnected after " in caplog.text


async def test_a_client_that_grants_window_by_the_byte_is_cut_off_once_its_buffer_is_full(
    certificate: tuple[Path, Path],
    ca: trustme.CA,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 64 KiB would take a minute of ticks to fill; 4 KiB takes a second.
    monkeypatch.setattr(ticker._hypercorn_fixes.http2_flow_control, "MAX_STREAM_BUFFER", 4096)
    send_timeout = 1.0
    caplog.set_level(logging.INFO)
    with trio.fail_after(TEST_TIMEOUT):
        async with serve_ticker(Settings(send_timeout=send_timeout), certificate=certificate) as s:
            client = await ticking(s, ca, "0.01", window=1024)
            client.stop_granting()

            async def trickle() -> None:
                while True:  # 400 bytes a second, against ~6 KB of ticks
                    await client.grant_stream_window(20)
                    await trio.sleep(0.05)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle)
                with trio.fail_after(send_timeout + 10):
                    ending = await client.until_ended()
                nursery.cancel_scope.cancel()
            assert ending == StreamReset(h2.errors.ErrorCodes.CANCEL)
            await wait_for_connections(s, ca, 0)
            await client.aclose()
    assert "stopped granting HTTP/2 flow-control window" in caplog.text


async def test_data_after_the_server_closed_the_stream_is_dropped(
    certificate: tuple[Path, Path], ca: trustme.CA
) -> None:
    # The server fails the websocket (RSV1 without compression: 1002) and,
    # after its short close wait, closes the stream; the client writes on.
    # Stock Hypercorn's lookup of the stream raised KeyError and ended the worker.
    with trio.fail_after(TEST_TIMEOUT):
        async with serve_ticker(certificate=certificate) as server:
            client = await connect(server, ca)
            await client.receive_json()
            await client.send_raw(raw_frame(Opcode.TEXT, b"\x00", rsv1=True))
            assert await client.close_code() == 1002
            await wait_for_connections(server, ca, 0)
            await trio.sleep(ticker._hypercorn_fixes.streams.FAILED_CLOSE_WAIT + 0.5)
            await client.send_raw(H2Websocket.encode_text('{"type":"stop"}'))
            assert await client.until_ended() == StreamReset(h2.errors.ErrorCodes.STREAM_CLOSED)
            # The worker is alive: a new websocket on the same server works.
            other = await connect(server, ca)
            assert (await other.receive_json())["type"] == "hello"
            await other.reset()
            await other.aclose()
            await client.aclose()
