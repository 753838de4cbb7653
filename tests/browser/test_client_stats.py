"""The page's lateness fit (static/js/client-stats.js) agrees with ``ticker.client_stats``."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from ticker.client_stats import LatenessFit

from .conftest import HypercornProcess

pytestmark = pytest.mark.slow

# (interval, started, [(seq, arrival), ...]): ticks in order, a later more
# punctual tick, out of order, a skipped range, one tick. Exact in binary.
CASES = [
    (500.0, 10_500.0, [(1, 11_250.0), (2, 11_250.0), (3, 12_000.0)]),
    (500.0, 12_000.0, [(3, 11_500.0), (1, 10_750.0), (7, 13_500.0)]),
    (250.0, 1_000.0, [(1, 1_250.0), (5, 2_312.5)]),
    (1_000.0, 0.0, [(1, 1_003.25)]),
]


def python_fit(interval: float, started: float, ticks: list[tuple[int, float]]) -> list[float]:
    fit = LatenessFit(interval, started)
    return [fit.lateness(seq, arrival) for seq, arrival in ticks]


def test_the_pages_lateness_fit_gives_what_ticker_watchs_gives(
    page: Page, server: HypercornProcess
) -> None:
    page.goto(server.url)
    page_fit = page.evaluate(
        """async (cases) => {
            const { LatenessFit } = await import("./static/js/client-stats.js");
            return cases.map(([interval, started, ticks]) => {
                const fit = new LatenessFit(interval, started);
                return ticks.map(([seq, arrival]) => fit.lateness(seq, arrival));
            });
        }""",
        CASES,
    )
    assert page_fit == [python_fit(*case) for case in CASES]
    assert page_fit[0] == [250.0, 0.0, 250.0]  # and the numbers are the expected ones
