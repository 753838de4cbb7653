"""Exercise 1, a solution: give up on the eggs, keep the rice."""

import trio


async def boil(what: str, seconds: float) -> None:
    await trio.sleep(seconds)
    print(f"{what}: done after {seconds} s")


async def main() -> None:
    start = trio.current_time()
    with trio.move_on_after(0.3) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(boil, "eggs", 0.4)
            nursery.start_soon(boil, "rice", 0.2)
    elapsed = trio.current_time() - start
    print(f"gave up after {elapsed:.1f} s (cancelled_caught={scope.cancelled_caught})")


if __name__ == "__main__":
    trio.run(main)
