"""The server's numbers: what one worker has done (ticks, lateness, skips, errors). Pure.

Counted as plain numbers on the tick path: no clock, no I/O, no Prometheus.
(What a client saw of the ticks it received is ``client_stats.py``'s.)
``metrics.py`` publishes a tally every second; keeping the per-tick work to a
list increment and a float add is what keeps metrics off the tick path's bill
(see BENCHMARKS.md).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

from .protocol import ErrorCode

#: Upper bounds (seconds) of the tick lateness histogram: 0.1 ms to 1 s, about
#: 2.5x apart, plus an implicit +Inf. Lateness on an idle machine is well under
#: a millisecond; a tick a second late is already an outage.
LATENESS_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class Tally:
    """Counts since the last ``take()``; one per app (worker process)."""

    __slots__ = (
        "lateness_counts",
        "lateness_sum",
        "protocol_errors",
        "schedules_started",
        "ticks_skipped",
    )

    def __init__(self) -> None:
        self.schedules_started = 0
        self.ticks_skipped = 0
        self.protocol_errors = dict.fromkeys(ErrorCode, 0)
        #: Non-cumulative: ``lateness_counts[i]`` counts lateness in
        #: ``(LATENESS_BUCKETS[i-1], LATENESS_BUCKETS[i]]``; the last is +Inf.
        self.lateness_counts = [0] * (len(LATENESS_BUCKETS) + 1)
        self.lateness_sum = 0.0

    @property
    def ticks_sent(self) -> int:
        """Every sent tick records its lateness, so the histogram counts them."""
        return sum(self.lateness_counts)

    def tick_sent(self, lateness: float, skipped: int) -> None:
        """A tick went out ``lateness`` seconds after its deadline; ``skipped`` slots follow it."""
        # bisect_left finds the first bound >= lateness: Prometheus's ``le``.
        self.lateness_counts[bisect_left(LATENESS_BUCKETS, lateness)] += 1
        self.lateness_sum += lateness
        self.ticks_skipped += skipped

    def take(self) -> Tally:
        """Return the counts so far and start again from zero."""
        taken = Tally()
        taken.schedules_started, self.schedules_started = self.schedules_started, 0
        taken.ticks_skipped, self.ticks_skipped = self.ticks_skipped, 0
        taken.protocol_errors, self.protocol_errors = (
            self.protocol_errors,
            dict.fromkeys(ErrorCode, 0),
        )
        taken.lateness_counts, self.lateness_counts = self.lateness_counts, taken.lateness_counts
        taken.lateness_sum, self.lateness_sum = self.lateness_sum, 0.0
        return taken
