"""One load-generator process: many websocket clients, driven by ``run.py``.

Protocol with the parent: connect every client, print ``READY``, wait for a
line on stdin, run the scenario, write the results as JSON to ``--result-file``.
Lateness of tick ``seq`` = its arrival - (t0 + seq x interval) on this process's
monotonic clock, t0 fitted as the page and ``ticker watch`` do
(``ticker.client_stats.fit_lateness``).

Each client offers what Chromium, Firefox and Safari offer, exactly
``Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits``, unless
``--offer none`` (no extensions header at all). Like a browser, a client answers
the server's pings (websockets does that by itself) and sends none of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidMessage
from websockets.extensions.base import ClientExtensionFactory
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from ticker.client_stats import fit_lateness

CONNECT_CONCURRENCY = 100  # handshakes in flight at once
GRACE = 2.0  # seconds after the last slot's deadline before its tick counts as lost
OFFERS = ("browser", "none")


def extensions(offer: str) -> list[ClientExtensionFactory] | None:
    """What the handshake offers: the browsers' header byte for byte, or nothing."""
    if offer == "none":
        return None  # not []: websockets would send an empty header, which servers refuse
    # websockets' default offer (compression="deflate") is the same header today;
    # spelt out so that it stays the browsers' one whatever websockets changes.
    # How this client compresses (zlib's defaults) costs the server nothing.
    return [ClientPerMessageDeflateFactory(client_max_window_bits=True)]


# What the server answered to the first handshake (None: no extension accepted).
ACCEPTED: dict[str, str | None] = {}


# Handshakes the server dropped and that were tried again, as a page reconnects. On a
# busy machine a server can fall seconds behind while thousands connect at once (and
# Hypercorn closes a connection whose request it has not read within keep_alive_timeout).
RETRIED: dict[str, int] = {"handshakes": 0}
ATTEMPTS = 3


async def open_clients(url: str, count: int, offer: str) -> list[ClientConnection]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one() -> ClientConnection:
        async with gate:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    ws = await connect(
                        url,
                        compression=None,
                        extensions=extensions(offer),
                        ping_interval=None,  # our own pings only; the server's are answered
                        max_queue=None,
                        open_timeout=60,
                    )
                    break
                except (InvalidMessage, OSError):
                    if attempt == ATTEMPTS:
                        raise
                    RETRIED["handshakes"] += 1
                    await asyncio.sleep(0.5)
            ACCEPTED.setdefault("extensions", ws.response.headers.get("Sec-WebSocket-Extensions"))
            await ws.recv()  # hello
            return ws

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def tick_client(
    ws: ClientConnection,
    interval: float,
    duration: float,
    lateness: list[float],
    starts: list[float],
    delay: float = 0.0,
    anchor: float | None = None,
) -> int:
    """Wait ``delay``; start a schedule; record the lateness of its first duration/interval
    slots; stop.

    With ``anchor`` (ticker's protocol only) the start asks for that grid of the wall
    clock, and lateness is measured against it directly: server and load share the
    machine's wall clock, so nothing needs fitting.
    """
    if delay > 0:
        await asyncio.sleep(delay)
    slots = max(1, math.floor(duration / interval + 1e-9))
    asked = time.monotonic()  # not loop.time(): uvloop's clock has only millisecond steps
    start: dict[str, object] = {"type": "start", "interval": interval}
    if anchor is not None:
        start["anchor"] = anchor
    await ws.send(json.dumps(start))
    started = json.loads(await ws.recv())
    assert started["type"] == "started", started
    t_started = time.monotonic()
    starts.append(t_started - asked)
    last_slot = started.get("first", 1) + slots - 1
    clock = time.monotonic if anchor is None else time.time
    give_up = time.monotonic() + slots * interval + interval + GRACE
    arrivals: list[tuple[int, float]] = []
    while (left := give_up - time.monotonic()) > 0:
        try:
            raw = await asyncio.wait_for(ws.recv(), left)
        except TimeoutError:
            break
        now = clock()
        message = json.loads(raw)
        if message.get("type") != "tick":
            continue
        seq = message["seq"]
        if seq > last_slot:
            break
        arrivals.append((seq, now))
        if seq == last_slot:
            break
    await ws.send('{"type":"stop"}')
    if anchor is not None:
        lateness.extend(arrival - (anchor + seq * interval) for seq, arrival in arrivals)
    else:
        # How long `started` took is reported on its own ("start delay").
        lateness.extend(fit_lateness(arrivals, interval, started=t_started))
    return len(arrivals)


async def steady(args: argparse.Namespace) -> dict[str, Any]:
    clients = await open_clients(args.url, args.clients, args.offer)
    await handshake_with_parent()
    lateness: list[float] = []
    starts: list[float] = []
    # --stagger S: client i starts i/N x S seconds after GO, so that N independent
    # clients' deadlines are spread over S instead of falling together.
    delays = [args.stagger * i / len(clients) for i in range(len(clients))]
    received = await asyncio.gather(
        *(
            tick_client(ws, args.interval, args.duration, lateness, starts, delay, args.anchor)
            for ws, delay in zip(clients, delays, strict=True)
        )
    )
    await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
    return {
        "received": sum(received),
        "lateness": [round(x, 6) for x in lateness],
        "start_delays": [round(x, 6) for x in starts],
    }


async def idle(args: argparse.Namespace) -> dict[str, Any]:
    clients = await open_clients(args.url, args.clients, args.offer)
    await handshake_with_parent()  # the parent measures the server's memory now
    await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
    return {"connected": len(clients)}


async def reaction(args: argparse.Namespace) -> dict[str, Any]:
    (ws,) = await open_clients(args.url, 1, args.offer)
    await handshake_with_parent()
    start_times: list[float] = []
    stop_times: list[float] = []
    for _ in range(args.trials):
        sent = time.monotonic()
        await ws.send('{"type":"start","interval":1000}')
        while json.loads(await ws.recv())["type"] != "started":
            pass
        start_times.append(time.monotonic() - sent)
        sent = time.monotonic()
        await ws.send('{"type":"stop"}')
        while json.loads(await ws.recv())["type"] != "stopped":
            pass
        stop_times.append(time.monotonic() - sent)
    await ws.close()
    return {"start": start_times, "stop": stop_times}


WINDOW: dict[str, float] = {}


async def handshake_with_parent() -> None:
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    WINDOW["cpu"] = time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--scenario", choices=["steady", "idle", "reaction"], required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument(
        "--stagger", type=float, default=0.0, help="steady: spread the starts over this many s"
    )
    parser.add_argument(
        "--offer", choices=OFFERS, default="browser", help="the extensions each client offers"
    )
    parser.add_argument(
        "--anchor", type=float, help="steady: start on this grid (Unix s; ticker's protocol only)"
    )
    parser.add_argument("--result-file", required=True, help="where the JSON result goes")
    args = parser.parse_args()
    scenario = {"steady": steady, "idle": idle, "reaction": reaction}[args.scenario]
    try:
        import uvloop  # so that the load generator is not the bottleneck

        result = uvloop.run(scenario(args))
    except ImportError:  # pragma: no cover
        result = asyncio.run(scenario(args))
    result["cpu_window"] = time.process_time() - WINDOW.get("cpu", 0.0)
    result["offer"] = args.offer
    result["extensions"] = ACCEPTED.get("extensions")
    result["retried_handshakes"] = RETRIED["handshakes"]
    # A file, not stdout: the event loop may have left stdout non-blocking.
    Path(args.result_file).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
