"""TICKER_* environment variables: defaults, overrides and one-line errors."""

from __future__ import annotations

import pytest

from ticker.config import ConfigError, Settings
from ticker.protocol import Limits


def test_defaults() -> None:
    assert Settings.from_env({}) == Settings(
        limits=Limits(),
        max_connections=10_000,
        send_timeout=5.0,
        log_level="INFO",
        metrics=True,
        metrics_dir=None,
        proxy_hops=0,
        compression=False,
        ping_interval=20.0,
        ping_timeout=20.0,
        close_timeout=10.0,
        frame_rate=1000,
        allowed_origins=None,
        require_origin=False,
    )
    assert Limits() == Limits(0.01, 86400.0, 1_000_000, 4096)


def test_every_variable_overrides_its_setting() -> None:
    settings = Settings.from_env(
        {
            "TICKER_MIN_INTERVAL": "0.5",
            "TICKER_MAX_INTERVAL": " 60 ",
            "TICKER_MAX_COUNT": "7",
            "TICKER_MAX_MESSAGE_SIZE": "1024",
            "TICKER_MAX_CONNECTIONS": "3",
            "TICKER_SEND_TIMEOUT": "2.5",
            "TICKER_LOG_LEVEL": "warning",
            "TICKER_METRICS": "Off",
            "TICKER_METRICS_DIR": "/var/lib/ticker",
            "TICKER_PROXY_HOPS": "1",
            "TICKER_COMPRESSION": "on",
            "TICKER_PING_INTERVAL": "0",
            "TICKER_PING_TIMEOUT": "5",
            "TICKER_CLOSE_TIMEOUT": "2",
            "TICKER_FRAME_RATE": "50",
            "TICKER_ALLOWED_ORIGINS": "https://Ticker.example.org/ , http://127.0.0.1:8000",
            "UNRELATED": "x",
        }
    )
    assert settings == Settings(
        limits=Limits(0.5, 60.0, 7, 1024),
        max_connections=3,
        send_timeout=2.5,
        log_level="WARNING",
        metrics=False,
        metrics_dir="/var/lib/ticker",
        proxy_hops=1,
        compression=True,
        ping_interval=0.0,
        ping_timeout=5.0,
        close_timeout=2.0,
        frame_rate=50,
        allowed_origins=frozenset({"https://ticker.example.org", "http://127.0.0.1:8000"}),
        require_origin=False,
    )


def test_origins_are_compared_as_browsers_write_them() -> None:
    raw = "HTTPS://Ticker.Example.org:443/, http://[::1]:8000, http://127.0.0.1:80,"
    assert Settings.from_env({"TICKER_ALLOWED_ORIGINS": raw}).allowed_origins == frozenset(
        {"https://ticker.example.org", "http://[::1]:8000", "http://127.0.0.1"}
    )


def test_require_origin_in_the_list_refuses_clients_without_one() -> None:
    settings = Settings.from_env({"TICKER_ALLOWED_ORIGINS": "null, require-origin"})
    assert settings.allowed_origins == frozenset({"null"})
    assert settings.require_origin


@pytest.mark.parametrize(
    ("value", "expected"),
    [("on", True), ("1", True), ("yes", True), ("TRUE", True), ("off", False), ("0", False)],
)
def test_metrics_switch(value: str, expected: bool) -> None:
    assert Settings.from_env({"TICKER_METRICS": value}).metrics is expected


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("TICKER_MIN_INTERVAL", "abc", "must be a number of seconds, got 'abc'"),
        ("TICKER_MIN_INTERVAL", "0", "must be a positive, finite number of seconds"),
        ("TICKER_MIN_INTERVAL", "-1", "must be a positive, finite number of seconds"),
        ("TICKER_MAX_INTERVAL", "nan", "must be a positive, finite number of seconds"),
        ("TICKER_MAX_INTERVAL", "inf", "must be a positive, finite number of seconds"),
        ("TICKER_MAX_INTERVAL", "0.001", "must not be smaller than TICKER_MIN_INTERVAL"),
        ("TICKER_MAX_COUNT", "1.5", "must be a whole number, got '1.5'"),
        ("TICKER_MAX_COUNT", "0", "must be at least 1, got 0"),
        ("TICKER_MAX_MESSAGE_SIZE", "10", "must be at least 64 bytes, got 10"),
        ("TICKER_MAX_CONNECTIONS", "many", "must be a whole number, got 'many'"),
        ("TICKER_MAX_CONNECTIONS", "0", "must be at least 1, got 0"),
        ("TICKER_MAX_CONNECTIONS", "", "is set but empty"),
        ("TICKER_SEND_TIMEOUT", "0", "must be a positive, finite number of seconds"),
        ("TICKER_METRICS", "maybe", "must be on or off, got 'maybe'"),
        ("TICKER_METRICS_DIR", " ", "is set but empty"),
        ("TICKER_PROXY_HOPS", "-1", "must be at least 0, got -1"),
        ("TICKER_PROXY_HOPS", "one", "must be a whole number, got 'one'"),
        ("TICKER_COMPRESSION", "deflate", "must be on or off, got 'deflate'"),
        ("TICKER_PING_INTERVAL", "-1", "must be a positive (or 0 for off), finite number"),
        ("TICKER_PING_INTERVAL", "soon", "must be a number of seconds, got 'soon'"),
        ("TICKER_PING_TIMEOUT", "0", "must be a positive, finite number of seconds"),
        ("TICKER_CLOSE_TIMEOUT", "inf", "must be a positive, finite number of seconds"),
        ("TICKER_FRAME_RATE", "5", "must be at least 10, got 5"),
        ("TICKER_ALLOWED_ORIGINS", "ticker.example.org", "comma-separated list of origins"),
        ("TICKER_ALLOWED_ORIGINS", "https://a.example/page", "got 'https://a.example/page'"),
        ("TICKER_ALLOWED_ORIGINS", "ftp://a.example", "comma-separated list of origins"),
        ("TICKER_ALLOWED_ORIGINS", "https://*.example", "got 'https://*.example'"),
        ("TICKER_ALLOWED_ORIGINS", "https://a.example?x=1", "got 'https://a.example?x=1'"),
        ("TICKER_ALLOWED_ORIGINS", "https://a.example:99999", "got 'https://a.example:99999'"),
        ("TICKER_ALLOWED_ORIGINS", "https://me@a.example", "got 'https://me@a.example'"),
        ("TICKER_ALLOWED_ORIGINS", "http://[::1", "got 'http://[::1'"),
        ("TICKER_ALLOWED_ORIGINS", "require-origin", "lists no origin"),
        ("TICKER_ALLOWED_ORIGINS", " , ", "lists no origin"),
        ("TICKER_LOG_LEVEL", "loud", "must be one of DEBUG, INFO, WARNING, ERROR, got 'loud'"),
    ],
)
def test_bad_values_name_the_variable_and_the_problem(name: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    message = str(info.value)
    assert message.startswith(name)
    assert problem in message
    assert "\n" not in message
