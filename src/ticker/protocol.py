"""The ticker wire protocol (docs/protocol.md): frames in, commands out; events in, text out.

Sans-I/O: nothing here touches a socket, a clock or Trio, so every rule of the
protocol is checked by plain, fast, synchronous tests.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import IntEnum, StrEnum
from typing import Final

from .schedule import Schedule

DEFAULT_MIN_INTERVAL: Final = 0.01  # seconds
DEFAULT_MAX_INTERVAL: Final = 86_400.0  # seconds (one day)
DEFAULT_MAX_COUNT: Final = 1_000_000  # ticks in one counted schedule
DEFAULT_MAX_MESSAGE_SIZE: Final = 4096  # bytes of one frame's payload


class CloseCode(IntEnum):
    """The websocket close codes ticker's server sends (RFC 6455 §7.4.1), as it uses them.

    The same numbers as wsproto's ``CloseReason`` and websockets' ``CloseCode``;
    docs/protocol.md ("Closing") is the contract.
    """

    #: 1001 "going away": the server is shutting down (SIGTERM, Ctrl-C).
    GOING_AWAY = 1001
    #: 1002 "protocol error": a frame that breaks RFC 6455, e.g. RSV1 set
    #: (compressed) when no compression was negotiated.
    PROTOCOL_ERROR = 1002
    #: 1007 "invalid frame payload data": a text message that is not UTF-8, or
    #: compressed data that is not deflate.
    INVALID_DATA = 1007
    #: 1009 "message too big": a message above ``Limits.max_message_size``
    #: bytes, also once a compressed one has inflated past it.
    MESSAGE_TOO_BIG = 1009
    #: 1011 "internal error": a bug in the server, not in the client; also a
    #: keepalive ping whose pong did not come in time.
    INTERNAL_ERROR = 1011


_EXCERPT_CHARS: Final = 40  # how much of a bad value an error message quotes back

# What a string "holding a number" may look like: plain decimal notation, as an
# HTML number field sends it. Stricter than float(), which also takes "nan",
# "inf", "1_000" and non-ASCII digits.
_DECIMAL: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True, slots=True)
class Limits:
    """What a client may ask for; sent in ``hello`` and enforced on every frame."""

    min_interval: float = DEFAULT_MIN_INTERVAL
    max_interval: float = DEFAULT_MAX_INTERVAL
    max_count: int = DEFAULT_MAX_COUNT
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE


@dataclass(frozen=True, slots=True)
class Start:
    """Start a schedule: a tick every ``interval`` seconds, ``count`` times or forever.

    ``anchor`` (Unix seconds) puts slot n at ``anchor + n * interval`` on the
    wall clock; ``last`` ends the schedule at that slot instead of after
    ``count`` slots (how a client resumes a counted schedule elsewhere).
    """

    interval: float
    count: int | None = None
    anchor: float | None = None
    last: int | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the running schedule, if any."""


Command = Start | Stop


class ErrorCode(StrEnum):
    """The ``code`` of an ``error`` message."""

    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_INTERVAL = "invalid_interval"
    INVALID_COUNT = "invalid_count"
    INVALID_ANCHOR = "invalid_anchor"
    INVALID_LAST = "invalid_last"
    #: Not a mistake: a resumed schedule whose last slot passed while the client
    #: was away. The client's answer is to treat the schedule as done.
    SCHEDULE_OVER = "schedule_over"
    BINARY_NOT_SUPPORTED = "binary_not_supported"


class ProtocolError(Exception):
    """A frame the server answers with an ``error`` message; the connection stays open."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.value!r}, {self.message!r})"


class MessageTooBig(Exception):
    """A frame above ``max_message_size``: the server closes with ``CloseCode.MESSAGE_TOO_BIG``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


# ---------------------------------------------------------------------------
# Client -> server


