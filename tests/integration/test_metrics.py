"""/metrics from the README's command: restarts start from zero, reloads keep totals."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
import trio

from ..support import (
    STEP_TIMEOUT,
    RawWebsocket,
    Server,
    http_get,
    metric_values,
    run_server_command,
)

pytestmark = pytest.mark.slow


async def scrape(server: Server) -> dict[str, float]:
    response = await http_get(server, "/metrics")
    assert response.status == 200
    return metric_values(response.body.decode())


async def wait_for_metric(server: Server, name: str, value: float) -> dict[str, float]:
    """Workers publish once a second: poll (bounded) until ``name`` reads ``value``.

    Bounded generously: on a busy machine a worker's second can stretch.
    """
    with trio.fail_after(STEP_TIMEOUT * 3):
        while (values := await scrape(server))[name] != value:  # noqa: ASYNC110 - a scrape
            await trio.sleep(0.1)
    return values


async def run_counted_schedule(server: Server, count: int) -> tuple[RawWebsocket, int]:
    """The client, still connected, and how many ticks ``done`` says were sent.

    That is ``count`` unless a busy machine made the server skip a slot, so the
    tests wait for the metrics to show what was sent, never a number assumed.
    """
    client = await RawWebsocket.connect(server)
    await client.receive_json()  # hello
    await client.send_text(json.dumps({"type": "start", "interval": 0.01, "count": count}))
    while (done := await client.receive_json())["type"] != "done":
        pass
    sent, skipped = done["sent"], done["skipped"]
    assert isinstance(sent, int)
    assert isinstance(skipped, int)
    assert sent > 0
    assert sent + skipped == count
    return client, sent


async def test_a_restarted_server_starts_from_zero_and_removes_the_old_folder(
    tmp_path: Path,
) -> None:
    env = {"TICKER_METRICS_DIR": str(tmp_path / "metrics")}
    async with run_server_command(tmp_path, env) as first:
        client, sent = await run_counted_schedule(first.server, 3)
        await wait_for_metric(first.server, "ticker_ticks_sent_total", sent)
        await client.stream.aclose()
    (old_folder,) = (tmp_path / "metrics").iterdir()

    async with run_server_command(tmp_path, env) as second:
        values = await scrape(second.server)
        assert values["ticker_ticks_sent_total"] == 0
        assert values["ticker_schedules_started_total"] == 0
        (new_folder,) = (tmp_path / "metrics").iterdir()  # the old one is gone
        assert new_folder != old_folder


async def test_a_reload_keeps_the_totals_and_drops_the_old_workers_connections(
    tmp_path: Path,
) -> None:
    env = {"TICKER_METRICS_DIR": str(tmp_path / "metrics")}
    async with run_server_command(tmp_path, env, ("--workers", "2")) as running:
        held, sent = await run_counted_schedule(running.server, 4)
        values = await wait_for_metric(running.server, "ticker_ticks_sent_total", sent)
        assert values["ticker_connections"] == 1

        # SIGHUP: Hypercorn replaces every worker; the open websocket gets 1001.
        running.process.send_signal(signal.SIGHUP)
        assert await held.close_code() == 1001
        await held.stream.aclose()
        with trio.fail_after(STEP_TIMEOUT * 3):
            while len(re.findall(r"Running on http", running.text)) < 4:  # noqa: ASYNC110
                await trio.sleep(0.1)

        values = await scrape(running.server)
        assert values["ticker_ticks_sent_total"] == sent  # a total of this server's life
        assert values["ticker_connections"] == 0
        client, sent_later = await run_counted_schedule(running.server, 2)
        await wait_for_metric(running.server, "ticker_ticks_sent_total", sent + sent_later)
        await client.stream.aclose()
