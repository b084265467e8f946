"""/predict's not_a_digit and is_digit through real workers: the shipped 11-output
version, an old 10-output version hot-loaded in its place, and NOT_A_DIGIT_THRESHOLD."""

from __future__ import annotations

import time

import pytest

from models.outputs import from_manifest
from models.store import shipped_store
from tests.conftest import SEVEN, data_url, draw_png, post, start_stack

# Shapes in the page's 280x280 coordinates, drawn with its 18 px pen.
STAR = [[(140, 30), (205, 235), (35, 105), (245, 105), (75, 235), (140, 30)]]
HASH = [[(110, 40), (95, 240)], [(185, 40), (170, 240)], [(45, 105), (240, 105)],
        [(40, 175), (235, 175)]]
SEVEN_URL = data_url(draw_png(SEVEN))
NEW = next(v for v in reversed(shipped_store().versions())
           if from_manifest(shipped_store().get(v).manifest).has_not_a_digit)
OLD = next(v for v in shipped_store().versions()
           if not from_manifest(shipped_store().get(v).manifest).has_not_a_digit)


def predict(stack, strokes_or_url) -> dict:
    image = strokes_or_url if isinstance(strokes_or_url, str) else data_url(
        draw_png(strokes_or_url))
    status, body, _ = post(stack.url + "/predict", {"image": image})
    assert status == 200, body
    return body


def assert_digit_fields(body: dict) -> None:
    probs = body["probabilities"]
    assert set(probs) == {str(d) for d in range(10)}
    assert abs(sum(probs.values()) - 1) < 1e-3
    assert body["confidence"] == probs[str(body["digit"])] == max(probs.values())


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One worker serving a copy of the shipped store (whose current version has 11
    outputs), the default threshold."""
    stack = start_stack(tmp_path_factory.mktemp("nad"), workers=1)
    yield stack
    stack.stop()


def test_the_shipped_default_has_a_not_a_digit_output():
    store = shipped_store()
    assert store.current() == NEW
    manifest = store.get(NEW).manifest
    assert manifest["outputs"] == 11 and manifest["classes"][-1] == "not_a_digit"
    assert 0 < manifest["temperature"] < 10


def test_a_digit_is_a_digit(live):
    body = predict(live, SEVEN_URL)
    assert body["model_version"] == NEW and body["digit"] == 7
    assert body["is_digit"] is True and 0 <= body["not_a_digit"] < 0.5
    assert_digit_fields(body)


@pytest.mark.parametrize("strokes", [STAR, HASH], ids=["star", "hash"])
def test_a_drawing_that_is_no_digit_says_so(live, strokes):
    body = predict(live, strokes)
    assert body["is_digit"] is False and 0.5 <= body["not_a_digit"] <= 1
    assert_digit_fields(body)  # still the closest digit, with the same meaning


def test_batch_items_carry_the_same_fields(live):
    images = [SEVEN_URL, data_url(draw_png(STAR))]
    status, body, _ = post(live.url + "/predict/batch", {"images": images})
    assert status == 200, body
    seven, star = body["results"]
    assert (seven["is_digit"], star["is_digit"]) == (True, False)
    assert star["not_a_digit"] == predict(live, STAR)["not_a_digit"]


def test_the_threshold_is_a_setting(tmp_path):
    """NOT_A_DIGIT_THRESHOLD=0: every score reaches it, so nothing is a digit; the
    scores themselves do not change."""
    stack = start_stack(tmp_path, workers=1, env={"NOT_A_DIGIT_THRESHOLD": "0"})
    try:
        body = predict(stack, SEVEN_URL)
        assert body["digit"] == 7 and body["is_digit"] is False
        assert 0 <= body["not_a_digit"] < 0.5
    finally:
        stack.stop()


def test_zz_an_old_ten_output_version_still_serves(live):
    """Promoted in place of the new one, an old version hot-loads and answers with
    not_a_digit null and is_digit true."""
    from models.store import ModelStore

    store = ModelStore(live.model_dir)
    store.set_current(OLD)
    deadline = time.monotonic() + 15
    while (body := predict(live, SEVEN_URL))["model_version"] != OLD:
        assert time.monotonic() < deadline, "the worker did not load the old version"
        time.sleep(0.2)
    assert body["digit"] == 7 and body["not_a_digit"] is None and body["is_digit"] is True
    assert_digit_fields(body)
    star = predict(live, STAR)
    assert star["not_a_digit"] is None and star["is_digit"] is True
