"""Schedule arithmetic: absolute deadlines and the slow-receiver skip rule.

Pure: times are plain floats on whatever monotonic clock the caller uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Schedule:
    """Slot ``seq`` (1, 2, 3, ...) is due at ``start + seq * interval``.

    Deadlines are computed from ``start`` every time, never by adding up
    intervals, so a late tick never pushes the next one back: no drift.
    ``start`` is slot 0, the grid's anchor on the monotonic clock. The schedule
    covers the slots ``first`` to ``last`` (no end when ``last`` is None).
    """

    start: float
    interval: float
    last: int | None = None
    first: int = 1

    @property
    def count(self) -> int | None:
        """How many slots the schedule covers (None when unbounded)."""
        return None if self.last is None else self.last - self.first + 1

    def due(self, seq: int) -> float:
        """When slot ``seq`` is due."""
        return self.start + seq * self.interval

    def has_slot(self, seq: int) -> bool:
        """Whether ``seq`` is a slot of this schedule (always, when unbounded)."""
        return self.last is None or seq <= self.last

    @classmethod
    def from_anchor(
        cls, start: float, interval: float, now: float, length: int | None = None
    ) -> Schedule:
        """The grid whose slot 0 is at ``start``, from the first slot due after ``now``.

        Slots already due (at or before ``now``) are not part of it, and slot 1
        is the earliest there is. ``length`` is how many slots it covers.
        """
        first = max(1, math.floor((now - start) / interval) + 1)
        # As in next_seq: settle the estimate against due() itself.
        probe = cls(start, interval)
        while probe.due(first) <= now:
            first += 1
        while first > 1 and probe.due(first - 1) > now:
            first -= 1
        last = None if length is None else first + length - 1
        return cls(start, interval, last, first)

    def next_seq(self, sent: int, now: float) -> int:
        """The slot to send after slot ``sent``, whose send ended at ``now``.

        Go's ``time.Ticker`` rule: slots whose deadline passed while sending
        are skipped, not sent in a burst. A slot due exactly at ``now`` is
        still on time.
        """
        seq = max(sent + 1, math.floor((now - self.start) / self.interval))
        # The division is only an estimate; settle it against due() itself so
        # the skip rule and the deadlines can never disagree by a rounding.
        while self.due(seq) < now:
            seq += 1
        while seq - 1 > sent and self.due(seq - 1) >= now:
            seq -= 1
        return seq
