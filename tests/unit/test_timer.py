"""The worker-wide timer on Trio's autojump clock: exact virtual times, instant cancellation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from ticker.timer import Timer, TimerStopped


@asynccontextmanager
async def running_timer() -> AsyncIterator[Timer]:
    timer = Timer()
    async with trio.open_nursery() as nursery:
        await nursery.start(timer.serve)
        yield timer
        nursery.cancel_scope.cancel()


async def test_sleepers_wake_exactly_at_their_deadlines_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    woke: list[tuple[str, float]] = []
    async with running_timer() as timer, trio.open_nursery() as nursery:
        start = trio.current_time()

        async def sleeper(name: str, delay: float) -> None:
            await timer.sleep_until(start + delay)
            woke.append((name, trio.current_time() - start))

        for name, delay in [("c", 3.0), ("a", 1.0), ("b", 2.0), ("a2", 1.0), ("d", 1e-6)]:
            nursery.start_soon(sleeper, name, delay)
    assert dict(woke) == {"d": 1e-6, "a": 1.0, "a2": 1.0, "b": 2.0, "c": 3.0}
    # In deadline order (Trio may run two tasks woken together either way round).
    assert [at for _, at in woke] == [1e-6, 1.0, 1.0, 2.0, 3.0]


async def test_an_earlier_deadline_asked_later_is_still_kept_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    woke: list[float] = []
    async with running_timer() as timer, trio.open_nursery() as nursery:
        start = trio.current_time()

        async def sleeper(delay: float) -> None:
            await timer.sleep_until(start + delay)
            woke.append(trio.current_time() - start)

        nursery.start_soon(sleeper, 100.0)
        await trio.sleep(1.0)  # the timer now waits for 100 s
        nursery.start_soon(sleeper, 2.5)
    assert woke == [2.5, 100.0]


async def test_cancelling_a_waiting_sleeper_is_instant_and_leaves_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    woke: list[float] = []
    async with running_timer() as timer, trio.open_nursery() as nursery:
        start = trio.current_time()
        with trio.CancelScope() as scope:
            nursery.start_soon(lambda: _wake_then_note(timer, start + 5.0, start, woke))
            await trio.sleep(1.0)
            scope.cancel()
            await timer.sleep_until(start + 60.0)  # cancelled at once: never waits
        assert trio.current_time() - start == 1.0
        assert timer.waiting == 1  # the other sleeper
    assert woke == [5.0]


async def _wake_then_note(timer: Timer, deadline: float, start: float, woke: list[float]) -> None:
    await timer.sleep_until(deadline)
    woke.append(trio.current_time() - start)


async def test_a_deadline_already_past_returns_at_once_but_is_a_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_timer() as timer:
        start = trio.current_time()
        await timer.sleep_until(start - 1.0)
        assert trio.current_time() == start
        with trio.CancelScope() as scope:
            scope.cancel()
            await timer.sleep_until(start - 1.0)
        assert scope.cancelled_caught


async def test_a_start_stop_flood_cannot_grow_the_heap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running_timer() as timer:
        far = trio.current_time() + 86400.0  # a day: never popped during the test
        for _ in range(10_000):
            with trio.move_on_after(0.001):
                await timer.sleep_until(far)
            assert len(timer._heap) <= 2  # cancelled entries are dropped, not kept for a day
        assert timer.waiting == 0


async def test_sleepers_waiting_when_the_timer_stops_are_told(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = Timer()
    failures: list[BaseException] = []

    async def sleeper() -> None:
        try:
            await timer.sleep_until(trio.current_time() + 10.0)
        except TimerStopped as stopped:
            failures.append(stopped)

    async with trio.open_nursery() as outer, trio.open_nursery() as timers:
        await timers.start(timer.serve)
        outer.start_soon(sleeper)
        await trio.sleep(1.0)
        timers.cancel_scope.cancel()
    assert len(failures) == 1


async def test_a_timer_not_served_sleeps_as_trio_does(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = Timer()
    start = trio.current_time()
    await timer.sleep_until(start + 2.5)
    assert trio.current_time() - start == 2.5
    assert timer.waiting == 0


async def test_two_timers_in_one_run_do_not_share_sleepers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    woke: list[tuple[str, float]] = []
    async with running_timer() as first, running_timer() as second, trio.open_nursery() as n:
        start = trio.current_time()
        for name, timer, delay in [("first", first, 2.0), ("second", second, 1.0)]:
            n.start_soon(_note, name, timer, start + delay, start, woke)
        await trio.sleep(0.5)
        assert (first.waiting, second.waiting) == (1, 1)
    assert woke == [("second", 1.0), ("first", 2.0)]


async def _note(
    name: str, timer: Timer, deadline: float, start: float, woke: list[tuple[str, float]]
) -> None:
    await timer.sleep_until(deadline)
    woke.append((name, trio.current_time() - start))
