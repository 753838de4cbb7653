"""Ready-made text frames (src/ticker/_hypercorn_fixes/text_frames.py) are wsproto's own bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from ticker._hypercorn_fixes.text_frames import text_frame
from ticker.protocol import encode_tick


def wsproto_bytes(text: str) -> bytes:
    """What Hypercorn's path writes for ``text``: wsproto's server connection, no extension."""
    return Connection(ConnectionType.SERVER).send(TextMessage(data=text))


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frames_are_the_bytes_wsproto_writes(size: int) -> None:
    # Each length encoding: 7 bits, 16 bits (from 126), 64 bits (from 65536).
    text = "x" * size
    assert text_frame(text) == wsproto_bytes(text)


def test_a_tick_is_the_frame_wsproto_writes() -> None:
    tick = encode_tick(7, 12345, 1764590400.123456)
    assert text_frame(tick) == wsproto_bytes(tick)


@given(st.text(max_size=300))
def test_any_text_is_the_frame_wsproto_writes(text: str) -> None:
    # Including non-ASCII: the length is of the UTF-8 bytes, not of the characters.
    assert text_frame(text) == wsproto_bytes(text)
