"""permessage-deflate (RFC 7692) with bounded memory and bounded inflation, for wsproto.

wsproto's ``PerMessageDeflate`` inflates a whole message before anyone can
check its size (``decompress()`` without ``max_length``): a 200 KB message
that inflates to 200 MiB costs 200 MiB. And it compresses with 15-bit windows
at zlib's default memory level, ~140 KiB per connection although a tick is
60 bytes. This subclass inflates at most ``max_message_size + 1`` bytes per
message and then refuses it with 1009, and keeps windows at 2**12 bytes with
memory level 5, as the websockets library does (about 64 KiB per connection
at worst; nothing until the first compressed message). Sans-I/O: no sockets.
"""

from __future__ import annotations

import zlib
from typing import Final

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

#: LZ77 window for what the server compresses, and the largest it lets a client
#: use when the client offers to be limited (browsers do). 4 KiB of history is
#: plenty for 60-byte ticks.
WINDOW_BITS: Final = 12
#: zlib's memLevel for the compressor: 2**(5+9) bytes of hash table, not 2**17.
MEMORY_LEVEL: Final = 5
#: RFC 7692 §7.2.2: the tail every compressed message lost when it was sent.
_SYNC_TAIL: Final = b"\x00\x00\xff\xff"


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate that never inflates more than ``max_message_size + 1`` bytes."""

    def __init__(self, max_message_size: int) -> None:
        super().__init__(server_max_window_bits=WINDOW_BITS)
        self.max_message_size = max_message_size
        self._inflated = 0  # bytes of the current message so far
        self._refused = False  # a message was too big: inflate nothing more

    def accept(self, offer: str) -> bool | str | None:
        """Answer a client's offer, capping the client's window when it lets us.

        A client may list several offers: wsproto asks about each, and the
        first acceptable one is the answer (RFC 7692 §5). A malformed one
        (``client_max_window_bits=x``) is declined, not an error.
        """
        if self.enabled():
            return None  # an earlier offer was accepted
        try:
            answer = super().accept(offer)
        except ValueError:
            return None
        if not isinstance(answer, str):
            return answer
        parameters = [p for p in answer.split("; ") if p and "max_window_bits" not in p]
        # Ours: always announced, so the client's inflater can be small too
        # (RFC 7692 §7.1.2.1 lets a server add it unasked).
        self.server_max_window_bits = min(self.server_max_window_bits, WINDOW_BITS)
        parameters.append(f"server_max_window_bits={self.server_max_window_bits}")
        if "client_max_window_bits" in offer:  # the client lets us choose
            self.client_max_window_bits = min(self.client_max_window_bits, WINDOW_BITS)
            parameters.append(f"client_max_window_bits={self.client_max_window_bits}")
        else:  # it will compress with up to 2**15 bytes of history; inflate to match
            self.client_max_window_bits = self.DEFAULT_CLIENT_MAX_WINDOW_BITS
        return "; ".join(parameters)

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol():
            # A ping or pong, between messages or inside a fragmented one: it
            # must leave the message's state alone. (wsproto's records "not
            # compressed" for it, and the next compressed message is then not
            # inflated: 1007 after every pong a browser sends.)
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
            self._inbound_is_compressible = False
            return RsvBits(True, False, False)
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if self._refused:
            return CloseReason.MESSAGE_TOO_BIG
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if self._refused:
            return CloseReason.MESSAGE_TOO_BIG
        if not fin or not self._inbound_is_compressible:
            return None  # more to come, or a control frame (see frame_inbound_header)
        compressed = self._inbound_compressed
        self._inbound_compressed = None
        if not compressed:
            return None
        data = self._inflate(_SYNC_TAIL)
        self._inflated = 0
        if self.client_no_context_takeover:
            self._decompressor = None
        return data

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        """At most what is left of the message's budget, plus one byte to notice excess."""
        assert self._decompressor is not None
        budget = self.max_message_size - self._inflated + 1
        try:
            out = self._decompressor.decompress(data, budget)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self.max_message_size or self._decompressor.unconsumed_tail:
            self._refused = True
            self._decompressor = None  # its window and the rest are garbage now
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if self._compressor is None and self._compressible_opcode(opcode):
            # Created here, as wsproto would, but with a small memory level.
            self._compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION,
                zlib.DEFLATED,
                -self.server_max_window_bits,
                MEMORY_LEVEL,
            )
        return super().frame_outbound(proto, opcode, rsv, data, fin)
