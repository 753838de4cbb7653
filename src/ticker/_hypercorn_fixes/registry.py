"""How an app reaches its server: an explicit registration, offered in the lifespan scope.

Hypercorn gives an app no way to hear that graceful shutdown begins, or to
set the server's websocket limits. The patched ``worker_serve`` (fix 3)
creates one ``Server`` per served app and offers its ``register`` in the
lifespan scope's ``extensions`` under ``EXTENSION``::

    scope["extensions"]["ticker.server"] = {"register": server.register}

An app calls it during lifespan startup, before any connection is accepted.
ASGI middleware passes the lifespan scope through, so this survives
wrapping, where looking for attributes on the ASGI object did not. The
fixes find their connection's ``Server`` with ``current_server()``: a
context variable set for the duration of ``worker_serve``, which every
connection's task inherits. Nothing is held in module globals, so two
servers in one process (or two ``trio.run``\\ s in one test session) never
see each other's settings.
Tests: tests/integration/test_boundary.py::
           test_a_wrapped_app_still_refuses_an_oversized_message_before_it_has_all_arrived
       tests/unit/test_boundary.py::test_one_server_takes_one_registration
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from hypercorn.config import Config
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.typing import AppWrapper, ASGIReceiveCallable, ASGISendCallable, Scope

from . import text_frames
from .keepalive import Keepalive
from .policy import DEFAULT_SEND_TIMEOUT, WebsocketPolicy

#: The lifespan scope's ``extensions`` key under which the server offers ``register``.
EXTENSION: Final = "ticker.server"


@dataclass(eq=False)
class Server:
    """One ``worker_serve``: its config, its own nursery, and what its app registered."""

    config: Config
    nursery: trio.Nursery
    policy: WebsocketPolicy | None = None
    keepalive: Keepalive | None = None
    shutdown_hooks: list[Callable[[], None]] = field(default_factory=list)
    shutting_down: bool = False

    @property
    def send_timeout(self) -> float:
        """Seconds a write may wait on a peer that does not read (fixes 2 and 10)."""
        return DEFAULT_SEND_TIMEOUT if self.policy is None else self.policy.send_timeout

    def register(
        self, policy: WebsocketPolicy, begin_shutdown: Callable[[], None] | None = None
    ) -> None:
        """Enforce ``policy`` on the websockets; call ``begin_shutdown`` when shutdown begins.

        Raises:
            RuntimeError: an app has registered with this server already.
        """
        if self.policy is not None:
            raise RuntimeError("an app has already registered with this server")
        self.policy = policy
        if begin_shutdown is not None:
            self.shutdown_hooks.append(begin_shutdown)
        # Hypercorn's reader enforces this as frames arrive: an oversized
        # message is refused (1009) before it is buffered up to Hypercorn's
        # own 16 MiB default. Streams read it when created, after startup.
        self.config.websocket_max_message_size = min(
            self.config.websocket_max_message_size, policy.max_message_size
        )
        if policy.ping_interval > 0:
            self.keepalive = Keepalive(policy)
            self.nursery.start_soon(self.keepalive.serve)

    def begin_shutdown(self) -> None:
        """Graceful shutdown has begun: tell the app, once."""
        if self.shutting_down:
            return
        self.shutting_down = True
        for hook in self.shutdown_hooks:
            hook()


_current: ContextVar[Server] = ContextVar("ticker_hypercorn_server")


def current_server() -> Server | None:
    """The ``Server`` of the running ``worker_serve``, if Hypercorn is serving in this task tree."""
    return _current.get(None)


def serving(server: Server) -> Callable[[], None]:
    """Make ``server`` current for this task and those it starts; returns the undo."""
    token = _current.set(server)
    return lambda: _current.reset(token)


def offered(app: AppWrapper, server: Server) -> AppWrapper:
    """``app``, offered ``server.register`` in the lifespan scope, and in each websocket
    scope a shortcut for its text frames (``text_frames``)."""

    async def offering(
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        sync_spawn: Callable[..., Any],
        call_soon: Callable[..., Any],
    ) -> None:
        if scope["type"] == "lifespan":
            offer: tuple[str, dict[str, Any]] = (EXTENSION, {"register": server.register})
        elif scope["type"] == "websocket" and isinstance(
            stream := getattr(send, "__self__", None), WSStream
        ):
            offer = (text_frames.EXTENSION, {"send": text_frames.sender_for(stream)})
        else:
            await app(scope, receive, send, sync_spawn, call_soon)
            return
        # In place: Hypercorn makes each scope, and its extensions, afresh (a
        # copy would cost every idle websocket ~0.5 KiB).
        extensions: Any = scope.setdefault("extensions", {})  # type: ignore[typeddict-item]
        if extensions is None:
            extensions = scope["extensions"] = {}  # type: ignore[typeddict-unknown-key]
        extensions[offer[0]] = offer[1]
        await app(scope, receive, send, sync_spawn, call_soon)

    return offering
