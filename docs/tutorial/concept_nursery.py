"""Concept 2: a nursery runs tasks at the same time and waits for all of them."""

import trio


async def boil(what: str, seconds: float) -> None:
    await trio.sleep(seconds)
    print(f"{what}: done after {seconds} s")


async def main() -> None:
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(boil, "eggs", 0.4)
        nursery.start_soon(boil, "rice", 0.2)
        print("both on the stove")
    # Here, and not before, every task started in the nursery has finished.
    print(f"all done after {trio.current_time() - start:.1f} s")


if __name__ == "__main__":
    trio.run(main)
