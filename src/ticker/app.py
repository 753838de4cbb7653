"""The Quart-Trio wiring: the page, ``/healthz``, ``/metrics`` and the ``/ws`` websocket.

Run it with ``hypercorn ticker.app:app --worker-class trio``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio

from . import __version__, _hypercorn_fixes
from .addresses import format_peer
from .config import ConfigError, Settings
from .metrics import Metrics, open_metrics
from .protocol import CloseCode, ErrorCode, ProtocolError
from .server_tally import Tally
from .session import Close, Session
from .timer import Timer

#: How often a worker adds its tally to the metrics other workers can read (seconds).
PUBLISH_PERIOD: Final = 1.0

log = logging.getLogger("ticker")


def static_dir() -> Path:
    """The browser page's folder: inside the installed package, else the source checkout's."""
    installed = Path(__file__).with_name("static")
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "static"


@dataclass(eq=False)
class Connections:
    """The open websockets of one app (one worker process); never shared between apps."""

    open: int = 0
    closing: bool = False
    scopes: set[trio.CancelScope] = field(default_factory=set)

    def register(self, scope: trio.CancelScope) -> None:
        """Track an open websocket's scope; cancel it at once if shutdown has begun."""
        self.scopes.add(scope)
        if self.closing:  # shutdown began while this one was being accepted
            scope.cancel()

    def close_all(self) -> None:
        """Refuse new websockets and end every open one (they close with 1001)."""
        self.closing = True
        for scope in self.scopes:
            scope.cancel()


