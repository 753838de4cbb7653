"""How ticker names a peer in its log lines: one formatter for the app and the server fixes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_peer(address: Sequence[Any] | None) -> str:
    """``host:port``, ``[v6]:port``; only the host when the port is unknown (a proxy said so).

    ``address`` is an ASGI scope's ``client`` or a socket's ``getpeername()``
    (IPv6 adds flow info and scope id, ignored here).
    """
    if not address:
        return "unknown peer"
    host = str(address[0])
    port = address[1] if len(address) > 1 else None
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host
