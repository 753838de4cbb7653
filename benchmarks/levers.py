"""Each performance lever's A/B row (BENCHMARKS.md), reproducible from a clone.

    python benchmarks/levers.py                       # every lever in LEVERS, 5 rounds each
    python benchmarks/levers.py --only timer --rounds 3
    python benchmarks/levers.py --profile             # also one py-spy round per lever

``nox -s bench`` runs this after ``run.py``. Each row of ``LEVERS`` names the
two sources ``ab.py`` compares: A (without the lever) and B (with it), each a
git revision, optionally with a patch from ``benchmarks/lever_patches/`` applied
to its ``src`` (to take one lever out when several share a commit). A clone
needs the revisions named here (not a shallow one). Output:
``benchmarks/results/<label>.{md,json}`` and one ``ab.py --json`` file per lever.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PATCHES = HERE / "lever_patches"


@dataclass(frozen=True)
class Lever:
    name: str
    #: A: the revision without the lever, and a patch (in lever_patches/) applied to its src.
    base: str
    #: B: the revision with it, and a patch applied to its src.
    lever: str
    base_patch: str | None = None
    lever_patch: str | None = None
    note: str = ""
    #: In the default run (``nox -s bench``); the others with ``--only NAME``.
    default: bool = True


# The one place that says what each lever row compares. The two levers share
# commit 4cc045b, so "timer only" is that src with the text-frame lever taken out
# (no-text-frames.patch: app.py sends through Quart's websocket.send).
LEVERS: tuple[Lever, ...] = (
    Lever(
        "timer",
        base="fea1b62",
        lever="91dfbc7",
        lever_patch="no-text-frames.patch",
        note="trio.sleep_until (A) or the worker's Timer (B); no text frames in either",
    ),
    Lever(
        "text-frames",
        base="91dfbc7",
        base_patch="no-text-frames.patch",
        lever="91dfbc7",
        note="Quart's websocket.send (A) or ready-made frames (B); Timer in both",
    ),
    Lever(
        "timer-with-text-frames",
        base="91dfbc7",
        base_patch="no-timer.patch",
        lever="91dfbc7",
        note="trio.sleep_until (A) or the Timer (B); text frames in both",
        default=False,
    ),
    Lever(
        "combined",
        base="fea1b62",
        lever="HEAD",
        note="both levers, with every other src change since fea1b62 (HEAD moves)",
        default=False,
    ),
)


def export(revision: str, into: Path) -> Path:
    """A folder holding ``revision``'s ``src`` (git archive)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "src"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def source(revision: str, patch: str | None, into: Path) -> str:
    """What ab.py takes for one side: a revision, or a patched ``src`` folder."""
    if patch is None:
        return revision
    tree = export(revision, into)
    subprocess.run(
        ["git", "apply", "--verbose", str(PATCHES / patch)],
        cwd=tree,
        check=True,
        capture_output=True,
    )
    return str(tree / "src")


def shown(revision: str, patch: str | None) -> str:
    return revision if patch is None else f"{revision} with {patch}"


def ab(a: str, b: str, args: argparse.Namespace, out: Path, profile: bool) -> dict[str, Any]:
    command = [sys.executable, str(HERE / "ab.py"), "--base", a, "--against", b]
    command += ["--rounds", str(2 if profile else args.rounds), "--duration", str(args.duration)]
    command += ["--clients", str(args.clients), "--interval", str(args.interval)]
    command += ["--json", str(out)] + (["--profile"] if profile else [])
    subprocess.run(command, check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def profile_shares(result: dict[str, Any], side: str) -> dict[str, float] | None:
    found = [r[side]["profile"]["shares"] for r in result["rounds"] if "profile" in r[side]]
    found = [shares for shares in found if shares]
    if not found:
        return None
    return {b: sum(shares[b] for shares in found) / len(found) for b in found[0]}


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Command: `{' '.join(['levers.py', *sys.argv[1:]])}`  ",
        f"Each lever: ab.py, steady, {args.clients} clients x {args.interval} s for "
        f"{args.duration} s, {args.rounds} alternating rounds; A without the lever, B with it.",
        "",
        "| lever | A | B | A µs/tick | B µs/tick | B/A (median of rounds) | rounds "
        "| A p99 ms | B p99 ms | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row["ab"]
        lines.append(
            f"| {row['name']} | {row['a']} | {row['b']} "
            f"| {r['median_cpu_us_per_tick']['A']:.1f} | {r['median_cpu_us_per_tick']['B']:.1f} "
            f"| **{r['median_ratio']:.3f}** | {min(r['ratios']):.3f}-{max(r['ratios']):.3f} "
            f"| {r['median_p99_ms']['A']:.2f} | {r['median_p99_ms']['B']:.2f} | {row['note']} |"
        )
    profiled = [row for row in rows if "profile" in row]
    if profiled:
        buckets = list(next(iter(profiled))["profile"]["A"] or {})
        lines += [
            "",
            "Profile (py-spy on the worker, share of busy samples, mean of 2 rounds):",
            "",
            "| lever | side | " + " | ".join(buckets) + " |",
            "|---|---|" + "---|" * len(buckets),
        ]
        for row in profiled:
            for side in "AB":
                shares = row["profile"][side]
                cells = [f"{shares[b]:.0%}" for b in buckets] if shares else ["n/a"] * len(buckets)
                lines.append(f"| {row['name']} | {side} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", help="comma-separated lever names (default: all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--profile", action="store_true", help="and 2 py-spy rounds per lever")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--label", default="levers")
    args = parser.parse_args()
    chosen = tuple(lever for lever in LEVERS if lever.default)
    if args.only:
        names = args.only.split(",")
        unknown = set(names) - {lever.name for lever in LEVERS}
        if unknown:
            parser.error(
                f"unknown lever(s) {sorted(unknown)}; LEVERS has {[x.name for x in LEVERS]}"
            )
        chosen = tuple(lever for lever in LEVERS if lever.name in names)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for lever in chosen:
            a = source(lever.base, lever.base_patch, Path(scratch) / lever.name / "a")
            b = source(lever.lever, lever.lever_patch, Path(scratch) / lever.name / "b")
            row: dict[str, Any] = {"name": lever.name}
            row["a"], row["b"] = (
                shown(lever.base, lever.base_patch),
                shown(lever.lever, lever.lever_patch),
            )
            print(f"lever {lever.name}: A {row['a']}, B {row['b']}", file=sys.stderr, flush=True)
            row["note"] = lever.note
            row["ab"] = ab(a, b, args, args.out / f"{args.label}-{lever.name}.json", False)
            if args.profile:
                profiled = ab(
                    a, b, args, args.out / f"{args.label}-{lever.name}-profile.json", True
                )
                row["profile"] = {side: profile_shares(profiled, side) for side in "AB"}
            rows.append(row)
    (args.out / f"{args.label}.json").write_text(json.dumps(rows, indent=1))
    markdown = render(rows, args)
    (args.out / f"{args.label}.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
