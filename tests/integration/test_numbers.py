"""POST /predict/number through a real stack (Redis, a Celery worker, gunicorn): the
reading, its refusals, and every candidate digit of a drawing in one task."""

from __future__ import annotations

import base64
import re
import time

import pytest

from api.preprocess import load_image
from api.segment import plan_number
from tests.conftest import SEVEN, SHIPPED_VERSION, data_url, draw_png, get, post, start_stack
from tests.drawing import number_strokes, png

MAX_DIGITS = 6


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("numbers"), workers=1,
                    env={"MAX_DIGITS": str(MAX_DIGITS)})
    yield s
    s.stop()


def number(live, drawing, **headers):
    image = data_url(drawing) if isinstance(drawing, bytes) else drawing
    return post(live.url + "/predict/number", {"image": image}, headers=headers)


def task_sizes(live, rid: str, timeout: float = 10) -> list[int]:
    """The sizes of the worker's tasks that name request ``rid``."""
    deadline = time.monotonic() + timeout
    while True:
        text = (live.log_dir / "worker1.log").read_text(errors="replace")
        sizes = [int(m.group(1)) for ln in text.splitlines() if f"[{rid}]" in ln
                 for m in [re.search(r"predicted (\d+) image", ln)] if m]
        if sizes or time.monotonic() > deadline:
            return sizes
        time.sleep(0.1)


def test_a_number_is_read_left_to_right(live):
    status, body, _ = number(live, png(number_strokes("2026")))
    assert status == 200, body
    assert body["number"] == "2026"
    assert set(body) == {"number", "digits", "confidence", "model_version", "latency_ms"}
    assert body["model_version"] == SHIPPED_VERSION
    assert [d["digit"] for d in body["digits"]] == [2, 0, 2, 6]
    xs = []
    for d in body["digits"]:
        assert set(d) == {"digit", "confidence", "probabilities", "box"}
        assert d["confidence"] == d["probabilities"][str(d["digit"])]
        x, y, w, h = d["box"]
        assert min(x, y) >= 0 and x + w <= 840 and y + h <= 280 and w > 0 and h > 0
        xs.append(x)
    assert xs == sorted(xs)
    product = 1.0
    for d in body["digits"]:
        product *= d["confidence"]
    assert 0 < body["confidence"] <= product + 1e-5  # every digit right, and the split


def test_every_candidate_travels_in_one_task(live):
    """A touching pair's cuts and parts: all of them, one task, one forward pass."""
    drawing = png(number_strokes("17", gap=-4))
    candidates = len(plan_number(load_image(drawing), MAX_DIGITS).candidates)
    assert candidates > 2
    status, body, _ = number(live, drawing, **{"X-Request-ID": "number-one-task"})
    assert status == 200 and body["number"] == "17", body
    assert task_sizes(live, "number-one-task") == [candidates]


def test_a_plain_white_canvas_reads_the_same(live):
    strokes = number_strokes("409", gap=40)
    _, clear, _ = number(live, png(strokes))
    _, white, _ = number(live, base64.b64encode(png(strokes, background="white")).decode())
    assert clear["number"] == white["number"] == "409"
    assert [d["box"] for d in clear["digits"]] == [d["box"] for d in white["digits"]]


def test_a_single_digit_canvas_works_too(live):
    status, body, _ = number(live, draw_png(SEVEN))
    assert status == 200 and body["number"] == "7", body


def test_refusals(live):
    status, body, _ = number(live, png([]))
    assert (status, body["error"]["code"]) == (422, "blank_image")
    status, body, _ = number(live, png(number_strokes("1234567", height=90, gap=20)))
    assert (status, body["error"]["code"]) == (422, "too_many_digits"), body
    status, body, _ = number(live, "not base64!")
    assert (status, body["error"]["code"]) == (400, "invalid_base64")
    status, body, _ = post(live.url + "/predict/number", b"image=1",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")
    status, body, _ = post(live.url + "/predict/number", {})
    assert (status, body["error"]["code"]) == (400, "missing_image")


def test_predict_is_unchanged_and_the_spec_lists_the_endpoint(live):
    status, body, _ = post(live.url + "/predict", {"image": data_url(draw_png(SEVEN))})
    assert status == 200 and body["digit"] == 7
    status, spec, _ = get(live.url + "/openapi.json")
    assert status == 200
    entry = spec["paths"]["/predict/number"]["post"]
    assert {"200", "400", "413", "415", "422", "503", "504"} <= set(entry["responses"])
    assert "Number" in spec["components"]["schemas"]
