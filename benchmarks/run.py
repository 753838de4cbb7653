"""Benchmark ticker side by side with its stack's floor and two peers.

    nox -s bench                       # the full run behind BENCHMARKS.md
    nox -s bench -- --servers ticker,floor --scenarios steady --duration 3

Each server runs alone, pinned to CPU 0; the load generators (``load.py``,
asyncio + websockets) are pinned to CPU 1. Server CPU comes from the OS
(/proc, the whole process tree); lateness is measured by the clients.

Clients make the browsers' compression offer (``permessage-deflate;
client_max_window_bits``) unless ``--offer none``; the idle scenario measures
both offers (``--idle-offers``). ``ticker-deflate`` is ticker with
``TICKER_COMPRESSION=on``; the peers run at their own defaults (all three
negotiate permessage-deflate when offered).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import select
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
SERVER_CPU, LOAD_CPU = 0, 1
READY_TIMEOUT = 120.0  # seconds for servers to listen and clients to connect
TICK = os.sysconf("SC_CLK_TCK")

SERVERS = ("ticker", "ticker-deflate", "floor", "starlette", "websockets")
SCENARIOS = ("steady", "herd", "idle", "reaction")
OFFERS = ("none", "browser")  # load.py's --offer: no extensions header, or the browsers'
# Set explicitly, so that the caller's environment cannot change what is measured.
SERVER_ENV = {
    "ticker": {"TICKER_COMPRESSION": "off"},
    "ticker-deflate": {"TICKER_COMPRESSION": "on"},
}


def server_command(name: str, port: int) -> list[str]:
    py = sys.executable
    bind = f"127.0.0.1:{port}"
    ticker = [py, "-m", "hypercorn", "ticker.app:app", "--worker-class", "trio", "-b", bind]
    return {
        "ticker": ticker,
        "ticker-deflate": ticker,  # with TICKER_COMPRESSION=on (SERVER_ENV)
        "floor": [py, "-m", "hypercorn", "bare_asgi:app", "--worker-class", "trio", "-b", bind],
        "starlette": [
            py, "-m", "uvicorn", "starlette_app:app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log",
        ],
        "websockets": [py, str(PEERS / "websockets_server.py"), str(port)],
    }[name]  # fmt: skip


def pinned(cpu: int) -> Any:
    if (os.cpu_count() or 1) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tree(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [pid] + [p for child in children for p in tree(int(child))]


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICK


def memory_kib(pid: int, field: str) -> int:
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(name: str, extra_env: dict[str, str] | None = None) -> Server:
    port = free_port()
    # The caller's PYTHONPATH stays after the peers: benchmarks/ab.py puts
    # another revision's ticker there.
    path = os.pathsep.join(filter(None, [str(PEERS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TICKER_MAX_CONNECTIONS": "20000"}
    env.update(SERVER_ENV.get(name, {}))
    env.update(extra_env or {})
    process = subprocess.Popen(
        server_command(name, port),
        env=env,
        cwd=PEERS,
        preexec_fn=pinned(SERVER_CPU),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.5)  # let a multi-process server finish starting its worker
            return Server(name, process, port)
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}") from None
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} did not listen within {READY_TIMEOUT} s")


def run_load(
    server: Server, scenario: str, clients: int, processes: int, offer: str, **options: float
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Run load.py in ``processes`` processes; results and the server's usage in the window."""
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    loads = []
    folder = Path(tempfile.mkdtemp(prefix="ticker-bench-"))
    result_files = [folder / f"load-{i}.json" for i in range(processes)]
    for share, result_file in zip(shares, result_files, strict=True):
        command = [sys.executable, str(HERE / "load.py"), "--url", server.url]
        command += ["--scenario", scenario, "--clients", str(share)]
        command += ["--offer", offer, "--result-file", str(result_file)]
        command += [f"--{key}={value}" for key, value in options.items()]
        loads.append(
            subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                preexec_fn=pinned(LOAD_CPU),
            )
        )
    for load in loads:
        assert load.stdout is not None
        ready, _, _ = select.select([load.stdout], [], [], READY_TIMEOUT)
        line = load.stdout.readline() if ready else b""
        if line.strip() != b"READY":
            for other in loads:
                other.kill()
            raise RuntimeError(f"load generator not ready against {server.name}: {line!r}")
    pid = server.process.pid
    usage = {"rss_kib": memory_kib(pid, "VmRSS"), "cpu_before": cpu_seconds(pid)}
    began = time.monotonic()
    for load in loads:
        assert load.stdin is not None
        load.stdin.write(b"GO\n")
        load.stdin.flush()
    results = []
    for load, result_file in zip(loads, result_files, strict=True):
        load.communicate(timeout=READY_TIMEOUT + float(options.get("duration", 0)))
        if load.returncode != 0:
            raise RuntimeError(f"load generator failed against {server.name}")
        results.append(json.loads(result_file.read_text()))
        result_file.unlink()
    folder.rmdir()
    usage["cpu"] = cpu_seconds(pid) - usage.pop("cpu_before")
    usage["wall"] = time.monotonic() - began
    usage["peak_rss_kib"] = memory_kib(pid, "VmHWM")
    return results, usage


