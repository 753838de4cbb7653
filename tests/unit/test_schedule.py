"""Absolute deadlines and the slow-receiver skip rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticker.schedule import Schedule


def test_deadlines_are_absolute() -> None:
    schedule = Schedule(start=100.0, interval=0.1)
    assert schedule.due(1) == pytest.approx(100.1)
    # Computed from the start, not summed: slot one million is where it belongs.
    assert schedule.due(1_000_000) == pytest.approx(100.0 + 100_000.0)


def test_on_time_send_moves_to_the_next_slot() -> None:
    schedule = Schedule(start=0.0, interval=1.0)
    assert schedule.next_seq(1, now=1.0005) == 2


def test_send_ending_exactly_at_a_deadline_keeps_that_slot() -> None:
    schedule = Schedule(start=0.0, interval=1.0)
    assert schedule.next_seq(1, now=2.0) == 2


@pytest.mark.parametrize(("now", "expected"), [(2.0001, 3), (3.5, 4), (10.0, 10), (10.01, 11)])
def test_slots_whose_deadline_passed_while_sending_are_skipped(now: float, expected: int) -> None:
    schedule = Schedule(start=0.0, interval=1.0)
    assert schedule.next_seq(1, now=now) == expected


def test_a_late_clock_before_the_sent_slot_never_goes_backwards() -> None:
    schedule = Schedule(start=0.0, interval=1.0)
    assert schedule.next_seq(5, now=0.0) == 6


def test_has_slot() -> None:
    counted = Schedule(start=0.0, interval=1.0, last=3)
    assert [counted.has_slot(seq) for seq in (1, 3, 4)] == [True, True, False]
    assert Schedule(start=0.0, interval=1.0).has_slot(10**12)


@given(
    start=st.floats(0, 1e6),
    interval=st.floats(0.01, 86400),
    sent=st.integers(1, 10**7),
    late=st.floats(0, 1e6),
)
def test_next_slot_is_the_first_not_yet_due(
    start: float, interval: float, sent: int, late: float
) -> None:
    schedule = Schedule(start=start, interval=interval)
    now = schedule.due(sent) + late
    seq = schedule.next_seq(sent, now)
    assert seq > sent
    assert schedule.due(seq) >= now
    # Every slot skipped was overdue when the send ended.
    assert seq == sent + 1 or schedule.due(seq - 1) < now
