"""The frame budget: a burst at once, then frames at the rate, as plain numbers."""

from __future__ import annotations

import pytest

from ticker.pacing import FrameBudget


def test_a_burst_needs_no_wait() -> None:
    budget = FrameBudget(rate=100, burst=200)
    assert [budget.take(0.0) for _ in range(200)] == [0.0] * 200


def test_beyond_the_burst_each_frame_waits_its_share_of_a_second() -> None:
    budget = FrameBudget(rate=100, burst=200)
    for _ in range(200):
        budget.take(0.0)
    assert budget.take(0.0) == pytest.approx(0.01)
    assert budget.take(0.0) == pytest.approx(0.02)


def test_a_reader_that_waits_as_told_reads_at_the_rate() -> None:
    budget = FrameBudget(rate=1000, burst=2000)
    now = 0.0
    for _ in range(5000):
        now += budget.take(now)
    assert now == pytest.approx((5000 - 2000) / 1000)


def test_quiet_time_refills_the_burst_but_never_beyond_it() -> None:
    budget = FrameBudget(rate=100, burst=10)
    for _ in range(10):
        budget.take(0.0)
    assert budget.take(0.0) > 0
    waits = [budget.take(3600.0) for _ in range(11)]
    assert waits[:10] == [0.0] * 10
    assert waits[10] > 0
