"""Concept 3: a cancel scope stops the work inside it, and nothing else."""

import trio


async def beep(scope: trio.CancelScope) -> None:
    with scope:
        try:
            for n in range(1, 100):
                await trio.sleep(0.2)
                print(f"beep {n}")
        finally:
            print("beeper: cancelled, cleaning up")
    print("beeper: carries on after its scope")


async def main() -> None:
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        nursery.start_soon(beep, scope)
        await trio.sleep(0.5)
        print("main: cancel the beeper")
        scope.cancel()
    print("main: the nursery is empty")


if __name__ == "__main__":
    trio.run(main)
