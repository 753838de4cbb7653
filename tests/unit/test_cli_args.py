"""`ticker` command line: arguments, usage errors and colour rules (no network)."""

from __future__ import annotations

import io

import pytest

import ticker
from ticker.cli import DEFAULT_URL, Style, build_parser, main


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
