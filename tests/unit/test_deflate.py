"""permessage-deflate with bounded memory: negotiation, round trips, bombs refused early."""

from __future__ import annotations

import zlib

import pytest
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed

from ticker.deflate import WINDOW_BITS, BoundedDeflate

#: What every Chromium (and so every Chrome and Edge) offers.
CHROMIUM_OFFER = "permessage-deflate; client_max_window_bits"
FIREFOX_OFFER = "permessage-deflate"


@pytest.mark.parametrize(
    ("offer", "answer", "client_bits"),
    [
        (
            CHROMIUM_OFFER,
            f"server_max_window_bits={WINDOW_BITS}; client_max_window_bits={WINDOW_BITS}",
            WINDOW_BITS,
        ),
        # Without client_max_window_bits the client may use 2**15 bytes of history,
        # and the server must inflate with that (RFC 7692 §7.1.2.2).
        (FIREFOX_OFFER, f"server_max_window_bits={WINDOW_BITS}", 15),
        (
            "permessage-deflate; client_max_window_bits=10; server_max_window_bits=9",
            "server_max_window_bits=9; client_max_window_bits=10",
            10,
        ),
    ],
)
def test_the_answer_keeps_both_windows_small(offer: str, answer: str, client_bits: int) -> None:
    deflate = BoundedDeflate(max_message_size=4096)
    assert deflate.accept(offer) == answer
    assert deflate.client_max_window_bits == client_bits
    assert deflate.server_max_window_bits <= WINDOW_BITS


def _pair(offer: str, max_message_size: int = 4096) -> tuple[FrameProtocol, FrameProtocol]:
    """A client and a server FrameProtocol that agreed on compression as a handshake would."""
    server_deflate = BoundedDeflate(max_message_size)
    answer = server_deflate.accept(offer)
    assert isinstance(answer, str)
    client_deflate = PerMessageDeflate()
    client_deflate.finalize(f"permessage-deflate; {answer}")
    return (
        FrameProtocol(client=True, extensions=[client_deflate]),
        FrameProtocol(client=False, extensions=[server_deflate]),
    )


def _received(server: FrameProtocol, data: bytes) -> list[str]:
    server.receive_bytes(data)
    return [str(frame.payload) for frame in server.received_frames()]


def test_messages_round_trip_both_ways() -> None:
    client, server = _pair(CHROMIUM_OFFER)
    for text in ["x" * 4096, '{"type":"start","interval":0.5}', ""]:
        assert _received(server, bytes(client.send_data(text, fin=True))) == [text]
    tick = '{"type":"tick","id":1,"seq":1,"time":1764139200.5}'
    frame = bytes(server.send_data(tick, fin=True))
    assert frame[0] & 0x40  # RSV1: compressed
    client.receive_bytes(frame)
    assert [frame.payload for frame in client.received_frames()] == [tick]


def test_a_fragmented_message_is_joined_and_counted_whole() -> None:
    client, server = _pair(CHROMIUM_OFFER, max_message_size=100)
    parts = [bytes(client.send_data("a" * 40, fin=False)), bytes(client.send_data("b" * 40))]
    assert "".join(_received(server, b"".join(parts))) == "a" * 40 + "b" * 40
    client, server = _pair(CHROMIUM_OFFER, max_message_size=100)
    parts = [bytes(client.send_data("a" * 60, fin=False)), bytes(client.send_data("b" * 60))]
    with pytest.raises(ParseFailed) as refused:
        _received(server, b"".join(parts))
    assert refused.value.code == CloseReason.MESSAGE_TOO_BIG


