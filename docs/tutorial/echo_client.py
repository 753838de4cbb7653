"""Step 1's client: send two messages to the echo websocket and print the answers."""

import sys

import trio
from trio_websocket import open_websocket_url

URL = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8000/ws"


async def main() -> None:
    async with open_websocket_url(URL) as ws:
        for text in ["hello", "trio"]:
            await ws.send_message(text)
            print(f"sent {text!r}, received {await ws.get_message()!r}")


if __name__ == "__main__":
    trio.run(main)
