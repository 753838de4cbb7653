"""The server's per-worker tally: what the tick path counts, and how it is handed over."""

from __future__ import annotations

import pytest

from ticker.protocol import ErrorCode
from ticker.server_tally import LATENESS_BUCKETS, Tally


@pytest.mark.parametrize(
    ("lateness", "bucket"),
    [
        (-0.001, 0),  # cannot happen (sends follow deadlines); still counted, first bucket
        (0.0, 0),
        (0.0001, 0),  # on a bound: Prometheus buckets are "less than or equal"
        (0.00011, 1),
        (0.003, 5),
        (1.0, len(LATENESS_BUCKETS) - 1),
        (1.5, len(LATENESS_BUCKETS)),  # +Inf
    ],
)
def test_lateness_lands_in_the_bucket_prometheus_would_choose(lateness: float, bucket: int) -> None:
    tally = Tally()
    tally.tick_sent(lateness, skipped=0)
    assert tally.lateness_counts == [int(i == bucket) for i in range(len(LATENESS_BUCKETS) + 1)]
    assert tally.lateness_sum == lateness
    assert tally.ticks_sent == 1


def test_buckets_cover_a_tenth_of_a_millisecond_to_a_second_in_order() -> None:
    assert LATENESS_BUCKETS[0] == 0.0001
    assert LATENESS_BUCKETS[-1] == 1.0
    assert list(LATENESS_BUCKETS) == sorted(set(LATENESS_BUCKETS))


def test_take_hands_over_everything_and_starts_again_from_zero() -> None:
    tally = Tally()
    tally.schedules_started += 2
    tally.protocol_errors[ErrorCode.INVALID_JSON] += 3
    tally.tick_sent(0.002, skipped=4)
    tally.tick_sent(0.02, skipped=0)

    taken = tally.take()

    assert (taken.schedules_started, taken.ticks_sent, taken.ticks_skipped) == (2, 2, 4)
    assert taken.protocol_errors[ErrorCode.INVALID_JSON] == 3
    assert taken.lateness_sum == pytest.approx(0.022)
    fresh = Tally()
    for name in Tally.__slots__:
        assert getattr(tally, name) == getattr(fresh, name), name
    tally.tick_sent(0.002, skipped=0)  # the taken counts are no longer shared
    assert taken.ticks_sent == 2