def parse(frame: str | bytes | None, limits: Limits) -> Command:
    """Turn one websocket frame into a command.

    ``None`` stands for an empty binary frame (Quart reports it that way).

    Raises:
        MessageTooBig: the frame is larger than ``limits.max_message_size``.
        ProtocolError: the frame is not a valid command; answer with ``error``.
    """
    if frame is None:
        frame = b""
    size = _frame_size(frame)
    if size > limits.max_message_size:
        raise MessageTooBig(size, limits.max_message_size)
    if isinstance(frame, bytes):
        raise ProtocolError(
            ErrorCode.BINARY_NOT_SUPPORTED,
            "Binary frames are not supported; send JSON text such as "
            '{"type":"start","interval":0.5}.',
        )
    value = _load_json(frame)

    if isinstance(value, bool) or not isinstance(value, int | float | dict):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            "A message must be a JSON object such as "
            '{"type":"start","interval":0.5} or a bare number of seconds, '
            f"not {_json_kind(value)}.",
        )
    if not isinstance(value, dict):
        return Start(interval=_interval(value, limits))

    kind = value.get("type", "start")
    if kind == "start":
        if "interval" not in value:
            raise ProtocolError(
                ErrorCode.INVALID_INTERVAL,
                "A start needs an interval: a number of seconds between "
                f"{_num(limits.min_interval)} and {_num(limits.max_interval)}.",
            )
        interval = _interval(value["interval"], limits)
        count = _count(value.get("count"), limits)
        anchor = _anchor(value.get("anchor"))
        last = _last(value.get("last"))
        if last is not None and count is not None:
            raise ProtocolError(
                ErrorCode.INVALID_LAST,
                "Give either a count or a last slot, not both; "
                "last is for resuming a counted schedule.",
            )
        return Start(interval, count, anchor, last)
    if kind == "stop":
        return Stop()
    raise ProtocolError(
        ErrorCode.UNKNOWN_TYPE,
        f'Unknown message type {_excerpt(kind)}; the types are "start" and "stop".',
    )


def _frame_size(frame: str | bytes) -> int:
    if isinstance(frame, bytes):
        return len(frame)
    # The limit is on the wire, so count UTF-8 bytes, not characters.
    return len(frame.encode("utf-8", "surrogatepass"))


def _reject_constant(name: str) -> float:
    # json.loads accepts NaN, Infinity and -Infinity, which are not JSON.
    raise ValueError(f"{name} is not a JSON number")


def _load_json(text: str) -> object:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        detail = f"{error.msg} at character {error.pos + 1}"
    except RecursionError:
        detail = "it is nested too deeply"
    except ValueError as error:  # _reject_constant, or an integer too long to convert
        detail = str(error).split(";")[0].split(":")[0]
    raise ProtocolError(
        ErrorCode.INVALID_JSON, f"The message is not valid JSON: {detail}."
    ) from None


def _interval(value: object, limits: Limits) -> float:
    low, high = _num(limits.min_interval), _num(limits.max_interval)
    seconds = _number(value)
    if seconds is None or not math.isfinite(seconds):
        raise ProtocolError(
            ErrorCode.INVALID_INTERVAL,
            f"The interval must be a number of seconds between {low} and {high}, "
            f"not {_excerpt(value)}.",
        )
    if not limits.min_interval <= seconds <= limits.max_interval:
        raise ProtocolError(
            ErrorCode.INVALID_INTERVAL,
            f"The interval must be between {low} and {high} seconds; got {_num(seconds)}.",
        )
    return seconds


def _number(value: object) -> float | None:
    """A JSON number, or a string holding one, as a float; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an integer literal beyond float range
            return math.inf
    if isinstance(value, str) and _DECIMAL.fullmatch(text := value.strip()):
        return float(text)
    return None


def _count(value: object, limits: Limits) -> int | None:
    if value is None:
        return None
    count = _whole_number(value)
    if count is None or not 1 <= count <= limits.max_count:
        raise ProtocolError(
            ErrorCode.INVALID_COUNT,
            f"The count must be a whole number from 1 to {limits.max_count}, "
            f"or left out for no limit; got {_excerpt(value)}.",
        )
    return count


def _anchor(value: object) -> float | None:
    if value is None:
        return None
    seconds = _number(value)
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise ProtocolError(
            ErrorCode.INVALID_ANCHOR,
            "The anchor must be a Unix time in seconds (a number, 0 or more), "
            f"or left out; got {_excerpt(value)}.",
        )
    return seconds


def _last(value: object) -> int | None:
    if value is None:
        return None
    last = _whole_number(value)
    if last is None or last < 1:
        raise ProtocolError(
            ErrorCode.INVALID_LAST,
            f"The last slot must be a whole number from 1, or left out; got {_excerpt(value)}.",
        )
    return last


def _whole_number(value: object) -> int | None:
    """An integral JSON number, or a string holding one; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and _DECIMAL.fullmatch(text := value.strip()):
        # Decimal keeps "10.0" and "1e3" exact and cannot overflow like int(float(...)).
        try:
            number = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
            return None
        if number != number.to_integral_value() or abs(number) > 2**63:
            return None
        return int(number)
    return None


