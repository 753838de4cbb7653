"""The tutorial's programs print what the tutorial shows, on Trio's virtual clock.

Also: every program, page and output of docs/tutorial/ is quoted, whole, in
both tutorials, and every one is run by a test (here or in
tests/integration/test_tutorial_steps.py).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import trio
import trio.testing

from ..tutorial_programs import (
    AGAINST,
    ALONE,
    DOCS,
    OUTPUT,
    ROOT,
    SERVERS,
    TUTORIAL,
    Alone,
    expected,
    load,
)


@pytest.mark.parametrize("case", ALONE, ids=[case.program for case in ALONE])
def test_program_prints_what_the_tutorial_shows(
    case: Alone, capsys: pytest.CaptureFixture[str]
) -> None:
    # Virtual time: each sleep ends exactly on time, at once, so the output is exact.
    trio.run(load(case.program).main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert capsys.readouterr().out == expected(case.output)


def _excerpts_tool() -> ModuleType:
    """tools/excerpts.py, imported (its dataclasses need it in ``sys.modules``)."""
    name = "tutorial_excerpts_tool"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "excerpts.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _tutorial_files() -> list[Path]:
    """Everything in docs/tutorial/ a reader is shown: programs, pages, outputs.

    Not the exercises' solutions: the text links to them, and shows what they print.
    """
    return sorted(
        path
        for path in TUTORIAL.rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".html", ".txt"}
        and path.parent.name != "solutions"
    )


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_tutorial_quotes_every_file_of_its_programs_whole(doc: Path) -> None:
    """So a line added to a program cannot hide below an excerpt's end anchor."""
    tool = _excerpts_tool()
    lines = doc.read_text(encoding="utf-8").split("\n")
    excerpts, problems = tool.find_excerpts(str(doc), lines)
    assert problems == []
    shown: dict[str, set[int]] = {}
    for excerpt in excerpts:
        found = tool.quoted(ROOT, excerpt)
        assert not isinstance(found, str), f"{excerpt.path}: {found}"
        first, quoted = found
        shown.setdefault(excerpt.path, set()).update(range(first, first + len(quoted)))
    missing = []
    for path in _tutorial_files():
        name = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8").split("\n")
        for index, line in enumerate(text):
            if line.strip() and index not in shown.get(name, set()):
                missing.append(f"{name}:{index + 1}: {line.strip()}")
    assert missing == []


def test_every_program_is_run_and_every_output_is_checked() -> None:
    programs = {path.relative_to(TUTORIAL).as_posix() for path in TUTORIAL.rglob("*.py")}
    run = {case.program for case in ALONE} | {case.program for case in AGAINST}
    assert programs == run | set(SERVERS)
    served = {case.server.removeprefix("docs/tutorial/").removesuffix(":app") for case in AGAINST}
    assert set(SERVERS) <= served
    outputs = {path.name for path in OUTPUT.glob("*.txt")}
    assert outputs == {case.output for case in ALONE} | {case.output for case in AGAINST}
