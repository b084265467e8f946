"""The page in a real browser against the real stack: draw, recognise, clear, undo,
live prediction, touch input, keyboard, errors. The worker-stopping test runs last:
it leaves the module's stack without a worker.
"""

from __future__ import annotations

import math
import re
import time
import urllib.error
import urllib.request
from itertools import pairwise

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

SIZE = 280  # the page's drawing coordinates

NOT_READY = "The recogniser is not ready: no worker is running. Try again in a moment."
BLANK = "The canvas is blank — draw a digit first."


# ------------------------------------------------------------------ handwriting
# Strokes in the canvas' 280x280 coordinates, shaped like a hand draws them.


def _path(*points, per_segment=6):
    """Interpolate a polyline with a little wobble, as a hand would draw it."""
    out = []
    for (x0, y0), (x1, y1) in pairwise(points):
        for i in range(per_segment):
            t = i / per_segment
            wobble = math.sin((len(out) + 1) * 1.7) * 0.8
            out.append((x0 + (x1 - x0) * t + wobble, y0 + (y1 - y0) * t - wobble))
    out.append(points[-1])
    return out


def _ellipse(cx, cy, rx, ry, start=-100, end=275, step=12, tilt=0.12):
    out = []
    for deg in range(start, end + 1, step):
        a = math.radians(deg)
        x, y = rx * math.cos(a), ry * math.sin(a)
        out.append((cx + x + tilt * y, cy + y))
    return out


SEVEN = [
    _path((70, 78), (120, 73), (170, 70), (210, 66), (196, 104), (176, 146), (158, 190), (146, 236))
]
ZERO = [_ellipse(140, 140, 62, 94)]
FOUR = [
    _path((104, 50), (96, 100), (84, 160), (140, 162), (218, 158)),
    _path((180, 66), (179, 140), (177, 246)),
]
DIGITS = {7: SEVEN, 0: ZERO, 4: FOUR}


def canvas_box(page):
    page.locator("#canvas").scroll_into_view_if_needed()
    return page.locator("#canvas").bounding_box()


def to_page(box, x, y):
    return box["x"] + x * box["width"] / SIZE, box["y"] + y * box["height"] / SIZE


def draw_mouse(page, strokes, pause_ms=0):
    """Draw each stroke with the mouse: down, many small moves, up."""
    box = canvas_box(page)
    for stroke in strokes:
        page.mouse.move(*to_page(box, *stroke[0]))
        page.mouse.down()
        for i, point in enumerate(stroke[1:]):
            page.mouse.move(*to_page(box, *point), steps=2)
            if pause_ms and i % 4 == 3:
                page.wait_for_timeout(pause_ms)
        page.mouse.up()


