"""Settings from ``TICKER_*`` environment variables, validated with errors that name them."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from .protocol import Limits

DEFAULT_MAX_CONNECTIONS: Final = 10_000  # open websockets per process
#: How long one write may wait for a client that stopped reading before its
#: connection is reset (only a client whose TCP window stays full waits at all).
DEFAULT_SEND_TIMEOUT: Final = 5.0  # seconds
#: Keepalive (``TICKER_PING_INTERVAL``/``TICKER_PING_TIMEOUT``): the values the
#: websockets library and uvicorn use; a NAT mapping outlives 20 s of silence.
DEFAULT_PING_INTERVAL: Final = 20.0  # seconds between pings; 0 turns keepalive off
DEFAULT_PING_TIMEOUT: Final = 20.0  # seconds a pong may take
#: How long the server waits for the client's answer to its close frame before
#: it closes the TCP connection anyway (websockets' ``close_timeout``).
DEFAULT_CLOSE_TIMEOUT: Final = 10.0  # seconds
#: Frames a connection may send per second on average, and in one burst, before
#: the server reads it more slowly. Generous: the page sends a few per minute.
DEFAULT_FRAME_RATE: Final = 1000  # frames per second
#: The ``TICKER_ALLOWED_ORIGINS`` entry that also refuses handshakes without Origin.
REQUIRE_ORIGIN: Final = "require-origin"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Smaller than this and not even ``{"type":"start","interval":0.5,"count":10}`` fits.
MIN_MESSAGE_SIZE: Final = 64  # bytes


class ConfigError(ValueError):
    """A ``TICKER_*`` variable is malformed or inconsistent; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything an operator can configure."""

    limits: Limits = field(default_factory=Limits)
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    log_level: str = "INFO"
    #: Serve ``/metrics`` and count for it (``TICKER_METRICS``).
    metrics: bool = True
    #: Where workers keep their metric files (``TICKER_METRICS_DIR``); None
    #: means a per-user folder in the temporary directory (see ``metrics.py``).
    metrics_dir: str | None = None
    #: How many reverse proxies in front append to ``X-Forwarded-For``
    #: (``TICKER_PROXY_HOPS``). 0 ignores the header: nobody can spoof an address.
    proxy_hops: int = 0
    #: Negotiate permessage-deflate when a client offers it (``TICKER_COMPRESSION``).
    compression: bool = False
    #: Seconds between keepalive pings (``TICKER_PING_INTERVAL``); 0 means none.
    ping_interval: float = DEFAULT_PING_INTERVAL
    #: Seconds a pong may take before the connection is closed with 1011.
    ping_timeout: float = DEFAULT_PING_TIMEOUT
    #: Seconds to wait for the answer to a close frame (``TICKER_CLOSE_TIMEOUT``).
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    #: Frames per second a connection is read at, at most, on average.
    frame_rate: int = DEFAULT_FRAME_RATE
    #: Origins whose pages may open a websocket (``TICKER_ALLOWED_ORIGINS``);
    #: None means any.
    allowed_origins: frozenset[str] | None = None
    #: Also refuse handshakes without an Origin header, i.e. non-browser clients
    #: (the entry ``require-origin`` in ``TICKER_ALLOWED_ORIGINS``).
    require_origin: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default ``os.environ``).

        Raises:
            ConfigError: a one-line message naming the variable and the problem.
        """
        env = os.environ if environ is None else environ
        defaults = Limits()
        min_interval = _seconds(env, "TICKER_MIN_INTERVAL", defaults.min_interval)
        max_interval = _seconds(env, "TICKER_MAX_INTERVAL", defaults.max_interval)
        if max_interval < min_interval:
            raise ConfigError(
                f"TICKER_MAX_INTERVAL ({max_interval:g}) must not be smaller than "
                f"TICKER_MIN_INTERVAL ({min_interval:g})"
            )
        limits = Limits(
            min_interval=min_interval,
            max_interval=max_interval,
            max_count=_integer(env, "TICKER_MAX_COUNT", defaults.max_count, minimum=1),
            max_message_size=_integer(
                env,
                "TICKER_MAX_MESSAGE_SIZE",
                defaults.max_message_size,
                minimum=MIN_MESSAGE_SIZE,
                unit=" bytes",
            ),
        )
        origins = _origins(env, "TICKER_ALLOWED_ORIGINS")
        require_origin = origins is not None and REQUIRE_ORIGIN in origins
        if origins is not None:
            origins -= {REQUIRE_ORIGIN}
        return cls(
            limits=limits,
            max_connections=_integer(
                env, "TICKER_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, minimum=1
            ),
            send_timeout=_seconds(env, "TICKER_SEND_TIMEOUT", DEFAULT_SEND_TIMEOUT),
            log_level=_choice(env, "TICKER_LOG_LEVEL", "INFO", LOG_LEVELS),
            metrics=_switch(env, "TICKER_METRICS", default=True),
            metrics_dir=_raw(env, "TICKER_METRICS_DIR"),
            proxy_hops=_integer(env, "TICKER_PROXY_HOPS", 0, minimum=0),
            compression=_switch(env, "TICKER_COMPRESSION", default=False),
            ping_interval=_seconds(
                env, "TICKER_PING_INTERVAL", DEFAULT_PING_INTERVAL, zero_means_off=True
            ),
            ping_timeout=_seconds(env, "TICKER_PING_TIMEOUT", DEFAULT_PING_TIMEOUT),
            close_timeout=_seconds(env, "TICKER_CLOSE_TIMEOUT", DEFAULT_CLOSE_TIMEOUT),
            frame_rate=_integer(env, "TICKER_FRAME_RATE", DEFAULT_FRAME_RATE, minimum=10),
            allowed_origins=origins,
            require_origin=require_origin,
        )


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    if not value.strip():
        raise ConfigError(f"{name} is set but empty; unset it to use the default")
    return value.strip()


