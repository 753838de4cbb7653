"""Step 2: tick with trio.sleep, and watch the ticks drift."""

import trio

INTERVAL = 0.2  # seconds between ticks
SEND_TIME = 0.02  # what sending costs; exaggerated, so that five ticks show it


async def send(seq: int, start: float) -> None:
    now = trio.current_time() - start
    print(f"tick {seq} at {now:.2f} s, due at {seq * INTERVAL:.2f} s")
    await trio.sleep(SEND_TIME)


async def main() -> None:
    start = trio.current_time()
    for seq in range(1, 6):
        await trio.sleep(INTERVAL)
        await send(seq, start)


if __name__ == "__main__":
    trio.run(main)