@dataclass(eq=False)
class ServerClose:
    """How the server itself ended a websocket (1002, 1007, 1009, 1011), for the log line."""

    code: int | None = None
    reason: str = ""

    def watching(self, receive: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        """``receive``, noting a disconnect that the server started (it carries a reason)."""

        async def receive_noting_close() -> Any:
            event = await receive()
            if event["type"] == "websocket.disconnect" and event.get("reason"):
                self.code, self.reason = event["code"], event["reason"]
            return event

        return receive_noting_close


#: The current websocket's ``ServerClose``; the handler task inherits it.
_server_close: ContextVar[ServerClose] = ContextVar("ticker_server_close")


class TickerApp(QuartTrio):
    """The ticker service: a Quart-Trio app that knows its settings and its websockets."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(__name__, static_folder=str(static_dir()), static_url_path="/static")
        self.settings = settings
        self.connections = Connections()
        #: Wakes this worker's senders at their deadlines (served while the app serves).
        self.timer = Timer()
        #: This worker's counts, published to ``metrics``; both None when metrics are off.
        self.tally: Tally | None = None
        self.metrics: Metrics | None = None
        if settings.metrics:
            self.tally = Tally()
            self.metrics = open_metrics(settings.metrics_dir)

    def publish_metrics(self) -> None:
        """Make this worker's counts so far visible to every worker's ``/metrics``."""
        if self.metrics is not None and self.tally is not None:
            self.metrics.publish(self.tally)

    @property
    def websocket_policy(self) -> _hypercorn_fixes.WebsocketPolicy:
        """What the server must enforce for this app's websockets (see ``_hypercorn_fixes``)."""
        settings = self.settings
        return _hypercorn_fixes.WebsocketPolicy(
            max_message_size=settings.limits.max_message_size,
            send_timeout=settings.send_timeout,
            compression=settings.compression,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            close_timeout=settings.close_timeout,
            frame_rate=settings.frame_rate,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            self._register_with_the_server(scope)
        if scope["type"] != "websocket":
            await super().__call__(scope, receive, send)
            return
        # Quart drops the disconnect event's code; the handler wants it for its
        # log line when the server (not ticker's session) closed the websocket.
        server_close = ServerClose()
        token = _server_close.set(server_close)
        try:
            await super().__call__(scope, server_close.watching(receive), send)
        finally:
            _server_close.reset(token)

    def _register_with_the_server(self, scope: Any) -> None:
        """Hand the server our websocket policy and shutdown hook, if it offers to take them.

        Hypercorn patched by ``_hypercorn_fixes`` offers ``register`` in the
        lifespan scope; ASGI middleware around this app passes it through.
        Other servers offer nothing: their own limits and shutdown apply.
        """
        offer = (scope.get("extensions") or {}).get(_hypercorn_fixes.EXTENSION)
        if offer is not None:
            offer["register"](self.websocket_policy, self.begin_shutdown)

    def begin_shutdown(self) -> None:
        """Called by the server when graceful shutdown begins (see ``_hypercorn_fixes``)."""
        if not self.connections.closing:
            log.info("shutting down: closing %d websockets with 1001", self.connections.open)
        self.connections.close_all()


def create_app(settings: Settings | None = None) -> TickerApp:
    """Build the app; ``settings`` default to the ``TICKER_*`` environment.

    Raises:
        ConfigError: a ``TICKER_*`` variable is malformed.
        UnsupportedHypercorn: the installed Hypercorn is not one ticker's fixes were checked on.
    """
    settings = Settings.from_env() if settings is None else settings
    _configure_logging(settings.log_level)
    _hypercorn_fixes.apply()
    app = TickerApp(settings)
    # Browsers revalidate the page's files (cheap 304s), so an upgrade shows at once.
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = 0

    @app.get("/")
    async def index() -> Response:
        return await app.send_static_file("index.html")

    if settings.proxy_hops:
        # The client's address (logs) and scheme from the proxies' X-Forwarded-*
        # headers, trusting only the last ``proxy_hops`` entries, which our own
        # proxies wrote; what a client put before them is ignored.
        app.asgi_app = _hypercorn_fixes.trust_proxies(  # type: ignore[method-assign,assignment]
            app.asgi_app, settings.proxy_hops
        )
    connections = app.connections
    metrics, tally = app.metrics, app.tally
    timer = app.timer
    timing = trio.CancelScope()

    @app.before_serving
    async def start_the_timer() -> None:
        await app.nursery.start(_serve_in, timing, timer.serve)

    @app.after_serving
    async def stop_the_timer() -> None:
        # Every websocket has ended by now; left running, Quart-Trio would
        # wait 5 s (its background-task timeout) for the timer at every stop.
        timing.cancel()

    if metrics is not None:
        publishing = trio.CancelScope()

        @app.before_serving
        async def start_publishing() -> None:
            app.nursery.start_soon(_publish_periodically, app, publishing)

        @app.after_serving
        async def stop_publishing() -> None:
            publishing.cancel()
            app.publish_metrics()  # every websocket has ended by now

    @app.get("/healthz")
    async def healthz() -> tuple[dict[str, object], dict[str, str]]:
        body = {
            "status": "ok",
            "version": __version__,
            "connections": connections.open,
            # Who is asking, as ticker sees it: behind a proxy, a check that
            # TICKER_PROXY_HOPS and the proxy's X-Forwarded-For agree.
            "client": request.remote_addr,
        }
        return body, {"Cache-Control": "no-store"}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        if metrics is None:
            return Response(
                "metrics are off (TICKER_METRICS=off)\n",
                status=404,
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
        app.publish_metrics()
        body, content_type = await trio.to_thread.run_sync(
            metrics.render, request.headers.get("Accept")
        )
        return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})

    @app.websocket("/ws")
    async def ws() -> Response | None:
        peer = _peer()
        origin = websocket.headers.get("Origin")
        if not _origin_allowed(origin, settings):
            # Another site's page, using its visitor's browser: no websocket.
            log.warning("%s refused: origin %s is not allowed", peer, origin or "(none)")
            return Response(
                f"origin {origin or '(none)'} may not open a websocket here.\n",
                status=403,
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
        if connections.closing or connections.open >= settings.max_connections:
            # Refused before the handshake completes: the client gets an HTTP status.
            why = "shutting down" if connections.closing else "at its connection limit"
            log.warning("%s refused: %s (%d open)", peer, why, connections.open)
            return _refusal(why, settings.max_connections)
        connections.open += 1  # no await since the check: the limit is exact
        if metrics is not None:
            metrics.connections.inc()
        opened = trio.current_time()
        session = Session(_text_sender(), settings.limits, _first_error_logger(peer), tally, timer)
        outcome = "client left"
        server_close = _server_close.get(None)
        try:
            await websocket.accept()
            log.info("%s connected (%d open)", peer, connections.open)
            with trio.CancelScope() as scope:
                connections.register(scope)
                try:
                    close = await session.run(websocket.receive)
                except Exception:
                    # A bug of ours: say so with 1011 rather than Quart's clean 1000.
                    log.exception("%s: session failed", peer)
                    close = Close(CloseCode.INTERNAL_ERROR, "internal error")
                finally:
                    connections.scopes.discard(scope)
            if scope.cancelled_caught:  # only shutdown cancels it (see Connections)
                close = Close(CloseCode.GOING_AWAY, "server shutting down")
            if close is not None:
                if close.code == CloseCode.MESSAGE_TOO_BIG:
                    log.warning("%s closed with 1009: %s", peer, close.reason)
                outcome = f"closed with {close.code} ({close.reason})"
                await websocket.close(close.code, close.reason)
        finally:
            if server_close is not None and server_close.code is not None:
                outcome = f"closed with {server_close.code} ({server_close.reason})"
            connections.open -= 1
            if metrics is not None:
                metrics.connections.dec()
            log.info(
                "%s disconnected after %.1f s: %s; %d schedules, %d protocol errors",
                peer,
                trio.current_time() - opened,
                outcome,
                session.schedules_started,
                session.protocol_errors,
            )
        return None

    return app


async def _serve_in(
    scope: trio.CancelScope,
    serve: Callable[..., Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``serve`` (which reports when it has started) until ``scope`` is cancelled."""
    with scope:
        await serve(task_status=task_status)


async def _publish_periodically(app: TickerApp, scope: trio.CancelScope) -> None:
    with scope:
        while True:
            await trio.sleep(PUBLISH_PERIOD)
            app.publish_metrics()


def _peer() -> str:
    """The websocket's client for log lines; only the host when a proxy told us the address."""
    return format_peer(websocket.scope.get("client"))


def _text_sender() -> Callable[[str], Awaitable[None]]:
    """How this websocket's text frames go out: the server's shortcut, if it offers one.

    Hypercorn patched by ``_hypercorn_fixes`` offers ready-made frames that
    skip four layers per tick (``text_frames``); any other server gets
    Quart's ``websocket.send``.
    """
    offer = (websocket.scope.get("extensions") or {}).get(_hypercorn_fixes.TEXT_FRAMES)
    send: Callable[[str], Awaitable[None]] = websocket.send if offer is None else offer["send"]
    return send


def _origin_allowed(origin: str | None, settings: Settings) -> bool:
    """A browser says which page opened the socket; other clients send no Origin."""
    if settings.allowed_origins is None:
        return True
    if origin is None:
        return not settings.require_origin
    return origin.strip().rstrip("/").lower() in settings.allowed_origins


def _refusal(why: str, limit: int) -> Response:
    text = (
        "ticker is shutting down; try again shortly.\n"
        if why == "shutting down"
        else f"ticker is at its limit of {limit} connections; try again later.\n"
    )
    return Response(
        text,
        status=503,
        headers={"Retry-After": "5", "Content-Type": "text/plain; charset=utf-8"},
    )


def _first_error_logger(peer: str) -> Callable[[ProtocolError], None]:
    """Warn about a connection's first invalid frame; the count is in the close line."""
    warned = False

    def on_protocol_error(error: ProtocolError) -> None:
        nonlocal warned
        if error.code is ErrorCode.SCHEDULE_OVER:
            # A resume that came too late is the protocol working, not a bad client.
            log.info("%s resumed a schedule that is over: %s", peer, error.message)
        elif not warned:
            warned = True
            log.warning("%s sent an invalid frame (%s): %s", peer, error.code, error.message)

    return on_protocol_error


def _configure_logging(level: str) -> None:
    """INFO lines to stderr in Hypercorn's format, unless logging is configured already."""
    log.setLevel(level)
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S %z"
        )
    )
    log.addHandler(handler)


try:
    app = create_app()
except ConfigError as error:
    # One line naming the variable, instead of a traceback from inside hypercorn.
    raise SystemExit(f"ticker: configuration error: {error}") from None
except _hypercorn_fixes.UnsupportedHypercorn as error:
    raise SystemExit(f"ticker: {error}") from None
