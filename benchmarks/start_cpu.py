"""Server CPU per ``start`` in a herd: what bounds the herd's start delay.

    python benchmarks/start_cpu.py                          # every server, 2000 clients, 3 rounds
    python benchmarks/start_cpu.py --servers ticker,floor --clients 1000 --rounds 5

Each round starts each server fresh (pinned as in ``run.py``), connects N
clients, then has all of them send ``start`` at once and wait for
``started``. The number is the server's CPU time (its whole process tree, from
``/proc``) over that burst, divided by N: CPU time, not wall time, so a busy
machine slows the run but hardly moves the number. /proc counts in clock
ticks (10 ms), so N = 2000 resolves 5 µs per start.

The herd's p99 start delay is about N times this cost, since one worker
answers the starts one after another.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # the harness's own server start-up and pinning

CLOCK_TICK = 1 / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """User + system seconds of ``pid`` and its children (Hypercorn's worker)."""
    pids = [pid]
    with contextlib.suppress(OSError):  # no children: a single-process server
        pids += [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    total = 0.0
    for one in pids:
        fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) * CLOCK_TICK
    return total


async def burst(url: str, clients: int, pid: int) -> tuple[float, float]:
    """CPU seconds the server spent answering ``clients`` simultaneous starts, and the wall time."""
    gate = asyncio.Semaphore(50)

    async def open_one() -> ClientConnection:
        async with gate:
            ws = await connect(
                url, compression=None, ping_interval=None, max_queue=None, open_timeout=60
            )
            await ws.recv()  # hello
            return ws

    connections = await asyncio.gather(*(open_one() for _ in range(clients)))
    await asyncio.sleep(1.0)  # the handshakes' work is done
    before = tree_cpu(pid)

    async def start(ws: ClientConnection) -> None:
        await ws.send('{"type":"start","interval":60}')  # no tick falls in the window
        assert json.loads(await ws.recv())["type"] == "started"

    began = time.monotonic()
    await asyncio.gather(*(start(ws) for ws in connections))
    wall = time.monotonic() - began
    await asyncio.sleep(0.3)  # CPU accounting catches up
    used = tree_cpu(pid) - before
    await asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True)
    return used, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="ticker,floor,starlette,websockets,websockets-trio")
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    names = args.servers.split(",")
    costs: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names:  # interleaved, so drift in the machine's speed hits all alike
            server = bench.start_server(name)
            try:
                used, wall = asyncio.run(burst(server.url, args.clients, server.process.pid))
            finally:
                server.stop()
            costs[name].append(1e6 * used / args.clients)
            print(
                f"round {round_ + 1} {name}: {costs[name][-1]:.0f} µs CPU per start "
                f"(burst {1e3 * wall:.0f} ms wall)",
                file=sys.stderr,
                flush=True,
            )
    print(f"| server | CPU µs per start (median of {args.rounds}) | ÷ ticker |")
    print("|---|---|---|")
    ticker = statistics.median(costs["ticker"]) if "ticker" in costs else None
    for name, values in costs.items():
        median = statistics.median(values)
        ratio = f"{median / ticker:.2f}" if ticker else "n/a"
        print(f"| {name} | {median:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
