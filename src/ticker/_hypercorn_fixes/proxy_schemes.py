"""Fix 5: behind a TLS proxy, websockets must still be websockets.

Upstream problem (pgjones/hypercorn#198, open): ``ProxyFixMiddleware`` copies
X-Forwarded-Proto into ``scope["scheme"]`` for websocket scopes too, so a
websocket behind nginx gets scheme "https" where ASGI says "wss". Werkzeug's
router, which Quart uses, takes "https" for plain HTTP and answers the
handshake with 400 (``WebsocketMismatch``).
Report: docs/upstream/proxy-fix-websocket-scheme.md
Test: tests/app/test_app.py::test_proxy_hops_take_the_client_address_from_x_forwarded_for

Fix: not a patch but a wrapper: after ProxyFixMiddleware, map a websocket's
http/https back to ws/wss.
"""

from __future__ import annotations

from typing import Any, Final

from hypercorn.middleware import ProxyFixMiddleware
from hypercorn.typing import ASGIFramework, Scope

_WEBSOCKET_SCHEMES: Final = {"http": "ws", "https": "wss"}


def trust_proxies(app: ASGIFramework, hops: int) -> ASGIFramework:
    """``app`` behind Hypercorn's ProxyFixMiddleware (X-Forwarded-*, last ``hops`` entries)."""

    async def keep_websocket_schemes(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["scheme"] in _WEBSOCKET_SCHEMES:
            # ProxyFixMiddleware made this scope a copy of its own: safe to change.
            scope["scheme"] = _WEBSOCKET_SCHEMES[scope["scheme"]]
        await app(scope, receive, send)

    return ProxyFixMiddleware(keep_websocket_schemes, mode="legacy", trusted_hops=hops)
