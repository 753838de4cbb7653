"""``python -m ticker``: the same as the ``ticker`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
