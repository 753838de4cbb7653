"""Checked, reversible, all-or-nothing patching (urllib3's ``contrib/pyopenssl.py`` is the model).

Every function a fix replaces is a *target*, listed with the fingerprint of
the source it was checked against (``__init__.CHECKED``). ``problems()`` says
what is wrong before anything is touched: an untested Hypercorn version, a
target whose source changed (a release that rewrote ``WSStream.handle`` would
otherwise lose its fix silently, or worse, half of it). ``Patcher`` installs
and remembers what it replaced, so a failure half-way puts everything back.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any, Final

#: A fix's ``install`` receives this: ``patch(owner, name, replacement)``.
Patch = Callable[[Any, str, Any], None]

_MISSING: Final = object()


def qualified_name(owner: Any, name: str) -> str:
    """``hypercorn.protocol.ws_stream.WSStream.handle``: how targets are named."""
    if isinstance(owner, ModuleType):
        return f"{owner.__name__}.{name}"
    return f"{owner.__module__}.{owner.__qualname__}.{name}"


def fingerprint(function: Any) -> str:
    """The first 16 hex digits of the SHA-256 of ``function``'s source."""
    source = inspect.getsource(function)
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.18.0"`` -> ``(0, 18, 0)``, ignoring a pre-release suffix (``0.19.0rc1`` -> 0.19.0)."""
    numbers = []
    for part in text.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
        if digits.end() < len(part):
            break
    return tuple(numbers)


def installed_version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Supported:
    """A range of versions of one distribution, ``lowest <= v < below``."""

    distribution: str
    lowest: str
    below: str

    def __str__(self) -> str:
        return f"{self.distribution}>={self.lowest},<{self.below}"

    def admits(self, installed: str) -> bool:
        found = parse_version(installed)
        return parse_version(self.lowest) <= found < parse_version(self.below)


def resolve(target: str) -> Any:
    """The object a qualified name names: the longest importable prefix, then attributes.

    Raises:
        LookupError: nothing of that name exists (any more).
    """
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                found = getattr(found, attribute)
        except AttributeError:
            break
        return found
    raise LookupError(target)


def problems(supported: Supported, checked: Mapping[str, str]) -> list[str]:
    """What stops the fixes from being applied: empty when everything is as checked.

    ``checked`` maps each target's qualified name to its fingerprint.
    """
    installed = installed_version(supported.distribution)
    if installed is None:
        return [f"{supported.distribution} is not installed; ticker needs {supported}"]
    if not supported.admits(installed):
        return [
            f"{supported.distribution} {installed} is installed, but ticker's fixes for it were"
            f" checked on {supported} only; install a supported version:"
            f" pip install '{supported}'"
        ]
    changed = []
    for name, expected in checked.items():
        try:
            found = fingerprint(resolve(name))
        except (LookupError, OSError, TypeError):  # gone, or its source is not shipped
            found = None
        if found != expected:
            changed.append(name)
    if changed:
        return [
            f"{supported.distribution} {installed} changed what ticker patches"
            f" ({', '.join(changed)}); its fixes were checked on other sources."
            " See docs/upstream/README.md"
        ]
    return []


@dataclass
class Patcher:
    """Installs replacements on checked targets only, and can undo every one."""

    checked: Mapping[str, str]
    replaced: list[tuple[Any, str, Any]] = field(default_factory=list)

    def patch(self, owner: Any, name: str, replacement: Any) -> None:
        target = qualified_name(owner, name)
        if target not in self.checked:  # a fix patching what nobody fingerprinted
            raise RuntimeError(f"{target} is patched but not listed in CHECKED")
        self.replaced.append((owner, name, vars(owner).get(name, _MISSING)))
        setattr(owner, name, replacement)

    def undo(self) -> None:
        while self.replaced:
            owner, name, original = self.replaced.pop()
            if original is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