def _json_kind(value: object) -> str:
    match value:
        case bool():
            return "true or false"
        case None:
            return "null"
        case str():
            return "a string"
        case list():
            return "an array"
        case _:  # pragma: no cover - numbers and objects are accepted
            return type(value).__name__


def _excerpt(value: object) -> str:
    text = json.dumps(value)
    if len(text) > _EXCERPT_CHARS:
        text = text[: _EXCERPT_CHARS - 1] + "…"
    return text


def _num(value: float) -> int | float:
    """A number as a person writes it: 86400, not 86400.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# ---------------------------------------------------------------------------
# An accepted start's grid


@dataclass(frozen=True, slots=True)
class Plan:
    """What an accepted start runs: its schedule, and its anchor as ``started`` reports it."""

    schedule: Schedule
    anchor: float


def plan(start: Start, limits: Limits, *, now: float, unix_now: float) -> Plan:
    """Map ``start``'s grid onto the monotonic clock, once, at acceptance.

    ``now`` is the monotonic clock and ``unix_now`` the wall clock, read
    together. Without an anchor the grid starts now (slot 0), as it always has.

    Raises:
        ProtocolError: an anchor too far ahead, or a last slot already passed
            or too far away; these depend on the time, so ``parse`` cannot see them.
    """
    anchor = unix_now if start.anchor is None else start.anchor
    ahead = anchor - unix_now
    if ahead > limits.max_interval:
        raise ProtocolError(
            ErrorCode.INVALID_ANCHOR,
            f"The anchor must be at most {_num(limits.max_interval)} seconds ahead of "
            f"the server's clock ({unix_now:.3f}); got {_num(anchor)}. "
            "It is in seconds, not milliseconds.",
        )
    # Mapped once: a later wall-clock step moves tick times, not the schedule.
    schedule = Schedule.from_anchor(now + ahead, start.interval, now, start.count)
    if start.last is not None:
        if start.last < schedule.first:
            raise ProtocolError(
                ErrorCode.SCHEDULE_OVER,
                f"The last slot, {start.last}, has passed: the next slot due is "
                f"{schedule.first}. The schedule is over.",
            )
        length = start.last - schedule.first + 1
        if length > limits.max_count:
            raise ProtocolError(
                ErrorCode.INVALID_LAST,
                f"From slot {schedule.first} to the last slot, {start.last}, is {length} "
                f"slots; a schedule may have at most {limits.max_count}.",
            )
        schedule = Schedule(schedule.start, schedule.interval, start.last, schedule.first)
    return Plan(schedule, round(anchor, 6))


# ---------------------------------------------------------------------------
# Server -> client


def _dumps(message: dict[str, object]) -> str:
    # ASCII-only output: a lone surrogate quoted back from a bad frame stays sendable.
    return json.dumps(message, separators=(",", ":"))


def encode_hello(version: str, limits: Limits) -> str:
    """The first message on every connection: who we are and what may be asked."""
    return _dumps(
        {
            "type": "hello",
            "version": version,
            "min_interval": _num(limits.min_interval),
            "max_interval": _num(limits.max_interval),
            "max_count": limits.max_count,
        }
    )


def encode_started(schedule_id: int, plan: Plan) -> str:
    """Acknowledge an accepted start; its ticks follow under the same id.

    ``anchor`` and ``first`` let any client resume the same grid anywhere.
    """
    schedule = plan.schedule
    return _dumps(
        {
            "type": "started",
            "id": schedule_id,
            "interval": _num(schedule.interval),
            "count": schedule.count,
            "anchor": _num(plan.anchor),
            "first": schedule.first,
        }
    )


def encode_tick(schedule_id: int, seq: int, unix_time: float) -> str:
    """One tick. The hot path, so it skips json.dumps: every field is a plain number."""
    return f'{{"type":"tick","id":{schedule_id},"seq":{seq},"time":{unix_time!r}}}'


def encode_done(schedule_id: int, sent: int, skipped: int) -> str:
    """A counted schedule reached its last slot."""
    return _dumps({"type": "done", "id": schedule_id, "sent": sent, "skipped": skipped})


def encode_stopped(schedule_id: int | None) -> str:
    """Answer to a stop; ``None`` when nothing was running."""
    return _dumps({"type": "stopped", "id": schedule_id})


def encode_error(error: ProtocolError) -> str:
    """Answer to an invalid frame."""
    return _dumps({"type": "error", "code": error.code.value, "message": error.message})
