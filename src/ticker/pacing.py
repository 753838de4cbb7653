"""How fast one connection's frames are read: a token bucket, as plain numbers (pure).

A client can write 200,000 empty frames in milliseconds, and each costs the
server tens of microseconds to parse. Reading a connection no faster than a
generous rate bounds its share of a worker's CPU; what it sends beyond that
waits in TCP buffers (backpressure), and nothing it sent is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class FrameBudget:
    """``rate`` frames per second on average, ``burst`` at once; ``take`` says how long to wait.

    Once over budget, a wait earns ``pause`` seconds of frames at once, so a
    paced reader sleeps once per ``rate * pause`` frames, not once per frame.
    """

    rate: float
    burst: float
    pause: float = 0.05  # seconds: at most 20 wakeups a second for a paced reader
    _tokens: float = field(init=False)
    _last: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._tokens = self.burst

    def take(self, now: float) -> float:
        """Spend one frame at time ``now``; return the seconds to wait before reading on."""
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate + self.pause
