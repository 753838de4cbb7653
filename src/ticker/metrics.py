"""Prometheus metrics for ``/metrics``: one scrape reports the sum over a server's workers.

``hypercorn --workers N`` runs N processes that share nothing, so this uses
prometheus-client's multiprocess mode: every worker writes its values to small
memory-mapped files in one folder, and whichever worker answers a scrape merges
them. The folder belongs to one *server* (Hypercorn's main process, named by its
pid and start time), so a restarted server starts again from zero instead of
adding its predecessor's counts, and folders of servers that are gone are
removed when a new one starts. An operator who sets ``PROMETHEUS_MULTIPROC_DIR``
takes that job over: the folder is used as it is, and must be emptied between
runs (prometheus-client's own rule).

The tick path never calls into this module: it counts into a ``Tally`` (plain
numbers), which ``Metrics.publish`` adds to the metrics once a second and before
every scrape.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from .config import ConfigError
from .protocol import ErrorCode
from .server_tally import LATENESS_BUCKETS, Tally

log = logging.getLogger("ticker")

#: prometheus-client's own variable; when set, the folder is the operator's.
MULTIPROC_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"
_SERVER_FOLDER: Final = re.compile(r"server-(\d+)-(\d*)")  # pid and start time
_LIVE_GAUGE_FILE: Final = re.compile(r"gauge_livesum_(\d+)\.db")


def server_folder_name() -> str:
    """``server-<pid>-<start time>`` of the server's main process.

    Hypercorn starts its workers with multiprocessing's spawn, so a worker's
    parent process is the server; without one (``hypercorn.trio.serve`` in a
    test) the process itself is the server. The start time makes the name
    unique even when a pid is reused.
    """
    parent = multiprocessing.parent_process()
    pid = os.getpid() if parent is None or parent.pid is None else parent.pid
    return f"server-{pid}-{_start_time(pid)}"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux); "" where unknown."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 22; the command name (field 2) is in parentheses and may hold spaces.
    return status.rpartition(")")[2].split()[19]


def _alive(pid: int, start: str) -> bool:
    if start:
        return _start_time(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process, but a process
    return True


def metrics_folder(configured: str | None) -> Path:
    """The folder this process's metric files go into; created if need be.

    ``configured`` is ``TICKER_METRICS_DIR``: the folder that holds one
    sub-folder per server (default: ``ticker-metrics-<uid>`` in the temporary
    directory).

    Raises:
        ConfigError: the folder cannot be used, naming the variable to set.
    """
    operators = os.environ.get(MULTIPROC_VARIABLE)
    if operators:
        path = Path(operators)
        if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{MULTIPROC_VARIABLE} is not a writable folder: {operators!r}")
        return path
    if configured is None:
        base = Path(tempfile.gettempdir()) / f"ticker-metrics-{os.getuid()}"
    else:
        base = Path(configured)
    try:
        if configured is None:
            _make_private_folder(base)
        else:
            base.mkdir(parents=True, exist_ok=True)
        _remove_folders_of_servers_gone(base)
        folder = base / server_folder_name()
        folder.mkdir(exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"TICKER_METRICS_DIR: cannot use {str(base)!r} for metric files ({error.strerror})"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"TICKER_METRICS_DIR: {str(base)!r} is not writable")
    return folder


def _make_private_folder(base: Path) -> None:
    """The shared temporary directory is everyone's: refuse a folder someone else made."""
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o700)
    info = base.lstat()
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.getuid()
        or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise ConfigError(
            f"TICKER_METRICS_DIR: {str(base)!r} is not a private folder of this user; "
            "set the variable to one"
        )


def _remove_folders_of_servers_gone(base: Path) -> None:
    for entry in base.iterdir():
        match = _SERVER_FOLDER.fullmatch(entry.name)
        if match and entry.is_dir() and not _alive(int(match[1]), match[2]):
            # Two workers of a new server may both try: either may finish it.
            shutil.rmtree(entry, ignore_errors=True)


