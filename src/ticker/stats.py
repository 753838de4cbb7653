"""Lateness statistics for a client watching ticks, in constant memory. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

# Buckets grow by 1 % from 1 µs, so a percentile is exact to within 1 % (or
# 1 µs) however long a watch runs; 2,100 counters cover 1 µs to over 1000 s.
_SMALLEST: Final = 1e-6  # seconds
_GROWTH: Final = 1.01
_BUCKETS: Final = 2100


@dataclass(frozen=True, slots=True)
class Summary:
    """What a watch prints on exit. Lateness in seconds; None before any tick."""

    received: int
    skipped: int
    p50: float | None
    p99: float | None
    max: float | None


class LatenessRecorder:
    """Counts ticks, skipped slots, and a histogram of lateness (seconds, ≥ 0)."""

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self.received = 0
        self.skipped = 0
        self._max: float | None = None

    def record(self, lateness: float) -> None:
        """One tick that arrived ``lateness`` seconds after its slot (negative counts as 0)."""
        lateness = max(0.0, lateness)
        self._counts[_bucket(lateness)] += 1
        self.received += 1
        self._max = lateness if self._max is None else max(self._max, lateness)

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0 < q ≤ 100), nearest rank, to within 1 %."""
        if not self.received:
            return None
        rank = max(1, math.ceil(q / 100 * self.received))
        seen = 0
        for index, count in enumerate(self._counts):
            seen += count
            if seen >= rank:
                assert self._max is not None
                return min(_upper_bound(index), self._max)
        raise AssertionError("unreachable: ranks never exceed the count")  # pragma: no cover

    def summary(self) -> Summary:
        return Summary(
            received=self.received,
            skipped=self.skipped,
            p50=self.percentile(50),
            p99=self.percentile(99),
            max=self._max,
        )


def _bucket(seconds: float) -> int:
    if seconds <= _SMALLEST:
        return 0
    return min(_BUCKETS - 1, math.ceil(math.log(seconds / _SMALLEST, _GROWTH)))


def _upper_bound(index: int) -> float:
    return float(_SMALLEST * _GROWTH**index)
