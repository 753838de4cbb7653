"""Concept 1: async functions, await, and trio.run."""

import trio


async def boil(what: str, seconds: float) -> None:
    print(f"{what}: on the stove")
    await trio.sleep(seconds)  # while this task waits, Trio may run others
    print(f"{what}: done after {seconds} s")


async def main() -> None:
    start = trio.current_time()
    await boil("eggs", 0.4)
    await boil("rice", 0.2)
    print(f"all done after {trio.current_time() - start:.1f} s")


if __name__ == "__main__":
    trio.run(main)
