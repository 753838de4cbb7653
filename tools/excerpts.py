"""Keep the code excerpts in Markdown files identical to the source they quote.

An excerpt is an HTML comment, at the start of a line, naming a file and two
anchors, followed at once by a fenced code block:

    <!-- excerpt: src/ticker/schedule.py start="def due(" end="return self.start" -->
    ```python
    ...
    ```

The block holds, exactly and undedented, the lines of the file from the first
line containing the start text through the first later line containing the end
text. Anchors are text, never line numbers, so an excerpt follows its code
around the file; write an anchor in single quotes when it contains a double
quote. Paths are relative to ``--root`` (default: the current directory).

    python tools/excerpts.py docs/tutorial.md         # check: one line per problem, exit 1
    python tools/excerpts.py --fix docs/tutorial.md   # rewrite stale blocks from the source

After ``--fix``, re-read the prose around each refreshed block: the code changed.
Standard library only, so it runs without installing anything.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MARKER: Final = re.compile(
    r"<!--\s*excerpt:\s*(?P<path>\S+)"
    r"\s+start=(?P<start>\"[^\"]*\"|'[^']*')"
    r"\s+end=(?P<end>\"[^\"]*\"|'[^']*')\s*-->\s*"
)
#: Anything at the start of a line that was meant as a marker, so a typo is an
#: error rather than an excerpt nobody checks.
MAYBE_MARKER: Final = re.compile(r"<!--\s*excerpt\b")
OPENING_FENCE: Final = re.compile(r"(?P<fence>`{3,}|~{3,})[^`]*")
SHOWN_CHARS: Final = 60  # how much of a differing line a message quotes


@dataclass(frozen=True, slots=True)
class Excerpt:
    """One marker and its fenced block; indexes are 0-based lines of the Markdown file."""

    marker: int
    path: str
    start: str
    end: str
    fence: str
    body: slice  # the lines between the opening and the closing fence

    def where(self, doc: str, index: int) -> str:
        return _where(doc, index, self.path, self.start)


def _where(doc: str, index: int, path: str, start: str) -> str:
    """How a message names an excerpt: ``FILE:LINE: excerpt of PATH (start "TEXT")``."""
    return f'{doc}:{index + 1}: excerpt of {path} (start "{start}")'


#: A message with the 0-based Markdown line it is about, so messages print in line order.
Problem = tuple[int, str]


@dataclass(slots=True)
class Report:
    """What one file's run found: problems left (exit 1 if any) and blocks it refreshed."""

    problems: list[Problem]
    refreshed: list[str]


def closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a block opened by ``fence`` (CommonMark's rule)."""
    stripped = line.strip()
    indent = len(line) - len(line.lstrip(" "))
    return indent <= 3 and len(stripped) >= len(fence) and stripped == fence[0] * len(stripped)


def find_excerpts(doc: str, lines: Sequence[str]) -> tuple[list[Excerpt], list[Problem]]:
    """Every excerpt of a Markdown file, skipping code blocks (which may show markers)."""
    excerpts: list[Excerpt] = []
    problems: list[Problem] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if opening := OPENING_FENCE.fullmatch(line):
            index = _after_block(lines, index + 1, opening["fence"])
            continue
        if not MAYBE_MARKER.match(line):
            index += 1
            continue
        marker = MARKER.fullmatch(line)
        if marker is None:
            problems.append(
                (
                    index,
                    f"{doc}:{index + 1}: malformed excerpt marker; "
                    'write <!-- excerpt: PATH start="TEXT" end="TEXT" -->',
                )
            )
            index += 1
            continue
        path, start, end = marker["path"], marker["start"][1:-1], marker["end"][1:-1]
        where = _where(doc, index, path, start)
        opening = OPENING_FENCE.fullmatch(lines[index + 1]) if index + 1 < len(lines) else None
        if not start or not end:
            problems.append((index, f"{where}: an anchor is empty"))
            index += 1
        elif opening is None:
            problems.append((index, f"{where}: no fenced code block right after the marker"))
            index += 1
        else:
            closing = _after_block(lines, index + 2, opening["fence"]) - 1
            if closing >= len(lines):
                problems.append((index, f"{where}: its code block is never closed"))
                break
            fence = opening["fence"]
            excerpts.append(Excerpt(index, path, start, end, fence, slice(index + 2, closing)))
            index = closing + 1
    return excerpts, problems


def _after_block(lines: Sequence[str], first: int, fence: str) -> int:
    """The index after the closing fence of a block whose content starts at ``first``."""
    index = first
    while index < len(lines) and not closes(lines[index], fence):
        index += 1
    return index + 1


def quoted(root: Path, excerpt: Excerpt) -> tuple[int, list[str]] | str:
    """The source lines an excerpt quotes, with the 0-based index of the first; or a problem."""
    try:
        text = (root / excerpt.path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"no such file under {root}"
    except (OSError, UnicodeDecodeError) as error:
        return f"cannot read it ({error})"
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if excerpt.start in line), None)
    if first is None:
        return "the start text is not in the file"
    last = next((i for i in range(first + 1, len(lines)) if excerpt.end in lines[i]), None)
    if last is None:
        return f'the end text "{excerpt.end}" is not after {excerpt.path}:{first + 1}'
    return first, lines[first : last + 1]