def _bomb(size: int) -> bytes:
    """A masked client frame whose payload inflates to ``size`` bytes of one character."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -WINDOW_BITS)
    chunk = b"x" * 2**20
    payload = b"".join(compressor.compress(chunk) for _ in range(size // len(chunk)))
    payload = (payload + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]  # RFC 7692 §7.2.1
    # Built by hand, as an attacker does; a zero mask leaves the payload as it is.
    return _header(len(payload)) + b"\x00\x00\x00\x00" + payload


def _header(length: int) -> bytes:
    first = bytes([0x80 | 0x40 | 0x1])  # FIN, RSV1, text
    if length < 126:
        return first + bytes([0x80 | length])
    if length < 2**16:
        return first + bytes([0x80 | 126]) + length.to_bytes(2, "big")
    return first + bytes([0x80 | 127]) + length.to_bytes(8, "big")


def test_a_decompression_bomb_is_refused_after_inflating_at_most_the_limit() -> None:
    _, server = _pair(CHROMIUM_OFFER, max_message_size=4096)
    deflate = server.extensions[0]
    assert isinstance(deflate, BoundedDeflate)
    inflated: list[int] = []
    inflate = deflate._inflate

    def counting_inflate(data: bytes) -> bytes | CloseReason:
        before = deflate._inflated
        result = inflate(data)
        inflated.append(deflate._inflated - before)
        return result

    deflate._inflate = counting_inflate  # type: ignore[method-assign]
    with pytest.raises(ParseFailed) as refused:
        _received(server, _bomb(64 * 2**20))
    assert refused.value.code == CloseReason.MESSAGE_TOO_BIG
    assert sum(inflated) == 4096 + 1  # one byte past the limit, never the 64 MiB
    # Whatever else comes is refused without inflating anything.
    assert deflate.frame_inbound_payload_data(server, b"\x00" * 10) == CloseReason.MESSAGE_TOO_BIG


def test_garbage_that_is_not_deflate_is_invalid_payload() -> None:
    _, server = _pair(CHROMIUM_OFFER)
    mask = b"\x00\x00\x00\x00"
    garbage = b"\xff" * 20
    with pytest.raises(ParseFailed) as refused:
        _received(server, _header(len(garbage)) + mask + garbage)
    assert refused.value.code == CloseReason.INVALID_FRAME_PAYLOAD_DATA


def _control(opcode: int, payload: bytes = b"") -> bytes:
    """A masked (zero mask) control frame from the client."""
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload


PONG, PING = 0xA, 0x9


def test_a_pong_between_compressed_messages_changes_nothing() -> None:
    # What every browser does once keepalive pings flow.
    client, server = _pair(CHROMIUM_OFFER)
    first = bytes(client.send_data('{"type":"stop"}', fin=True))
    second = bytes(client.send_data('{"type":"stop","again":1}', fin=True))
    server.receive_bytes(first + _control(PONG, b"ticker") + second)
    frames = list(server.received_frames())
    assert [frame.opcode for frame in frames] == [Opcode.TEXT, Opcode.PONG, Opcode.TEXT]
    assert [frames[0].payload, frames[2].payload] == [
        '{"type":"stop"}',
        '{"type":"stop","again":1}',
    ]


def test_a_ping_inside_a_fragmented_compressed_message_changes_nothing() -> None:
    client, server = _pair(CHROMIUM_OFFER)
    head = bytes(client.send_data("a" * 40, fin=False))
    tail = bytes(client.send_data("b" * 40, fin=True))
    server.receive_bytes(head + _control(PING) + tail)
    frames = list(server.received_frames())
    text = "".join(str(f.payload) for f in frames if f.opcode is not Opcode.PING)
    assert text == "a" * 40 + "b" * 40


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; client_max_window_bits=x",
        'permessage-deflate; client_max_window_bits="10"',
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; client_max_window_bits=16",
    ],
)
def test_a_malformed_or_impossible_offer_is_declined(offer: str) -> None:
    assert BoundedDeflate(max_message_size=4096).accept(offer) is None


def test_of_several_offers_the_first_acceptable_one_is_the_answer() -> None:
    deflate = BoundedDeflate(max_message_size=4096)
    offers = [
        "permessage-deflate; server_max_window_bits=8",  # impossible: declined
        "permessage-deflate; client_max_window_bits=10; server_max_window_bits=10",
        CHROMIUM_OFFER,
    ]
    answers = [deflate.accept(offer) for offer in offers]
    assert answers == [None, "server_max_window_bits=10; client_max_window_bits=10", None]
    assert (deflate.client_max_window_bits, deflate.server_max_window_bits) == (10, 10)
