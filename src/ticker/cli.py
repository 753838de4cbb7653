"""``ticker``: the terminal client. ``ticker watch`` starts a schedule and prints its ticks."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import ssl
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, TextIO
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from . import __version__
from .client_stats import LatenessFit, LatenessRecorder, Summary

DEFAULT_URL: Final = "ws://127.0.0.1:8000/ws"
CONNECT_TIMEOUT: Final = 10.0  # seconds to open the websocket
CLOSE_TIMEOUT: Final = 2.0  # seconds to wait for the server's close reply on exit
#: Keepalive, the server's own defaults: a dead server (or a dead network in
#: between) is noticed within interval + timeout, however long the schedule.
PING_INTERVAL: Final = 20.0  # seconds between pings; 0 turns them off
PING_TIMEOUT: Final = 20.0  # seconds a pong may take

EXIT_DONE: Final = 0
EXIT_CONNECTION: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as a shell reports it


class WatchError(Exception):
    """Ends a watch with an exit code and one line for stderr."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


@dataclass(frozen=True)
class Style:
    """ANSI colour, or nothing: only on a terminal, and never with NO_COLOR set."""

    enabled: bool

    @classmethod
    def for_stream(cls, stream: TextIO) -> Style:
        return cls(stream.isatty() and not os.environ.get("NO_COLOR"))

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def good(self, text: str) -> str:
        return self._wrap("32", text)

    def warn(self, text: str) -> str:
        return self._wrap("33", text)

    def bad(self, text: str) -> str:
        return self._wrap("31", text)


def format_ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def format_summary(summary: Summary) -> str:
    return (
        f"received {summary.received}, skipped {summary.skipped}, lateness "
        f"p50 {format_ms(summary.p50)}, p99 {format_ms(summary.p99)}, "
        f"max {format_ms(summary.max)}"
    )


