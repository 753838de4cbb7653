"""The page for keyboard and screen-reader users: what an accessibility audit checks.

Contrast is computed here from the browser's computed styles (WCAG 2.2 relative
luminance), never written down; live regions are read from Chromium's own
accessibility tree, as assistive technology gets them.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass

import pytest
from playwright.sync_api import Locator, Page, expect

from .conftest import WAIT_TIMEOUT, HypercornProcess, PageProblems
from .test_page import CONNECTED, expect_done, open_page, start, ticks

pytestmark = pytest.mark.slow

#: WCAG 2.2 SC 1.4.11 (non-text contrast): a focus ring or a field's edge
#: against the colours next to it.
MIN_CONTRAST = 3.0

THEMES = ["light", "dark"]


def luminance(color: str) -> float:
    """WCAG relative luminance of a computed ``rgb()``/``rgba()`` colour (opaque only)."""
    found = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)", color)
    assert found is not None, f"not a computed sRGB colour: {color}"
    assert found.group(4) in (None, "1"), f"translucent, so its contrast depends on more: {color}"

    def linear(channel: str) -> float:
        c = int(channel) / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(found.group(i)) for i in (1, 2, 3))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(one: str, other: str) -> float:
    """WCAG contrast ratio of two computed colours, from 1 to 21."""
    high, low = sorted((luminance(one), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_contrast_follows_wcag() -> None:
    assert contrast("rgb(0, 0, 0)", "rgb(255, 255, 255)") == pytest.approx(21)
    assert contrast("rgb(118, 118, 118)", "rgb(255, 255, 255)") == pytest.approx(4.54, abs=0.01)
    assert contrast("rgb(10, 20, 30)", "rgb(10, 20, 30)") == 1


#: JavaScript: the colour behind an element, the first opaque background of its
#: ancestors (each element here sits directly on its panel or on the page).
BEHIND = """function behind(element) {
    for (let parent = element.parentElement; parent; parent = parent.parentElement) {
        const color = getComputedStyle(parent).backgroundColor;
        if (!/^rgba\\(.*, 0\\)$/.test(color) && color !== "transparent") {
            return {color, panel: parent.tagName === "FORM"};
        }
    }
    return {color: "none", panel: false};
}"""


@dataclass
class FocusRing:
    style: str
    width: float  # px
    color: str
    behind: str  # the colour it is drawn on
    on_panel: bool  # drawn on the form's panel, not on the page


def focus_ring(element: Locator) -> FocusRing:
    ring = element.evaluate(
        "element => {"
        + BEHIND
        + """
            const style = getComputedStyle(element);
            const under = behind(element);
            return {style: style.outlineStyle, width: parseFloat(style.outlineWidth),
                    color: style.outlineColor, behind: under.color, onPanel: under.panel};
        }"""
    )
    return FocusRing(ring["style"], ring["width"], ring["color"], ring["behind"], ring["onPanel"])


#: Everything Tab reaches, in order, by role and name.
TAB_ORDER = [
    ("spinbutton", "Interval (seconds)"),
    ("spinbutton", "Count (empty = unlimited)"),
    ("checkbox", "Align to the clock"),
    ("button", "Start"),
    ("button", "Stop"),
    ("list", "Ticks"),
    ("link", "/healthz"),
]


@pytest.mark.parametrize("theme", THEMES)
def test_tab_reaches_every_control_with_a_focus_ring_of_3_to_1(
    page: Page, server: HypercornProcess, theme: str
) -> None:
    page.emulate_media(color_scheme=theme)  # type: ignore[arg-type]
    open_page(page, server)
    page_background = page.locator("body").evaluate(
        "body => getComputedStyle(body).backgroundColor"
    )
    # The theme took effect: a dark page in dark, a light one in light.
    assert (luminance(page_background) < 0.05) == (theme == "dark")
    surfaces = set()
    for role, name in TAB_ORDER:
        page.keyboard.press("Tab")
        element = page.get_by_role(role, name=name, exact=True)  # type: ignore[arg-type]
        expect(element).to_be_focused()
        ring = focus_ring(element)
        assert ring.style != "none", (name, ring)
        assert ring.width >= 2, (name, ring)
        assert contrast(ring.color, ring.behind) >= MIN_CONTRAST, (name, theme, ring)
        surfaces.add(ring.on_panel)
    assert surfaces == {True, False}  # rings on the form's panel and on the page both checked


@pytest.mark.parametrize("theme", THEMES)
def test_input_borders_contrast_3_to_1_with_the_field_and_the_panel(
    page: Page, server: HypercornProcess, theme: str
) -> None:
    page.emulate_media(color_scheme=theme)  # type: ignore[arg-type]
    open_page(page, server)
    for name in ("Interval (seconds)", "Count (empty = unlimited)"):
        field = page.get_by_role("spinbutton", name=name)
        colors = field.evaluate(
            "element => {"
            + BEHIND
            + """
                const style = getComputedStyle(element);
                return {sides: [style.borderTopColor, style.borderRightColor,
                                style.borderBottomColor, style.borderLeftColor],
                        widths: [style.borderTopWidth, style.borderBottomWidth],
                        inside: style.backgroundColor, outside: behind(element)};
            }"""
        )
        assert colors["outside"]["panel"], "the fields sit on the form's panel"
        assert all(float(width.removesuffix("px")) >= 1 for width in colors["widths"])
        for side in colors["sides"]:
            assert contrast(side, colors["inside"]) >= MIN_CONTRAST, (name, theme, colors)
            assert contrast(side, colors["outside"]["color"]) >= MIN_CONTRAST, (name, theme, colors)


def test_the_tick_list_is_focusable_labelled_and_scrolls_from_the_keyboard(
    page: Page, server: HypercornProcess
) -> None:
    open_page(page, server)
    tick_list = page.get_by_role("list", name="Ticks")
    # Focusable even while empty (and so not yet scrollable).
    page.get_by_role("button", name="Stop").focus()
    page.keyboard.press("Tab")
    expect(tick_list).to_be_focused()
    start(page, "0.02", "60")
    expect_done(page, 60)
    assert tick_list.evaluate("list => list.scrollHeight > list.clientHeight")
    assert tick_list.evaluate("list => list.scrollTop") == 0
    tick_list.focus()
    page.keyboard.press("End")
    page.wait_for_function(
        "list => list.scrollTop + list.clientHeight >= list.scrollHeight - 1",
        arg=tick_list.element_handle(),
    )


def live_regions(page: Page) -> list[tuple[str, str]]:
    """(politeness, text) of every live region, from Chromium's accessibility tree.

    Only what assistive technology is told: text in aria-hidden subtrees is not
    in the tree at all.
    """
    session = page.context.new_cdp_session(page)
    try:
        nodes = session.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        session.detach()
    by_id = {node["nodeId"]: node for node in nodes}

    def live(node: dict[str, object]) -> str | None:
        for prop in node.get("properties", []):  # type: ignore[attr-defined]
            if prop["name"] == "live" and prop["value"]["value"] != "off":
                return str(prop["value"]["value"])
        return None

    def text(node: dict[str, object]) -> str:
        if node.get("ignored"):
            return ""
        if node["role"]["value"] == "StaticText":  # type: ignore[index]
            return str(node["name"]["value"])  # type: ignore[index]
        return "".join(text(by_id[child]) for child in node.get("childIds", []))  # type: ignore[attr-defined]

    regions = []
    for node in nodes:
        politeness = live(node)
        parent = by_id.get(node.get("parentId", ""))
        if politeness and not node.get("ignored") and (parent is None or live(parent) is None):
            regions.append((politeness, " ".join(text(node).split())))
    return regions


def expect_live_region(
    page: Page, politeness: str, says: str | re.Pattern[str]
) -> list[tuple[str, str]]:
    """Wait until a live region of ``politeness`` says exactly ``says``; every region then."""
    deadline = time.monotonic() + WAIT_TIMEOUT / 1000
    while True:
        regions = live_regions(page)
        for kind, text in regions:
            matches = says.fullmatch(text) if isinstance(says, re.Pattern) else text == says
            if kind == politeness and matches:
                return regions
        if time.monotonic() > deadline:
            pytest.fail(f"no {politeness} live region says {says!r}: {regions}")
        page.wait_for_timeout(100)


def test_schedule_state_announces_start_stop_and_done(page: Page, server: HypercornProcess) -> None:
    open_page(page, server)
    # Each state stays until the next, so it is there to be read.
    start(page, "0.5")
    expect_live_region(page, "polite", "(#1: every 0.5 s, unlimited)")
    page.get_by_role("button", name="Stop").click()
    expect_live_region(page, "polite", "(stopped)")
    start(page, "0.1", "3")
    expect_live_region(page, "polite", re.compile(r"\(done: \d received, \d skipped\)"))


def test_reconnecting_announces_changes_of_state_not_a_countdown(
    page: Page, server: HypercornProcess, problems: PageProblems
) -> None:
    problems.allow_websocket_failures = True  # Chromium logs each refused attempt
    open_page(page, server)
    status = page.get_by_role("status")
    expect(status).to_have_text(re.compile(r"^Connected to ticker \d"))
    # Every change to what the live region says, as it happens.
    status.evaluate(
        """status => {
            window.statusLog = [];
            new MutationObserver(() => window.statusLog.push(status.textContent))
                .observe(status, {childList: true, characterData: true, subtree: true});
        }"""
    )
    server.stop()
    expect(status).to_have_text("Disconnected: reconnecting…")
    # The countdown is on screen, and not in the live region or the tree at all.
    countdown = page.get_by_text(re.compile(r"^\((next attempt in \d+ s|connecting…)\)$"))
    expect(countdown).to_be_visible()
    regions = expect_live_region(page, "polite", "Disconnected: reconnecting…")
    assert not any("attempt" in text for _, text in regions), regions
    page.wait_for_timeout(2_500)  # several attempts, each refused, and their countdowns
    server.start()
    expect(status).to_have_text(CONNECTED, timeout=40_000)
    expect(status).to_have_text(re.compile(r"^Connected to ticker \d"))
    said = page.evaluate("window.statusLog")
    assert said[0] == "Disconnected: reconnecting…", said
    assert said[-1].startswith("Connected to ticker "), said
    assert set(said[1:-1]) <= {"Connected"}, said  # no countdown, no attempt announced
    assert all(one != other for one, other in itertools.pairwise(said)), said  # never repeated


def test_each_validation_message_describes_its_own_field(
    page: Page, server: HypercornProcess
) -> None:
    open_page(page, server)
    interval = page.get_by_label("Interval (seconds)")
    count = page.get_by_label("Count (empty = unlimited)")
    interval_problem = "The interval must be a number of seconds between 0.01 and 86400."
    count_problem = "The count must be a whole number from 1 to 1000000, or empty for no limit."
    expect(interval).to_have_accessible_description("")
    start(page, "0.001", "2.5")
    expect(page.get_by_role("alert")).to_have_text(f"{interval_problem} {count_problem}")
    expect(interval).to_have_accessible_description(interval_problem)
    expect(count).to_have_accessible_description(count_problem)
    start(page, "1", "2.5")
    expect(interval).to_have_accessible_description("")
    expect(count).to_have_accessible_description(count_problem)
    start(page, "1", "1")
    expect(page.get_by_role("alert")).to_have_text("")
    expect(count).to_have_accessible_description("")


def test_the_page_has_a_meta_description(page: Page, server: HypercornProcess) -> None:
    open_page(page, server)
    description = page.locator('head meta[name="description"]')
    expect(description).to_have_count(1)
    content = description.get_attribute("content")
    assert content is not None
    assert len(content) >= 50  # a sentence, as a search result shows it
    assert "ticker" in content
    assert "ticks" in content


def test_keyboard_only_tab_to_the_fields_enter_to_start_then_stop(
    page: Page, server: HypercornProcess
) -> None:
    open_page(page, server)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Interval (seconds)")).to_be_focused()
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type("0.05")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Count (empty = unlimited)")).to_be_focused()
    page.keyboard.type("3")
    page.keyboard.press("Enter")
    expect_done(page, 3)
    # Unbounded, on the clock: clear the count, Tab to the checkbox, Space, Tab, Enter.
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.press("Backspace")
    page.keyboard.press("Tab")
    align = page.get_by_role("checkbox", name="Align to the clock")
    expect(align).to_be_focused()
    page.keyboard.press("Space")
    expect(align).to_be_checked()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Start")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_text("(#2: every 0.05 s, unlimited, aligned to the clock)")).to_be_visible()
    expect(ticks(page).nth(4)).to_be_attached()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Stop")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_text("(stopped)")).to_be_visible()
