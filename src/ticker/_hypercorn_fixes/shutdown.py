"""Fix 3: tell the app when graceful shutdown begins, however it begins; and the registry's home.

Upstream problem: on SIGTERM/Ctrl-C the trio worker stops accepting, waits
up to ``graceful_timeout`` for open connections to end by themselves, then
cancels them; the app hears nothing until the lifespan shutdown, which runs
only after the connections are gone. A websocket app cannot say goodbye, so
every client sees an abnormal closure (1006) instead of 1001 "going away".
The same holds for every other way a worker stops serving: ``--max-requests``
recycling, and Ctrl-C with ``--workers 0`` (Hypercorn serving in its main
process, where SIGTERM also kills at once).
Report: docs/upstream/graceful-shutdown-websockets-not-told.md
Tests: tests/integration/test_reliability.py::
           test_shutdown_closes_every_websocket_with_1001_and_exits_0
       tests/integration/test_boundary.py::test_with_workers_0_shutdown_closes_with_1001
       tests/integration/test_boundary.py::test_max_requests_recycling_closes_with_1001
       tests/integration/test_boundary.py::
           test_a_wrapped_app_still_closes_its_websockets_with_1001_at_shutdown

Fix: Hypercorn sets its worker context's ``terminated`` event on every path
out of serving (a trigger, ``--max-requests``, KeyboardInterrupt). That event
is ours (``Terminated``): setting it calls the registered app's shutdown hook
first, which closes its websockets with 1001, so the connections end and
Hypercorn's wait ends early. Without a shutdown trigger (``--workers 0``, a
bare ``serve()``), SIGTERM and SIGINT become one, as they are with workers.

Upstream problem, with ``--workers N``: a worker process keeps the default
SIGTERM action (die at once). Hypercorn's main process SIGTERMs the workers
still shutting down as soon as the first one has exited, and systemd
(KillMode=control-group, its default) SIGTERMs every process at once: either
way workers die mid-shutdown, their clients see 1006 instead of 1001 and
``--graceful-timeout`` means nothing.
Report: docs/upstream/workers-killed-mid-shutdown.md
Test: tests/integration/test_reliability.py::
          test_sigterm_to_a_multi_worker_server_still_closes_with_1001

Fix: in a worker, SIGTERM is one more shutdown trigger, caught for the
worker's whole life, so a second one changes nothing.

The wrapped ``worker_serve`` is also where each server's ``registry.Server``
is made and offered to the app in the lifespan scope.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final

import hypercorn.trio
import hypercorn.trio.run
import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.worker_context import EventWrapper, WorkerContext
from hypercorn.typing import AppWrapper
from hypercorn.typing import WorkerContext as AnyWorkerContext

from ._patching import Patch
from .policy import DEFAULT_SEND_TIMEOUT
from .registry import Server, current_server, offered, serving

#: Once shutdown has begun, a write gets at most this long (seconds) before its
#: connection is dropped, so a stalled reader cannot hold the process up.
SHUTDOWN_SEND_GRACE: Final = 1.0


class Terminated(EventWrapper):
    """A worker's ``terminated`` event: set when serving stops, for whatever reason.

    Setting it tells the app (fix 3) and cuts short the waits in ``deadlines``:
    writes in flight (fix 2) and HTTP/2 flow-control watchdogs (fix 10).
    """

    def __init__(self, server: Server | None) -> None:
        super().__init__()
        self.server = server
        self.deadlines: set[trio.CancelScope] = set()

    async def set(self) -> None:
        if self.server is not None:
            self.server.begin_shutdown()
        deadline = trio.current_time() + SHUTDOWN_SEND_GRACE
        for scope in self.deadlines:
            scope.deadline = min(scope.deadline, deadline)
        await super().set()


def shortened_at_shutdown(context: AnyWorkerContext) -> set[trio.CancelScope]:
    """Where a wait registers its scope so that shutdown shortens it to the grace."""
    terminated = context.terminated
    return terminated.deadlines if isinstance(terminated, Terminated) else set()


def timeout_for(context: AnyWorkerContext) -> float:
    """How long a write (or a flow-control wait) may take on this worker now."""
    if context.terminated.is_set():
        return SHUTDOWN_SEND_GRACE
    server = current_server()
    return DEFAULT_SEND_TIMEOUT if server is None else server.send_timeout


async def _first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return as soon as one of ``waits`` returns; cancel the others."""
    async with trio.open_nursery() as nursery:

        async def wait_then_cancel(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(wait_then_cancel, wait)


def _stop_signals(shutdown_trigger: object) -> contextlib.AbstractContextManager[Any]:
    """The signals that are one more shutdown trigger here (fix 3).

    In a worker process: SIGTERM (its SIGINT is ignored, Hypercorn's main
    process owns Ctrl-C). Without any trigger (``--workers 0``, a bare
    ``serve()``): SIGTERM, and SIGINT too, which Trio would otherwise raise
    as KeyboardInterrupt in whichever task happens to run, a connection's
    included, ending the server without a goodbye. In-process with a trigger
    (tests, an embedding program), the caller owns signals.
    """
    if threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()
    if shutdown_trigger is None:
        return trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT)
    if multiprocessing.parent_process() is not None:
        return trio.open_signal_receiver(signal.SIGTERM)
    return contextlib.nullcontext()


def install(patch: Patch) -> None:
    worker_serve = hypercorn.trio.run.worker_serve
    context_init = WorkerContext.__init__

    def context_with_our_terminated(self: WorkerContext, max_requests: int | None) -> None:
        context_init(self, max_requests)
        self.terminated = Terminated(current_server())

    async def patched_worker_serve(
        app: AppWrapper,
        config: Config,
        *,
        sockets: Sockets | None = None,
        shutdown_trigger: Callable[..., Awaitable[None]] | None = None,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with _stop_signals(shutdown_trigger) as signals:
            if signals is not None:
                trigger = shutdown_trigger
                waits: list[Callable[[], Awaitable[object]]] = [partial(anext, signals)]
                if trigger is not None:
                    waits.append(trigger)
                shutdown_trigger = partial(_first_of, *waits)
            async with trio.open_nursery() as nursery:
                server = Server(config, nursery)
                stop_serving = serving(server)
                try:
                    await worker_serve(
                        offered(app, server),
                        config,
                        sockets=sockets,
                        shutdown_trigger=shutdown_trigger,
                        task_status=task_status,
                    )
                finally:
                    stop_serving()
                nursery.cancel_scope.cancel()  # the keepalive, if the app started one

    patch(WorkerContext, "__init__", context_with_our_terminated)
    patch(hypercorn.trio.run, "worker_serve", patched_worker_serve)
    patch(hypercorn.trio, "worker_serve", patched_worker_serve)
