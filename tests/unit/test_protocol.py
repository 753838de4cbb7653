"""The wire protocol, frame by frame: every accepted form and every error code."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import CloseReason

from ticker.protocol import (
    CloseCode,
    ErrorCode,
    Limits,
    MessageTooBig,
    ProtocolError,
    Start,
    Stop,
    encode_done,
    encode_error,
    encode_hello,
    encode_started,
    encode_stopped,
    encode_tick,
    parse,
)

LIMITS = Limits()


@pytest.mark.parametrize(
    ("frame", "command"),
    [
        ('{"type":"start","interval":0.5}', Start(0.5)),
        ('{"type":"start","interval":0.5,"count":10}', Start(0.5, 10)),
        ('{"interval":0.5}', Start(0.5)),
        ('{"interval":"0.5"}', Start(0.5)),
        ('{"interval":" 0.5 ","count":"10"}', Start(0.5, 10)),
        ('{"interval":2,"count":3}', Start(2.0, 3)),
        ('{"interval":0.5,"count":10.0}', Start(0.5, 10)),
        ('{"interval":0.5,"count":"1e3"}', Start(0.5, 1000)),
        ('{"interval":0.5,"count":null}', Start(0.5)),
        ('{"interval":"5e-1"}', Start(0.5)),
        ("0.5", Start(0.5)),
        ("  1  ", Start(1.0)),
        ('{"type":"start","interval":0.01}', Start(0.01)),
        ('{"type":"start","interval":86400}', Start(86400.0)),
        ('{"type":"start","interval":1,"count":1000000}', Start(1.0, 1_000_000)),
        ('{"type":"start","interval":1,"colour":"blue","nested":{"a":[1]}}', Start(1.0)),
        ('{"type":"stop"}', Stop()),
        ('{"type":"stop","interval":"nonsense"}', Stop()),
    ],
)
def test_accepted_frames(frame: str, command: Start | Stop) -> None:
    assert parse(frame, LIMITS) == command


def error_of(frame: str | bytes | None, limits: Limits = LIMITS) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(frame, limits)
    return info.value


@pytest.mark.parametrize(
    "frame",
    [
        "",
        "{",
        "hello",
        "{'interval': 0.5}",
        '{"interval":NaN}',
        "NaN",
        "Infinity",
        "-Infinity",
        "[" * 3000 + "]" * 3000,
        '{"a":' * 1500 + "1" + "}" * 1500,
        "9" * 4300 + "1",
        "0.5 0.5",
    ],
)
def test_invalid_json(frame: str) -> None:
    limits = Limits(max_message_size=10_000)
    assert error_of(frame, limits).code is ErrorCode.INVALID_JSON


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("[0.5]", "an array"),
        ('"0.5"', "a string"),
        ("null", "null"),
        ("true", "true or false"),
        ("false", "true or false"),
    ],
)
def test_invalid_message(frame: str, kind: str) -> None:
    error = error_of(frame)
    assert error.code is ErrorCode.INVALID_MESSAGE
    assert kind in error.message


@pytest.mark.parametrize(
    "frame",
    ['{"type":"go","interval":1}', '{"type":5}', '{"type":null}', '{"type":"START"}'],
)
def test_unknown_type(frame: str) -> None:
    error = error_of(frame)
    assert error.code is ErrorCode.UNKNOWN_TYPE
    assert '"start"' in error.message
    assert '"stop"' in error.message


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"start"}',
        "{}",
        '{"interval":null}',
        '{"interval":true}',
        '{"interval":[1]}',
        '{"interval":{}}',
        '{"interval":"abc"}',
        '{"interval":""}',
        '{"interval":"nan"}',
        '{"interval":"inf"}',
        '{"interval":"1_0"}',
        '{"interval":"0x10"}',
        '{"interval":"1e400"}',
        '{"interval":1e400}',
        '{"interval":-1}',
        '{"interval":0}',
        '{"interval":0.009}',
        '{"interval":86400.001}',
        "0.001",
        "-0.5",
        "1e400",
        "1" + "0" * 400,
    ],
)
def test_invalid_interval(frame: str) -> None:
    assert error_of(frame).code is ErrorCode.INVALID_INTERVAL


def test_interval_message_names_the_limits() -> None:
    error = error_of('{"interval":0.001}', Limits(min_interval=0.05, max_interval=60))
    assert error.message == "The interval must be between 0.05 and 60 seconds; got 0.001."


def test_missing_interval_message_names_the_limits() -> None:
    error = error_of('{"type":"start"}')
    assert "0.01" in error.message
    assert "86400" in error.message


@pytest.mark.parametrize(
    "count",
    [
        "2.5",
        "true",
        "false",
        "0",
        "-1",
        '"2.5"',
        '"ten"',
        '""',
        "[]",
        "{}",
        "1000001",
        '"1000001"',
        '"1e400"',
        "1e400",
        "NaN",
    ],
)
def test_invalid_count(count: str) -> None:
    code = ErrorCode.INVALID_JSON if count == "NaN" else ErrorCode.INVALID_COUNT
    assert error_of(f'{{"interval":1,"count":{count}}}').code is code


def test_count_message_names_the_limit() -> None:
    error = error_of('{"interval":1,"count":2.5}', Limits(max_count=50))
    assert error.message == (
        "The count must be a whole number from 1 to 50, or left out for no limit; got 2.5."
    )


def test_interval_is_checked_before_count() -> None:
    assert error_of('{"interval":0,"count":0}').code is ErrorCode.INVALID_INTERVAL


@pytest.mark.parametrize("frame", [b'{"type":"stop"}', b"\x00\xff", b"", None])
def test_binary_not_supported(frame: bytes | None) -> None:
    assert error_of(frame).code is ErrorCode.BINARY_NOT_SUPPORTED


def test_long_values_are_quoted_back_shortened() -> None:
    error = error_of('{"type":"' + "x" * 500 + '"}')
    assert len(error.message) < 120
    assert "…" in error.message


@pytest.mark.parametrize(
    ("frame", "size"),
    [
        ('{"interval":1,"pad":"' + "x" * 5000 + '"}', 5000 + 23),
        # The limit is in UTF-8 bytes on the wire: 2100 "é" are 4200 bytes.
        ('{"interval":1,"pad":"' + "é" * 2100 + '"}', 4200 + 23),
        (b"\x00" * 4097, 4097),
    ],
)
def test_frames_over_the_size_limit_are_too_big(frame: str | bytes, size: int) -> None:
    with pytest.raises(MessageTooBig) as info:
        parse(frame, LIMITS)
    assert (info.value.size, info.value.limit) == (size, 4096)


def test_a_frame_exactly_at_the_limit_is_parsed() -> None:
    frame = '{"interval":1,"pad":"' + "x" * (4096 - 23) + '"}'
    assert len(frame.encode()) == 4096
    assert parse(frame, LIMITS) == Start(1.0)


@given(st.text(max_size=200))
def test_any_text_parses_to_a_command_or_a_protocol_error(frame: str) -> None:
    try:
        command = parse(frame, LIMITS)
    except ProtocolError as error:
        problem = error
    else:
        assert isinstance(command, Start | Stop)
        return
    assert problem.message.endswith(".")
    # The answer must always be sendable as UTF-8 text.
    encode_error(problem).encode("utf-8")


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(["type", "interval", "count", "x"]),
        json_values | st.sampled_from(["start", "stop", "0.5", "10"]),
    )
)
def test_any_object_parses_to_a_command_or_a_protocol_error(message: dict[str, object]) -> None:
    frame = json.dumps(message)
    try:
        command = parse(frame, LIMITS)
    except ProtocolError:
        pass
    else:
        if isinstance(command, Start):
            assert math.isfinite(command.interval)
            assert LIMITS.min_interval <= command.interval <= LIMITS.max_interval
            assert command.count is None or 1 <= command.count <= LIMITS.max_count


@given(
    st.floats(min_value=0.01, max_value=86400),
    st.none() | st.integers(min_value=1, max_value=1_000_000),
    st.booleans(),
)
def test_valid_starts_round_trip(interval: float, count: int | None, as_strings: bool) -> None:
    message: dict[str, object] = {"type": "start", "interval": interval, "count": count}
    if as_strings:
        message = {"interval": repr(interval), "count": None if count is None else str(count)}
    assert parse(json.dumps(message), LIMITS) == Start(interval, count)


def test_hello() -> None:
    assert json.loads(encode_hello("1.2.3", LIMITS)) == {
        "type": "hello",
        "version": "1.2.3",
        "min_interval": 0.01,
        "max_interval": 86400,
        "max_count": 1000000,
    }
    assert encode_hello("1.2.3", LIMITS) == (
        '{"type":"hello","version":"1.2.3","min_interval":0.01,'
        '"max_interval":86400,"max_count":1000000}'
    )


def test_started() -> None:
    assert encode_started(1, Start(0.5, 10)) == (
        '{"type":"started","id":1,"interval":0.5,"count":10}'
    )
    assert encode_started(2, Start(2.0)) == '{"type":"started","id":2,"interval":2,"count":null}'


@given(st.integers(1, 2**40), st.integers(1, 2**40), st.floats(0, 4e9))
def test_tick_is_json(schedule_id: int, seq: int, unix_time: float) -> None:
    assert json.loads(encode_tick(schedule_id, seq, unix_time)) == {
        "type": "tick",
        "id": schedule_id,
        "seq": seq,
        "time": unix_time,
    }


def test_done_stopped_error() -> None:
    assert encode_done(3, 8, 2) == '{"type":"done","id":3,"sent":8,"skipped":2}'
    assert encode_stopped(4) == '{"type":"stopped","id":4}'
    assert encode_stopped(None) == '{"type":"stopped","id":null}'
    error = ProtocolError(ErrorCode.UNKNOWN_TYPE, "Nope.")
    assert json.loads(encode_error(error)) == {
        "type": "error",
        "code": "unknown_type",
        "message": "Nope.",
    }


@pytest.mark.parametrize(
    ("ours", "rfc_6455"),
    [
        (CloseCode.GOING_AWAY, CloseReason.GOING_AWAY),
        (CloseCode.PROTOCOL_ERROR, CloseReason.PROTOCOL_ERROR),
        (CloseCode.INVALID_DATA, CloseReason.INVALID_FRAME_PAYLOAD_DATA),
        (CloseCode.MESSAGE_TOO_BIG, CloseReason.MESSAGE_TOO_BIG),
        (CloseCode.INTERNAL_ERROR, CloseReason.INTERNAL_ERROR),
    ],
)
def test_close_codes_are_rfc_6455s(ours: CloseCode, rfc_6455: CloseReason) -> None:
    assert int(ours) == int(rfc_6455)
    assert str(ours) == str(int(rfc_6455))  # what a log line shows: "closed with 1009 (...)"


def test_close_codes_are_the_ones_docs_protocol_md_says_the_server_sends() -> None:
    assert sorted(CloseCode) == [1001, 1002, 1007, 1009, 1011]