def draw_touch(page, cdp, strokes):
    """Draw each stroke with one finger through CDP touch events (pointerType touch)."""
    box = canvas_box(page)
    for stroke in strokes:
        x, y = to_page(box, *stroke[0])
        cdp.send(
            "Input.dispatchTouchEvent",
            {"type": "touchStart", "touchPoints": [{"x": x, "y": y, "id": 1}]},
        )
        for point in stroke[1:]:
            x, y = to_page(box, *point)
            cdp.send(
                "Input.dispatchTouchEvent",
                {"type": "touchMove", "touchPoints": [{"x": x, "y": y, "id": 1}]},
            )
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def after_paint(page):
    """Wait two animation frames: the canvas repaints on the next one."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def canvas_url(page) -> str:
    after_paint(page)
    return page.evaluate("() => document.getElementById('canvas').toDataURL()")


def canvas_is_blank(page) -> bool:
    after_paint(page)
    return page.evaluate("""() => {
        const c = document.getElementById('canvas');
        const blank = document.createElement('canvas');
        blank.width = c.width; blank.height = c.height;
        return c.toDataURL() === blank.toDataURL();
    }""")


def bar_ps(page) -> dict[int, float]:
    return {
        int(d): float(p)
        for d, p in page.eval_on_selector_all(
            ".bar[data-digit]", "els => els.map(e => [e.dataset.digit, e.dataset.p])"
        )
    }


# ------------------------------------------------------------------ tests


def test_loads_clean_and_accessible(open_page, web_stack):
    w = open_page()
    page = w.page
    expect(page.locator("#status")).to_have_text(re.compile(r"^Ready"))
    assert w.console_errors == [] and w.page_errors == []
    assert page.evaluate("window.__csp") == []
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.locator("main").count() == 1 and page.locator("h1").count() == 1
    canvas = page.locator("#canvas")
    assert canvas.get_attribute("aria-label")
    assert page.locator("#status").get_attribute("aria-live") == "polite"
    assert canvas.evaluate("c => getComputedStyle(c).touchAction") == "none"
    assert page.locator(".bar[data-digit]").count() == 10
    for name in ("recognize", "clear", "undo"):
        button = page.locator(f"#{name}")
        assert button.evaluate("b => b.tagName") == "BUTTON" and button.inner_text().strip()
    # Everything is served by the project: no request leaves the origin.
    sent = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert all(url.startswith(web_stack.url) for url in sent), sent
    # No inline script or style in the markup (the CSP would block it anyway).
    html = urllib.request.urlopen(web_stack.url + "/", timeout=5).read().decode()
    assert "style=" not in html and "<style" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)


def test_recognises_drawn_digits(open_page, artifacts):
    w = open_page()
    page = w.page
    for digit, strokes in DIGITS.items():
        page.click("#clear")
        draw_mouse(page, strokes)
        page.click("#recognize")
        expect(page.locator("#result-digit")).to_have_text(str(digit), timeout=10_000)
        expect(page.locator("#result-confidence")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
        expect(page.locator("#model-version")).to_have_text(re.compile(r"^\d+$"))
        expect(page.locator("#latency")).to_have_text(re.compile(r"^\d+ ms$"))
        expect(page.locator("#status")).to_contain_text(f"Recognised {digit}")
        ps = bar_ps(page)
        assert abs(sum(ps.values()) - 1) < 0.01 and max(ps, key=ps.get) == digit
        top = page.locator(f".bar[data-digit='{digit}']")
        expect(top.locator("xpath=ancestor::li")).to_have_class(re.compile(r"\bis-top\b"))
        page.wait_for_timeout(200)  # the bar's width transition
        width = top.evaluate(
            "b => b.getBoundingClientRect().width / b.parentElement.getBoundingClientRect().width"
        )
        assert abs(width - ps[digit]) < 0.03
        if digit == 7:
            page.screenshot(path=str(artifacts / "browser-seven.png"), full_page=True)
    assert w.page_errors == []
    assert w.max_in_flight == 1


def test_live_prediction_is_debounced(open_page):
    w = open_page()
    page = w.page
    # A slow stroke (~1 s, pauses shorter than the debounce) and no click.
    draw_mouse(page, SEVEN, pause_ms=60)
    expect(page.locator("#result-digit")).to_have_text(re.compile(r"^\d$"), timeout=10_000)
    page.wait_for_timeout(800)
    # ~50 pointer moves over ~1 s: without the debounce, ~50 requests.
    assert 1 <= len(w.predicts) <= 4, f"{len(w.predicts)} requests for one stroke"
    assert w.max_in_flight == 1
    # An empty canvas is never sent live.
    page.click("#clear")
    sent = len(w.predicts)
    page.wait_for_timeout(500)
    assert len(w.predicts) == sent


def test_clear_resets_everything(open_page):
    w = open_page()
    page = w.page
    blank = canvas_url(page)
    draw_mouse(page, ZERO)
    page.click("#recognize")
    expect(page.locator("#result-digit")).to_have_text(re.compile(r"^\d$"), timeout=10_000)
    assert canvas_url(page) != blank
    page.click("#clear")
    expect(page.locator("#result-digit")).to_have_text("")
    expect(page.locator("#result-confidence")).to_have_text("")
    assert set(bar_ps(page).values()) == {0.0}
    assert page.locator("li.is-top").count() == 0
    assert canvas_is_blank(page)
    # A late answer for the cleared drawing must not come back.
    page.wait_for_timeout(400)
    expect(page.locator("#result-digit")).to_have_text("")


def test_undo_removes_the_last_stroke(open_page):
    w = open_page()
    page = w.page
    draw_mouse(page, FOUR[:1])
    one_stroke = canvas_url(page)
    draw_mouse(page, FOUR[1:])
    two_strokes = canvas_url(page)
    assert two_strokes != one_stroke
    page.click("#undo")
    assert canvas_url(page) == one_stroke
    page.click("#undo")
    assert canvas_is_blank(page)
    expect(page.locator("#result-digit")).to_have_text("")


def test_touch_drawing_on_a_phone(open_page, artifacts):
    w = open_page(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        has_touch=True,
        is_mobile=True,
    )
    page = w.page
    # High-DPI: the backing store follows the device pixels, the layout fits the phone.
    size = page.evaluate(
        "() => { const c = document.getElementById('canvas');"
        " return [c.width, c.clientWidth, document.documentElement.scrollWidth] }"
    )
    assert size[0] == round(size[1] * 2) and size[2] <= 390
    cdp = page.context.new_cdp_session(page)
    draw_touch(page, cdp, SEVEN)
    expect(page.locator("#result-digit")).to_have_text("7", timeout=10_000)
    assert set(page.evaluate("window.__pointerTypes")) == {"touch"}
    page.screenshot(path=str(artifacts / "browser-phone-touch.png"), full_page=True)


def test_blank_canvas_says_so(open_page):
    w = open_page()
    page = w.page
    with page.expect_response(lambda r: r.url.endswith("/predict")) as answer:
        page.click("#recognize")
    assert answer.value.status == 422
    expect(page.locator("#status")).to_have_text(BLANK)
    expect(page.locator("#result-digit")).to_have_text("")


def test_keyboard(open_page):
    w = open_page()
    page = w.page
    reached = []
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id"))
        if {"recognize", "undo", "clear"} <= set(reached):
            break
    assert {"recognize", "undo", "clear"} <= set(reached), reached
    outline = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, s.outlineWidth] }"
    )
    assert outline[0] != "none" and outline[1] != "0px", outline
    # Shortcuts: Ctrl+Z undoes, Escape clears, Enter recognises.
    page.evaluate("document.activeElement.blur()")
    draw_mouse(page, FOUR[:1])
    page.keyboard.press("Control+z")
    assert canvas_is_blank(page)
    draw_mouse(page, SEVEN)
    page.keyboard.press("Escape")
    assert canvas_is_blank(page)
    with page.expect_response(lambda r: r.url.endswith("/predict")) as answer:
        page.keyboard.press("Enter")
    assert answer.value.status == 422
    expect(page.locator("#status")).to_have_text(BLANK)


def test_other_outcomes_are_reported(open_page):
    """429, 504, network failure and other errors, faked at the network layer."""
    w = open_page()
    page = w.page
    mode = {"now": "429"}

    def answer(route):
        if mode["now"] == "real":
            route.continue_()
        elif mode["now"] == "abort":
            route.abort("connectionrefused")
        else:
            status = int(mode["now"])
            route.fulfill(
                status=status,
                headers={"Retry-After": "1"},
                content_type="application/json",
                body=f'{{"error": {{"code": "x", "message": "fake {status}"}}}}',
            )

    page.route("**/predict", answer)
    status = page.locator("#status")
    draw_mouse(page, SEVEN)
    expect(status).to_have_text("Too many requests — slow down, retrying shortly.")
    deadline = time.monotonic() + 5
    while len(w.predicts) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert len(w.predicts) >= 2, "no retry after a 429"
    mode["now"] = "504"
    expect(status).to_have_text(re.compile(r"took too long"))
    mode["now"] = "abort"
    page.click("#recognize")
    expect(status).to_have_text(re.compile(r"^Network error"))
    mode["now"] = "400"
    page.click("#recognize")
    expect(status).to_have_text("Error: fake 400 (HTTP 400).")
    mode["now"] = "real"
    page.click("#recognize")
    expect(status).to_have_text(re.compile(r"^Recognised \d"))
    assert w.max_in_flight == 1


def _wait_not_ready(url: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/ready", timeout=2)
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                return
        time.sleep(0.2)
    raise AssertionError("/ready still answers 200 after the worker stopped")


def test_zz_no_worker_shows_not_ready(open_page, web_stack):
    """Runs last in this module: it stops the shared stack's only worker."""
    w = open_page()
    page = w.page
    draw_mouse(page, SEVEN)
    expect(page.locator("#result-digit")).to_have_text(re.compile(r"^\d$"), timeout=10_000)
    web_stack.stop_worker(1)
    _wait_not_ready(web_stack.url)
    with page.expect_response(lambda r: r.url.endswith("/predict")) as answer:
        page.click("#recognize")
    assert answer.value.status == 503
    expect(page.locator("#status")).to_have_text(NOT_READY)