def accepted(results: list[dict[str, Any]]) -> str | None:
    """The Sec-WebSocket-Extensions the server answered (each load process records one)."""
    answers = sorted({str(r["extensions"]) for r in results})
    return None if answers == ["None"] else " / ".join(answers)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else math.nan


def ticking(
    server: Server, args: argparse.Namespace, clients: int, interval: float
) -> dict[str, Any]:
    processes = max(1, min(args.load_processes, clients))
    results, usage = run_load(
        server, "steady", clients, processes, args.offer, interval=interval, duration=args.duration
    )
    lateness = [x for r in results for x in r["lateness"]]
    start_delays = [x for r in results for x in r["start_delays"]]
    received = sum(r["received"] for r in results)
    expected = clients * max(1, math.floor(args.duration / interval + 1e-9))
    return {
        "clients": clients,
        "interval": interval,
        "offer": args.offer,
        "extensions": accepted(results),
        "received": received,
        "expected": expected,
        "cpu_us_per_tick": 1e6 * usage["cpu"] / received if received else math.nan,
        "server_cpu_share": usage["cpu"] / usage["wall"],
        "load_cpu_share": sum(r["cpu_window"] for r in results) / usage["wall"] / processes,
        "p50_ms": 1e3 * percentile(lateness, 50),
        "p99_ms": 1e3 * percentile(lateness, 99),
        "max_ms": 1e3 * max(lateness, default=math.nan),
        "start_delay_p99_ms": 1e3 * percentile(start_delays, 99),
        "peak_rss_mib": usage["peak_rss_kib"] / 1024,
        "lateness_sample": lateness[:: max(1, len(lateness) // 5000)],
    }


def idle(server: Server, args: argparse.Namespace, offer: str) -> dict[str, Any]:
    before = memory_kib(server.process.pid, "VmRSS")
    processes = max(1, min(args.load_processes, args.idle_clients))
    results, usage = run_load(server, "idle", args.idle_clients, processes, offer)
    connected = sum(r["connected"] for r in results)
    return {
        "offer": offer,
        "extensions": accepted(results),
        "connections": connected,
        "rss_before_mib": before / 1024,
        "rss_connected_mib": usage["rss_kib"] / 1024,
        "kib_per_connection": (usage["rss_kib"] - before) / connected,
        "retried_handshakes": sum(r["retried_handshakes"] for r in results),
    }


def reaction(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    (result,), _ = run_load(server, "reaction", 1, 1, args.offer, trials=args.trials)
    return {
        "trials": args.trials,
        "offer": args.offer,
        "extensions": accepted([result]),
        "start_p50_ms": 1e3 * percentile(result["start"], 50),
        "start_p99_ms": 1e3 * percentile(result["start"], 99),
        "stop_p50_ms": 1e3 * percentile(result["stop"], 50),
        "stop_p99_ms": 1e3 * percentile(result["stop"], 99),
    }


def versions() -> dict[str, str]:
    found = {}
    for package in (
        "ticker", "hypercorn", "trio", "quart", "quart-trio", "wsproto",
        "uvicorn", "starlette", "websockets", "uvloop",
    ):  # fmt: skip
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
        "pinned": (os.cpu_count() or 1) >= 2,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--clients", type=int, default=200, help="steady: clients")
    parser.add_argument("--interval", type=float, default=0.05, help="steady: seconds")
    parser.add_argument("--duration", type=float, default=10.0, help="steady, herd: seconds")
    parser.add_argument("--herd-clients", type=int, default=1000)
    parser.add_argument("--herd-interval", type=float, default=1.0)
    parser.add_argument("--idle-clients", type=int, default=5000)
    parser.add_argument("--trials", type=int, default=1000, help="reaction: start/stop pairs")
    parser.add_argument(
        "--offer", choices=OFFERS, default="browser", help="steady, herd, reaction: client offer"
    )
    parser.add_argument(
        "--idle-offers", default=",".join(OFFERS), help="idle: each offer on a fresh server"
    )
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--label", default="run", help="names the output files")
    args = parser.parse_args(argv)
    servers = args.servers.split(",")
    scenarios = args.scenarios.split(",")
    for name in servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    idle_offers = args.idle_offers.split(",")
    for offer in idle_offers:
        if offer not in OFFERS:
            parser.error(f"unknown offer {offer!r}; choose from {', '.join(OFFERS)}")

    report: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "machine": machine(),
        "versions": versions(),
        "offer": args.offer,
        "results": {},
    }
    runs = [
        (scenario, offer)
        for scenario in scenarios
        for offer in (idle_offers if scenario == "idle" else [args.offer])
    ]
    for name in servers:
        results: dict[str, Any] = {}
        for scenario, offer in runs:
            server = start_server(name)  # a fresh server per scenario and offer: no carry-over
            try:
                print(f"{name}: {scenario}, offer {offer}…", file=sys.stderr, flush=True)
                if scenario == "steady":
                    results[scenario] = ticking(server, args, args.clients, args.interval)
                elif scenario == "herd":
                    results[scenario] = ticking(server, args, args.herd_clients, args.herd_interval)
                elif scenario == "idle":  # one result per offer
                    results.setdefault(scenario, {})[offer] = idle(server, args, offer)
                else:
                    results[scenario] = reaction(server, args)
            finally:
                server.stop()
        report["results"][name] = results

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.label}.json").write_text(json.dumps(report, indent=1))
    markdown = render(report)
    (args.out / f"{args.label}.md").write_text(markdown)
    plot(report, args.out / f"{args.label}.png")
    print(markdown)
    return report


def render(report: dict[str, Any]) -> str:
    results = report["results"]
    lines = [f"Command: `{report['command']}`  ", f"Machine: {report['machine']}  "]
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    for scenario in ("steady", "herd"):
        rows = {name: r[scenario] for name, r in results.items() if scenario in r}
        if not rows:
            continue
        first = next(iter(rows.values()))
        lines += [
            "",
            f"### {scenario}: {first['clients']} clients x {first['interval']} s, "
            f"{report['offer']} offer",
            "",
            "| server | CPU µs/tick | p50 ms | p99 ms | max ms | received/expected | "
            "start delay p99 ms | peak RSS MiB | server CPU | load CPU | accepted |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in rows.items():
            lines.append(
                f"| {name} | {r['cpu_us_per_tick']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                f"| {r['max_ms']:.2f} | {r['received']}/{r['expected']} "
                f"| {r['start_delay_p99_ms']:.1f} | {r['peak_rss_mib']:.1f} "
                f"| {r['server_cpu_share']:.0%} | {r['load_cpu_share']:.0%} "
                f"| {r['extensions'] or '—'} |"
            )
    idle_rows = {name: r["idle"] for name, r in results.items() if "idle" in r}
    if idle_rows:
        lines += ["", "### idle: memory per open connection", ""]
        lines += [
            "| server | offer | connections | RSS before MiB | RSS connected MiB "
            "| KiB/connection | retried handshakes | accepted |"
        ]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for name, by_offer in idle_rows.items():
            for offer, r in by_offer.items():
                lines.append(
                    f"| {name} | {offer} | {r['connections']} | {r['rss_before_mib']:.1f} "
                    f"| {r['rss_connected_mib']:.1f} | {r['kib_per_connection']:.1f} "
                    f"| {r['retried_handshakes']} | {r['extensions'] or '—'} |"
                )
        if all(set(OFFERS) <= set(by_offer) for by_offer in idle_rows.values()):
            lines += ["", "### idle: KiB per connection, no offer versus the browsers' offer", ""]
            lines += ["| server | no offer | browser offer | browser ÷ none | accepted |"]
            lines += ["|---|---|---|---|---|"]
            for name, by_offer in idle_rows.items():
                none, browser = by_offer["none"], by_offer["browser"]
                ratio = browser["kib_per_connection"] / none["kib_per_connection"]
                lines.append(
                    f"| {name} | {none['kib_per_connection']:.1f} "
                    f"| {browser['kib_per_connection']:.1f} | {ratio:.2f} "
                    f"| {browser['extensions'] or '—'} |"
                )
    reaction_rows = {name: r["reaction"] for name, r in results.items() if "reaction" in r}
    if reaction_rows:
        lines += ["", "### reaction: start → started, stop → stopped", ""]
        lines += ["| server | trials | start p50 ms | start p99 ms | stop p50 ms | stop p99 ms |"]
        lines += ["|---|---|---|---|---|---|"]
        for name, r in reaction_rows.items():
            lines.append(
                f"| {name} | {r['trials']} | {r['start_p50_ms']:.3f} | {r['start_p99_ms']:.3f} "
                f"| {r['stop_p50_ms']:.3f} | {r['stop_p99_ms']:.3f} |"
            )
    if "ticker" in results:
        offer = report["offer"]
        lines += ["", "### ticker ÷ each server (below 1.0: ticker is better)", ""]
        lines += [
            f"| vs | CPU/tick (steady) | p99 (steady) | KiB/idle connection ({offer} offer) |",
            "|---|---|---|---|",
        ]

        def value(r: dict[str, Any], scenario: str, key: str) -> float:
            found = r[scenario][offer] if scenario == "idle" else r[scenario]
            return float(found[key])

        mine = results["ticker"]
        for name, theirs in results.items():
            if name == "ticker":
                continue
            cells = []
            for scenario, key in (
                ("steady", "cpu_us_per_tick"), ("steady", "p99_ms"), ("idle", "kib_per_connection")
            ):  # fmt: skip
                try:
                    cells.append(f"{value(mine, scenario, key) / value(theirs, scenario, key):.2f}")
                except (KeyError, ZeroDivisionError):
                    cells.append("n/a")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    scenarios = [s for s in ("steady", "herd") if any(s in r for r in report["results"].values())]
    if not scenarios:
        return
    figure, axes = plt.subplots(1, len(scenarios), figsize=(6 * len(scenarios), 4), squeeze=False)
    for axis, scenario in zip(axes[0], scenarios, strict=True):
        for name, results in report["results"].items():
            if scenario not in results:
                continue
            values = sorted(1e3 * x for x in results[scenario]["lateness_sample"])
            if values:
                fractions = [(i + 1) / len(values) for i in range(len(values))]
                axis.plot(values, fractions, label=name)
        first = next(r[scenario] for r in report["results"].values() if scenario in r)
        axis.set_title(f"{scenario}: {first['clients']} clients x {first['interval']} s")
        axis.set_xlabel("lateness (ms)")
        axis.set_ylabel("fraction of ticks")
        axis.set_xscale("symlog", linthresh=1)
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
