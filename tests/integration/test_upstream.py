"""Stock Hypercorn still has the bugs that ticker's Hypercorn fixes patch, and each
upstream report's own patch removes its bug.

Each test runs tools/hypercorn_repro.py in a fresh interpreter, which never
imports ticker, so Hypercorn there is either the installed one, unpatched, or a
temporary copy of it with the unified diff from a report's "## Patch" section
applied (put first on ``PYTHONPATH``). What a failing test means, and what to do
about it, is in docs/upstream/README.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

import hypercorn
import pytest
import trio

pytestmark = pytest.mark.slow

ROOT: Final = Path(__file__).resolve().parents[2]
REPRO: Final = ROOT / "tools" / "hypercorn_repro.py"
REPORTS_DIR: Final = ROOT / "docs" / "upstream"
#: Every report in docs/upstream/ and the scenarios that reproduce its bug.
REPORTS: Final = {
    "websocket-deflate-unbounded": ("deflate-unbounded",),
    "websocket-server-close-never-ends": ("close-never-ends",),
    "websocket-pongs-ignored": ("pongs-ignored",),
    "websocket-frames-without-checkpoint": ("frames-without-checkpoint",),
    "trio-disconnect-into-full-queue": ("disconnect-into-full-queue", "full-queue-outlives-app"),
    "write-without-deadline": ("stalled-reader-pins-writer", "h2-window-never-granted"),
    "trio-connection-bookkeeping-cancelled": ("bookkeeping-cancelled",),
    "graceful-shutdown-websockets-not-told": ("shutdown-not-told",),
    "workers-killed-mid-shutdown": ("workers-sigterm-main", "workers-sigterm-group"),
    "refused-websocket-handshake-never-closes": (
        "refused-handshake-stays-open",
        "h2-refused-stream-stays-busy",
    ),
    "http2-data-after-stream-closed": ("h2-data-after-close",),
    "proxy-fix-websocket-scheme": ("proxy-fix-websocket-scheme",),
    "http2-writers-stuck-after-close": ("h2-writers-stuck-after-close",),
    "run-worker-exit-status-lost": ("worker-exit-status-lost",),
}
CASES: Final = [
    pytest.param(report, scenario, id=scenario)
    for report, scenarios in REPORTS.items()
    for scenario in scenarios
]
#: The diff block of a report's "## Patch" section.
PATCH_BLOCK: Final = re.compile(r"^## Patch\n.*?^```diff\n(?P<diff>.*?)^```$", re.M | re.S)
#: A scenario runs its own bounded steps; this only stops one that hangs regardless.
SCENARIO_LIMIT: Final = 120.0


async def reproduce(scenario: str, pythonpath: Path | None = None) -> dict[str, Any]:
    """The JSON line that ``hypercorn_repro.py scenario`` prints, run by this interpreter.

    With ``pythonpath``, the Hypercorn found there is imported instead of the installed one.
    """
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    with trio.fail_after(SCENARIO_LIMIT):
        done = await trio.run_process(
            [sys.executable, str(REPRO), scenario],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["scenario"] == scenario
    return result


def patch_of(report: str) -> str:
    """The unified diff in the report's "## Patch" section (paths ``a/src/hypercorn/...``)."""
    text = (REPORTS_DIR / f"{report}.md").read_text()
    found = PATCH_BLOCK.search(text)
    assert found is not None, f"docs/upstream/{report}.md has no ```diff block under ## Patch"
    return found["diff"]


def apply_patch(report: str, destination: Path) -> Path:
    """A copy of the installed Hypercorn with the report's patch applied; the directory to
    put on ``PYTHONPATH``. Fails the test, saying why, if the patch no longer applies."""
    installed = Path(hypercorn.__file__).parent
    copy = destination / "hypercorn"
    shutil.copytree(installed, copy, ignore=shutil.ignore_patterns("__pycache__"))
    diff = patch_of(report)
    for check in (True, False):  # dry run first: a patch applies whole or not at all
        done = subprocess.run(
            ["patch", "-p3", "--batch", "--forward", "-d", str(copy), *(["--dry-run"] * check)],
            input=diff,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"the patch in docs/upstream/{report}.md no longer applies to the installed"
                f" Hypercorn {version('hypercorn')}; refresh it against that version's source"
                f" (docs/upstream/README.md):\n{done.stdout}{done.stderr}"
            )
    imported = subprocess.run(
        [sys.executable, "-c", "import hypercorn; print(hypercorn.__file__)"],
        env={**os.environ, "PYTHONPATH": str(destination)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == str(copy / "__init__.py"), imported.stdout
    return destination


@pytest.fixture(scope="module")
def patched_hypercorn(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``patched_hypercorn(report)``: where that report's patched Hypercorn is (made once)."""
    made: dict[str, Path] = {}

    def get(report: str) -> Path:
        if report not in made:
            made[report] = apply_patch(report, tmp_path_factory.mktemp(report))
        return made[report]

    return get


def test_every_report_is_checked() -> None:
    """Every report in docs/upstream/ has its scenarios here, so none goes unchecked."""
    on_disk = {path.stem for path in REPORTS_DIR.glob("*.md")} - {"README"}
    assert on_disk == set(REPORTS)


@pytest.mark.parametrize(("report", "scenario"), CASES)
async def test_stock_hypercorn_still_has_the_bug(report: str, scenario: str) -> None:
    """The installed Hypercorn, unpatched, still shows the bug the report describes.

    When this fails, upstream fixed it: check the release notes, raise the minimum
    version in pyproject.toml, and delete the fix, its scenario, this case and the report.
    """
    result = await reproduce(scenario)
    assert result["bug_present"] is True, f"{report}: {json.dumps(result)}"


@pytest.mark.parametrize(("report", "scenario"), CASES)
async def test_the_reports_patch_removes_the_bug(
    report: str, scenario: str, patched_hypercorn: Callable[[str], Path]
) -> None:
    """With the report's own patch applied to a copy of the installed Hypercorn, the
    reproduction no longer shows the bug: the patch we offer upstream is real and enough."""
    result = await reproduce(scenario, patched_hypercorn(report))
    assert result["bug_present"] is False, f"{report}: {json.dumps(result)}"
