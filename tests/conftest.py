"""Shared fixtures for every test tier."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from .support import RawWebsocket


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test, so a leaked socket warns in the test that leaked it."""
    yield
    RawWebsocket.close_all()  # whatever a test left open, before the leak check
    gc.collect()
