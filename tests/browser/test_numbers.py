"""Number mode in a real browser against the real stack: write "409" with the mouse on
the wide pad and see 409, a box over each digit, and each box's probabilities."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_page import _ellipse, _path, after_paint

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 840, 280  # the number pad's drawing coordinates

FOUR = [_path((154, 50), (146, 100), (134, 160), (190, 162), (268, 158)),
        _path((230, 66), (229, 140), (227, 246))]
ZERO = [_ellipse(420, 148, 62, 94)]
NINE = [_ellipse(640, 100, 52, 52, start=0, end=360),
        _path((692, 104), (688, 170), (682, 246))]


def draw_number(page, strokes):
    page.locator("#number-canvas").scroll_into_view_if_needed()
    box = page.locator("#number-canvas").bounding_box()

    def at(x, y):
        return box["x"] + x * box["width"] / WIDTH, box["y"] + y * box["height"] / HEIGHT

    for stroke in strokes:
        page.mouse.move(*at(*stroke[0]))
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*at(*point), steps=2)
        page.mouse.up()
    return at


def test_single_digit_mode_is_the_default(open_page):
    page = open_page().page
    expect(page.locator("#number-mode")).to_be_hidden()
    expect(page.locator("#canvas")).to_be_visible()
    assert page.locator("#mode-digit").get_attribute("aria-pressed") == "true"
    page.click("#mode-number")
    expect(page.locator("#number-mode")).to_be_visible()
    expect(page.locator("#canvas")).to_be_hidden()
    assert page.locator("#mode-number").get_attribute("aria-pressed") == "true"
    ratio = page.locator("#number-canvas").evaluate("c => c.clientWidth / c.clientHeight")
    assert abs(ratio - 3) < 0.05  # the wide pad
    page.click("#mode-digit")
    expect(page.locator("#canvas")).to_be_visible()


def test_writes_409_and_sees_three_boxes(open_page, artifacts):
    w = open_page()
    page = w.page
    page.click("#mode-number")
    at = draw_number(page, FOUR + ZERO + NINE)
    # Live prediction: no click needed.
    expect(page.locator("#number-result")).to_have_text("409", timeout=10_000)
    boxes = page.locator(".number-box")
    expect(boxes).to_have_count(3)
    assert [boxes.nth(i).locator(".number-label").inner_text() for i in range(3)] == [
        "4", "0", "9"]
    lefts = [boxes.nth(i).bounding_box()["x"] for i in range(3)]
    assert lefts == sorted(lefts)
    # Each box sits over its digit: the 0's box holds the 0's centre.
    zero = boxes.nth(1).bounding_box()
    cx, cy = at(420, 148)
    assert zero["x"] < cx < zero["x"] + zero["width"]
    assert zero["y"] < cy < zero["y"] + zero["height"]
    expect(page.locator("#number-confidence")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
    expect(page.locator("#number-status")).to_contain_text("Recognised 409")

    # Hovering the 9's box shows its probabilities; tapping the 4's label shows the 4's.
    page.mouse.move(*at(640, 100))
    expect(page.locator("#number-probs-heading")).to_contain_text("Digit 3 of 3: 9")
    expect(page.locator("#number-probs")).to_be_visible()
    top = page.locator("#number-probs li.is-top .bar-label")
    expect(top).to_have_text("9")
    boxes.nth(0).locator(".number-label").click()
    expect(page.locator("#number-probs-heading")).to_contain_text("Digit 1 of 3: 4")
    expect(top).to_have_text("4")
    ps = page.eval_on_selector_all("#number-probs .bar", "els => els.map(e => +e.dataset.p)")
    assert abs(sum(ps) - 1) < 0.01
    page.screenshot(path=str(artifacts / "browser-number-409.png"), full_page=True)

    # Undo takes the 9 away, stroke by stroke; Clear empties the pad and the boxes.
    page.click("#number-undo")
    page.click("#number-undo")
    expect(page.locator("#number-result")).to_have_text("40", timeout=10_000)
    expect(boxes).to_have_count(2)
    page.click("#number-clear")
    expect(boxes).to_have_count(0)
    expect(page.locator("#number-result")).to_have_text("")
    after_paint(page)
    assert w.console_errors == [] and w.page_errors == []
    assert page.evaluate("window.__csp") == []
