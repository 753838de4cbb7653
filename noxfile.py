"""Development tasks: ``nox`` runs every default session below; ``nox -s NAME`` runs one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

PYPROJECT = nox.project.load_toml("pyproject.toml")


def group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against the package installed as a user gets it (not editable)."""
    session.install(".", *group("test"))
    session.run("pytest", "--ignore=tests/browser", "--ignore=tests/deploy", *session.posargs)


def lowest_supported() -> list[str]:
    """``name==lowest`` for every runtime dependency (each is declared ``>=lowest,<bound``)."""
    pins = []
    for requirement in PYPROJECT["project"]["dependencies"]:
        name, _, bounds = requirement.partition(">=")
        pins.append(f"{name}=={bounds.split(',')[0]}")
    return pins


SHOW_VERSIONS = (
    "import importlib.metadata as m, tomllib, re;"
    "deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'];"
    "print(*(f'{n} {m.version(n)}' for n in (re.split(r'[\\[<>=]', d)[0] for d in deps)))"
)


@nox.session
@nox.parametrize("versions", ["lowest", "highest"])
def compat(session: nox.Session, versions: str) -> None:
    """Run the integration tests on the lowest, then the highest, supported dependencies."""
    if versions == "lowest":
        session.install(".", *group("test"), *lowest_supported())
    else:
        session.install("--upgrade", ".", *group("test"))
    session.run("python", "-c", SHOW_VERSIONS)  # the matrix row, in the log
    # The soak (minutes of churn) measures leaks, not compatibility: `tests` runs it.
    session.run("pytest", "tests/integration", "-m", "not soak", *session.posargs)


NO_CHROMIUM = (
    "No Chromium for the browser tests. Install Debian's package "
    "(`apt-get install chromium`), or set TICKER_CHROMIUM to a Chromium or Chrome "
    "executable, or let `playwright install chromium` download one (needs internet)."
)


def find_chromium(session: nox.Session) -> str | None:
    """$TICKER_CHROMIUM, else `chromium` on PATH; None means Playwright's own browser."""
    configured = os.environ.get("TICKER_CHROMIUM")
    if configured:
        if not shutil.which(configured):
            session.error(f"TICKER_CHROMIUM={configured!r} is not an executable. {NO_CHROMIUM}")
        return configured
    found = shutil.which("chromium")
    if found:
        return found
    try:
        session.run("playwright", "install", "chromium")
    except nox.command.CommandFailed:
        session.error(NO_CHROMIUM)
    return None


@nox.session
def browser(session: nox.Session) -> None:
    """Run the page in headless Chromium with Playwright, against the real server command."""
    session.install(".", *group("browser"))
    chromium = find_chromium(session)
    env = {} if chromium is None else {"TICKER_CHROMIUM": chromium}
    session.run("pytest", "tests/browser", *session.posargs, env=env)


NO_NGINX = (
    "No nginx for the deployment tests. Install Debian's package "
    "(`apt-get install nginx`), or set TICKER_NGINX to an nginx executable."
)


@nox.session
def deploy(session: nox.Session) -> None:
    """Run deploy/ with Debian's nginx (TLS): two-worker hypercorns, a rolling restart, the page."""
    configured = os.environ.get("TICKER_NGINX")
    nginx = configured or shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not nginx or not shutil.which(nginx):
        session.error(NO_NGINX)
    # The rolling restart's clients include the page in Chromium, as in `browser`.
    session.install(".", *group("browser"))
    chromium = find_chromium(session)
    env = {"TICKER_NGINX": nginx}
    if chromium is not None:
        env["TICKER_CHROMIUM"] = chromium
    session.run("pytest", "tests/deploy", *session.posargs, env=env)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmark ticker against its floor and peers (BENCHMARKS.md); minutes, not seconds.

    With no arguments, also each lever's A/B row (benchmarks/levers.py, its LEVERS table).
    """
    # websockets>=17 for the websockets-trio peer; py-spy for run.py --profile.
    session.install(".", *group("bench"), "websockets>=17", "py-spy>=0.4")
    # With no arguments: every scenario and peer with ticker's profile, then each
    # lever's A/B row with a profile of each side (BENCHMARKS.md's tables).
    session.run("python", "benchmarks/run.py", *(session.posargs or ["--profile"]))
    if not session.posargs:
        session.run("python", "benchmarks/levers.py", "--profile")


@nox.session(default=False)
def screenshot(session: nox.Session) -> None:
    """Refresh docs/screenshot.png from the running page."""
    session.install(".", *group("browser"))
    chromium = find_chromium(session)
    env = {} if chromium is None else {"TICKER_CHROMIUM": chromium}
    session.run("python", "tools/screenshot.py", "docs/screenshot.png", env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install(*group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check src, tests, tools, the tutorial's programs and this file with mypy --strict."""
    session.install(".", *group("typecheck"))
    session.run("mypy", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Check the docs' excerpts against the source, and the tutorial's programs' output."""
    session.run(
        "python",
        "tools/excerpts.py",
        "docs/tutorial.md",
        "docs/tutorial.es.md",
        *sorted(str(report) for report in Path("docs/upstream").glob("*.md")),
    )
    # Fast (virtual clock): every program in docs/tutorial/ prints the output the
    # tutorials show, and both quote every file whole. `tests` runs them for real too.
    session.install(".", *group("test"))
    session.run("pytest", "tests/unit/test_tutorial_steps.py", *session.posargs)
