"""`ticker watch` as a subprocess (the installed console script) against a real Hypercorn."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
import wsproto
import wsproto.events

from ..support import STEP_TIMEOUT, serve_ticker

pytestmark = pytest.mark.slow

TICKER = Path(sys.executable).with_name("ticker")  # the [project.scripts] entry point
TICK_LINE = re.compile(r"^#(\d+) +\d\d:\d\d:\d\d\.\d{3} +\+\d+\.\d ms")
SUMMARY = re.compile(r"^received \d+, skipped \d+, lateness p50 .+, p99 .+, max .+$")


async def ticker(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(STEP_TIMEOUT * 3):
        return await trio.run_process(
            [str(TICKER), *args], capture_stdout=True, capture_stderr=True, check=False
        )


def lines(output: bytes) -> list[str]:
    return output.decode().splitlines()


def test_the_console_script_is_installed() -> None:
    assert TICKER.exists(), f"{TICKER} missing: is the package installed?"


async def test_counted_watch_prints_a_line_per_tick_and_exits_0() -> None:
    async with serve_ticker() as server:
        result = await ticker("watch", server.ws_url, "--interval", "0.02", "--count", "5")
    assert result.returncode == 0, result.stderr
    out = lines(result.stdout)
    assert out[0] == f"watching {server.ws_url}: every 0.02 s, 5 ticks"
    seqs = [int(m.group(1)) for line in out if (m := TICK_LINE.match(line))]
    assert seqs == [1, 2, 3, 4, 5] or (seqs[-1] <= 5 and "skipped" in result.stdout.decode())
    assert SUMMARY.match(out[-1])
    assert out[-1].startswith("received ")
    assert result.stderr == b""


async def test_json_output_is_json_lines_with_every_message() -> None:
    async with serve_ticker() as server:
        result = await ticker("watch", server.ws_url, "-i", "0.02", "-n", "4", "--json")
    assert result.returncode == 0, result.stderr
    messages = [json.loads(line) for line in lines(result.stdout)]
    assert [m["type"] for m in messages][:2] == ["hello", "started"]
    assert messages[-1] == {"type": "done", "id": 1, "sent": 4, "skipped": 0} or (
        messages[-1]["type"] == "done" and messages[-1]["skipped"] > 0
    )
    ticks = [m["seq"] for m in messages if m["type"] == "tick"]
    assert ticks == sorted(ticks)
    assert len(ticks) + messages[-1]["skipped"] == 4
    # The summary goes to stderr, so stdout stays pure JSON for jq.
    assert SUMMARY.match(result.stderr.decode().strip())


async def test_unreachable_server_exits_1_naming_the_url() -> None:
    # The port stays bound (not listening) for the whole test: connecting is
    # refused, and no server of another test running alongside can take it,
    # as one did once the port was given back (seen with two suites at once).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        url = f"ws://127.0.0.1:{port}/ws"
        result = await ticker("watch", url, "-i", "1")
    assert result.returncode == 1
    (line,) = lines(result.stderr)
    assert line.startswith(f"ticker: cannot connect to {url}: ")
    assert "refused" in line.lower()
    assert result.stdout == b""


async def test_rejected_interval_exits_2_with_the_servers_message() -> None:
    async with serve_ticker() as server:
        result = await ticker("watch", server.ws_url, "--interval", "0.001")
    assert result.returncode == 2
    assert lines(result.stderr) == [
        "ticker: The interval must be between 0.01 and 86400 seconds; got 0.001."
    ]


async def test_rejected_count_exits_2_with_the_servers_message() -> None:
    async with serve_ticker() as server:
        result = await ticker("watch", server.ws_url, "-i", "1", "-n", "1000001")
    assert result.returncode == 2
    (line,) = lines(result.stderr)
    assert line.startswith("ticker: The count must be a whole number from 1 to 1000000")


async def start_watch(nursery: trio.Nursery, url: str) -> trio.Process:
    """An unbounded ``ticker watch`` with its output piped to us."""
    process: trio.Process = await nursery.start(
        partial(
            trio.run_process,
            [str(TICKER), "watch", url, "-i", "0.02"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
        )
    )
    return process


async def read_until_ticks(process: trio.Process, ticks: int) -> bytes:
    assert process.stdout is not None
    seen = b""
    with trio.fail_after(STEP_TIMEOUT):
        while sum(bool(TICK_LINE.match(line)) for line in lines(seen)) < ticks:
            seen += await process.stdout.receive_some()
    return seen


async def read_to_exit(process: trio.Process) -> tuple[bytes, bytes, int]:
    """The rest of stdout, all of stderr, and the exit status."""
    assert process.stdout is not None
    assert process.stderr is not None
    out = err = b""
    with trio.fail_after(STEP_TIMEOUT):
        while chunk := await process.stdout.receive_some():
            out += chunk
        while chunk := await process.stderr.receive_some():
            err += chunk
        return out, err, await process.wait()


async def test_sigint_exits_130_after_the_summary() -> None:
    async with serve_ticker() as server, trio.open_nursery() as nursery:
        process = await start_watch(nursery, server.ws_url)
        seen = await read_until_ticks(process, 3)
        process.send_signal(signal.SIGINT)
        out, err, returncode = await read_to_exit(process)
    assert returncode == 130
    assert SUMMARY.match(lines(seen + out)[-1])
    assert err == b""  # no traceback


async def test_connection_lost_exits_1_after_the_summary() -> None:
    async with trio.open_nursery() as nursery:
        async with serve_ticker() as server:
            process = await start_watch(nursery, server.ws_url)
            seen = await read_until_ticks(process, 3)
        # The server shut down and cancelled its connections.
        out, err, returncode = await read_to_exit(process)
    assert returncode == 1
    assert SUMMARY.match(lines(seen + out)[-1])
    (line,) = lines(err)
    assert line.startswith(f"ticker: connection to {server.ws_url} lost (")


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, tuple[Path, Path]]:
    """A throwaway certificate authority and a certificate for localhost."""
    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    folder = tmp_path_factory.mktemp("tls")
    chain, key = folder / "chain.pem", folder / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return ca, (chain, key)


async def test_wss_with_an_untrusted_certificate_names_the_certificate_problem(
    authority: tuple[trustme.CA, tuple[Path, Path]],
) -> None:
    _, certificate = authority
    async with serve_ticker(certificate=certificate) as server:
        url = f"wss://localhost:{server.port}/ws"
        result = await ticker("watch", url, "-i", "0.02", "-n", "2")
    assert result.returncode == 1
    assert lines(result.stderr) == [
        f"ticker: cannot connect to {url}: TLS failed: "
        "certificate verify failed: unable to get local issuer certificate"
    ]


async def test_wss_works_with_a_trusted_certificate(
    authority: tuple[trustme.CA, tuple[Path, Path]], tmp_path: Path
) -> None:
    ca, certificate = authority
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    async with serve_ticker(certificate=certificate) as server:
        url = f"wss://localhost:{server.port}/ws"
        with trio.fail_after(STEP_TIMEOUT * 3):
            result = await trio.run_process(
                [str(TICKER), "watch", url, "-i", "0.02", "-n", "2"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={**os.environ, "SSL_CERT_FILE": str(tmp_path / "ca.pem")},
            )
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout)[0] == f"watching {url}: every 0.02 s, 2 ticks"


async def serve_a_server_that_stops_answering(
    *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Speaks ticker's first messages, then goes silent: reads, but never answers a ping."""

    async def one(stream: trio.SocketStream) -> None:
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        while True:
            data = await stream.receive_some()
            if not data:
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, wsproto.events.Request):
                    await stream.send_all(ws.send(wsproto.events.AcceptConnection()))
                    hello = '{"type":"hello","version":"0","min_interval":0.01,"max_interval":9}'
                    await stream.send_all(ws.send(wsproto.events.TextMessage(hello)))
                elif isinstance(event, wsproto.events.TextMessage):
                    started = '{"type":"started","id":1,"interval":5,"count":null}'
                    await stream.send_all(ws.send(wsproto.events.TextMessage(started)))

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(one, listeners)


async def test_a_server_that_stops_answering_pings_exits_1_naming_the_cause() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_a_server_that_stops_answering)
        url = f"ws://127.0.0.1:{port}/ws"
        args = ("--ping-interval", "0.3", "--ping-timeout", "0.5")
        result = await ticker("watch", url, "-i", "5", *args)
        nursery.cancel_scope.cancel()
    assert result.returncode == 1
    assert lines(result.stderr) == [
        f"ticker: connection to {url} lost (no answer to a keepalive ping within 0.5 s)"
    ]


async def test_keepalive_pings_are_answered_by_ticker_itself() -> None:
    async with serve_ticker() as server:
        args = ("--ping-interval", "0.05", "--ping-timeout", "2")
        result = await ticker("watch", server.ws_url, "-i", "0.1", "-n", "10", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""


@pytest.mark.parametrize("value", ["-1", "soon"])
async def test_a_bad_ping_interval_is_a_usage_error(value: str) -> None:
    result = await ticker("watch", "-i", "1", "--ping-interval", value)
    assert result.returncode == 2
    assert b"--ping-interval" in result.stderr
