"""A tiny run of the benchmark harness, so it cannot rot. It checks that it ran, not timings."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]


def test_harness_runs_every_scenario_against_ticker_and_the_floor(tmp_path: Path) -> None:
    command = [sys.executable, str(PROJECT / "benchmarks" / "run.py")]
    scenarios = "steady,herd,herd-anchored,idle,reaction,capacity"
    command += ["--servers", "ticker,floor", "--scenarios", scenarios]
    command += ["--clients", "3", "--interval", "0.05", "--duration", "1"]
    command += ["--herd-clients", "4", "--herd-interval", "0.5", "--idle-clients", "5"]
    command += ["--trials", "5", "--load-processes", "1", "--out", str(tmp_path)]
    command += ["--capacity-interval", "0.1", "--capacity-duration", "1", "--capacity-max", "8"]
    command += ["--capacity-p99", "1000", "--capacity-offers", "none"]
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
        search = results["capacity"]["none"]
        assert search["steps"], search
        assert search["steps"][0]["expected"] == search["steps"][0]["clients"] * 10
        assert search["capacity"] in (0, 8)
    # Stock Hypercorn always accepts the browsers' offer; ticker declines it by default.
    # The anchored herd is ticker's alone (the floor speaks only the unanchored subset).
    anchored = report["results"]["ticker"]["herd-anchored"]
    assert (anchored["anchor"], anchored["expected"]) == (0.0, 4 * 2)
    assert anchored["received"] > 0
    assert "herd-anchored" not in report["results"]["floor"]
    assert "permessage-deflate" in report["results"]["floor"]["idle"]["browser"]["extensions"]
    assert report["results"]["ticker"]["idle"]["browser"]["extensions"] is None
    table = (tmp_path / "tiny.md").read_text()
    assert "| ticker |" in table
    assert "| floor |" in table
    assert "### capacity" in table


def test_the_websockets_trio_peer_sends_every_tick(tmp_path: Path) -> None:
    command = [sys.executable, str(PROJECT / "benchmarks" / "run.py")]
    command += ["--servers", "websockets-trio", "--scenarios", "steady,reaction"]
    command += ["--clients", "3", "--interval", "0.05", "--duration", "1", "--trials", "5"]
    command += ["--load-processes", "1", "--out", str(tmp_path), "--label", "trio-peer"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    results = json.loads((tmp_path / "trio-peer.json").read_text())["results"]["websockets-trio"]
    assert results["steady"]["expected"] == 3 * 20
    # Every slot, unless a busy machine made the peer skip some (as it must).
    assert 0 < results["steady"]["received"] <= 3 * 20
    assert results["reaction"]["trials"] == 5


def load_run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", PROJECT / "benchmarks" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("carried", "cpu_per_client"), [(4300, 150e-6), (900, 300e-6)])
def test_the_capacity_search_brackets_the_largest_carried_n(
    monkeypatch: pytest.MonkeyPatch, carried: int, cpu_per_client: float
) -> None:
    run = load_run_module()

    class FakeServer:
        def stop(self) -> None:
            pass

    def fake_step(server: object, args: object, n: int, interval: float, **_: object) -> Any:
        ok = n <= carried
        return {
            "clients": n,
            "expected": 10 * n,
            "received": 10 * n if ok else 10 * n - 1,  # a skip, beyond the capacity
            "p99_ms": 5.0,
            "server_cpu_share": min(1.0, n * cpu_per_client),
            "extensions": None,
        }

    monkeypatch.setattr(run, "start_server", lambda name: FakeServer())
    monkeypatch.setattr(run, "ticking", fake_step)
    args = argparse.Namespace(
        capacity_interval=1.0, capacity_duration=10.0, capacity_p99=50.0, capacity_start=1000,
        capacity_max=16000, capacity_steps=8, capacity_resolution=0.1, capacity_stagger=None,
    )  # fmt: skip
    result = run.capacity("fake", args, "none", run.CapacityClock(1e6, 1), None)
    assert result["capacity"] <= carried < result["first_bad"]
    assert result["first_bad"] - result["capacity"] <= max(50, 0.1 * result["capacity"])
    assert len(result["steps"]) <= 8
    assert result["failed_by"] == ["skips"]


def test_profile_samples_fall_into_buckets() -> None:
    run = load_run_module()
    root = "unrolled_run (trio/_core/_run.py:2772)"
    raw = "\n".join(
        [
            f"{root};Session._tick (ticker/session.py:160);sleep_until (trio/_timeouts.py:99) 4",
            f"{root};Session._tick (ticker/session.py:163);"
            "sender_for.<locals>.send_text (ticker/_hypercorn_fixes/text_frames.py:56);"
            "protocol_send (ticker/_hypercorn_fixes/writes.py:124) 3",
            f"{root};Session._tick (ticker/session.py:163);encode_tick (ticker/protocol.py:320) 2",
            f"{root};TCPServer._read_data (hypercorn/trio/tcp_server.py:105);"
            "WSConnection.receive_data (wsproto/__init__.py:80);"
            "FrameProtocol._parse_more_gen (wsproto/frame_protocol.py:500) 1",
            f"{root};Deadlines.expire (trio/_core/_run.py:313) 1",
            root + " 1",
            "run (trio/_core/_run.py:2535);"
            "EpollIOManager.get_events (trio/_core/_io_epoll.py:243) 5",
        ]
    )
    summary = run.summarise_profile(raw)
    assert summary["busy_samples"] == 12
    assert summary["epoll_wait_samples"] == 5
    shares = {name: round(share * 12) for name, share in summary["shares"].items()}
    assert shares == {
        "waiting": 5, "sending": 3, "session._tick": 2, "parsing": 1, "scheduler": 1, "other": 0
    }  # fmt: skip
