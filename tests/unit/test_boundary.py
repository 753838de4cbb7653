"""The Hypercorn boundary (src/ticker/_hypercorn_fixes/): checked first, all or none, reversible."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypercorn.config import Config
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import WSStream

import ticker._hypercorn_fixes as fixes
from ticker._hypercorn_fixes import _patching
from ticker._hypercorn_fixes._patching import fingerprint, parse_version, resolve
from ticker._hypercorn_fixes.registry import Server

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "ticker" / "_hypercorn_fixes"


def targets() -> dict[str, Any]:
    return {name: resolve(name) for name in fixes.CHECKED}


@pytest.fixture
def unpatched() -> Iterator[None]:
    """Hypercorn as shipped, for one test; patched again afterwards, for the rest of the suite."""
    fixes.restore()
    try:
        yield
    finally:
        fixes.apply()


def test_the_installed_versions_are_the_ones_the_fixes_were_checked_on(unpatched: None) -> None:
    for supported in fixes.SUPPORTED:
        every = {**fixes.CHECKED, **fixes.RELIED_ON}
        checked = every if supported.distribution == "hypercorn" else {}
        assert _patching.problems(supported, checked) == []


def test_every_listed_target_is_patched_and_restore_puts_back_the_checked_source() -> None:
    patched = {name: fingerprint(target) for name, target in targets().items()}
    assert all(patched[name] != expected for name, expected in fixes.CHECKED.items())
    fixes.restore()
    try:
        assert {name: fingerprint(target) for name, target in targets().items()} == fixes.CHECKED
    finally:
        fixes.apply()
    fixes.apply()  # idempotent: a second call changes nothing
    assert {name: fingerprint(target) for name, target in targets().items()} == patched


def test_an_untested_hypercorn_is_refused_in_one_line_and_nothing_is_patched(
    unpatched: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _patching.installed_version
    monkeypatch.setattr(
        _patching,
        "installed_version",
        lambda name: "0.19.0" if name == "hypercorn" else real(name),
    )
    before = targets()
    with pytest.raises(fixes.UnsupportedHypercorn) as refused:
        fixes.apply()
    assert str(refused.value) == (
        "hypercorn 0.19.0 is installed, but ticker's fixes for it were checked on"
        " hypercorn>=0.18.0,<0.19 only; install a supported version:"
        " pip install 'hypercorn>=0.18.0,<0.19'"
    )
    assert targets() == before
    monkeypatch.undo()


def test_a_release_that_changed_a_patched_function_is_refused_by_name(
    unpatched: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def rewritten_accept(self: WSStream, message: Any) -> None:
        """What a new Hypercorn release might ship instead."""

    monkeypatch.setattr(WSStream, "_accept", rewritten_accept)
    before = targets()
    with pytest.raises(fixes.UnsupportedHypercorn) as refused:
        fixes.apply()
    message = str(refused.value)
    assert "\n" not in message
    assert "(hypercorn.protocol.ws_stream.WSStream._accept)" in message
    assert targets() == before
    monkeypatch.undo()


def test_a_fix_failing_half_way_leaves_hypercorn_as_it_was(
    unpatched: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_install(patch: _patching.Patch) -> None:
        raise RuntimeError("a bug in the last fix")

    monkeypatch.setattr(fixes.http2_flow_control, "install", broken_install)
    before = targets()
    with pytest.raises(RuntimeError, match="a bug in the last fix"):
        fixes.apply()
    assert targets() == before  # the five fixes before it were undone
    monkeypatch.undo()


def test_patching_something_nobody_fingerprinted_is_a_bug() -> None:
    patcher = _patching.Patcher(checked={})
    with pytest.raises(RuntimeError, match="not listed in CHECKED"):
        patcher.patch(WSStream, "_accept", None)
    assert patcher.replaced == []


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("0.18.0", (0, 18, 0)), ("0.19.0rc1", (0, 19, 0)), ("1.2", (1, 2)), ("2.0.post1", (2, 0))],
)
def test_versions_compare_by_their_numbers(text: str, parsed: tuple[int, ...]) -> None:
    assert parse_version(text) == parsed


@pytest.mark.parametrize(
    ("installed", "admitted"),
    [
        ("0.17.3", False),
        ("0.18.0", True),
        ("0.18.9", True),
        ("0.19.0", False),
        ("0.19.0rc1", False),
    ],
)
def test_the_supported_range_includes_its_lowest_and_excludes_its_bound(
    installed: str, admitted: bool
) -> None:
    assert _patching.Supported("hypercorn", "0.18.0", "0.19").admits(installed) is admitted


def test_pyproject_declares_exactly_the_supported_ranges() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower(): requirement
        for requirement in project["dependencies"]
    }
    for supported in fixes.SUPPORTED:
        requirement = declared[supported.distribution]
        assert requirement.endswith(f">={supported.lowest},<{supported.below}"), requirement
    # Every runtime dependency has both ends, as tested by ``nox -s compat``.
    for requirement in project["dependencies"]:
        assert ">=" in requirement, requirement
        assert ",<" in requirement, requirement


def cited_tests() -> list[tuple[str, str, str]]:
    """(module, test file, test name) for every ``tests/...py::name`` a fix cites."""
    cited = []
    for module in sorted(PACKAGE.glob("*.py")):
        text = module.read_text()
        for path, name in re.findall(r"(tests/[\w/]+\.py)::\s*(?:#\s*)?(\w+)", text):
            cited.append((module.name, path, name))
    return cited


def test_every_fix_cites_a_test() -> None:
    citing = {module for module, _, _ in cited_tests()}
    for fix in fixes.FIXES:
        assert Path(fix.__file__ or "").name in citing, fix.__name__
    assert {"keepalive.py", "proxy_schemes.py"} <= citing


@pytest.mark.parametrize(
    ("module", "path", "name"), cited_tests(), ids=[f"{m}:{n}" for m, _, n in cited_tests()]
)
def test_every_cited_test_exists(module: str, path: str, name: str) -> None:
    tree = ast.parse((ROOT / path).read_text())
    defined = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    assert name in defined, f"{module} cites {path}::{name}, which does not exist"


def test_every_fix_names_its_upstream_report_and_every_report_is_named() -> None:
    named: dict[str, set[str]] = {}
    for module in sorted(PACKAGE.glob("*.py")):
        for report in re.findall(r"docs/upstream/([\w-]+\.md)", module.read_text()):
            named.setdefault(report, set()).add(module.name)
    reports = {path.name for path in (ROOT / "docs" / "upstream").glob("*.md")} - {"README.md"}
    assert set(named) - {"README.md"} == reports  # none missing, none stale
    naming = set().union(*named.values())
    for fix in fixes.FIXES:
        assert Path(fix.__file__ or "").name in naming, fix.__name__
    assert {"keepalive.py", "proxy_schemes.py"} <= naming


class _NoNursery:
    def start_soon(self, *args: object) -> None:
        raise AssertionError("no keepalive was asked for")


def test_one_server_takes_one_registration() -> None:
    policy = fixes.WebsocketPolicy(
        max_message_size=4096,
        send_timeout=5.0,
        compression=False,
        ping_interval=0,
        ping_timeout=20,
        close_timeout=10,
        frame_rate=1000,
    )
    config = Config()
    server = Server(config, _NoNursery())  # type: ignore[arg-type]
    calls: list[str] = []
    server.register(policy, lambda: calls.append("shutdown"))
    assert config.websocket_max_message_size == 4096  # down from Hypercorn's 16 MiB
    with pytest.raises(RuntimeError, match="already registered"):
        server.register(policy)
    server.begin_shutdown()
    server.begin_shutdown()
    assert calls == ["shutdown"]  # once, however often shutdown is signalled


def test_a_release_that_changed_a_function_a_fix_relies_on_is_refused_by_name(
    unpatched: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def rewritten_stream_send(self: H11Protocol, event: Any) -> None:
        """What a new Hypercorn release might ship instead."""

    monkeypatch.setattr(H11Protocol, "stream_send", rewritten_stream_send)
    before = targets()
    with pytest.raises(fixes.UnsupportedHypercorn, match=r"H11Protocol\.stream_send"):
        fixes.apply()
    assert targets() == before
    monkeypatch.undo()
