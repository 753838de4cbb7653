"""The client's numbers (`ticker watch`, benchmarks, tests): the lateness fit, percentiles."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticker.cli import format_summary
from ticker.client_stats import LatenessFit, LatenessRecorder, Summary, fit_lateness

# Times and intervals below are exact in binary, so every lateness is exact too.


def test_one_tick_is_on_time_when_nothing_else_bounds_t0() -> None:
    assert fit_lateness([(1, 10.5)], interval=0.5) == [0.0]


def test_started_arriving_bounds_t0_from_above() -> None:
    # `started` at 10.0 proves t0 <= 10.0; tick 1 was due by 10.5 and came at 10.75.
    assert fit_lateness([(1, 10.75)], interval=0.5, started=10.0) == [0.25]


def test_a_tick_can_prove_an_earlier_t0_than_started() -> None:
    # `started` took a while to arrive: tick 1 at 10.75 proves t0 <= 10.25.
    assert fit_lateness([(1, 10.75)], interval=0.5, started=10.5) == [0.0]


def test_lateness_is_measured_from_the_tightest_bound() -> None:
    arrivals = [(1, 10.5), (2, 11.25), (3, 11.5)]
    assert fit_lateness(arrivals, interval=0.5, started=10.25) == [0.0, 0.25, 0.0]


def test_ticks_out_of_order_keep_their_own_lateness_in_their_own_order() -> None:
    arrivals = [(3, 11.5), (1, 10.75), (2, 11.0)]
    assert fit_lateness(arrivals, interval=0.5) == [0.0, 0.25, 0.0]


def test_a_skipped_range_changes_nothing_but_the_slot_numbers() -> None:
    # Slots 2-4 were skipped; tick 5 was due at t0 + 2.5.
    assert fit_lateness([(1, 10.5), (5, 12.625)], interval=0.5) == [0.0, 0.125]


def test_no_ticks_no_lateness() -> None:
    assert fit_lateness([], interval=0.5, started=10.0) == []


def test_the_live_fit_gives_each_tick_its_lateness_on_what_it_knew_then() -> None:
    fit = LatenessFit(interval=0.5, started=10.5)
    assert fit.lateness(1, 11.25) == 0.25  # t0 <= 10.5 (started)
    assert fit.lateness(2, 11.25) == 0.0  # proves t0 <= 10.25, from now on
    assert fit.lateness(3, 12.0) == 0.25
    assert fit.t0 == 10.25
    # After the fact, tick 1 is seen to have been later than it could know.
    arrivals = [(1, 11.25), (2, 11.25), (3, 12.0)]
    assert fit_lateness(arrivals, interval=0.5, started=10.5) == [0.5, 0.0, 0.25]


def test_the_live_fit_takes_ticks_out_of_order_and_across_skips() -> None:
    fit = LatenessFit(interval=0.5, started=12.0)
    assert fit.lateness(3, 11.5) == 0.0  # t0 <= 10.0
    assert fit.lateness(1, 10.75) == 0.25
    assert fit.lateness(7, 13.5) == 0.0  # slots 4-6 skipped: still on time
    assert fit.t0 == 10.0


def test_started_on_an_anchored_grid_bounds_the_slot_before_its_first() -> None:
    # Slot 40 was due no later than `started` (10.0) arrived: t0 + 39 * 0.5 <= 10.0.
    assert fit_lateness([(40, 11.25)], interval=0.5, started=10.0, first=40) == [0.75]
    fit = LatenessFit(interval=0.5, started=10.0, first=40)
    assert fit.t0 == 10.0 - 39 * 0.5
    assert fit.lateness(40, 11.25) == 0.75


def test_a_resumed_started_is_one_more_bound_on_the_same_grid() -> None:
    fit = LatenessFit(interval=0.5, started=10.0)
    assert fit.lateness(1, 10.625) == 0.125
    # Reconnected: the schedule resumed at slot 9, whose `started` came at 14.125,
    # proves t0 <= 14.125 - 8 * 0.5 = 10.125: no tighter than 10.0. Tick 9 was due
    # at 10.0 + 4.5 and came at 14.75.
    fit.restarted(9, 14.125)
    assert fit.t0 == 10.0
    assert fit.lateness(9, 14.75) == 0.25
    fit.restarted(12, 15.0)  # t0 <= 15.0 - 11 * 0.5 = 9.5: tighter
    assert fit.t0 == 9.5
    assert fit.lateness(12, 15.5) == 0.0


def test_the_fit_stays_exact_enough_for_epoch_seqs() -> None:
    # "anchor": 0, interval 0.01: seq is about 1.8e11, and products are near 1.8e9 s.
    seq = 176_413_920_012
    fit = LatenessFit(interval=0.01, started=100.0, first=seq)
    lateness = fit.lateness(seq, 100.0 + 0.01 + 0.002)
    assert lateness == pytest.approx(0.002, abs=1e-6)
    assert fit.lateness(seq + 1, 100.0 + 0.02) == pytest.approx(0.0, abs=1e-6)


@given(
    st.lists(
        st.tuples(st.integers(1, 10**6), st.floats(0, 10**6, allow_nan=False)),
        min_size=1,
        max_size=50,
    ),
    st.sampled_from([0.01, 0.5, 3600.0]),
)
def test_the_fit_never_reports_a_tick_early_and_one_is_on_time(
    arrivals: list[tuple[int, float]], interval: float
) -> None:
    lateness = fit_lateness(arrivals, interval)
    assert min(lateness) == 0.0
    live = LatenessFit(interval, started=math.inf)
    assert all(live.lateness(seq, at) >= 0.0 for seq, at in arrivals)


def exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def test_empty_recorder_has_no_percentiles() -> None:
    assert LatenessRecorder().summary() == Summary(0, 0, None, None, None)


def test_percentiles_of_known_values() -> None:
    recorder = LatenessRecorder()
    for ms in range(1, 101):  # 1 ms … 100 ms
        recorder.record(ms / 1000)
    summary = recorder.summary()
    assert summary.received == 100
    assert summary.p50 == pytest.approx(0.050, rel=0.01)
    assert summary.p99 == pytest.approx(0.099, rel=0.01)
    assert summary.max == 0.1


def test_negative_lateness_counts_as_on_time() -> None:
    recorder = LatenessRecorder()
    recorder.record(-0.002)
    assert recorder.summary().max == 0.0


@given(
    st.lists(st.floats(min_value=2e-6, max_value=100.0), min_size=1, max_size=300),
    st.sampled_from([1, 50, 90, 99, 100]),
)
def test_percentiles_are_within_one_percent_of_exact(values: list[float], q: int) -> None:
    recorder = LatenessRecorder()
    for value in values:
        recorder.record(value)
    estimate = recorder.percentile(q)
    assert estimate is not None
    assert estimate == pytest.approx(exact_percentile(values, q), rel=0.0101)


def test_summary_line() -> None:
    summary = Summary(received=10, skipped=2, p50=0.0012, p99=0.0154, max=0.02)
    assert format_summary(summary) == (
        "received 10, skipped 2, lateness p50 1.2 ms, p99 15.4 ms, max 20.0 ms"
    )
    assert format_summary(Summary(0, 0, None, None, None)) == (
        "received 0, skipped 0, lateness p50 n/a, p99 n/a, max n/a"
    )
