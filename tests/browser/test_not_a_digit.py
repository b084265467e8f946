"""The page's "That doesn't look like a digit" message, in Chromium against a real stack
whose model has a not-a-digit output (the shipped default)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_page import SEVEN, _path, draw_mouse

pytestmark = pytest.mark.browser

STAR = [_path((140, 30), (205, 235), (35, 105), (245, 105), (75, 235), (140, 30))]
MESSAGE = re.compile(r"^That doesn't look like a digit \(not-a-digit score \d{1,3}\.\d%\)\.$")


def test_a_star_is_not_a_digit_and_a_seven_is(open_page, artifacts):
    w = open_page()
    page = w.page
    note = page.locator("#not-a-digit")
    expect(note).to_be_hidden()

    draw_mouse(page, STAR)
    page.click("#recognize")
    expect(note).to_be_visible(timeout=10_000)
    expect(note).to_have_text(MESSAGE)
    expect(page.locator("#result-digit")).to_have_text("?")
    expect(page.locator("#status")).to_contain_text("That doesn't look like a digit")
    score = float(re.search(r"(\d+\.\d)%", note.text_content()).group(1))
    assert 50 <= score <= 100
    page.screenshot(path=str(artifacts / "browser-not-a-digit.png"), full_page=True)

    page.click("#clear")
    expect(note).to_be_hidden()
    draw_mouse(page, SEVEN)
    page.click("#recognize")
    expect(page.locator("#result-digit")).to_have_text("7", timeout=10_000)
    expect(note).to_be_hidden()
    expect(page.locator("#status")).to_contain_text("Recognised 7")
    assert w.page_errors == [] and w.console_errors == []
