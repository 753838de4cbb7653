"""Peer: the `websockets` library's native Trio server (websockets >= 17).

python websockets_trio_server.py PORT

The same protocol subset as ``websockets_server.py`` (its asyncio twin), the
Trio way: one nursery per connection, the sender in a cancel scope of its own
that a new ``start`` or a ``stop`` cancels, deadlines from ``trio.current_time``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from functools import partial

import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.server import ServerConnection, serve


async def tick(
    websocket: ServerConnection, scope: trio.CancelScope, schedule_id: int, interval: float
) -> None:
    with scope:
        t0 = trio.current_time()
        seq = 1
        while True:
            await trio.sleep_until(t0 + seq * interval)
            text = f'{{"type":"tick","id":{schedule_id},"seq":{seq},"time":{time.time()!r}}}'
            try:
                await websocket.send(text)
            except ConnectionClosed:
                return
            seq = max(seq + 1, math.ceil((trio.current_time() - t0) / interval))


async def ticks(websocket: ServerConnection) -> None:
    await websocket.send('{"type":"hello"}')
    last_id = 0
    async with trio.open_nursery() as nursery:
        ticking: trio.CancelScope | None = None
        try:
            async for raw in websocket:
                message = json.loads(raw)
                if ticking is not None:
                    ticking.cancel()
                    ticking = None
                if message.get("type") == "stop":
                    await websocket.send(f'{{"type":"stopped","id":{last_id}}}')
                    continue
                last_id += 1
                interval = float(message["interval"])
                started = f'{{"type":"started","id":{last_id},"interval":{interval},"count":null}}'
                await websocket.send(started)
                ticking = trio.CancelScope()
                nursery.start_soon(tick, websocket, ticking, last_id, interval)
        except ConnectionClosed:
            pass
        finally:
            nursery.cancel_scope.cancel()


async def main(port: int) -> None:
    # compression at its default ("deflate": negotiated when offered, 12-bit windows,
    # memLevel 5) and no keepalive, exactly as the asyncio peer is configured.
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, ticks, port, host="127.0.0.1", ping_interval=None))
        print(f"listening on {port}", flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]))
