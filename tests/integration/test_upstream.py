"""Stock Hypercorn still has the websocket bugs that ticker's fixes 6-9 patch.

Each test runs tools/hypercorn_repro.py in a fresh interpreter, which never
imports ticker, so Hypercorn there is unpatched. A test that fails means the
installed Hypercorn no longer has the bug: the fix can go (docs/upstream/README.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

pytestmark = pytest.mark.slow

REPRO = Path(__file__).resolve().parents[2] / "tools" / "hypercorn_repro.py"


async def reproduce(scenario: str) -> dict[str, Any]:
    """The JSON line that ``hypercorn_repro.py scenario`` prints, run by this interpreter."""
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, str(REPRO), scenario],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["scenario"] == scenario
    return result


async def test_stock_hypercorn_still_inflates_a_compressed_message_whole() -> None:
    """Stock Hypercorn still has unbounded permessage-deflate inflation (a 64 KiB message
    inflating to 64 MiB costs its whole size before the 4 KiB limit is checked); ticker's fix 6
    handles it. When this fails, upstream fixed it: check the release, raise the minimum
    version in pyproject.toml and delete fix 6.
    """
    result = await reproduce("deflate-unbounded")
    assert result["bug_present"] is True, json.dumps(result)


async def test_stock_hypercorn_still_never_ends_a_close_it_starts() -> None:
    """Stock Hypercorn still has a server-started close (1009) that never ends: the app is not
    told and TCP stays open while the client does not answer; ticker's fix 7 handles it.
    When this fails, upstream fixed it: check the release, raise the minimum version in
    pyproject.toml and delete fix 7.
    """
    result = await reproduce("close-never-ends")
    assert result["bug_present"] is True, json.dumps(result)


async def test_stock_hypercorn_still_ignores_missing_pongs() -> None:
    """Stock Hypercorn still has keepalive pings whose missing pongs nobody checks, so a dead
    peer is never noticed; ticker's fix 8 handles it. When this fails, upstream fixed it:
    check the release, raise the minimum version in pyproject.toml and delete fix 8.
    """
    result = await reproduce("pongs-ignored")
    assert result["bug_present"] is True, json.dumps(result)


async def test_stock_hypercorn_still_parses_a_flood_of_frames_without_a_checkpoint() -> None:
    """Stock Hypercorn still has a frame parser that handles a whole read of tiny frames in one
    task step, starving every other connection; ticker's fix 9 handles it. When this fails,
    upstream fixed it: check the release, raise the minimum version in pyproject.toml and
    delete fix 9.
    """
    result = await reproduce("frames-without-checkpoint")
    assert result["bug_present"] is True, json.dumps(result)
