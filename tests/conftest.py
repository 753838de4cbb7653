"""Shared fixtures for every test tier."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test, so a leaked socket warns in the test that leaked it."""
    yield
    gc.collect()
