"""Exercise 2, a solution: a slow send skips the slots it made overdue."""

import trio

INTERVAL = 0.2  # seconds between ticks
SEND_TIME = 0.02  # what sending costs; exaggerated, so that five ticks show it
COUNT = 6


async def send(seq: int, start: float) -> None:
    now = trio.current_time() - start
    print(f"tick {seq} at {now:.2f} s, due at {seq * INTERVAL:.2f} s")
    await trio.sleep(0.5 if seq == 2 else SEND_TIME)  # tick 2 takes 2.5 intervals


async def main() -> None:
    start = trio.current_time()
    seq = 1
    while seq <= COUNT:
        await trio.sleep_until(start + seq * INTERVAL)
        await send(seq, start)
        seq += 1
        while seq <= COUNT and start + seq * INTERVAL < trio.current_time():
            print(f"skipped slot {seq}")  # overdue: skip it rather than send a burst
            seq += 1


if __name__ == "__main__":
    trio.run(main)
