"""The Quart-Trio wiring: ``/`` and static files, ``/healthz``, and the ``/ws`` websocket.

Run it with ``hypercorn ticker.app:app --worker-class trio``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from quart import Response, websocket
from quart_trio import QuartTrio

from . import __version__, _hypercorn_fixes
from .config import ConfigError, Settings
from .session import run_session

#: RFC 6455 "internal error": a bug in the server, not in the client.
CLOSE_INTERNAL_ERROR = 1011

log = logging.getLogger("ticker")


def static_dir() -> Path:
    """The browser page's folder: inside the installed package, else the source checkout's."""
    installed = Path(__file__).with_name("static")
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "static"


@dataclass(slots=True)
class ConnectionCount:
    """Open websockets of one app (one worker process); never shared between apps."""

    open: int = 0


def create_app(settings: Settings | None = None) -> QuartTrio:
    """Build the app; ``settings`` default to the ``TICKER_*`` environment.

    Raises:
        ConfigError: a ``TICKER_*`` variable is malformed.
    """
    settings = Settings.from_env() if settings is None else settings
    _hypercorn_fixes.apply()
    connections = ConnectionCount()
    app = QuartTrio(__name__, static_folder=str(static_dir()), static_url_path="/static")
    app.config["TICKER_SETTINGS"] = settings
    # Browsers revalidate the page's files (cheap 304s), so an upgrade shows at once.
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = 0
    app.extensions["ticker.connections"] = connections

    @app.get("/")
    async def index() -> Response:
        return await app.send_static_file("index.html")

    @app.get("/healthz")
    async def healthz() -> tuple[dict[str, object], dict[str, str]]:
        body = {"status": "ok", "version": __version__, "connections": connections.open}
        return body, {"Cache-Control": "no-store"}

    @app.websocket("/ws")
    async def ws() -> Response | None:
        if connections.open >= settings.max_connections:
            # Refused before the handshake completes: the client gets an HTTP status.
            return Response(
                f"ticker is at its limit of {settings.max_connections} connections; "
                "try again later.\n",
                status=503,
                headers={"Retry-After": "5", "Content-Type": "text/plain; charset=utf-8"},
            )
        connections.open += 1  # no await since the check: the limit is exact
        try:
            await websocket.accept()
            try:
                close = await run_session(websocket.send, websocket.receive, settings.limits)
            except Exception:
                # A bug of ours: say so with 1011 rather than Quart's clean 1000.
                log.exception("ticker session failed")
                await websocket.close(CLOSE_INTERNAL_ERROR, "internal error")
                return None
            if close is not None:
                await websocket.close(close.code, close.reason)
        finally:
            connections.open -= 1
        return None

    return app


try:
    app = create_app()
except ConfigError as error:
    # One line naming the variable, instead of a traceback from inside hypercorn.
    raise SystemExit(f"ticker: configuration error: {error}") from None
