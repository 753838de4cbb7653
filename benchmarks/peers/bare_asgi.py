"""The stack's floor: a bare ASGI app on Hypercorn's trio worker, no framework.

hypercorn bare_asgi:app --worker-class trio
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import trio


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": '{"type":"hello"}'})
    last_id = 0
    async with trio.open_nursery() as nursery:
        ticking: trio.CancelScope | None = None
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                nursery.cancel_scope.cancel()
                return
            message = json.loads(event["text"])
            if ticking is not None:
                ticking.cancel()
                ticking = None
            if message.get("type") == "stop":
                await send(
                    {"type": "websocket.send", "text": f'{{"type":"stopped","id":{last_id}}}'}
                )
                continue
            last_id += 1
            interval = float(message["interval"])
            text = f'{{"type":"started","id":{last_id},"interval":{interval},"count":null}}'
            await send({"type": "websocket.send", "text": text})
            ticking = trio.CancelScope()
            nursery.start_soon(tick, send, ticking, last_id, interval)


async def tick(send: Any, scope: trio.CancelScope, schedule_id: int, interval: float) -> None:
    with scope:
        t0 = trio.current_time()
        seq = 1
        while True:
            await trio.sleep_until(t0 + seq * interval)
            text = f'{{"type":"tick","id":{schedule_id},"seq":{seq},"time":{time.time()!r}}}'
            await send({"type": "websocket.send", "text": text})
            seq = max(seq + 1, math.ceil((trio.current_time() - t0) / interval))
