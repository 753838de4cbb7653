"""Shared fixtures for every test tier."""

from __future__ import annotations

import gc
import socket
import sys
from collections.abc import Iterator

import pytest
from hypothesis import settings

from .support import RawWebsocket

# No per-example deadline (Hypothesis's default is 200 ms): the properties are
# about results, not speed, and a busy machine's pause would fail them as Flaky.
settings.register_profile("ticker", deadline=None)
settings.load_profile("ticker")


class _Opened:
    """Whether the running test opened a network socket or started a subprocess.

    Told by an audit hook (PEP 578), so it sees every socket and subprocess, whatever
    opened it. Trio's own wake-up socket pairs (AF_UNIX, closed by Trio) do not count.
    """

    any = False

    @classmethod
    def hook(cls, event: str, args: tuple[object, ...]) -> None:
        if event == "subprocess.Popen" or (
            event == "socket.__new__" and args[1] in (socket.AF_INET, socket.AF_INET6)
        ):
            cls.any = True


sys.addaudithook(_Opened.hook)  # for the whole session: audit hooks cannot be removed


@pytest.fixture(autouse=True)
def _collect_garbage(request: pytest.FixtureRequest) -> Iterator[None]:
    """Collect after each test that used sockets, so a leak warns in the test that leaked it.

    A socket left in a reference cycle (a traceback, a Trio task) warns only when
    the cycle is collected; with ``filterwarnings = error`` that must happen here,
    not in some later test. A full collection costs ~40 ms, most of the fast tiers'
    time if done after each of their hundreds of tests, so it runs only after tests
    that opened a socket or a subprocess, or are marked ``slow`` (what uses them).
    """
    _Opened.any = False
    yield
    RawWebsocket.close_all()  # whatever a test left open, before the leak check
    if _Opened.any or request.node.get_closest_marker("slow") is not None:
        gc.collect()
