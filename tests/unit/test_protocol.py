"""The wire protocol, frame by frame: every accepted form and every error code."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

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
    plan,
)
from ticker.schedule import Schedule

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
        ('{"interval":1,"anchor":0}', Start(1.0, anchor=0.0)),
        ('{"interval":1,"anchor":1764139200.5,"count":3}', Start(1.0, 3, 1764139200.5)),
        ('{"interval":"1","anchor":" 1764139200 ","last":"12"}', Start(1.0, None, 1764139200, 12)),
        ('{"interval":1,"anchor":null,"last":null}', Start(1.0)),
        ('{"interval":1,"last":5.0}', Start(1.0, last=5)),
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


@pytest.mark.parametrize(
    "anchor", ["-1", "true", '"abc"', '"nan"', '"inf"', "1e400", '"1e400"', "[]", "{}", '""']
)
def test_invalid_anchor(anchor: str) -> None:
    error = error_of(f'{{"interval":1,"anchor":{anchor}}}')
    assert error.code is ErrorCode.INVALID_ANCHOR
    assert error.message.startswith("The anchor must be a Unix time in seconds")


@pytest.mark.parametrize("last", ["0", "-1", "2.5", "true", '"five"', '"2.5"', "1e400", "[]"])
def test_invalid_last(last: str) -> None:
    error = error_of(f'{{"interval":1,"last":{last}}}')
    assert error.code is ErrorCode.INVALID_LAST
    assert error.message.startswith("The last slot must be a whole number from 1")


def test_count_and_last_together_are_refused() -> None:
    error = error_of('{"interval":1,"count":3,"last":7}')
    assert error.code is ErrorCode.INVALID_LAST
    assert "either a count or a last slot" in error.message


def test_fields_are_checked_in_order_interval_count_anchor_last() -> None:
    assert error_of('{"interval":0,"count":0,"anchor":-1,"last":0}').code is (
        ErrorCode.INVALID_INTERVAL
    )
    assert error_of('{"interval":1,"count":0,"anchor":-1,"last":0}').code is (
        ErrorCode.INVALID_COUNT
    )
    assert error_of('{"interval":1,"anchor":-1,"last":0}').code is ErrorCode.INVALID_ANCHOR


# An accepted start's grid: ``plan`` reads the clocks it is given, nothing else.
UNIX_NOW = 1_764_139_200.25  # the wall clock when the start is accepted
NOW = 500.25  # the monotonic clock at the same moment


def test_an_unanchored_start_starts_its_grid_now() -> None:
    accepted = plan(Start(0.5, 4), LIMITS, now=NOW, unix_now=UNIX_NOW)
    assert accepted.schedule == Schedule(start=NOW, interval=0.5, last=4, first=1)
    assert accepted.anchor == UNIX_NOW


def test_anchor_zero_is_the_epoch_grid_from_the_next_slot_due() -> None:
    accepted = plan(Start(1.0, anchor=0.0), LIMITS, now=NOW, unix_now=UNIX_NOW)
    schedule = accepted.schedule
    assert (accepted.anchor, schedule.first, schedule.count) == (0, 1_764_139_201, None)
    # Slot n of the epoch grid is due when the wall clock reads n seconds.
    assert schedule.due(schedule.first) == pytest.approx(NOW + 0.75, abs=1e-6)


def test_a_slot_due_exactly_at_acceptance_is_not_part_of_the_schedule() -> None:
    accepted = plan(Start(0.25, 2, anchor=UNIX_NOW - 1), LIMITS, now=NOW, unix_now=UNIX_NOW)
    assert (accepted.schedule.first, accepted.schedule.last) == (5, 6)
    assert accepted.schedule.due(5) == NOW + 0.25


def test_a_future_anchor_waits_for_slot_1() -> None:
    accepted = plan(Start(2.0, 3, anchor=UNIX_NOW + 10), LIMITS, now=NOW, unix_now=UNIX_NOW)
    assert accepted.schedule == Schedule(start=NOW + 10, interval=2.0, last=3, first=1)


def test_an_anchor_at_most_max_interval_ahead() -> None:
    limits = Limits(max_interval=60)
    assert plan(Start(1.0, anchor=UNIX_NOW + 60), limits, now=NOW, unix_now=UNIX_NOW)
    with pytest.raises(ProtocolError) as caught:
        plan(Start(1.0, anchor=UNIX_NOW * 1000), limits, now=NOW, unix_now=UNIX_NOW)
    assert caught.value.code is ErrorCode.INVALID_ANCHOR
    assert "at most 60 seconds ahead" in caught.value.message
    assert "not milliseconds" in caught.value.message


def test_last_resumes_a_counted_schedule_to_the_same_final_slot() -> None:
    original = plan(Start(1.0, 10), LIMITS, now=NOW, unix_now=UNIX_NOW)
    # 3.5 s later, elsewhere: the same grid, the slots still to come, the same end.
    resumed = plan(
        Start(1.0, anchor=original.anchor, last=10), LIMITS, now=9.5, unix_now=UNIX_NOW + 3.5
    )
    assert (resumed.schedule.first, resumed.schedule.last, resumed.schedule.count) == (4, 10, 7)
    assert resumed.schedule.due(4) == 10.0
    assert resumed.anchor == original.anchor


def test_a_last_slot_already_passed_is_refused() -> None:
    with pytest.raises(ProtocolError) as caught:
        plan(Start(1.0, anchor=UNIX_NOW - 20, last=20), LIMITS, now=NOW, unix_now=UNIX_NOW)
    assert caught.value.code is ErrorCode.SCHEDULE_OVER
    assert caught.value.message == (
        "The last slot, 20, has passed: the next slot due is 21. The schedule is over."
    )


def test_a_last_slot_beyond_max_count_slots_is_refused() -> None:
    with pytest.raises(ProtocolError) as caught:
        plan(
            Start(1.0, anchor=0, last=2_000_000_000),
            Limits(max_count=50),
            now=NOW,
            unix_now=UNIX_NOW,
        )
    assert caught.value.code is ErrorCode.INVALID_LAST
    assert "at most 50" in caught.value.message


@given(
    start=st.floats(-2e9, 1e6),
    interval=st.floats(0.01, 86400),
    now=st.floats(0, 1e6),
)
def test_the_first_slot_is_the_earliest_due_after_now(
    start: float, interval: float, now: float
) -> None:
    schedule = Schedule.from_anchor(start, interval, now)
    assert schedule.first >= 1
    assert schedule.due(schedule.first) > now
    assert schedule.first == 1 or schedule.due(schedule.first - 1) <= now


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
    counted = plan(Start(0.5, 10), LIMITS, now=NOW, unix_now=1764139200.0)
    assert encode_started(1, counted) == (
        '{"type":"started","id":1,"interval":0.5,"count":10,"anchor":1764139200,"first":1}'
    )
    anchored = plan(Start(2.0, anchor=0), LIMITS, now=NOW, unix_now=1764139200.1234567)
    assert encode_started(2, anchored) == (
        '{"type":"started","id":2,"interval":2,"count":null,"anchor":0,"first":882069601}'
    )
    unanchored = plan(Start(2.0), LIMITS, now=NOW, unix_now=1764139200.1234567)
    assert json.loads(encode_started(3, unanchored))["anchor"] == 1764139200.123457


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


PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_every_error_code_has_a_row_in_docs_protocol_md() -> None:
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", PROTOCOL_MD.read_text(), re.M))
    assert {code.value for code in ErrorCode} <= documented


def test_the_anchor_codes_sentences_in_docs_protocol_md_are_the_servers() -> None:
    """The table of sentences is what the server says, word for word, for these starts."""
    unix_now = 1764139200.0 + 3600  # an hour after the documented anchor
    errors = []
    for frame in ('{"interval":1,"anchor":-1}', '{"interval":1,"last":0}'):
        errors.append(error_of(frame))
    errors.append(error_of('{"interval":1,"count":3,"last":5}'))
    for start in (
        Start(1.0, anchor=1764139200000.0),
        Start(1.0, anchor=1764139200.0, last=5),
        Start(1.0, anchor=0, last=2_000_000_000),
    ):
        with pytest.raises(ProtocolError) as caught:
            plan(start, LIMITS, now=NOW, unix_now=unix_now)
        errors.append(caught.value)
    said = {(error.code.value, error.message) for error in errors}
    text = PROTOCOL_MD.read_text()
    table = text[text.index("The sentences of the anchor codes") :]
    documented = set(re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", table, re.M))
    assert documented == said
