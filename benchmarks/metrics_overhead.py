"""What /metrics costs the tick path: CPU per tick with TICKER_METRICS=on versus off.

The steady scenario of run.py (200 clients at 20 Hz by default), against the
README's server command, alternating on and off for several rounds (the order
flips every round, so a machine that slows down over the run does not favour
either). The verdict is the median of the per-round ratios on/off: on a shared,
noisy machine one pair of runs proves nothing, the middle of several does.
A micro-benchmark of the work metrics add per tick (and of what calling
prometheus-client on every tick would cost instead) comes first: it is exact
where the end-to-end run is noisy.

    python benchmarks/metrics_overhead.py [--rounds 5] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))
from run import machine, start_server, ticking, versions

VARIANTS = {"on": {"TICKER_METRICS": "on"}, "off": {"TICKER_METRICS": "off"}}
BUDGET = 1.05  # issue 8: metrics on may cost at most 5 % more CPU per tick


def micro() -> dict[str, float]:
    """Microseconds per tick for what the tick path does with metrics on and off."""
    from prometheus_client import values

    from ticker.metrics import Metrics
    from ticker.server_tally import Tally

    values.ValueClass = values.MultiProcessValue()  # as a ticker worker has it
    metrics = Metrics(Path(tempfile.mkdtemp(prefix="ticker-micro-")))
    tally = Tally()
    n = 1_000_000

    def per_call(statement: str, namespace: dict[str, Any], number: int = n) -> float:
        best = min(timeit.repeat(statement, globals=namespace, number=number, repeat=5))
        return 1e6 * best / number

    async def clock() -> float:
        return per_call("now()", {"now": trio.current_time})

    return {
        # Read before every send when metrics are on: when lateness is measured.
        "clock_us": trio.run(clock),
        # session.py's per-tick work: the None check, then the tally.
        "off_us": per_call("if tally is not None: pass", {"tally": None}),
        "on_us": per_call(
            "if tally is not None: tally.tick_sent(0.0007, min(5, end) - 4 - 1)",
            {"tally": tally, "end": sys.maxsize},
        ),
        # The road not taken: prometheus-client on every tick (multiprocess mode).
        "direct_us": per_call(
            "h.observe(0.0007); c.inc()",
            {"h": metrics.tick_lateness, "c": metrics.ticks_sent},
            number=100_000,
        ),
        # Once a second per worker: hand two ticks' worth to Prometheus.
        "publish_us": per_call(
            "t.tick_sent(0.0007, 0); t.tick_sent(0.002, 1); m.publish(t)",
            {"t": tally, "m": metrics},
            number=10_000,
        ),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--label", default="metrics-overhead")
    args = parser.parse_args(argv)

    print("micro-benchmark…", file=sys.stderr, flush=True)
    costs = micro()
    rounds = []
    for number in range(args.rounds):
        order = ("on", "off") if number % 2 == 0 else ("off", "on")
        result: dict[str, Any] = {}
        for variant in order:
            print(f"round {number + 1}: metrics {variant}…", file=sys.stderr, flush=True)
            server = start_server("ticker", VARIANTS[variant])
            try:
                measured = ticking(server, args, args.clients, args.interval)
            finally:
                server.stop()
            measured.pop("lateness_sample")
            result[variant] = measured
        result["ratio"] = result["on"]["cpu_us_per_tick"] / result["off"]["cpu_us_per_tick"]
        rounds.append(result)

    ratio = statistics.median(r["ratio"] for r in rounds)
    report = {
        "command": " ".join(["metrics_overhead.py", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "versions": versions(),
        "micro": costs,
        "rounds": rounds,
        "median_ratio": ratio,
        "within_budget": ratio <= BUDGET,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.label}.json").write_text(json.dumps(report, indent=1))
    markdown = render(report, args)
    (args.out / f"{args.label}.md").write_text(markdown)
    print(markdown)
    return report


def render(report: dict[str, Any], args: argparse.Namespace) -> str:
    costs = report["micro"]
    lines = [
        "Per tick, in the tick path (best of 5, timeit):",
        "",
        "| metrics | µs per tick |",
        "|---|---:|",
        f"| off (`tally is None`) | {costs['off_us']:.3f} |",
        f"| on (`Tally.tick_sent`) | {costs['on_us']:.3f} |",
        f"| prometheus-client on every tick instead (not used) | {costs['direct_us']:.2f} |",
        f"| on only: the clock read before each send | {costs['clock_us']:.3f} |",
        "",
        f"Publishing to Prometheus: {costs['publish_us']:.1f} µs once a second per worker.",
        "",
        f"Steady: {args.clients} clients x {1 / args.interval:g} Hz for {args.duration:g} s, "
        f"{args.rounds} rounds; CPU of the server process tree per tick received.",
        "",
        "| round | on: µs/tick | off: µs/tick | on ÷ off | on: p99 ms | off: p99 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for number, r in enumerate(report["rounds"], 1):
        on, off = r["on"], r["off"]
        lines.append(
            f"| {number} | {on['cpu_us_per_tick']:.1f} | {off['cpu_us_per_tick']:.1f} "
            f"| {r['ratio']:.3f} | {on['p99_ms']:.2f} | {off['p99_ms']:.2f} |"
        )
    verdict = "within" if report["within_budget"] else "OVER"
    lines += [
        "",
        f"Median on ÷ off: **{report['median_ratio']:.3f}** ({verdict} the 1.05 budget).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
