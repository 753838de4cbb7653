"""Metrics in prometheus-client's multiprocess mode: publishing, merging, and the folder."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest, values
from prometheus_client.parser import text_string_to_metric_families

from ticker.config import ConfigError
from ticker.metrics import Metrics, metrics_folder, server_folder_name
from ticker.protocol import ErrorCode
from ticker.server_tally import LATENESS_BUCKETS, Tally

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str, prefix: str = "ticker_") -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(prefix)
    }


@pytest.fixture
def fresh_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Metrics]:
    """A Metrics with its own files, apart from the process's shared one."""
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    yield Metrics(tmp_path)
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # not left for child processes


LATENESSES = [0.0, 0.00005, 0.0001, 0.0003, 0.0009, 0.004, 0.004, 0.07, 0.6, 1.0, 3.0]


def test_publishing_a_tally_equals_observing_each_tick(
    fresh_metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    tally = Tally()
    for lateness in LATENESSES:
        tally.tick_sent(lateness, skipped=1)
    fresh_metrics.publish(tally)
    published = samples(fresh_metrics.render(None)[0].decode())

    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    registry = CollectorRegistry()
    reference = Histogram(
        "ticker_tick_lateness_seconds", "", buckets=LATENESS_BUCKETS, registry=registry
    )
    for lateness in LATENESSES:
        reference.observe(lateness)
    expected = samples(generate_latest(registry).decode(), "ticker_tick_lateness_seconds_")
    del expected[("ticker_tick_lateness_seconds_created", ())]  # not kept in multiprocess mode

    lateness_samples = {k: v for k, v in published.items() if k[0] in {n for n, _ in expected}}
    assert lateness_samples == pytest.approx(expected)
    assert published[("ticker_ticks_sent_total", ())] == len(LATENESSES)
    assert published[("ticker_ticks_skipped_total", ())] == len(LATENESSES)


def test_every_error_code_is_reported_also_at_zero(fresh_metrics: Metrics) -> None:
    tally = Tally()
    tally.protocol_errors[ErrorCode.INVALID_COUNT] += 2
    tally.schedules_started += 3
    fresh_metrics.publish(tally)
    fresh_metrics.publish(tally)  # nothing new: nothing added twice
    published = samples(fresh_metrics.render(None)[0].decode())
    errors = {
        dict(labels)["code"]: value
        for (name, labels), value in published.items()
        if name == "ticker_protocol_errors_total"
    }
    assert errors == {
        code.value: (2.0 if code is ErrorCode.INVALID_COUNT else 0.0) for code in ErrorCode
    }
    assert published[("ticker_schedules_started_total", ())] == 3


def test_render_answers_openmetrics_when_asked(fresh_metrics: Metrics) -> None:
    body, content_type = fresh_metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    body, content_type = fresh_metrics.render(None)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"# TYPE ticker_tick_lateness_seconds histogram" in body


WORKER = """
import os, sys, time
from pathlib import Path
from ticker.metrics import Metrics
from ticker.server_tally import Tally
metrics = Metrics(Path(sys.argv[1]))
tally = Tally()
for _ in range(int(sys.argv[2])):
    tally.tick_sent(0.001, skipped=0)
metrics.publish(tally)
metrics.connections.inc(int(sys.argv[2]))  # and dies with them open
"""


def test_a_scrape_sums_every_process_and_forgets_connections_of_dead_ones(
    fresh_metrics: Metrics,
) -> None:
    for ticks in (3, 5):
        subprocess.run(
            [sys.executable, "-c", WORKER, str(fresh_metrics.folder), str(ticks)], check=True
        )
    fresh_metrics.connections.inc(7)  # this process, alive
    published = samples(fresh_metrics.render(None)[0].decode())
    assert published[("ticker_ticks_sent_total", ())] == 8  # totals outlive their workers
    assert published[("ticker_tick_lateness_seconds_count", ())] == 8
    assert published[("ticker_connections", ())] == 7  # the dead workers' 3 and 5 are gone


def _report_server_folder_name(queue: multiprocessing.Queue[str]) -> None:
    queue.put(server_folder_name())


def test_a_spawned_worker_names_the_folder_after_its_parent_the_server() -> None:
    context = multiprocessing.get_context("spawn")  # how Hypercorn starts workers
    queue: multiprocessing.Queue[str] = context.Queue()
    worker = context.Process(target=_report_server_folder_name, args=(queue,))
    worker.start()
    name = queue.get(timeout=30)
    worker.join(timeout=30)
    assert name == server_folder_name()
    assert name.startswith(f"server-{os.getpid()}-")


def test_folders_of_servers_that_are_gone_are_removed_live_ones_kept(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = tmp_path / f"server-{gone.stdout.strip()}-1"
    restarted = tmp_path / f"server-{os.getpid()}-1"  # our pid, another start time: reused
    alive = tmp_path / server_folder_name()
    unrelated = [tmp_path / "notes", tmp_path / "2024-06"]  # an operator's, whatever they are
    for folder in (dead, restarted, alive, *unrelated):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"")

    assert metrics_folder(str(tmp_path)) == alive
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "notes", "2024-06"])
    assert (alive / "counter_1.db").exists()


def test_the_default_folder_is_private_to_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    folder = metrics_folder(None)
    base = tmp_path / f"ticker-metrics-{os.getuid()}"
    assert folder.parent == base
    assert base.stat().st_mode & 0o777 == 0o700

    base.chmod(0o777)  # someone made it writable for everyone: refuse it
    with pytest.raises(ConfigError, match=r"^TICKER_METRICS_DIR: .* is not a private folder"):
        metrics_folder(None)


def test_an_unusable_metrics_dir_names_the_variable(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ConfigError, match=r"^TICKER_METRICS_DIR: cannot use '.*file/sub'"):
        metrics_folder(str(a_file / "sub"))
    with pytest.raises(ConfigError, match=r"^TICKER_METRICS_DIR: cannot use '.*file'"):
        metrics_folder(str(a_file))


def test_the_operators_prometheus_multiproc_dir_is_used_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "counter_1.db").write_bytes(b"")
    assert metrics_folder("/ignored") == tmp_path
    assert (tmp_path / "counter_1.db").exists()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"^PROMETHEUS_MULTIPROC_DIR is not a writable folder"):
        metrics_folder(None)
