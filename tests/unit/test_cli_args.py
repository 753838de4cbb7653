"""`ticker` command line: arguments, usage errors, colour rules, reconnect backoff (no network)."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

import ticker
from ticker.cli import DEFAULT_URL, Gap, Grid, Style, backoff_delay, build_parser, format_gap, main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"ticker {ticker.__version__}\n"


def test_watch_defaults() -> None:
    args = build_parser().parse_args(["watch", "--interval", "0.5"])
    assert (args.url, args.interval, args.count, args.json) == (DEFAULT_URL, 0.5, None, False)


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["watch"], "the following arguments are required: --interval"),
        (["watch", "-i", "abc"], "not a number of seconds: 'abc'"),
        (["watch", "-i", "0"], "must be a positive number of seconds"),
        (["watch", "-i", "nan"], "must be a positive number of seconds"),
        (["watch", "-i", "1", "-n", "2.5"], "not a whole number: '2.5'"),
        (["watch", "-i", "1", "-n", "0"], "must be at least 1"),
        (["watch", "http://example.invalid", "-i", "1"], "not a ws:// or wss:// URL"),
    ],
)
def test_usage_errors_exit_2_with_one_message(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert complaint in capsys.readouterr().err


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "no_color", "coloured"),
    [
        (FakeTerminal(), None, True),
        (FakeTerminal(), "1", False),
        (io.StringIO(), None, False),
    ],
)
def test_colour_only_on_a_terminal_without_no_color(
    stream: io.StringIO, no_color: str | None, coloured: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    if no_color is not None:
        monkeypatch.setenv("NO_COLOR", no_color)
    style = Style.for_stream(stream)
    assert style.enabled is coloured
    assert ("\033[" in style.bad("x")) is coloured


def test_watch_flags_for_the_grid_and_reconnecting() -> None:
    args = build_parser().parse_args(["watch", "-i", "1", "--align", "--reconnect"])
    assert (args.align, args.reconnect, args.reconnect_timeout) == (True, True, None)
    plain = build_parser().parse_args(["watch", "-i", "1"])
    assert (plain.align, plain.reconnect) == (False, False)


def test_reconnect_timeout_is_seconds() -> None:
    argv = ["watch", "-i", "1", "--reconnect", "--reconnect-timeout", "2.5"]
    assert build_parser().parse_args(argv).reconnect_timeout == 2.5


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--reconnect-timeout", "5"], "--reconnect-timeout needs --reconnect"),
        (["--reconnect", "--reconnect-timeout", "0"], "must be a positive number of seconds"),
        (["--reconnect", "--reconnect-timeout", "inf"], "must be a positive number of seconds"),
        (["--reconnect", "--reconnect-timeout", "soon"], "not a number of seconds: 'soon'"),
        (["--align=yes"], "ignored explicit argument 'yes'"),
    ],
)
def test_reconnect_usage_errors_exit_2(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["watch", "-i", "1", *argv])
    assert info.value.code == 2
    assert complaint in capsys.readouterr().err


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


@pytest.mark.parametrize(
    ("attempt", "low", "middle", "high"),
    [
        (0, 0.4, 0.5, 0.6),
        (1, 0.8, 1.0, 1.2),
        (2, 1.6, 2.0, 2.4),
        (4, 6.4, 8.0, 9.6),
        (5, 8.0, 10.0, 10.0),  # 16 s capped at 10, and jitter never beyond it
        (6, 8.0, 10.0, 10.0),
        (10**6, 8.0, 10.0, 10.0),  # hours of attempts: still a number
    ],
)
def test_backoff_doubles_from_half_a_second_to_ten_with_20_percent_jitter(
    attempt: int, low: float, middle: float, high: float
) -> None:
    assert backoff_delay(attempt, fixed(0.0)) == pytest.approx(low)
    assert backoff_delay(attempt, fixed(0.5)) == pytest.approx(middle)
    assert backoff_delay(attempt, fixed(1.0)) == pytest.approx(high)


def test_backoff_jitter_comes_from_the_random_source() -> None:
    draws = iter([0.25, 0.75])
    assert backoff_delay(0, lambda: next(draws)) == pytest.approx(0.45)
    assert backoff_delay(0, lambda: next(draws)) == pytest.approx(0.55)


def test_a_gap_backs_off_then_makes_its_last_attempt_at_its_limit_then_gives_up() -> None:
    gap = Gap(lost_at=100.0, cause="1001 GOING_AWAY", limit=20.0, rng=fixed(0.5))
    now, waits = 100.0, []
    while (delay := gap.next_delay(now)) is not None:
        waits.append(delay)
        now += delay + 0.25  # each attempt takes a while to fail
    # 0.5, 1, 2, 4, 8 doubling; then what is left of the 20 s: the last attempt at 120.
    assert waits == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0, 120 - 116.75])
    assert gap.attempts == 6
    assert gap.next_delay(now) is None  # and it stays given up


def test_a_gap_past_its_limit_makes_no_attempt() -> None:
    gap = Gap(lost_at=0.0, cause="1006 ABNORMAL_CLOSURE", limit=1.0, rng=fixed(0.5))
    assert gap.next_delay(1.0) is None
    assert gap.attempts == 0


@pytest.mark.parametrize(
    ("lost", "text"),
    [
        (range(4, 7), "lost 3 slots (#4-#6)"),
        (range(4, 5), "lost 1 slot (#4)"),
        (range(4, 4), "lost no slots"),
    ],
)
def test_a_gap_is_one_line_naming_its_cause_length_and_slots(lost: range, text: str) -> None:
    line = format_gap("ws://h/ws", "1001 GOING_AWAY", 1.26, lost, ended=False)
    assert (
        line
        == f"ticker: connection to ws://h/ws lost (1001 GOING_AWAY); resumed after 1.3 s, {text}"
    )
    ended = format_gap("ws://h/ws", "1006 ABNORMAL_CLOSURE", 2.0, lost, ended=True)
    assert "; the schedule ended while away after 2.0 s, " in ended


@pytest.mark.parametrize(
    ("grid", "start"),
    [
        (
            Grid(interval=0.5, anchor=1764139200.123456, first=1, last=10),
            {"type": "start", "interval": 0.5, "anchor": 1764139200.123456, "last": 10},
        ),
        (
            Grid(interval=1.0, anchor=0.0, first=1764139201, last=None),
            {"type": "start", "interval": 1.0, "anchor": 0.0},
        ),
    ],
)
def test_a_resume_sends_the_first_anchor_and_the_same_final_slot(
    grid: Grid, start: dict[str, object]
) -> None:
    assert grid.resume() == start


def test_slots_due_by_a_time_stop_at_the_last_one() -> None:
    grid = Grid(interval=0.5, anchor=1000.0, first=3, last=10)
    assert grid.due_by(1002.25) == 4
    assert grid.due_by(1002.5) == 5
    assert grid.due_by(2000.0) == 10
    assert Grid(0.5, 1000.0, 3, None).due_by(2000.0) == 2000
