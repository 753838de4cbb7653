"""The client's numbers: lateness of the ticks a client received, on its own clock. Pure.

The server's own per-worker counts are ``server_tally.py``'s. A client cannot
read the server's clock, so it fits the grid's slot 0, ``t0``, to what it
saw: tick ``seq`` is due at ``t0 + seq * interval`` (docs/protocol.md), and
arriving at ``arrival`` it proves ``t0 <= arrival - seq * interval``. A
``started`` whose first slot is ``first`` proves ``t0 + (first - 1) *
interval <=`` the moment it arrived, since the server accepted the start no
earlier than slot ``first - 1`` was due (``first`` is 1 without an anchor:
``t0 <=`` that moment). The fitted ``t0`` is the smallest of those bounds; a
tick's lateness is how far it arrived after its slot on that ``t0``, so it is
never negative.

An anchored schedule resumed after a reconnect is the same grid, on another
connection or another server, so one fit covers the whole run: every
``started`` and every tick is one more bound on the same ``t0``. That assumes
the servers' clocks agree (NTP: a few ms); a server whose clock is ``d``
behind the others' shows its ticks ``d`` late. ``ticker watch``, the
benchmarks and the tests use the definitions below; the page's copy is
``static/js/client-stats.js``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

# Buckets grow by 1 % from 1 µs, so a percentile is exact to within 1 % (or
# 1 µs) however long a watch runs; 2,100 counters cover 1 µs to over 1000 s.
_SMALLEST: Final = 1e-6  # seconds
_GROWTH: Final = 1.01
_BUCKETS: Final = 2100


def slot_start(seq: int, arrival: float, interval: float) -> float:
    """The latest ``t0`` that tick ``seq`` arriving at ``arrival`` allows."""
    return arrival - seq * interval


class LatenessFit:
    """The fit as ticks arrive: each tick's lateness on the ``t0`` proved so far.

    What a live display can do: a tick's lateness is final when it is shown,
    so a later, more punctual tick (or a resumed ``started``) lowers ``t0``
    for the ticks after it only.
    """

    def __init__(self, interval: float, started: float, first: int = 1) -> None:
        """``started``: when the ``started`` message arrived, on the client's clock;
        ``first``: the seq of its first slot (``started.first``)."""
        self.interval = interval
        self.t0 = slot_start(first - 1, started, interval)

    def restarted(self, first: int, arrival: float) -> None:
        """Another ``started`` on the same grid (a resumed schedule): one more bound."""
        self.t0 = min(self.t0, slot_start(first - 1, arrival, self.interval))

    def lateness(self, seq: int, arrival: float) -> float:
        """Lateness (seconds, ≥ 0) of tick ``seq`` arriving at ``arrival``."""
        start = slot_start(seq, arrival, self.interval)
        self.t0 = min(self.t0, start)
        return start - self.t0


def fit_lateness(
    arrivals: Iterable[tuple[int, float]],
    interval: float,
    started: float | None = None,
    first: int = 1,
) -> list[float]:
    """The lateness of every ``(seq, arrival)``, in order, on the ``t0`` all of them prove.

    ``started``, when known, is one more bound (when ``started`` arrived; its
    first slot is ``first``). What a report after the fact can do; ticks in
    any order, with any slots skipped, from one connection or several on the
    same grid.
    """
    starts = [slot_start(seq, arrival, interval) for seq, arrival in arrivals]
    if not starts:
        return []
    bounds = starts if started is None else [*starts, slot_start(first - 1, started, interval)]
    t0 = min(bounds)
    return [start - t0 for start in starts]


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
