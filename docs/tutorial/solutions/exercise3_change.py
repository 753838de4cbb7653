"""Exercise 3, a solution: after two ticks, ask for a new interval; ignore the old schedule."""

import json
import sys

import trio
from trio_websocket import open_websocket_url

URL = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8000/ws"


async def main() -> None:
    async with open_websocket_url(URL) as ws:
        await ws.send_message(json.dumps({"type": "start", "interval": 0.2}))  # no count
        current = None  # the id of the schedule we want; None until its `started`
        while True:
            message = json.loads(await ws.get_message())
            if message["type"] == "started":
                current = message["id"]
                print(f"started {current}: every {message['interval']:g} s")
            elif message.get("id") != current:
                continue  # about an older schedule (or no schedule): not ours any more
            elif message["type"] == "tick":
                print(f"tick {message['seq']} of schedule {current}")
                if current == 1 and message["seq"] == 2:
                    current = None  # from now on, ticks of schedule 1 are stale
                    new = {"type": "start", "interval": 0.1, "count": 3}
                    await ws.send_message(json.dumps(new))
            elif message["type"] == "done":
                print(f"done: {message['sent']} sent, {message['skipped']} skipped")
                return


if __name__ == "__main__":
    trio.run(main)
