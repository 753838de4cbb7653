"""Compare the installed Hypercorn with what ticker's fixes were checked against.

    python tools/fingerprints.py

For every function a fix replaces or relies on (``CHECKED`` and
``RELIED_ON`` in src/ticker/_hypercorn_fixes/__init__.py) it prints the
installed source's fingerprint and whether it is the checked one, then exits
1 if any differ. Upgrading Hypercorn: read the
upstream diff of each changed function, adapt its fix (the module that
patches it says why it does), run the suite, then paste the new lines this
prints into those tables and widen ``SUPPORTED`` and pyproject.toml together.
It never imports ``ticker.app``, so nothing is patched while it looks.
"""

from __future__ import annotations

import sys

from ticker._hypercorn_fixes import CHECKED, RELIED_ON, SUPPORTED
from ticker._hypercorn_fixes._patching import fingerprint, installed_version, resolve


def main() -> int:
    for supported in SUPPORTED:
        installed = installed_version(supported.distribution)
        verdict = "supported" if installed and supported.admits(installed) else "NOT SUPPORTED"
        print(f"# {supported.distribution} {installed}: {verdict} ({supported})")
    changed = 0
    for name, expected in {**CHECKED, **RELIED_ON}.items():
        try:
            found = fingerprint(resolve(name))
        except (LookupError, OSError, TypeError) as error:
            found = f"missing ({error})"
        same = found == expected
        changed += not same
        print(f'    "{name}": "{found}",{"" if same else f"  # CHANGED: checked {expected}"}')
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