@dataclass
class Watch:
    """One ``ticker watch`` run; its statistics outlive the connection for the summary."""

    url: str
    interval: float
    count: int | None
    as_json: bool
    ping_interval: float = PING_INTERVAL
    ping_timeout: float = PING_TIMEOUT
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    recorder: LatenessRecorder = field(default_factory=LatenessRecorder)
    interrupted: bool = False
    failure: WatchError | None = None

    def __post_init__(self) -> None:
        self.style = Style.for_stream(self.out)
        self._schedule_id: int | None = None
        self._fit: LatenessFit | None = None  # from `started` on
        self._last_seq = 0

    async def run(self) -> None:
        """Watch until done, interrupted (SIGINT) or failed (``self.failure``)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cancel_on_sigint, nursery.cancel_scope)
            try:
                await self._watch()
            except WatchError as error:
                self.failure = error
            nursery.cancel_scope.cancel()

    async def _cancel_on_sigint(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                self.interrupted = True
                scope.cancel()

    async def _check_tls(self) -> None:
        """Shake hands once over TLS first, so that a bad certificate is named.

        trio-websocket reports a failed TLS handshake as a connect timeout
        (python-trio/trio-websocket#199): "timed out" where the truth is
        "certificate verify failed". Other failures are left to the real
        attempt, which reports them well.
        """
        url = urlsplit(self.url)
        if url.scheme != "wss" or url.hostname is None:
            return
        with trio.move_on_after(CONNECT_TIMEOUT) as waited:
            try:
                stream = await trio.open_ssl_over_tcp_stream(
                    url.hostname, url.port or 443, https_compatible=True
                )
                try:
                    await stream.do_handshake()
                finally:
                    await trio.aclose_forcefully(stream)
            except trio.BrokenResourceError as error:
                cause = error.__cause__
                if isinstance(cause, ssl.SSLCertVerificationError):
                    reason = f"certificate verify failed: {cause.verify_message}"
                elif isinstance(cause, ssl.SSLError):
                    reason = cause.reason or str(cause)
                else:
                    return
                raise WatchError(
                    EXIT_CONNECTION, f"cannot connect to {self.url}: TLS failed: {reason}"
                ) from None
            except OSError:
                pass  # refused, unreachable, …: the real attempt says which
        if waited.cancelled_caught:  # not twice the wait before saying so
            raise WatchError(
                EXIT_CONNECTION,
                f"cannot connect to {self.url}: timed out after {CONNECT_TIMEOUT:g} s",
            )

    async def _watch(self) -> None:
        await self._check_tls()
        try:
            async with open_websocket_url(
                self.url, connect_timeout=CONNECT_TIMEOUT, disconnect_timeout=CLOSE_TIMEOUT
            ) as ws:
                await self._converse_while_alive(ws)
        except ConnectionRejected as error:
            raise WatchError(
                EXIT_CONNECTION, f"{self.url} refused the websocket: HTTP {error.status_code}"
            ) from None
        except ConnectionTimeout:
            raise WatchError(
                EXIT_CONNECTION,
                f"cannot connect to {self.url}: timed out after {CONNECT_TIMEOUT:g} s",
            ) from None
        except HandshakeError as error:
            raise WatchError(
                EXIT_CONNECTION, f"cannot connect to {self.url}: {network_reason(error)}"
            ) from None
        except ConnectionClosed as error:
            reason = error.reason
            detail = f"{reason.code} {reason.name}" if reason is not None else "closed"
            if reason is not None and reason.reason:
                detail += f": {reason.reason}"
            raise WatchError(EXIT_CONNECTION, f"connection to {self.url} lost ({detail})") from None

    async def _converse_while_alive(self, ws: WebSocketConnection) -> None:
        """``_converse``, while keepalive pings check that the server is still there."""
        ended: list[WatchError | ConnectionClosed] = []
        async with trio.open_nursery() as nursery:

            async def converse() -> None:
                try:
                    await self._converse(ws)
                except (WatchError, ConnectionClosed) as error:
                    ended.append(error)
                nursery.cancel_scope.cancel()

            nursery.start_soon(converse)
            if self.ping_interval > 0:
                nursery.start_soon(self._keep_alive, ws, ended, nursery.cancel_scope)
        if ended:
            raise ended[0]

    async def _keep_alive(
        self,
        ws: WebSocketConnection,
        ended: list[WatchError | ConnectionClosed],
        conversation: trio.CancelScope,
    ) -> None:
        while True:
            await trio.sleep(self.ping_interval)
            with trio.move_on_after(self.ping_timeout) as waited:
                try:
                    await ws.ping()
                except ConnectionClosed:
                    return  # the conversation reports it
            if waited.cancelled_caught:
                ended.append(
                    WatchError(
                        EXIT_CONNECTION,
                        f"connection to {self.url} lost "
                        f"(no answer to a keepalive ping within {self.ping_timeout:g} s)",
                    )
                )
                conversation.cancel()
                return

    async def _converse(self, ws: WebSocketConnection) -> None:
        hello = await self._receive(ws)
        if hello.get("type") != "hello":
            raise WatchError(EXIT_CONNECTION, f"{self.url} is not a ticker server: {hello}")
        start: dict[str, object] = {"type": "start", "interval": self.interval}
        if self.count is not None:
            start["count"] = self.count
        await ws.send_message(json.dumps(start))
        while True:
            message = await self._receive(ws)
            kind = message.get("type")
            if kind == "error" and self._fit is None:
                raise WatchError(EXIT_USAGE, str(message.get("message")))
            if kind == "started":
                self._started(message)
            elif self._fit is None or whole(message.get("id")) != self._schedule_id:
                continue  # not about our schedule (or before it started)
            elif kind == "tick":
                self._tick(self._fit, message)
            elif kind == "done":
                self._done(message)
                return

    async def _receive(self, ws: WebSocketConnection) -> dict[str, object]:
        text = await ws.get_message()
        if isinstance(text, bytes):
            raise WatchError(EXIT_CONNECTION, f"{self.url} sent a binary frame")
        try:
            message = json.loads(text)
        except ValueError:
            raise WatchError(EXIT_CONNECTION, f"{self.url} sent something not JSON") from None
        if not isinstance(message, dict):
            raise WatchError(EXIT_CONNECTION, f"{self.url} sent an unexpected message: {text}")
        if self.as_json:
            print(json.dumps(message, separators=(",", ":")), file=self.out, flush=True)
        return message

    def _invalid(self, message: dict[str, object], name: str) -> WatchError:
        """A server message without a usable ``name``: not what a ticker server sends."""
        text = json.dumps(message, separators=(",", ":"))
        kind = message.get("type")
        return WatchError(
            EXIT_CONNECTION, f"{self.url} sent a {kind} message with an invalid {name}: {text}"
        )

    def _started(self, message: dict[str, object]) -> None:
        now = trio.current_time()
        schedule_id = whole(message.get("id"))
        if schedule_id is None or schedule_id < 1:
            raise self._invalid(message, "id")
        interval = message.get("interval")
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not 0 < interval < math.inf
        ):
            raise self._invalid(message, "interval")
        self._schedule_id = schedule_id
        self._fit = LatenessFit(interval, started=now)
        if not self.as_json:
            total = "until Ctrl-C" if self.count is None else f"{self.count} ticks"
            line = f"watching {self.url}: every {self.interval:g} s, {total}"
            print(self.style.dim(line), file=self.out, flush=True)

    def _tick(self, fit: LatenessFit, message: dict[str, object]) -> None:
        now = trio.current_time()
        seq = whole(message.get("seq"))
        if seq is None or seq < 1:
            raise self._invalid(message, "seq")
        if seq <= self._last_seq:  # slots only go forward (docs/protocol.md)
            raise WatchError(
                EXIT_CONNECTION, f"{self.url} sent tick #{seq} after tick #{self._last_seq}"
            )
        lateness = fit.lateness(seq, now)
        skipped = seq - self._last_seq - 1
        self._last_seq = seq
        self.recorder.skipped += skipped
        self.recorder.record(lateness)
        if self.as_json:
            return
        clock = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        late = f"+{lateness * 1000:.1f} ms"
        late = self.style.good(late) if lateness < 0.005 else self.style.warn(late)
        line = f"{self.style.dim('#')}{seq:<6} {clock}  {late:>10}"
        if skipped:
            first, last = seq - skipped, seq - 1
            slots = f"#{first}" if skipped == 1 else f"#{first}-#{last}"
            line += "  " + self.style.bad(f"(skipped {skipped}: {slots})")
        print(line, file=self.out, flush=True)

    def _done(self, message: dict[str, object]) -> None:
        skipped = whole(message.get("skipped"))
        if skipped is None or skipped < 0:
            raise self._invalid(message, "skipped")
        self.recorder.skipped = skipped  # includes slots skipped after the last tick

    def print_summary(self) -> None:
        stream = self.err if self.as_json else self.out
        print(format_summary(self.recorder.summary()), file=stream, flush=True)


def whole(value: object) -> int | None:
    """``value`` if it is a JSON whole number (``true`` is not one), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def network_reason(error: BaseException) -> str:
    """The most specific reason inside a connect error: "Connection refused", not a wrapper's."""
    reason = str(error) or type(error).__name__
    while True:
        if isinstance(error, OSError) and error.strerror:
            return error.strerror
        if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        elif error.__cause__ is not None:
            error = error.__cause__
        else:
            return reason
        reason = str(error) or reason


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A positive number of seconds, or 0 for "off"."""
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass  # positive_float names the problem
    return positive_float(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def websocket_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not a ws:// or wss:// URL: {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ticker", description="Terminal client for a ticker websocket server."
    )
    parser.add_argument("--version", action="version", version=f"ticker {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    watch = commands.add_parser(
        "watch",
        help="start a schedule and print its ticks",
        description="Start a schedule on a ticker server and print each tick as it arrives.",
        epilog="Exit status: 0 done, 1 connection failed or lost, 2 usage error or "
        "rejected by the server, 130 interrupted (Ctrl-C).",
    )
    watch.add_argument(
        "url", nargs="?", default=DEFAULT_URL, type=websocket_url, help=f"(default {DEFAULT_URL})"
    )
    watch.add_argument("--interval", "-i", required=True, type=positive_float, metavar="SECONDS")
    watch.add_argument(
        "--count", "-n", type=positive_int, metavar="N", help="stop after N ticks (default: never)"
    )
    watch.add_argument(
        "--ping-interval",
        type=non_negative_float,
        default=PING_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between keepalive pings, 0 for none (default {PING_INTERVAL:g})",
    )
    watch.add_argument(
        "--ping-timeout",
        type=positive_float,
        default=PING_TIMEOUT,
        metavar="SECONDS",
        help=f"give up when a pong takes longer (default {PING_TIMEOUT:g})",
    )
    watch.add_argument(
        "--json",
        action="store_true",
        help="print every server message as JSON Lines on stdout; the summary goes to stderr",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 with a usage line on bad input
    watch = Watch(
        url=args.url,
        interval=args.interval,
        count=args.count,
        as_json=args.json,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
    )
    try:
        trio.run(watch.run)
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was listening
        watch.interrupted = True
    except BrokenPipeError:
        # The reader went away (`ticker watch ... | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_DONE
    if watch.failure is not None:
        if watch.failure.exit_code == EXIT_CONNECTION and watch.recorder.received:
            watch.print_summary()
        print(f"ticker: {watch.failure.message}", file=sys.stderr)
        return watch.failure.exit_code
    watch.print_summary()
    return EXIT_INTERRUPTED if watch.interrupted else EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
