"""tools/excerpts.py: a code excerpt in Markdown must equal the source lines it quotes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "excerpts.py"

SOURCE = '''\
def greet(name: str) -> str:
    """Say hello."""
    message = f"hello, {name}"
    return message


def leave() -> None:
    pass
'''

MARKER = '<!-- excerpt: greet.py start="def greet(" end="return message" -->'


def quoted(source: str) -> str:
    """The lines MARKER quotes: from ``def greet(`` through ``return message``."""
    return source.split("\n\n\n")[0] + "\n"


BLOCK = quoted(SOURCE)

DOC = f"""\
# Greeting

{MARKER}
```python
{BLOCK}```

Prose that --fix must leave alone.
"""


def run_tool(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The tool as the nox session runs it, from ``folder`` (which holds greet.py)."""
    return subprocess.run(
        [sys.executable, str(TOOL), *args],
        cwd=folder,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        capture_output=True,
        encoding="utf-8",
        check=False,
        timeout=60,
    )


def write(folder: Path, source: str = SOURCE, doc: str = DOC) -> Path:
    (folder / "greet.py").write_text(source, encoding="utf-8")
    path = folder / "doc.md"
    path.write_text(doc, encoding="utf-8")
    return path


def test_matching_excerpt_passes(tmp_path: Path) -> None:
    write(tmp_path)
    result = run_tool(tmp_path, "doc.md")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_paths_are_relative_to_root(tmp_path: Path) -> None:
    write(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert run_tool(elsewhere, "../doc.md").returncode == 1  # no greet.py here
    assert run_tool(elsewhere, "--root", "..", "../doc.md").returncode == 0


def test_changed_source_line_fails_naming_the_doc_line_and_the_source_line(
    tmp_path: Path,
) -> None:
    write(tmp_path, source=SOURCE.replace('f"hello, {name}"', 'f"hi, {name}"'))
    result = run_tool(tmp_path, "doc.md")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        'doc.md:7: excerpt of greet.py (start "def greet("): differs from greet.py:3, '
        "which is '    message = f\"hi, {name}\"' (--fix refreshes it)"
    ]


def test_source_line_added_inside_the_excerpt_fails(tmp_path: Path) -> None:
    source = SOURCE.replace("    return message\n", "    print(message)\n    return message\n")
    write(tmp_path, source=source)
    result = run_tool(tmp_path, "doc.md")
    assert result.returncode == 1
    assert result.stdout.startswith("doc.md:8: excerpt of greet.py")
    assert "differs from greet.py:4, which is '    print(message)'" in result.stdout


@pytest.mark.parametrize(
    ("marker", "problem"),
    [
        (
            '<!-- excerpt: greet.py start="def wave(" end="return message" -->',
            'doc.md:3: excerpt of greet.py (start "def wave("): the start text is not in the file',
        ),
        (
            '<!-- excerpt: greet.py start="def greet(" end="return greeting" -->',
            'doc.md:3: excerpt of greet.py (start "def greet("): '
            'the end text "return greeting" is not after greet.py:1',
        ),
        (
            '<!-- excerpt: greet.py start="return message" end="def greet(" -->',
            'doc.md:3: excerpt of greet.py (start "return message"): '
            'the end text "def greet(" is not after greet.py:4',
        ),
    ],
    ids=["start", "end", "end-before-start"],
)
def test_missing_anchor_fails(tmp_path: Path, marker: str, problem: str) -> None:
    write(tmp_path, doc=DOC.replace(MARKER, marker))
    result = run_tool(tmp_path, "doc.md")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [problem]


def test_missing_source_file_fails(tmp_path: Path) -> None:
    write(tmp_path, doc=DOC.replace("greet.py", "gone.py"))
    result = run_tool(tmp_path, "doc.md")
    assert result.returncode == 1
    assert result.stdout.startswith(
        'doc.md:3: excerpt of gone.py (start "def greet("): no such file'
    )


def test_malformed_marker_fails_rather_than_going_unchecked(tmp_path: Path) -> None:
    write(tmp_path, doc=DOC.replace(MARKER, "<!-- excerpt: greet.py start=def greet( -->"))
    result = run_tool(tmp_path, "doc.md")
    assert result.returncode == 1
    assert result.stdout.startswith("doc.md:3: malformed excerpt marker")


def test_marker_shown_inside_a_code_block_is_not_an_excerpt(tmp_path: Path) -> None:
    shown = f"How to quote code:\n\n````markdown\n{MARKER}\n```python\n(nothing)\n```\n````\n"
    write(tmp_path, doc=DOC + shown)
    result = run_tool(tmp_path, "doc.md")
    assert (result.returncode, result.stdout) == (0, "")


def test_fix_repairs_the_block_and_nothing_else(tmp_path: Path) -> None:
    changed = SOURCE.replace('f"hello, {name}"', 'f"hi, {name}"')
    doc = write(tmp_path, source=changed)
    fixed = run_tool(tmp_path, "--fix", "doc.md")
    assert fixed.returncode == 0
    assert fixed.stdout.splitlines() == [
        'doc.md:3: excerpt of greet.py (start "def greet("): refreshed from greet.py:1-4; '
        "re-read the prose around it"
    ]
    assert doc.read_text(encoding="utf-8") == DOC.replace(BLOCK, quoted(changed))
    assert run_tool(tmp_path, "doc.md").returncode == 0


def test_fix_refreshes_every_block_and_reports_where_each_now_is(tmp_path: Path) -> None:
    grown = SOURCE.replace("    return message\n", "    print(message)\n    return message\n")
    empty = f"{MARKER}\n```python\n```\n"
    doc = write(tmp_path, source=grown, doc=DOC + "\n" + empty)
    fixed = run_tool(tmp_path, "--fix", "doc.md")
    assert fixed.returncode == 0
    new_block = quoted(grown)
    text = doc.read_text(encoding="utf-8")
    assert text == DOC.replace(BLOCK, new_block) + f"\n{MARKER}\n```python\n{new_block}```\n"
    lines = text.split("\n")
    reported = [int(line.split(":")[1]) for line in fixed.stdout.splitlines()]
    assert [lines[number - 1] for number in reported] == [MARKER, MARKER]
    assert run_tool(tmp_path, "doc.md").returncode == 0


def test_fix_reports_what_it_cannot_repair_at_its_line_after_the_fix(tmp_path: Path) -> None:
    grown = SOURCE.replace("    return message\n", "    print(message)\n    return message\n")
    lost = '<!-- excerpt: greet.py start="def wave(" end="pass" -->\n```python\n```\n'
    doc = write(tmp_path, source=grown, doc=DOC + "\n" + lost)
    fixed = run_tool(tmp_path, "--fix", "doc.md")
    assert fixed.returncode == 1
    refreshed, problem = fixed.stdout.splitlines()
    assert refreshed.startswith("doc.md:3: ")
    assert problem.endswith("the start text is not in the file")
    number = int(problem.split(":")[1])
    assert doc.read_text(encoding="utf-8").split("\n")[number - 1] == lost.split("\n")[0]


def test_fix_cannot_repair_a_missing_anchor_and_changes_nothing(tmp_path: Path) -> None:
    doc = write(tmp_path, source=SOURCE.replace("def greet(", "def welcome("))
    result = run_tool(tmp_path, "--fix", "doc.md")
    assert result.returncode == 1
    assert "the start text is not in the file" in result.stdout
    assert doc.read_text(encoding="utf-8") == DOC
