"""What an app asks of the server for its websockets (fixes 2 and 6-10 enforce it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: A write's deadline (seconds) on a server whose app registered no policy.
DEFAULT_SEND_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True)
class WebsocketPolicy:
    """An app's websocket limits, handed to the server when it registers (``registry``)."""

    max_message_size: int  # bytes, also after inflation
    send_timeout: float  # seconds a write may wait on a full TCP window
    compression: bool  # negotiate permessage-deflate when offered
    ping_interval: float  # seconds; 0 means no keepalive
    ping_timeout: float  # seconds a pong may take
    close_timeout: float  # seconds to wait for the answer to a close frame
    frame_rate: float  # frames per second a connection is read at, on average
