"""A/B: ticker at one git revision (or source folder) against another, rounds alternating.

    python benchmarks/ab.py --base HEAD~1 --rounds 5      # B: the working tree
    python benchmarks/ab.py --base 0fee2e9 --against HEAD --scenario steady --duration 8
    python benchmarks/ab.py --base HEAD --against /tmp/variant/src   # a folder holding ticker/

Each round runs ``run.py --servers ticker`` once with the base revision's
``src`` first on ``PYTHONPATH`` and once with the working tree's, in
alternating order, so that a machine getting busier or quieter between
rounds affects both alike. It prints each round's CPU per tick and p99, and
the median of the per-round ratios (B / A): the number to quote for a lever.
``--json PATH`` also writes the rounds and medians; ``--profile`` passes
``--profile`` to run.py (py-spy buckets per run, printed per side).
``benchmarks/levers.py`` runs it for every lever in its LEVERS table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def export(revision: str, into: Path) -> Path:
    """The ``src`` folder of ``revision``, unpacked under ``into`` (a folder is used as it is)."""
    if Path(revision).is_dir():
        return Path(revision)
    into.mkdir(parents=True)
    archive = into / "base.tar"
    subprocess.run(
        ["git", "archive", "--format=tar", "-o", str(archive), revision, "src"],
        cwd=ROOT,
        check=True,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def one_run(src: Path, args: argparse.Namespace, out: Path, label: str) -> dict[str, Any]:
    command = [
        sys.executable,
        str(HERE / "run.py"),
        "--servers",
        "ticker",
        "--scenarios",
        args.scenario,
        "--duration",
        str(args.duration),
        "--clients",
        str(args.clients),
        "--interval",
        str(args.interval),
        "--out",
        str(out),
        "--label",
        label,
    ]
    if args.profile:
        command.append("--profile")
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run(command, env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    result: dict[str, Any] = json.loads((out / f"{label}.json").read_text())
    return result["results"]["ticker"][args.scenario]  # type: ignore[no-any-return]


def print_profiles(rows: list[dict[str, dict[str, Any]]]) -> None:
    """Each side's py-spy buckets, the mean share over its rounds."""
    for side in "AB":
        profiles = [
            row[side]["profile"] for row in rows if "shares" in row[side].get("profile", {})
        ]
        if not profiles:
            print(f"profile {side}: none (py-spy missing or failed)")
            continue
        buckets = profiles[0]["shares"]
        mean = {b: statistics.fmean(p["shares"][b] for p in profiles) for b in buckets}
        print(f"profile {side}: " + ", ".join(f"{b} {share:.0%}" for b, share in mean.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base", required=True, help="A: revision or src folder")
    parser.add_argument("--against", help="B: revision or src folder (default: ./src)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scenario", default="steady")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--json", type=Path, help="also write the rounds and medians here")
    parser.add_argument(
        "--profile", action="store_true", help="run.py --profile: py-spy buckets per run"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        against = ROOT / "src" if args.against is None else export(args.against, folder / "b")
        sources = {"A": export(args.base, folder / "base"), "B": against}
        rows: list[dict[str, dict[str, Any]]] = []
        for round_ in range(args.rounds):
            order = ("A", "B") if round_ % 2 == 0 else ("B", "A")
            row = {side: one_run(sources[side], args, folder, f"{side}{round_}") for side in order}
            rows.append(row)
            a, b = row["A"], row["B"]
            print(
                f"round {round_ + 1}: A {a['cpu_us_per_tick']:.1f} µs/tick p99 {a['p99_ms']:.2f} ms"
                f" | B {b['cpu_us_per_tick']:.1f} µs/tick p99 {b['p99_ms']:.2f} ms"
                f" | B/A {b['cpu_us_per_tick'] / a['cpu_us_per_tick']:.3f}",
                flush=True,
            )
    ratios = [row["B"]["cpu_us_per_tick"] / row["A"]["cpu_us_per_tick"] for row in rows]
    medians = {
        side: statistics.median(row[side]["cpu_us_per_tick"] for row in rows) for side in "AB"
    }
    if args.profile:
        print_profiles(rows)
    if args.json is not None:
        summary = {
            "base": args.base,
            "against": args.against or "working tree",
            "scenario": args.scenario,
            "clients": args.clients,
            "interval": args.interval,
            "duration": args.duration,
            "rounds": [
                {
                    side: {k: v for k, v in r.items() if k != "lateness_sample"}
                    for side, r in row.items()
                }
                for row in rows
            ],
            "median_cpu_us_per_tick": medians,
            "median_p99_ms": {
                side: statistics.median(row[side]["p99_ms"] for row in rows) for side in "AB"
            },
            "ratios": ratios,
            "median_ratio": statistics.median(ratios),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    print(
        f"A = {args.base}, B = {args.against or 'working tree'}; {args.scenario},"
        f" {args.clients} clients every"
        f" {args.interval} s for {args.duration} s, {args.rounds} rounds:"
        f" median CPU µs/tick A {medians['A']:.1f}, B {medians['B']:.1f};"
        f" median ratio B/A {statistics.median(ratios):.3f}"
        f" (rounds {min(ratios):.3f}-{max(ratios):.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
