"""POST /feedback and GET /feedback/<id> through real gunicorn, on real SQLite and a real
private PostgreSQL: 201 only once committed, the row holds what was sent, every bad
field has its error, the rate limit is its own, a database outage is a 503 with
Retry-After and ends by itself, and concurrent load with a killed API process loses
nothing and writes nothing twice."""

from __future__ import annotations

import base64
import io
import itertools
import time

import numpy as np
import pytest
from PIL import Image

from api import create_app
from api.preprocess import load_image, to_mnist
from digits import feedback_db as fdb
from tests.conftest import ONE, SEVEN, data_url, draw_png, get, post, start_stack
from tools import feedback_load
from tools.pgcluster import PgCluster

_addresses = (f"198.51.{i // 250}.{i % 250 + 1}" for i in itertools.count())


def _client() -> dict:
    """A header naming a new client address (TRUSTED_PROXIES=1): each request its own
    rate-limit bucket unless a test reuses one."""
    return {"X-Forwarded-For": next(_addresses)}


def _wait_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get(url + "/health")[0] == 200:
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(request, tmp_path_factory):
    """A stack without model workers (feedback needs none) on each database."""
    tmp = tmp_path_factory.mktemp(f"feedback-{request.param}")
    env = {"TRUSTED_PROXIES": "1", "FEEDBACK_RATE_LIMIT": "3/minute",
           "FEEDBACK_MAX_IMAGE_BYTES": "20000"}
    if request.param == "postgresql":
        env["DATABASE_URL"] = request.getfixturevalue("postgres").create_database()
    stack = start_stack(tmp, workers=0, wait=0, env=env)
    _wait_up(stack.url)
    stack.db = fdb.FeedbackStore.from_url(stack.extra_env["DATABASE_URL"])
    yield stack
    stack.db.engine.dispose()
    stack.stop()


def _send(api, body, headers=None):
    return post(api.url + "/feedback", body, headers=headers or _client())


def test_a_correction_is_committed_whole_before_201(api):
    png = draw_png(SEVEN)
    client = _client()
    status, body, headers = _send(api, {"image": data_url(png), "label": 7, "predicted": 1,
                                        "model_version": 1, "request_id": "page-1"}, client)
    assert status == 201, body
    assert body == {"id": body["id"], "label": 7}
    assert headers["Location"] == f"/feedback/{body['id']}"
    rows = api.db.rows()
    i = rows.ids.tolist().index(body["id"])
    assert (rows.labels[i], rows.predicted[i], rows.model_versions[i]) == (7, 1, 1)
    assert (rows.images[i] == to_mnist(load_image(png))).all()
    assert api.db.originals([body["id"]])[body["id"]] == (png, "png")
    # No address in the row: the salted hash of the address the proxy named.
    assert rows.clients[i] == fdb.client_hash(api.db.salt(), client["X-Forwarded-For"])


def test_optional_fields_may_be_left_out_and_base64_without_prefix_works(api):
    png = draw_png(ONE)
    status, body, _ = _send(api, {"image": base64.b64encode(png).decode(), "label": 1})
    assert status == 201, body
    rows = api.db.rows()
    i = rows.ids.tolist().index(body["id"])
    assert (rows.predicted[i], rows.model_versions[i]) == (-1, -1)


def test_a_resent_correction_is_the_same_row(api):
    body = {"image": data_url(draw_png(SEVEN)), "label": 7, "request_id": "retry-me"}
    first = _send(api, body)
    again = _send(api, body)
    assert first[0] == 201 and again[0] == 200
    assert again[1]["id"] == first[1]["id"]
    conflict = _send(api, {**body, "label": 1})
    assert conflict[0] == 409 and conflict[1]["error"]["code"] == "request_id_conflict"
    assert api.db.rows().ids.tolist().count(first[1]["id"]) == 1


@pytest.mark.parametrize("label", [None, -1, 10, "7", 7.0, True, [7]])
def test_a_bad_label_is_400_invalid_label(api, label):
    body = {"image": data_url(draw_png(SEVEN))}
    if label is not None:
        body["label"] = label
    before = api.db.count()
    status, answer, _ = _send(api, body)
    assert status == 400 and answer["error"]["code"] == "invalid_label", answer
    assert api.db.count() == before


@pytest.mark.parametrize("field,value,code", [
    ("predicted", 11, "invalid_predicted"),
    ("predicted", "3", "invalid_predicted"),
    ("model_version", -1, "invalid_model_version"),
    ("request_id", "has space", "invalid_request_id"),
    ("request_id", "x" * 129, "invalid_request_id"),
    ("image", 12, "invalid_image_field"),
])
def test_other_bad_fields_have_their_codes(api, field, value, code):
    body = {"image": data_url(draw_png(SEVEN)), "label": 7, field: value}
    status, answer, _ = _send(api, body)
    assert status == 400 and answer["error"]["code"] == code, answer


