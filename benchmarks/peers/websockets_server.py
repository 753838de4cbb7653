"""Peer: the `websockets` library's asyncio server.

python websockets_server.py PORT
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def ticks(websocket: ServerConnection) -> None:
    await websocket.send('{"type":"hello"}')
    loop = asyncio.get_running_loop()
    last_id = 0
    ticking: asyncio.Task[None] | None = None

    async def tick(schedule_id: int, interval: float) -> None:
        t0 = loop.time()
        seq = 1
        while True:
            await asyncio.sleep(max(0.0, t0 + seq * interval - loop.time()))
            text = f'{{"type":"tick","id":{schedule_id},"seq":{seq},"time":{time.time()!r}}}'
            await websocket.send(text)
            seq = max(seq + 1, math.ceil((loop.time() - t0) / interval))

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
            ticking = asyncio.create_task(tick(last_id, interval))
    except ConnectionClosed:
        pass
    finally:
        if ticking is not None:
            ticking.cancel()


async def main(port: int) -> None:
    # compression at its default ("deflate": negotiated when offered, 12-bit windows,
    # memLevel 5), as a deployment would run it; the harness's clients decide.
    async with serve(ticks, "127.0.0.1", port, ping_interval=None) as server:
        print(f"listening on {port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
