"""A ticker client on trio-websocket: ask for COUNT ticks, print what the server says.

Usage: python docs/tutorial/client.py INTERVAL COUNT [URL]
"""

import json
import sys

import trio
from trio_websocket import ConnectionClosed, open_websocket_url


async def main(interval: float, count: int, url: str) -> int:
    async with open_websocket_url(url) as ws:  # create the websocket and connect
        await ws.send_message(json.dumps({"type": "start", "interval": interval, "count": count}))
        start = trio.current_time()
        while True:
            try:
                message = json.loads(await ws.get_message())
            except ConnectionClosed as closed:
                print(f"closed: {closed.reason}")
                return 1
            match message["type"]:
                case "hello":
                    low, high = message["min_interval"], message["max_interval"]
                    print(f"hello: intervals from {low:g} to {high:g} s")
                case "started":
                    print(f"started {message['id']}: every {message['interval']:g} s")
                case "tick":
                    print(f"tick {message['seq']} at {trio.current_time() - start:.2f} s")
                case "done":
                    print(f"done: {message['sent']} sent, {message['skipped']} skipped")
                    return 0
                case "error":
                    print(f"error {message['code']}: {message['message']}")
                    return 1
                case _:
                    pass  # a newer server may send more types: ignore them


if __name__ == "__main__":
    url = sys.argv[3] if len(sys.argv) > 3 else "ws://127.0.0.1:8000/ws"
    sys.exit(trio.run(main, float(sys.argv[1]), int(sys.argv[2]), url))
