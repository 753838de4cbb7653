"""ticker: a Trio websocket service that sends ticks at the interval a client asks for."""

from __future__ import annotations

__version__ = "0.1.0"
