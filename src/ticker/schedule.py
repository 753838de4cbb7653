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
    """

    start: float
    interval: float
    count: int | None = None

    def due(self, seq: int) -> float:
        """When slot ``seq`` is due."""
        return self.start + seq * self.interval

    def has_slot(self, seq: int) -> bool:
        """Whether ``seq`` is a slot of this schedule (always, when unbounded)."""
        return self.count is None or seq <= self.count

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
