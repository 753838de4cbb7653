"""A tiny run of the benchmark harness, so it cannot rot. It checks that it ran, not timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]


def test_harness_runs_every_scenario_against_ticker_and_the_floor(tmp_path: Path) -> None:
    command = [sys.executable, str(PROJECT / "benchmarks" / "run.py")]
    command += ["--servers", "ticker,floor", "--scenarios", "steady,herd,idle,reaction"]
    command += ["--clients", "3", "--interval", "0.05", "--duration", "1"]
    command += ["--herd-clients", "4", "--herd-interval", "0.5", "--idle-clients", "5"]
    command += ["--trials", "5", "--load-processes", "1", "--out", str(tmp_path)]
    command += ["--label", "tiny"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    report = json.loads((tmp_path / "tiny.json").read_text())
    assert set(report["results"]) == {"ticker", "floor"}
    for results in report["results"].values():
        assert results["steady"]["received"] > 0
        assert results["steady"]["expected"] == 3 * 20
        assert results["herd"]["expected"] == 4 * 2
        for offer in ("none", "browser"):  # the idle scenario measures both offers
            assert results["idle"][offer]["connections"] == 5
            assert results["idle"][offer]["offer"] == offer
        assert results["idle"]["none"]["extensions"] is None
        assert results["steady"]["offer"] == "browser"  # the browsers' offer by default
        assert results["reaction"]["trials"] == 5
    # Stock Hypercorn always accepts the browsers' offer; ticker declines it by default.
    assert "permessage-deflate" in report["results"]["floor"]["idle"]["browser"]["extensions"]
    assert report["results"]["ticker"]["idle"]["browser"]["extensions"] is None
    table = (tmp_path / "tiny.md").read_text()
    assert "| ticker |" in table
    assert "| floor |" in table
