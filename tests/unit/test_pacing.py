"""The frame budget: a burst at once, then frames at the rate, as plain numbers."""

from __future__ import annotations

import pytest

from ticker.pacing import FrameBudget


def test_a_burst_needs_no_wait() -> None:
    budget = FrameBudget(rate=100, burst=200)
    assert [budget.take(0.0) for _ in range(200)] == [0.0] * 200


def test_beyond_the_burst_a_wait_earns_a_pause_worth_of_frames() -> None:
    budget = FrameBudget(rate=100, burst=200, pause=0.1)
    for _ in range(200):
        budget.take(0.0)
    assert budget.take(0.0) == pytest.approx(0.01 + 0.1)
    # Having waited, the next 10 frames (0.1 s at 100 per second) come free.
    assert [budget.take(0.11) for _ in range(10)] == [0.0] * 10
    assert budget.take(0.11) > 0


def test_a_reader_that_waits_as_told_reads_at_the_rate() -> None:
    budget = FrameBudget(rate=1000, burst=2000)
    now = 0.0
    waits = 0
    for _ in range(5000):
        wait = budget.take(now)
        waits += wait > 0
        now += wait
    assert now == pytest.approx((5000 - 2000) / 1000, abs=budget.pause)
    # One sleep per pause's worth of frames (50 or 51 here), not one per frame.
    per_wait = 1000 * budget.pause
    assert 3000 / (per_wait + 1) - 1 <= waits <= 3000 / per_wait + 1


def test_quiet_time_refills_the_burst_but_never_beyond_it() -> None:
    budget = FrameBudget(rate=100, burst=10)
    for _ in range(10):
        budget.take(0.0)
    assert budget.take(0.0) > 0
    waits = [budget.take(3600.0) for _ in range(11)]
    assert waits[:10] == [0.0] * 10
    assert waits[10] > 0
