"""The page's "Right?" (web/feedback.js) in Chromium against a real stack: correcting a
misrecognised drawing puts the correction in the database; yes and digits by keyboard;
a correction made while the API is unreachable waits in localStorage and arrives
later; and once a version trained on it serves, the page says so."""

from __future__ import annotations

import re
import shutil

import pytest
from playwright.sync_api import expect

from digits import feedback_db as fdb
from models.store import ModelStore, shipped_store
from tests.browser.test_page import _path, draw_mouse
from tests.conftest import start_stack

pytestmark = pytest.mark.browser

# A 1 with a long flag, as many Europeans write it: version 1 reads it as a 7 (checked).
FLAGGED_ONE = [_path((70, 120), (120, 80), (170, 45), (160, 140), (150, 245))]
SEVEN = [_path((70, 78), (140, 70), (210, 66), (176, 146), (146, 236))]


@pytest.fixture(scope="module")
def web_stack(tmp_path_factory):
    """One worker serving exactly the shipped version 1 (so its mistakes are known), and
    a feedback database of its own."""
    tmp = tmp_path_factory.mktemp("feedback-page")
    models = ModelStore(tmp / "models")
    shutil.copytree(shipped_store().get(1).path, models.base / "1")
    models.set_current(1)
    stack = start_stack(tmp, workers=1, model_dir=models.root,
                        env={"FEEDBACK_RATE_LIMIT": "", "MODEL_POLL_SECONDS": "0.2"})
    stack.db = fdb.FeedbackStore.from_url(stack.extra_env["DATABASE_URL"])
    stack.models = models
    yield stack
    stack.db.engine.dispose()
    stack.stop()


def _answer(page, strokes) -> int:
    page.locator("#clear").click()
    draw_mouse(page, strokes)
    page.locator("#recognize").click()
    expect(page.locator("#feedback")).to_be_visible()
    expect(page.locator("#status")).to_have_text(re.compile("^Recognised"))
    return int(page.locator("#result-digit").text_content())


def _saved(page):
    expect(page.locator("#feedback-note")).to_contain_text("Saved")


def test_correcting_a_misrecognised_drawing_stores_it(open_page, web_stack):
    w = open_page()
    page = w.page
    before = web_stack.db.count()
    shown = _answer(page, FLAGGED_ONE)
    assert shown != 1, "version 1 should misread this 1; pick another drawing"
    expect(page.locator("#feedback-question")).to_contain_text(f"read it as {shown}")
    page.locator("#feedback button[data-label='1']").click()
    _saved(page)
    assert web_stack.db.count() == before + 1
    rows = web_stack.db.rows()
    assert (rows.labels[-1], rows.predicted[-1], rows.model_versions[-1]) == (1, shown, 1)
    image, kind = web_stack.db.originals([rows.ids[-1]])[int(rows.ids[-1])]
    assert kind == "png" and image.startswith(b"\x89PNG")
    assert rows.images[-1].max() > 0
    # One answer, one label: the buttons are spent until the next answer.
    expect(page.locator("#feedback-yes")).to_be_disabled()
    assert page.evaluate("JSON.parse(localStorage.getItem('digits.feedback.queue'))") == []
    assert w.console_errors == [] and w.page_errors == []
    assert page.evaluate("window.__csp") == []


def test_yes_and_digits_by_keyboard(open_page, web_stack):
    page = open_page().page
    before = web_stack.db.count()
    shown = _answer(page, SEVEN)
    page.keyboard.press("y")
    _saved(page)
    shown_again = _answer(page, FLAGGED_ONE)
    page.keyboard.press("1")
    expect(page.locator("#feedback-note")).to_contain_text("Saved")
    page.wait_for_function("() => JSON.parse(localStorage.getItem('digits.feedback.sent'))"
                           ".length === 2")
    rows = web_stack.db.rows()
    assert len(rows) == before + 2
    assert rows.labels[-2:].tolist() == [shown, 1]
    assert rows.predicted[-2:].tolist() == [shown, shown_again]


def test_a_correction_made_offline_is_kept_and_sent_later(open_page, web_stack):
    page = open_page().page
    before = web_stack.db.count()
    page.route("**/feedback", lambda route: route.abort("connectionrefused"))
    _answer(page, FLAGGED_ONE)
    page.locator("#feedback button[data-label='1']").click()
    expect(page.locator("#feedback-note")).to_contain_text("kept on this device")
    queued = page.evaluate("JSON.parse(localStorage.getItem('digits.feedback.queue'))")
    assert len(queued) == 1 and queued[0]["label"] == 1
    assert web_stack.db.count() == before
    page.unroute("**/feedback")
    # Sent on its own at the next retry (a reload would send it too).
    expect(page.locator("#feedback-note")).to_contain_text("Saved", timeout=20_000)
    assert web_stack.db.count() == before + 1
    assert page.evaluate("JSON.parse(localStorage.getItem('digits.feedback.queue'))") == []


def test_thanks_once_a_version_that_learned_it_serves(open_page, web_stack):
    page = open_page().page
    _answer(page, FLAGGED_ONE)
    page.locator("#feedback button[data-label='1']").click()
    _saved(page)
    row_id = int(web_stack.db.rows().ids[-1])
    # A "fine-tuned" version 2 (the same weights: what matters here is the record of
    # what it learned from) becomes current; the worker hot-reloads it.
    source = web_stack.models.get(1)

    def write(folder):
        shutil.copy(source.model_path, folder / "model.keras")
        return {k: v for k, v in source.manifest.items()
                if k not in ("name", "version", "created", "sha256")}

    version = web_stack.models.publish(write)
    web_stack.db.record_finetune(version=version.number, base_version=1,
                                 max_feedback_id=row_id, trained_ids=[row_id],
                                 held_out_count=0, promoted=True)
    web_stack.models.set_current(version.number)
    thanks = f"Thanks: learned from it in version {version.number}."
    for _ in range(60):  # answers until the worker serves it and its heartbeat says so
        _answer(page, SEVEN)
        if page.locator("#feedback-note").text_content() == thanks:
            break
        page.wait_for_timeout(500)
    expect(page.locator("#feedback-note")).to_have_text(thanks)
    assert page.locator("#model-version").text_content() == str(version.number)