def _seconds(
    env: Mapping[str, str], name: str, default: float, *, zero_means_off: bool = False
) -> float:
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if zero_means_off and value == 0:
        return 0.0
    if not math.isfinite(value) or value <= 0:
        kind = "positive (or 0 for off)" if zero_means_off else "positive"
        raise ConfigError(f"{name} must be a {kind}, finite number of seconds, got {raw!r}")
    return value


def _origins(env: Mapping[str, str], name: str) -> frozenset[str] | None:
    """``https://a.example, http://localhost:8000`` → the set, each as a browser writes it."""
    raw = _raw(env, name)
    if raw is None:
        return None
    origins = set()
    for item in raw.split(","):
        if not item.strip():
            continue  # "a, b," is a list of two
        origins.add(_origin(name, item.strip()))
    if origins <= {REQUIRE_ORIGIN}:
        raise ConfigError(f"{name} lists no origin, got {raw!r}")
    return frozenset(origins)


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _origin(name: str, item: str) -> str:
    """One origin, normalised as browsers send it: lower case, no default port."""
    lowered = item.rstrip("/").lower()
    # "null" is what a browser sends from a file:// or sandboxed page.
    if lowered in ("null", REQUIRE_ORIGIN):
        return lowered
    problem = f"{name} must be a comma-separated list of origins like https://ticker.example.org"
    try:
        parts = urlsplit(lowered)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{problem}, got {item!r}") from None
    host = parts.hostname
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not host
        or "*" in host
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
        or lowered.endswith(":")
    ):
        raise ConfigError(f"{problem}, got {item!r}")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = _raw(env, name)
    if raw is None:
        return default
    if raw.upper() not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw.upper()


_SWITCH_VALUES: Final = {
    "on": True,
    "off": False,
    "true": True,
    "false": False,
    "yes": True,
    "no": False,
    "1": True,
    "0": False,
}


def _switch(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        return _SWITCH_VALUES[raw.lower()]
    except KeyError:
        raise ConfigError(f"{name} must be on or off, got {raw!r}") from None


def _integer(
    env: Mapping[str, str], name: str, default: int, *, minimum: int, unit: str = ""
) -> int:
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}{unit}, got {value}")
    return value
