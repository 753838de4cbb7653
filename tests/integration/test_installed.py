"""The package as a user gets it: the wheel, and the real command run from an empty folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

import ticker

from ..support import HYPERCORN, STEP_TIMEOUT, http_get, run_server_command

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
STATIC_FILES = sorted(
    p.relative_to(PROJECT).as_posix() for p in (PROJECT / "static").rglob("*") if p.is_file()
)


def test_wheel_carries_the_static_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(PROJECT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("ticker-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "static/index.html" in STATIC_FILES
    for name in STATIC_FILES:
        assert f"ticker/{name}" in names
    assert "ticker/py.typed" in names


async def test_served_from_an_empty_folder(tmp_path: Path) -> None:
    async with run_server_command(tmp_path) as running:
        server = running.server
        page = await http_get(server, "/")
        assert page.status == 200
        assert b"<title>ticker" in page.body
        async with open_websocket_url(server.ws_url) as ws:
            with trio.fail_after(STEP_TIMEOUT):
                hello = json.loads(await ws.get_message())
                assert hello["version"] == ticker.__version__
                await ws.send_message('{"interval":0.01,"count":3}')
                kinds = [json.loads(await ws.get_message())["type"] for _ in range(5)]
            assert kinds == ["started", "tick", "tick", "tick", "done"]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "TICKER_MAX_INTERVAL",
            "0.001",
            "TICKER_MAX_INTERVAL (0.001) must not be smaller than TICKER_MIN_INTERVAL (0.01)",
        ),
        (
            "TICKER_METRICS_DIR",
            "/dev/null/metrics",
            "TICKER_METRICS_DIR: cannot use '/dev/null/metrics' for metric files (Not a directory)",
        ),
    ],
)
def test_bad_configuration_stops_start_up_with_one_line(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    result = subprocess.run(
        [*HYPERCORN, "--bind", "127.0.0.1:0"],
        cwd=tmp_path,
        env={**os.environ, variable: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Hypercorn 0.18's parent process exits 0 even when its worker fails
    # (run.py overwrites the worker's exit code), so the message is the contract.
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"ticker: configuration error: {message}"]
