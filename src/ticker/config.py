"""Settings from ``TICKER_*`` environment variables, validated with errors that name them."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from .protocol import Limits

DEFAULT_MAX_CONNECTIONS: Final = 10_000  # open websockets per process
#: How long one write may wait for a client that stopped reading before its
#: connection is reset (only a client whose TCP window stays full waits at all).
DEFAULT_SEND_TIMEOUT: Final = 5.0  # seconds
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
        )


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    if not value.strip():
        raise ConfigError(f"{name} is set but empty; unset it to use the default")
    return value.strip()


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive, finite number of seconds, got {raw!r}")
    return value


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
