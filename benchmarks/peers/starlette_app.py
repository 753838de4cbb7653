"""Peer: Starlette on uvicorn (asyncio; uvloop when installed).

uvicorn starlette_app:app
"""

from __future__ import annotations

import asyncio
import json
import math
import time

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def ticks(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text('{"type":"hello"}')
    loop = asyncio.get_running_loop()
    last_id = 0
    ticking: asyncio.Task[None] | None = None

    async def tick(schedule_id: int, interval: float) -> None:
        t0 = loop.time()
        seq = 1
        while True:
            await asyncio.sleep(max(0.0, t0 + seq * interval - loop.time()))
            text = f'{{"type":"tick","id":{schedule_id},"seq":{seq},"time":{time.time()!r}}}'
            await websocket.send_text(text)
            seq = max(seq + 1, math.ceil((loop.time() - t0) / interval))

    try:
        while True:
            message = json.loads(await websocket.receive_text())
            if ticking is not None:
                ticking.cancel()
                ticking = None
            if message.get("type") == "stop":
                await websocket.send_text(f'{{"type":"stopped","id":{last_id}}}')
                continue
            last_id += 1
            interval = float(message["interval"])
            started = f'{{"type":"started","id":{last_id},"interval":{interval},"count":null}}'
            await websocket.send_text(started)
            ticking = asyncio.create_task(tick(last_id, interval))
    except WebSocketDisconnect:
        pass
    finally:
        if ticking is not None:
            ticking.cancel()


app = Starlette(routes=[WebSocketRoute("/ws", ticks)])
