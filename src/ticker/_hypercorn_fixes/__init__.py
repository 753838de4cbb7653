"""ticker's boundary with Hypercorn: fixes for bugs in its trio worker that an app cannot avoid.

Each fix lives in one module of this package, names its upstream report
(docs/upstream/) and the tests that fail without it:

=====  =======================  ==================================================
fix    module                   what
=====  =======================  ==================================================
1      ``disconnects``          a disconnect never waits for the app's full queue
2      ``writes``               a write has a deadline; bookkeeping is never cut
3      ``shutdown``             the app hears when shutdown begins (1001), SIGTERM
4      ``refused_handshakes``   a refused handshake ends its connection (h11, h2)
5      ``proxy_schemes``        websockets behind a TLS proxy stay websockets
6,7,9  ``conversation``         compression, closes that end, frame floods
8      ``keepalive``            pings whose pongs are checked
10     ``http2_flow_control``   an HTTP/2 stream without window is cut off
-      ``text_frames``          not a fix: ticks as ready frames (a speed lever)
=====  =======================  ==================================================

``apply()`` checks before it touches anything: the installed versions of
Hypercorn and of the two libraries the patches reach into (``SUPPORTED``),
and that every function it replaces still has the source it was checked
against (``CHECKED``, fingerprints), as does every function a fix relies on
without replacing it (``RELIED_ON``). Then it installs every fix, or none.
``restore()`` puts Hypercorn back as it was. The app reaches the server
through ``registry``: an explicit registration offered in the lifespan scope.

One Hypercorn bug found here cannot be fixed in-process, as it is in the
main process, which never imports the app:
docs/upstream/run-worker-exit-status-lost.md (a failed worker's exit status
is lost; deploy/README.md's unit restarts on any exit for that reason).

When upstream ships a repair (``tests/integration/test_upstream.py`` starts
failing), raise the minimum version and delete the fix, its entries here,
its reproduction and its report.
"""

from __future__ import annotations

from typing import Final

from . import (
    conversation,
    disconnects,
    http2_flow_control,
    refused_handshakes,
    shutdown,
    text_frames,
    writes,
)
from ._patching import Patcher, Supported, problems
from .policy import WebsocketPolicy as WebsocketPolicy
from .proxy_schemes import trust_proxies as trust_proxies
from .registry import EXTENSION as EXTENSION
from .registry import Server as Server

#: The websocket scope's ``extensions`` key of the text-frame shortcut.
TEXT_FRAMES: Final = text_frames.EXTENSION

#: The versions these fixes were checked on; pyproject.toml declares the same
#: ranges (tests/unit/test_boundary.py keeps them equal). ``nox -s compat``
#: runs the integration tests on the lowest and the highest of each.
SUPPORTED: Final = (
    Supported("hypercorn", "0.18.0", "0.19"),
    Supported("wsproto", "1.2.0", "2"),
    Supported("h2", "4.3.0", "5"),
)

#: Every function a fix replaces, with the fingerprint (``_patching.fingerprint``)
#: of its source in Hypercorn 0.18.0, the version the fixes were written for.
#: A release that changes one is refused at start, instead of losing its fix.
CHECKED: Final = {
    "hypercorn.trio.task_group.TaskGroup.spawn_app": "b4c1131427529801",
    "hypercorn.trio.tcp_server.TCPServer.protocol_send": "225856426bff7be0",
    "hypercorn.trio.worker_context.WorkerContext.__init__": "052341c5f32e0133",
    "hypercorn.trio.run.worker_serve": "8dc8347a9fc357ca",
    "hypercorn.trio.worker_serve": "8dc8347a9fc357ca",
    "hypercorn.protocol.ws_stream.WSStream.handle": "743209f49012b8c7",
    "hypercorn.protocol.http_stream.HTTPStream.handle": "6ed2e34c5e708c6a",
    "hypercorn.protocol.h2.H2Protocol._handle_events": "3378aef0a2348f0d",
    "hypercorn.protocol.ws_stream.Handshake.accept": "e163533bf7919793",
    "hypercorn.protocol.ws_stream.WSStream._accept": "144623ad2e13fc56",
    "hypercorn.protocol.ws_stream.WSStream._handle_events": "b90f3f595ff9fd47",
    "hypercorn.protocol.ws_stream.WSStream.app_send": "a6dd1160bfc416e7",
    "hypercorn.protocol.ws_stream.WSStream._send_wsproto_event": "3a4df3f0d2dfd314",
    "hypercorn.protocol.h2.H2Protocol._send_data": "a89ce4286f369820",
    "hypercorn.protocol.h2.H2Protocol._close_stream": "a292549791640b65",
    "hypercorn.protocol.h2.H2Protocol.handle": "c67e89eb79af9032",
}

#: Functions a fix relies on without replacing them, fingerprinted the same way:
#: the text-frame shortcut hands its frames to the protocols' ``stream_send``
#: as the ``Data`` event wsproto's path ends in (text_frames.py).
RELIED_ON: Final = {
    "hypercorn.protocol.h11.H11Protocol.stream_send": "56a36254a368d71a",
    "hypercorn.protocol.h2.H2Protocol.stream_send": "d8fc824e2770ba5c",
}

#: In the order they are installed: a later fix wraps what an earlier one left
#: (fixes 4 and 7 both wrap ``WSStream.handle``).
FIXES: Final = (
    disconnects,  # 1
    writes,  # 2
    shutdown,  # 3
    refused_handshakes,  # 4
    conversation,  # 6, 7, 9 (8, keepalive, is started by the registry)
    http2_flow_control,  # 10
)


class UnsupportedHypercorn(RuntimeError):
    """The installed Hypercorn (or wsproto, h2) is not what the fixes were checked against."""


_patcher: Patcher | None = None


def apply() -> None:
    """Install every fix, once per process; refuse, touching nothing, if anything is unchecked.

    Raises:
        UnsupportedHypercorn: with one line naming what is installed and what is supported.
    """
    global _patcher
    if _patcher is not None:
        return
    for supported in SUPPORTED:
        checked = {**CHECKED, **RELIED_ON} if supported.distribution == "hypercorn" else {}
        found = problems(supported, checked)
        if found:
            raise UnsupportedHypercorn(found[0])
    patcher = Patcher(CHECKED)
    try:
        for fix in FIXES:
            fix.install(patcher.patch)
    except BaseException:
        patcher.undo()  # never half-way
        raise
    _patcher = patcher


def restore() -> None:
    """Undo ``apply()``: Hypercorn as it was imported."""
    global _patcher
    if _patcher is not None:
        _patcher.undo()
        _patcher = None
