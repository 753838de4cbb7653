"""Lateness statistics of `ticker watch`: percentiles in constant memory."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticker.cli import format_summary
from ticker.stats import LatenessRecorder, Summary


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
