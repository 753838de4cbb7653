"""What the tutorial's programs (docs/tutorial/) print, and how the tests run them.

Every program there is listed here with the file holding the output that
docs/tutorial.md and docs/tutorial.es.md show for it (quoted through excerpt
markers, so ``nox -s docs`` keeps the text equal to these files). The tests run
each program and compare what it prints with that file: exactly on Trio's
virtual clock, and with every decimal number masked on a real one (real clocks
on a busy machine are late by milliseconds; the text says the last digit may
differ). Whole numbers (tick numbers, counts) must match either way.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial"
OUTPUT = TUTORIAL / "output"
DOCS = (ROOT / "docs" / "tutorial.md", ROOT / "docs" / "tutorial.es.md")


@dataclass(frozen=True)
class Alone:
    """A program that needs no server: ``python docs/tutorial/PROGRAM``."""

    program: str
    output: str


@dataclass(frozen=True)
class Against:
    """A client run against a server: ``hypercorn SERVER --worker-class trio``, then
    ``python docs/tutorial/PROGRAM ARGS... URL``."""

    program: str
    args: tuple[str, ...]
    server: str  # what `hypercorn` is given: a step's path and app, or ticker's module
    output: str
    status: int = 0


ALONE = (
    Alone("concept_async.py", "concept_async.txt"),
    Alone("concept_nursery.py", "concept_nursery.txt"),
    Alone("concept_cancel.py", "concept_cancel.txt"),
    Alone("solutions/exercise1_give_up.py", "exercise1_give_up.txt"),
    Alone("step2_sleep.py", "step2_sleep.txt"),
    Alone("step3_deadlines.py", "step3_deadlines.txt"),
    Alone("solutions/exercise2_skip.py", "exercise2_skip.txt"),
)

STEP1 = "docs/tutorial/step1_echo.py:app"
STEP4 = "docs/tutorial/step4_nursery.py:app"
STEP5 = "docs/tutorial/step5_session.py:app"
TICKER = "ticker.app:app"

AGAINST = (
    Against("echo_client.py", (), STEP1, "echo_client.txt"),
    Against("client.py", ("0.2", "3"), STEP4, "client_step4.txt"),
    Against("client.py", ("0.2", "3"), STEP5, "client_step5.txt"),
    Against("client.py", ("0", "3"), STEP5, "client_error.txt", status=1),
    Against("solutions/exercise3_change.py", (), STEP5, "exercise3_change.txt"),
    # The same client and the same output against the real ticker.
    Against("client.py", ("0.2", "3"), TICKER, "client_step5.txt"),
)

#: The programs that are servers: run by `hypercorn`, checked through their clients.
SERVERS = ("step1_echo.py", "step4_nursery.py", "step5_session.py")

DECIMAL = re.compile(r"\d+\.\d+")


def expected(output: str) -> str:
    return (OUTPUT / output).read_text(encoding="utf-8")


def masked(text: str) -> str:
    """``text`` with every decimal number replaced by ``#``: its shape, not its timing."""
    return DECIMAL.sub("#", text)


def load(program: str) -> ModuleType:
    """Import a program of docs/tutorial/ by its path, without running its ``__main__`` part."""
    path = TUTORIAL / program
    name = "tutorial_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