def _shown(line: str) -> str:
    return repr(line if len(line) <= SHOWN_CHARS else line[: SHOWN_CHARS - 1] + "…")


def difference(
    doc: str, excerpt: Excerpt, block: Sequence[str], first: int, wanted: Sequence[str]
) -> str | None:
    """The first way ``block`` differs from ``wanted`` (source lines from ``first``), if any."""
    top = excerpt.body.start
    for offset, (have, want) in enumerate(zip(block, wanted, strict=False)):
        if have != want:
            return (
                f"{excerpt.where(doc, top + offset)}: differs from {excerpt.path}:"
                f"{first + offset + 1}, which is {_shown(want)}"
            )
    if len(block) < len(wanted):
        missing = first + len(block)
        return (
            f"{excerpt.where(doc, top + len(block))}: the block ends before "
            f"{excerpt.path}:{missing + 1}, which is {_shown(wanted[len(block)])}"
        )
    if len(block) > len(wanted):
        return (
            f"{excerpt.where(doc, top + len(wanted))}: the block goes on after "
            f"{excerpt.path}:{first + len(wanted)}, where the excerpt ends"
        )
    return None


def process(doc: Path, root: Path, *, fix: bool) -> Report:
    """Check (or, with ``fix``, refresh) every excerpt of one Markdown file."""
    report = Report([], [])
    name = str(doc)
    try:
        lines = doc.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        report.problems.append((0, f"{name}:1: cannot read it ({error})"))
        return report
    excerpts, report.problems = find_excerpts(name, lines)
    output: list[str] = []
    copied = 0  # lines[:copied] are in output already
    for excerpt in excerpts:
        found = quoted(root, excerpt)
        if isinstance(found, str):
            report.problems.append(
                (excerpt.marker, f"{excerpt.where(name, excerpt.marker)}: {found}")
            )
            continue
        first, wanted = found
        closer = next((i for i, line in enumerate(wanted) if closes(line, excerpt.fence)), None)
        if closer is not None:
            report.problems.append(
                (
                    excerpt.marker,
                    f"{excerpt.where(name, excerpt.marker)}: {excerpt.path}:{first + closer + 1} "
                    f"would close the {excerpt.fence} fence; use a longer one",
                )
            )
            continue
        block = lines[excerpt.body]
        problem = difference(name, excerpt, block, first, wanted)
        if problem is None:
            continue
        if not fix:
            report.problems.append((excerpt.marker, f"{problem} (--fix refreshes it)"))
            continue
        output += lines[copied : excerpt.body.start]
        marker_now = len(output) - 2  # the marker and the opening fence precede the body
        output += wanted
        copied = excerpt.body.stop
        report.refreshed.append(
            f"{excerpt.where(name, marker_now)}: refreshed from {excerpt.path}:"
            f"{first + 1}-{first + len(wanted)}; re-read the prose around it"
        )
    if report.refreshed:
        output += lines[copied:]
        doc.write_text("\n".join(output), encoding="utf-8")
        # What is left, with line numbers of the file as it is now.
        report.problems = process(doc, root, fix=False).problems
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="excerpts.py",
        description="Check that the code excerpts in Markdown files match the source they quote.",
    )
    parser.add_argument("docs", nargs="+", type=Path, metavar="FILE", help="Markdown files")
    parser.add_argument("--fix", action="store_true", help="rewrite stale blocks from the source")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(),
        help="the folder excerpt paths are relative to (default: the current directory)",
    )
    args = parser.parse_args(argv)
    problems = 0
    for doc in args.docs:
        report = process(doc, args.root, fix=args.fix)
        for line in report.refreshed:
            print(line)
        for _, line in sorted(report.problems, key=lambda problem: problem[0]):
            print(line)
        problems += len(report.problems)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
