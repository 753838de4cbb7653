"""Benchmark ticker side by side with its stack's floor and three peers.

    nox -s bench                       # the full run behind BENCHMARKS.md
    nox -s bench -- --servers ticker,floor --scenarios steady --duration 3
    python benchmarks/run.py --scenarios capacity --capacity-budget 900
    python benchmarks/run.py --servers ticker --scenarios steady --profile   # needs py-spy

Each server runs alone, pinned to CPU 0; the load generators (``load.py``,
asyncio + websockets) are pinned to CPU 1. Server CPU comes from the OS
(/proc, the whole process tree); lateness is measured by the clients.

Clients make the browsers' compression offer (``permessage-deflate;
client_max_window_bits``) unless ``--offer none``; the idle scenario measures
both offers (``--idle-offers``). ``ticker-deflate`` is ticker with
``TICKER_COMPRESSION=on``; the peers run at their own defaults (all of them
negotiate permessage-deflate when offered). ``websockets`` is the websockets
library's asyncio server, ``websockets-trio`` its native Trio one (websockets >= 17).

``capacity`` searches, per server and per offer (``--capacity-offers``), the
largest N of 1 Hz clients one worker carries with p99 lateness within 50 ms and
no slot skipped; see ``capacity()`` for the search and its time budget.
``--profile`` records ticker's worker with py-spy during the steady scenario and
sorts its busy samples into buckets (``PROFILE_RULES``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import select
import shutil
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

SERVERS = ("ticker", "ticker-deflate", "floor", "starlette", "websockets", "websockets-trio")
SCENARIOS = ("steady", "herd", "herd-anchored", "idle", "reaction", "capacity")
#: Servers that speak ticker's whole protocol, anchors included (herd-anchored).
ANCHORING = ("ticker", "ticker-deflate")
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
        "websockets-trio": [py, str(PEERS / "websockets_trio_server.py"), str(port)],
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
    server: Server,
    scenario: str,
    clients: int,
    processes: int,
    offer: str,
    at_go: Any = None,
    **options: float,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Run load.py in ``processes`` processes; results and the server's usage in the window.

    ``at_go``, if given, is called as the window opens (every client connected).
    """
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
    if at_go is not None:
        at_go()
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
    server: Server,
    args: argparse.Namespace,
    clients: int,
    interval: float,
    *,
    duration: float | None = None,
    offer: str | None = None,
    stagger: float = 0.0,
    anchor: float | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    duration = args.duration if duration is None else duration
    offer = args.offer if offer is None else offer
    processes = max(1, min(args.load_processes, clients))
    options: dict[str, float] = {"interval": interval, "duration": duration}
    if stagger:
        options["stagger"] = stagger
    if anchor is not None:
        options["anchor"] = anchor
    recorder = Recorder(server, profile, duration) if profile is not None else None
    results, usage = run_load(
        server,
        "steady",
        clients,
        processes,
        offer,
        at_go=recorder.start if recorder is not None else None,
        **options,
    )
    lateness = [x for r in results for x in r["lateness"]]
    start_delays = [x for r in results for x in r["start_delays"]]
    received = sum(r["received"] for r in results)
    expected = clients * max(1, math.floor(duration / interval + 1e-9))
    load_cpu = sum(r["cpu_window"] for r in results) / usage["wall"]
    found = {
        "clients": clients,
        "interval": interval,
        "duration": duration,
        "stagger": stagger,
        "anchor": anchor,
        "offer": offer,
        "extensions": accepted(results),
        "received": received,
        "expected": expected,
        "cpu_us_per_tick": 1e6 * usage["cpu"] / received if received else math.nan,
        "server_cpu_share": usage["cpu"] / usage["wall"],
        "load_cpu_share": load_cpu / processes,
        # Both load processes share CPU 1 when pinned: how busy that core was.
        "load_core_share": load_cpu if pinned(LOAD_CPU) is not None else load_cpu / processes,
        "p50_ms": 1e3 * percentile(lateness, 50),
        "p99_ms": 1e3 * percentile(lateness, 99),
        "max_ms": 1e3 * max(lateness, default=math.nan),
        "start_delay_p99_ms": 1e3 * percentile(start_delays, 99),
        "peak_rss_mib": usage["peak_rss_kib"] / 1024,
        "lateness_sample": lateness[:: max(1, len(lateness) // 5000)],
    }
    if recorder is not None:
        found["profile"] = recorder.finish()
    return found


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


# --- capacity: the largest N at 1 Hz that one worker carries ------------------------


def capacity_ok(step: dict[str, Any], args: argparse.Namespace) -> bool:
    """Carried: every slot arrived (nothing skipped or lost) and p99 within the bound."""
    return bool(step["received"] == step["expected"] and step["p99_ms"] <= args.capacity_p99)


def rounded(n: float) -> int:
    """Client counts people can read: multiples of 10 below 500, of 50 above."""
    grain = 10 if n < 500 else 50
    return max(grain, round(n / grain) * grain)


class CapacityClock:
    """The capacity scenario's time budget, shared by every (server, offer) search.

    Each search may spend what is left divided by the searches still to come,
    so time a quick search leaves unused goes to the later ones.
    """

    def __init__(self, budget: float, searches: int) -> None:
        self.deadline = time.monotonic() + budget
        self.searches = max(1, searches)

    def share(self) -> float:
        left = max(0.0, self.deadline - time.monotonic())
        share = left / self.searches
        self.searches = max(1, self.searches - 1)
        return share


def capacity(
    name: str, args: argparse.Namespace, offer: str, clock: CapacityClock, hint: int | None
) -> dict[str, Any]:
    """Search the largest N carried: grow until a step fails, then bisect.

    A step is a fresh server and N clients at ``--capacity-interval`` with their
    starts spread evenly over one interval (independent clients, not a herd), for
    ``--capacity-duration`` seconds; it carries N if every slot arrives and p99
    lateness is within ``--capacity-p99``. From ``--capacity-start``, each good
    step grows N towards where its server CPU share extrapolates to 85 % of a
    core, by 1.25x at least and 4x at most (1.1x-1.25x when ``hint``, the other
    offer's result, is the start); a failing first step halves N (1.25x with a
    hint). After the first failure: bisection. The search ends when good and bad
    are within ``--capacity-resolution`` of each other, after ``--capacity-steps``
    steps, at ``--capacity-max``, or when the next step (its time predicted from
    the last one's) would overrun this search's share of ``--capacity-budget``;
    or, with a hint, at once if the first step carries it and the server declined
    the offer (same wire, same work as with no offer).
    """
    interval, duration = args.capacity_interval, args.capacity_duration
    share = clock.share()
    began = time.monotonic()
    # A hint (the other offer's result) starts the search there, in finer steps.
    low, high = (1.25, 4.0) if hint is None else (1.1, 1.25)
    shrink = 2.0 if hint is None else 1.25
    n = min(args.capacity_max, rounded(hint if hint else args.capacity_start))
    good, bad = 0, None
    steps: list[dict[str, Any]] = []
    extensions = None
    why = "steps"
    while True:
        if len(steps) >= args.capacity_steps:
            why = "steps"
            break
        if steps:
            last = steps[-1]
            fixed = duration + interval + 3.0  # ticks, stagger, server start and stop
            predicted = fixed + max(0.0, last["seconds"] - fixed) * n / last["clients"]
            if time.monotonic() - began + predicted > share:
                why = "budget"
                break
        print(f"{name}: capacity, offer {offer}, {n} clients…", file=sys.stderr, flush=True)
        step_began = time.monotonic()
        step: dict[str, Any] = {"clients": n}
        try:
            server = start_server(name)
            try:
                stagger = interval if args.capacity_stagger is None else args.capacity_stagger
                found = ticking(
                    server, args, n, interval, duration=duration, offer=offer, stagger=stagger
                )
            finally:
                server.stop()
            extensions = extensions or found["extensions"]
            step.update({k: v for k, v in found.items() if k != "lateness_sample"})
            step["ok"] = capacity_ok(found, args)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            step.update({"ok": False, "error": str(error)})
        step["seconds"] = time.monotonic() - step_began
        steps.append(step)
        if step["ok"]:
            good = n
            declined = offer != "none" and not extensions
            if hint is not None and len(steps) == 1 and declined and n < args.capacity_max:
                # Offer declined: the same wire and work as without one, carried at
                # the no-offer result; no more steps spent on it.
                why = "declined"
                break
            if bad is None:
                if n >= args.capacity_max:
                    why = "cap"
                    break
                # Aim where the server's CPU share would be 85 % of its core, if known,
                # growing by at least `low` and at most `high` times.
                cpu = step.get("server_cpu_share") or 0.0
                grown = n * (high if cpu <= 0 else min(high, max(low, 0.85 / cpu)))
                n = min(args.capacity_max, rounded(grown))
                if n <= good:
                    why = "cap"
                    break
                continue
        else:
            bad = n if bad is None else min(bad, n)
        if bad is not None:
            if good == 0 and bad > rounded(1):
                n = rounded(bad / shrink)  # nothing carried yet: shrink
                if n < bad:
                    continue
            if bad - good <= max(rounded(1), args.capacity_resolution * good):
                why = "resolution"
                break
            n = rounded((good + bad) / 2)
            if not good < n < bad:
                why = "resolution"
                break
    limited = [s for s in steps if not s["ok"]]
    return {
        "offer": offer,
        "extensions": extensions,
        "interval": interval,
        "duration": duration,
        "p99_bound_ms": args.capacity_p99,
        "capacity": good,
        "first_bad": bad,
        "ended_by": why,
        "failed_by": sorted({failure(s, args) for s in limited}),
        "seconds": time.monotonic() - began,
        "budget_share": share,
        "steps": steps,
    }


def failure(step: dict[str, Any], args: argparse.Namespace) -> str:
    if "error" in step:
        return "error"
    reasons = []
    if step["received"] < step["expected"]:
        reasons.append("skips")
    if step["p99_ms"] > args.capacity_p99:
        reasons.append("p99")
    if step.get("load_core_share", 0) > 0.9:
        reasons.append("load generator busy")
    return "+".join(reasons) or "?"


# --- profile: where the ticker worker's busy samples go ----------------------------

# Leaf to root, the first frame that is one of these entry points names the bucket
# (a frame inside wsproto or Hypercorn counts for whoever called in: its send or its
# receive path). No entry point: "scheduler" if the leaf is in Trio's run loop, else
# "other". py-spy's raw format: one line per stack, "frame;...;leaf COUNT", each frame
# "function (file:line)", the file shortened to its import path.
PROFILE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # waiting for the deadline: trio.sleep_until, the run loop's Deadlines.expire, the Timer
    ("waiting", ("sleep_until (", "expire (trio/", "ticker/timer.py")),
    (
        "sending",
        (
            "send_text (", "text_frames.py", "protocol_send (", "app_send (",
            "_send_wsproto_event (", "send (wsproto", "send_all (", "send_data (",
            "send (quart", "_hypercorn_fixes/writes.py",
        ),
    ),
    (
        "parsing",
        (
            "_read_data (", "receive_data (", "events (wsproto", "_handle_events (",
            "handle (hypercorn/protocol/ws_stream", "handle_messages (", "receive (quart",
            "parse (ticker/protocol", "_receive_commands (",
        ),
    ),
    ("session._tick", ("_tick (ticker/session.py",)),
)  # fmt: skip
BUCKETS = ("waiting", "sending", "session._tick", "parsing", "scheduler", "other")


def bucket(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, needles in PROFILE_RULES:
            if any(needle in frame for needle in needles):
                return name
    return "scheduler" if stack and ("trio/_core/" in stack[-1]) else "other"


def summarise_profile(raw: str) -> dict[str, Any]:
    counts = dict.fromkeys(BUCKETS, 0)
    leaves: dict[str, int] = {}
    total = polling = 0
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        stack = stack_text.split(";")
        if "get_events (trio/_core/_io_epoll.py" in stack[-1]:
            # In epoll_wait: idle, though --nonblocking sampling cannot always tell.
            polling += count
            continue
        counts[bucket(stack)] += count
        function, _, where = stack[-1].partition(" (")
        path, _, line_number = where.removesuffix(")").rpartition(":")
        path = path if line_number.isdigit() else where.removesuffix(")")
        leaf = f"{function} ({path.rsplit('/', 1)[-1]})"
        leaves[leaf] = leaves.get(leaf, 0) + count
        total += count
    top = sorted(leaves.items(), key=lambda item: -item[1])[:10]
    return {
        "busy_samples": total,
        "epoll_wait_samples": polling,  # left out of the shares
        "shares": {name: count / total if total else math.nan for name, count in counts.items()},
        "top_leaves": [[leaf, count / total] for leaf, count in top],
    }


class Recorder:
    """py-spy on the server's worker process, for the steady window."""

    def __init__(self, server: Server, folder: Path, duration: float) -> None:
        self.server, self.folder, self.duration = server, folder, duration
        self.process: subprocess.Popen[bytes] | None = None
        self.output = folder / f"{server.name}-{server.port}.raw"
        self.error = ""

    def start(self) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        # The worker: of the process tree (Hypercorn's parent, multiprocessing's
        # resource tracker, the worker), the one holding the clients' sockets.
        worker = max(tree(self.server.process.pid), key=open_files)
        command = [spy, "record", "--pid", str(worker), "--rate", "200", "--nonblocking"]
        command += ["--duration", str(max(1, math.floor(self.duration)))]
        command += ["--format", "raw", "--output", str(self.output)]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=pinned(LOAD_CPU),  # its work stays off the server's CPU
        )

    def finish(self) -> dict[str, Any]:
        if self.process is None:
            return {"error": "py-spy never started"}
        try:
            _, stderr = self.process.communicate(timeout=self.duration + 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        if self.process.returncode != 0 or not self.output.exists():
            return {"error": stderr.decode(errors="replace").strip()[-500:]}
        summary = summarise_profile(self.output.read_text())
        summary["raw"] = str(self.output)
        return summary


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def py_spy_available() -> bool:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return Path(spy).exists()


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
    parser.add_argument(
        "--capacity-offers", default=",".join(OFFERS), help="capacity: a search per offer"
    )
    parser.add_argument("--capacity-interval", type=float, default=1.0, help="capacity: s")
    parser.add_argument(
        "--capacity-duration", type=float, default=10.0, help="capacity: s per step (>= 10 ticks)"
    )
    parser.add_argument("--capacity-p99", type=float, default=50.0, help="capacity: p99 bound, ms")
    parser.add_argument(
        "--capacity-stagger", type=float, help="capacity: spread the starts over s (one interval)"
    )
    parser.add_argument("--capacity-start", type=int, default=1000, help="capacity: first N")
    parser.add_argument("--capacity-max", type=int, default=16000, help="capacity: largest N")
    parser.add_argument("--capacity-steps", type=int, default=6, help="capacity: per search")
    parser.add_argument(
        "--capacity-resolution", type=float, default=0.1, help="capacity: stop within this ratio"
    )
    parser.add_argument(
        "--capacity-budget", type=float, default=600.0, help="capacity: s for all searches"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="steady: record ticker's worker with py-spy and summarise where it is busy",
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
    capacity_offers = args.capacity_offers.split(",")
    for offer in idle_offers + capacity_offers:
        if offer not in OFFERS:
            parser.error(f"unknown offer {offer!r}; choose from {', '.join(OFFERS)}")
    profiling = args.profile and py_spy_available()
    if args.profile and not profiling:
        print("--profile: py-spy is not installed; no profile", file=sys.stderr)

    report: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "machine": machine(),
        "versions": versions(),
        "offer": args.offer,
        "results": {},
    }
    offers_of = {"idle": idle_offers, "capacity": capacity_offers}
    runs = [
        (scenario, offer)
        for scenario in scenarios
        for offer in offers_of.get(scenario, [args.offer])
    ]
    clock = CapacityClock(
        args.capacity_budget, len(servers) * len(capacity_offers) * ("capacity" in scenarios)
    )
    profiles = args.out / f"{args.label}-profiles"
    # Scenario by scenario, every server in turn: a busy spell of the machine
    # then falls on one scenario of several servers, not on one server's
    # whole run, which would bias exactly the ratios this table is for.
    every: dict[str, dict[str, Any]] = {name: {} for name in servers}
    for scenario, offer in runs:
        for name in servers:
            results = every[name]
            if scenario == "capacity":  # a fresh server per step
                by_offer = results.setdefault(scenario, {})
                hint = next((r["capacity"] for r in by_offer.values() if r["capacity"]), None)
                by_offer[offer] = capacity(name, args, offer, clock, hint)
                continue
            if scenario == "herd-anchored" and name not in ANCHORING:
                continue  # the peers speak only the protocol's unanchored subset
            server = start_server(name)  # a fresh server per scenario and offer: no carry-over
            try:
                print(f"{name}: {scenario}, offer {offer}…", file=sys.stderr, flush=True)
                if scenario == "steady":
                    profile = profiles if profiling and name.startswith("ticker") else None
                    results[scenario] = ticking(
                        server, args, args.clients, args.interval, profile=profile
                    )
                elif scenario == "herd":
                    results[scenario] = ticking(server, args, args.herd_clients, args.herd_interval)
                elif scenario == "herd-anchored":  # every tick due at the same instant
                    results[scenario] = ticking(
                        server, args, args.herd_clients, args.herd_interval, anchor=0.0
                    )
                elif scenario == "idle":  # one result per offer
                    results.setdefault(scenario, {})[offer] = idle(server, args, offer)
                else:
                    results[scenario] = reaction(server, args)
            finally:
                server.stop()
    report["results"] = every

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
    for scenario in ("steady", "herd", "herd-anchored"):
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
    lines += render_capacity(results)
    lines += render_profiles(results)
    if "ticker" in results:
        offer = report["offer"]
        lines += ["", "### ticker ÷ each server", ""]
        lines += [
            "Below 1.0 ticker is better, except capacity (ticker's N ÷ theirs: above 1.0 "
            "ticker carries more). n/a: not measured in this run.",
            "",
            f"| vs | CPU/tick (steady) | p99 (steady) | start delay p99 (steady) "
            f"| KiB/idle connection ({offer} offer) | capacity (no offer) "
            "| capacity (browser offer) |",
            "|---|---|---|---|---|---|---|",
        ]

        def value(r: dict[str, Any], scenario: str, key: str, offer: str = offer) -> float:
            found = r[scenario][offer] if scenario in ("idle", "capacity") else r[scenario]
            return float(found[key])

        mine = results["ticker"]
        for name, theirs in results.items():
            if name == "ticker":
                continue
            cells = []
            for scenario, key, which in (
                ("steady", "cpu_us_per_tick", offer), ("steady", "p99_ms", offer),
                ("steady", "start_delay_p99_ms", offer), ("idle", "kib_per_connection", offer),
                ("capacity", "capacity", "none"), ("capacity", "capacity", "browser"),
            ):  # fmt: skip
                try:
                    if scenario == "capacity":
                        cells.append(capacity_ratio(mine[scenario][which], theirs[scenario][which]))
                        continue
                    ratio = value(mine, scenario, key, which) / value(theirs, scenario, key, which)
                    cells.append(f"{ratio:.2f}")
                except (KeyError, ZeroDivisionError):
                    cells.append("n/a")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def capacity_text(r: dict[str, Any]) -> str:
    """The result, as a bound when the search stopped at --capacity-max."""
    return f"≥ {r['capacity']}" if r["ended_by"] == "cap" else str(r["capacity"])


def capacity_ratio(mine: dict[str, Any], theirs: dict[str, Any]) -> str:
    if not theirs["capacity"]:
        return "n/a"
    ratio = f"{mine['capacity'] / theirs['capacity']:.2f}"
    capped = (mine["ended_by"] == "cap", theirs["ended_by"] == "cap")
    return {(False, False): ratio, (True, False): f"≥ {ratio}", (False, True): f"≤ {ratio}"}.get(
        capped, "n/a (both at the cap)"
    )


def render_capacity(results: dict[str, Any]) -> list[str]:
    rows = {name: r["capacity"] for name, r in results.items() if "capacity" in r}
    if not rows:
        return []
    first = next(iter(next(iter(rows.values())).values()))
    lines = [
        "",
        f"### capacity: largest N at {1 / first['interval']:g} Hz with p99 ≤ "
        f"{first['p99_bound_ms']:g} ms and nothing skipped ({first['duration']:g} s per step, "
        "starts spread over one interval)",
        "",
        "| server | offer | capacity N | first failing N | failed by | search ended by "
        "| steps | seconds | accepted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_offer in rows.items():
        for offer, r in by_offer.items():
            lines.append(
                f"| {name} | {offer} | **{capacity_text(r)}** | {r['first_bad'] or '—'} "
                f"| {', '.join(r['failed_by']) or '—'} | {r['ended_by']} | {len(r['steps'])} "
                f"| {r['seconds']:.0f} | {r['extensions'] or '—'} |"
            )
    lines += [
        "",
        "Steps (in order):",
        "",
        "| server | offer | N | carried | p99 ms | max ms | received/expected | CPU µs/tick "
        "| server CPU | load core | start delay p99 ms | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_offer in rows.items():
        for offer, r in by_offer.items():
            for step in r["steps"]:
                if "error" in step:
                    lines.append(
                        f"| {name} | {offer} | {step['clients']} | no: {step['error']} "
                        f"| | | | | | | | {step['seconds']:.0f} |"
                    )
                    continue
                lines.append(
                    f"| {name} | {offer} | {step['clients']} | {'yes' if step['ok'] else 'no'} "
                    f"| {step['p99_ms']:.1f} | {step['max_ms']:.1f} "
                    f"| {step['received']}/{step['expected']} | {step['cpu_us_per_tick']:.1f} "
                    f"| {step['server_cpu_share']:.0%} | {step['load_core_share']:.0%} "
                    f"| {step['start_delay_p99_ms']:.1f} | {step['seconds']:.0f} |"
                )
    return lines


def render_profiles(results: dict[str, Any]) -> list[str]:
    rows = {
        name: r["steady"]["profile"]
        for name, r in results.items()
        if "profile" in r.get("steady", {})
    }
    if not rows:
        return []
    lines = [
        "",
        "### profile: where the worker is busy, steady (py-spy, share of busy samples)",
        "",
        "| server | busy samples | epoll_wait (left out) | " + " | ".join(BUCKETS) + " |",
        "|---|---|---|" + "---|" * len(BUCKETS),
    ]
    for name, p in rows.items():
        if "error" in p:
            lines.append(f"| {name} | py-spy failed: {p['error']} | |" + " |" * len(BUCKETS))
            continue
        shares = " | ".join(f"{p['shares'][b]:.0%}" for b in BUCKETS)
        lines.append(f"| {name} | {p['busy_samples']} | {p['epoll_wait_samples']} | {shares} |")
    for name, p in rows.items():
        if "top_leaves" in p:
            top = ", ".join(f"{leaf} {share:.0%}" for leaf, share in p["top_leaves"][:6])
            lines += ["", f"{name}, top leaf functions: {top}"]
    return lines


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
