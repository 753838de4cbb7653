"""Step 4: one nursery per connection: this task receives, a sender task ticks."""

import json

import trio
from quart import Response, websocket
from quart_trio import QuartTrio

app = QuartTrio(__name__)


@app.get("/")
async def index() -> Response:
    return await app.send_static_file("client.html")


async def send_ticks(interval: float, count: int | None, scope: trio.CancelScope) -> None:
    with scope:  # cancelling this scope ends this schedule, and only this one
        start = trio.current_time()
        seq = 1
        while count is None or seq <= count:
            await trio.sleep_until(start + seq * interval)
            await websocket.send(json.dumps({"type": "tick", "seq": seq}))
            seq += 1
        await websocket.send(json.dumps({"type": "done", "sent": count, "skipped": 0}))


@app.websocket("/ws")
async def ws() -> None:
    await websocket.accept()
    async with trio.open_nursery() as nursery:
        running = trio.CancelScope()  # no schedule yet
        while True:
            command = json.loads(await websocket.receive())
            running.cancel()  # any new command ends the running schedule
            if command["type"] == "start":
                running = trio.CancelScope()
                interval, count = float(command["interval"]), command.get("count")
                nursery.start_soon(send_ticks, interval, count, running)
