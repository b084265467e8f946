"""POST /predict/batch through a real stack: per-item answers and errors, in order; the
limits that refuse a whole batch; how many tasks a batch travels in."""

from __future__ import annotations

import base64
import re
import time

import pytest

from tests.conftest import ONE, SEVEN, SHIPPED_VERSION, data_url, draw_png, post, start_stack

BATCH_MAX = 10
COALESCE_MAX = 4
BODY_MAX = 256 * 1024


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("batch"), workers=1, env={
        "BATCH_MAX_IMAGES": str(BATCH_MAX), "COALESCE_MAX": str(COALESCE_MAX),
        "MAX_CONTENT_LENGTH": str(BODY_MAX)})
    yield s
    s.stop()


def batch(live, images, **headers):
    return post(live.url + "/predict/batch", {"images": images}, headers=headers)


def worker_lines(live, rid: str, want: int, timeout: float = 10) -> list[str]:
    """The worker log's task lines naming ``rid``, once ``want`` of them are there."""
    deadline = time.monotonic() + timeout
    while True:
        text = (live.log_dir / "worker1.log").read_text(errors="replace")
        lines = [ln for ln in text.splitlines() if f"[{rid}]" in ln and "predicted" in ln]
        if len(lines) >= want or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


SEVEN_URL = data_url(draw_png(SEVEN))
ONE_PLAIN = base64.b64encode(draw_png(ONE, background=(255, 255, 255, 255))).decode()


def test_each_image_gets_its_own_answer_in_order(live):
    status, body, headers = batch(live, [SEVEN_URL, ONE_PLAIN, SEVEN_URL])
    assert status == 200, body
    assert [r["digit"] for r in body["results"]] == [7, 1, 7]
    for result in body["results"]:
        assert set(result) == {"digit", "confidence", "probabilities", "not_a_digit",
                               "is_digit", "model_version"}
        assert result["confidence"] == result["probabilities"][str(result["digit"])]
        assert result["model_version"] == SHIPPED_VERSION
    assert isinstance(body["latency_ms"], float)


def test_a_bad_image_fails_only_itself(live):
    images = [
        SEVEN_URL,
        "not base64 at all!",
        None,
        data_url(draw_png([])),  # blank
        12,
        "data:text/plain;base64,aGVsbG8=",
        base64.b64encode(b"GIF89a not really").decode(),
        ONE_PLAIN,
    ]
    status, body, headers = batch(live, images, **{"X-Request-ID": "batch-errors-1"})
    assert status == 200, body
    results = body["results"]
    assert len(results) == len(images)
    assert results[0]["digit"] == 7 and results[7]["digit"] == 1
    codes = [r["error"]["code"] for r in results[1:7]]
    assert codes == ["invalid_base64", "missing_image", "blank_image", "invalid_image_field",
                     "unsupported_media_type", "invalid_image"]
    for r in results[1:7]:
        assert set(r) == {"error"}
        assert r["error"]["message"] and r["error"]["request_id"] == "batch-errors-1"
    assert headers["X-Request-ID"] == "batch-errors-1"


def test_all_bad_sends_no_task(live):
    status, body, _ = batch(live, ["@@", ""], **{"X-Request-ID": "all-bad-1"})
    assert status == 200
    assert [r["error"]["code"] for r in body["results"]] == ["invalid_base64", "empty_image"]
    assert worker_lines(live, "all-bad-1", 1, timeout=1) == []


def test_an_empty_list_is_an_empty_answer(live):
    status, body, _ = batch(live, [])
    assert status == 200 and body["results"] == []


@pytest.mark.parametrize(("payload", "code"), [
    ({"images": "abc"}, "invalid_images"),
    ({"images": {"0": SEVEN_URL}}, "invalid_images"),
    ({"image": SEVEN_URL}, "missing_images"),
    ([SEVEN_URL], "invalid_body"),
])
def test_a_body_without_a_list_is_refused_whole(live, payload, code):
    status, body, headers = post(live.url + "/predict/batch", payload)
    assert status == 400, body
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == headers["X-Request-ID"]


def test_more_than_batch_max_images_is_413(live):
    status, body, _ = batch(live, [SEVEN_URL] * (BATCH_MAX + 1))
    assert status == 413
    assert body["error"]["code"] == "too_many_images"
    assert str(BATCH_MAX) in body["error"]["message"]
    status, body, _ = batch(live, [SEVEN_URL] * BATCH_MAX)  # exactly the limit is fine
    assert status == 200 and [r["digit"] for r in body["results"]] == [7] * BATCH_MAX


def test_a_body_over_max_content_length_is_413(live):
    big = "A" * (BODY_MAX // 2)
    status, body, _ = batch(live, [big, big, big])
    assert status == 413
    assert body["error"]["code"] == "request_entity_too_large"


def test_not_json_is_415(live):
    status, body, _ = post(live.url + "/predict/batch", b"images=1",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and body["error"]["code"] == "unsupported_media_type"


def test_a_batch_travels_in_as_few_tasks_as_coalesce_max_allows(live):
    """10 images with COALESCE_MAX 4: three tasks (4, 4, 2), each naming the request."""
    status, body, _ = batch(live, [SEVEN_URL] * 10, **{"X-Request-ID": "batch-tasks-1"})
    assert status == 200 and len(body["results"]) == 10
    lines = worker_lines(live, "batch-tasks-1", 3)
    sizes = sorted(int(re.search(r"predicted (\d+) image", ln).group(1)) for ln in lines)
    assert sizes == [2, 4, 4], lines

    status, body, _ = batch(live, [SEVEN_URL, "x", ONE_PLAIN], **{"X-Request-ID": "batch-one"})
    assert status == 200
    lines = worker_lines(live, "batch-one", 1)
    assert len(lines) == 1 and "predicted 2 image(s)" in lines[0], lines


def test_predict_answers_the_same_as_a_batch_item(live):
    _, single, _ = post(live.url + "/predict", {"image": SEVEN_URL})
    _, body, _ = batch(live, [SEVEN_URL])
    item = body["results"][0]
    assert {k: single[k] for k in item} == item
    assert set(single) - set(item) == {"latency_ms"}