class Metrics:
    """This process's metrics, in multiprocess mode, written to ``folder``.

    Only one per process: prometheus-client keeps one file per process and
    metric type, so a second set of the same metrics would overwrite the first.
    Use ``open_metrics``.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # prometheus-client reads this variable twice: when it is imported, to
        # pick its storage class (switched here instead), and as each value is
        # made, for the folder. Values are all made here, so the variable is
        # set only meanwhile: child processes must not mistake it for an
        # operator's setting.
        if not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.MultiProcessValue()
        # (The switch stays: prometheus metrics made later in this process
        # need the variable set when they are made, as prometheus-client says.)
        previous = os.environ.get(MULTIPROC_VARIABLE)
        os.environ[MULTIPROC_VARIABLE] = str(folder)
        try:
            self._make_metrics()
        except OSError as error:  # the files cannot be made (full disk, odd mount)
            variable = MULTIPROC_VARIABLE if previous else "TICKER_METRICS_DIR"
            raise ConfigError(
                f"{variable}: cannot make metric files in {str(folder)!r} ({error.strerror})"
            ) from None
        finally:
            if previous is None:
                del os.environ[MULTIPROC_VARIABLE]
            else:
                os.environ[MULTIPROC_VARIABLE] = previous

    def _make_metrics(self) -> None:
        self.connections = Gauge(
            "ticker_connections",
            "Open websockets.",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.schedules_started = Counter(
            "ticker_schedules_started", "Schedules accepted (start commands).", registry=None
        )
        self.ticks_sent = Counter("ticker_ticks_sent", "Ticks sent.", registry=None)
        self.ticks_skipped = Counter(
            "ticker_ticks_skipped",
            "Slots skipped because a tick went out after later deadlines had passed "
            "(a client reading slowly, or a server running late).",
            registry=None,
        )
        self.protocol_errors = Counter(
            "ticker_protocol_errors",
            "Invalid frames answered with an error message, by error code.",
            ["code"],
            registry=None,
        )
        self._errors_by_code = {code: self.protocol_errors.labels(code.value) for code in ErrorCode}
        self.tick_lateness = Histogram(
            "ticker_tick_lateness_seconds",
            "How long after its deadline each tick started out.",
            buckets=LATENESS_BUCKETS,
            registry=None,
        )

    def publish(self, tally: Tally) -> None:
        """Add what ``tally`` counted (since its last ``take()``) to the metrics."""
        counts = tally.take()
        if counts.schedules_started:
            self.schedules_started.inc(counts.schedules_started)
        if counts.ticks_skipped:
            self.ticks_skipped.inc(counts.ticks_skipped)
        for code, n in counts.protocol_errors.items():
            if n:
                self._errors_by_code[code].inc(n)
        sent = counts.ticks_sent
        if sent:
            self.ticks_sent.inc(sent)
            # prometheus-client has no public "observe many at once"; a
            # Histogram stores one (non-cumulative) value per bucket and a
            # sum, which is exactly what observe() adds to. Checked against
            # observe() by tests/unit/test_metrics.py.
            buckets = self.tick_lateness._buckets
            for value, n in zip(buckets, counts.lateness_counts, strict=True):
                if n:
                    value.inc(n)
            self.tick_lateness._sum.inc(counts.lateness_sum)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The merged metrics of every worker, in the format ``accept`` asks for.

        Returns the body and its content type. Reads files: run it in a thread.
        """
        self._forget_dead_workers()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.folder))
        encoder, content_type = choose_encoder(accept or "")
        return encoder(registry), content_type

    def _forget_dead_workers(self) -> None:
        """Drop the connection gauge of workers that died with connections open.

        (prometheus-client's ``mark_process_dead``, minus its race: two scrapes
        at once may both try.) Their counters stay: they are totals of this
        server's life. A worker that exits normally has brought its gauge back
        to 0 already.
        """
        for entry in self.folder.iterdir():
            match = _LIVE_GAUGE_FILE.fullmatch(entry.name)
            if match and not _alive(int(match[1]), ""):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()


_metrics: Metrics | None = None


def open_metrics(configured_folder: str | None) -> Metrics:
    """This process's ``Metrics``, made by the first call (later calls share it).

    Raises:
        ConfigError: the metrics folder cannot be used.
    """
    global _metrics
    if _metrics is None:
        folder = metrics_folder(configured_folder)
        _metrics = Metrics(folder)
        log.debug("metric files in %s", folder)
    return _metrics
