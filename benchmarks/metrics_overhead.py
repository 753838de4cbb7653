"""What /metrics costs the tick path: CPU per tick with TICKER_METRICS=on versus off.

The steady scenario of run.py (200 clients at 20 Hz by default), against the
README's server command, alternating on and off for several rounds (the order
flips every round, so a machine that slows down over the run does not favour
either). The verdict is the median of the per-round ratios on/off: on a shared,
noisy machine one pair of runs proves nothing, the middle of several does.

    python benchmarks/metrics_overhead.py [--rounds 5] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from run import machine, start_server, ticking, versions  # noqa: E402

VARIANTS = {"on": {"TICKER_METRICS": "on"}, "off": {"TICKER_METRICS": "off"}}
BUDGET = 1.05  # issue 8: metrics on may cost at most 5 % more CPU per tick


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
    lines = [
        f"Steady: {args.clients} clients × {1 / args.interval:g} Hz for {args.duration:g} s, "
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