def test_blank_canvas_is_422_and_non_json_415(api):
    status, answer, _ = _send(api, {"image": data_url(draw_png([])), "label": 3})
    assert status == 422 and answer["error"]["code"] == "blank_image"
    status, answer, _ = post(api.url + "/feedback", b"label=3", headers={
        "Content-Type": "text/plain", **_client()})
    assert status == 415 and answer["error"]["code"] == "unsupported_media_type"


def test_an_original_over_the_cap_is_413(api):
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    assert len(buf.getvalue()) > 20000
    status, answer, _ = _send(api, {"image": data_url(buf.getvalue()), "label": 3})
    assert status == 413 and answer["error"]["code"] == "image_too_large"
    assert "20,000" in answer["error"]["message"]


def test_feedback_has_its_own_rate_limit(api):
    client = _client()
    body = {"image": data_url(draw_png(SEVEN)), "label": 7}
    statuses = [_send(api, body, client)[0] for _ in range(3)]
    assert statuses == [201, 201, 201]
    status, answer, headers = _send(api, body, client)
    assert status == 429 and answer["error"]["code"] == "rate_limited"
    assert int(headers["Retry-After"]) >= 1
    assert _send(api, body)[0] == 201  # another client is not limited


def test_get_tells_which_serving_version_learned_it(api):
    status, created, _ = _send(api, {"image": data_url(draw_png(SEVEN)), "label": 7})
    assert status == 201
    status, body, _ = get(f"{api.url}/feedback/{created['id']}")
    assert status == 200
    assert body == {"id": created["id"], "label": 7, "learned_by": [], "learned_in": None}
    api.db.record_finetune(version=9, base_version=1, max_feedback_id=created["id"],
                           trained_ids=[created["id"]], held_out_count=0, promoted=True)
    status, body, _ = get(f"{api.url}/feedback/{created['id']}")
    # Learned by version 9, but no worker serves it (this stack has none): not yet.
    assert (body["learned_by"], body["learned_in"]) == ([9], None)
    for missing in (10**6, 2**40):
        status, body, _ = get(f"{api.url}/feedback/{missing}")
        assert status == 404 and body["error"]["code"] == "not_found"


def test_openapi_documents_feedback(api):
    spec = get(api.url + "/openapi.json")[1]
    post_op = spec["paths"]["/feedback"]["post"]
    assert {"201", "400", "422", "429", "503"} <= set(post_op["responses"])
    assert post_op["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "image", "label"]
    assert "/feedback/{id}" in spec["paths"]


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_concurrent_load_with_a_killed_process_loses_nothing(db, request, tmp_path):
    """A small run of tools/feedback_load (docs/feedback.md has the 10,000-request one)."""
    url = request.getfixturevalue("postgres").create_database() if db == "postgresql" else None
    report = feedback_load.run(db, 600, 8, db_url=url, log_dir=tmp_path)
    assert report.killed, "no gunicorn worker was killed"
    assert report.ok, report.summary()


def test_unmigrated_database_is_503_naming_the_command(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
                      "FEEDBACK_RATE_LIMIT": "", "RATE_LIMIT": ""})
    response = app.test_client().post("/feedback", json={
        "image": data_url(draw_png(SEVEN)), "label": 7})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "digits.feedback_db upgrade" in response.get_json()["error"]["message"]


def test_database_outage_is_503_with_retry_after_and_ends_by_itself(tmp_path):
    with PgCluster() as cluster:
        stack = start_stack(tmp_path, workers=0, wait=0, env={
            "DATABASE_URL": cluster.url, "FEEDBACK_RATE_LIMIT": ""})
        try:
            _wait_up(stack.url)
            body = {"image": data_url(draw_png(SEVEN)), "label": 7}
            assert post(stack.url + "/feedback", body)[0] == 201
            cluster.stop()
            status, answer, headers = post(stack.url + "/feedback", body)
            assert status == 503 and answer["error"]["code"] == "feedback_unavailable"
            assert headers["Retry-After"] == "5"
            assert get(stack.url + "/feedback/1")[0] == 503
            assert get(stack.url + "/health")[0] == 200  # the rest of the API is unaffected
            cluster.start()
            assert post(stack.url + "/feedback", body)[0] == 201
            assert fdb.FeedbackStore.from_url(cluster.url).count() == 2
        finally:
            stack.stop()
