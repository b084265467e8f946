"""Request IDs: accepted when sane, made otherwise, echoed on every answer (errors,
404/405/413, gunicorn's own), in error bodies, in the Celery task's headers (all the
requests of a coalesced task) and in the API's and the worker's log lines."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import urllib.parse

import numpy as np
import pytest
import redis

from api import celery_client
from api.dispatch import Dispatcher
from api.workers import WorkerRegistry
from digits import request_ids
from digits.protocol import QUEUE, RESULT_PREFIX, heartbeat_key
from digits.settings import load
from digits.stack import Stack
from tests.conftest import SEVEN, data_url, draw_png, get, post, start_stack

MADE = re.compile(r"[0-9a-f]{32}")
SEVEN_URL = data_url(draw_png(SEVEN))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("rid"), workers=1,
                    env={"ACCESS_LOG": "-", "MAX_CONTENT_LENGTH": "65536"})
    yield s
    s.stop()


def wait_for_line(path, needle: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text(errors="replace").splitlines():
            if needle in line:
                return line
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not in {path.name}:\n{path.read_text()[-2000:]}")


# -- unit: what counts as sane --------------------------------------------------------------
@pytest.mark.parametrize("value", ["a", "abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e",
                                   "01HV7YJ3Z2Q.x_y:z+/=@", "x" * 128])
def test_sane_ids_are_kept(value):
    assert request_ids.clean(value) == value


@pytest.mark.parametrize("value", ["", None, "x" * 129, "a b", "a,b", "<script>", "é",
                                   "a\tb", "a;b", 'a"b'])
def test_other_ids_are_refused(value):
    assert request_ids.clean(value) is None


# -- echoed -----------------------------------------------------------------------------
def test_a_sane_id_is_echoed(live):
    status, body, headers = post(live.url + "/predict", {"image": SEVEN_URL},
                                 headers={"X-Request-ID": "client-id-42"})
    assert status == 200 and headers["X-Request-ID"] == "client-id-42"


@pytest.mark.parametrize("value", ["x" * 129, "has space", "semi;colon", "comma,list"])
def test_an_insane_id_is_replaced(live, value):
    status, _, headers = post(live.url + "/predict", {"image": SEVEN_URL},
                              headers={"X-Request-ID": value})
    assert status == 200 and MADE.fullmatch(headers["X-Request-ID"])


def test_each_request_without_one_gets_a_new_one(live):
    ids = {get(live.url + "/health")[2]["X-Request-ID"] for _ in range(3)}
    assert len(ids) == 3 and all(MADE.fullmatch(i) for i in ids)


@pytest.mark.parametrize(("method", "path", "body", "ctype", "status"), [
    ("GET", "/nowhere", None, None, 404),
    ("GET", "/predict", None, None, 405),
    ("POST", "/predict", b"{", "application/json", 400),
    ("POST", "/predict", b"image=1", "text/plain", 415),
    ("POST", "/predict", json.dumps({"image": data_url(draw_png([]))}).encode(),
     "application/json", 422),
    ("POST", "/predict", json.dumps({"image": "A" * 70000}).encode(), "application/json", 413),
])
def test_errors_carry_the_id_in_header_and_body(live, method, path, body, ctype, status):
    import urllib.error
    import urllib.request

    headers = {"X-Request-ID": f"err-{status}"}
    if ctype:
        headers["Content-Type"] = ctype
    req = urllib.request.Request(live.url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            got, raw, hdrs = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        got, raw, hdrs = e.code, e.read(), e.headers
    assert got == status
    assert hdrs["X-Request-ID"] == f"err-{status}"
    assert json.loads(raw)["error"]["request_id"] == f"err-{status}"


def test_gunicorns_own_errors_carry_a_new_id(live):
    """A request line gunicorn cannot parse never reaches Flask: its answer still names
    a request ID, in the header and the body."""
    host, port = urllib.parse.urlsplit(live.url).hostname, urllib.parse.urlsplit(live.url).port
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"NOT A REQUEST LINE\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    rid = re.search(rb"X-Request-ID: ([0-9a-f]{32})", head).group(1).decode()
    assert json.loads(body)["error"]["request_id"] == rid


# -- logged, end to end -----------------------------------------------------------------------
def test_the_id_reaches_the_worker_log_and_the_access_log(live):
    post(live.url + "/predict", {"image": SEVEN_URL}, headers={"X-Request-ID": "trace-me-1"})
    line = wait_for_line(live.log_dir / "worker1.log", "[trace-me-1]")
    assert "predicted 1 image(s)" in line
    post(live.url + "/predict/batch", {"images": [SEVEN_URL] * 3},
         headers={"X-Request-ID": "trace-batch-1"})
    line = wait_for_line(live.log_dir / "worker1.log", "[trace-batch-1]")
    assert "predicted 3 image(s)" in line
    access = wait_for_line(live.log_dir / "api.log", " trace-batch-1")  # the access line
    assert '"POST /predict/batch HTTP/1.1" 200' in access and access.endswith("trace-batch-1")


def test_a_server_failure_is_logged_by_the_api_with_its_id(live):
    """With no worker, /predict answers 503; the API's log line names the request. Runs
    last: the worker is started again, but the test waits for it."""
    live.stop_worker(1)
    try:
        status, body, _ = post(live.url + "/predict", {"image": SEVEN_URL},
                               headers={"X-Request-ID": "no-worker-1"})
        assert status == 503 and body["error"]["request_id"] == "no-worker-1"
        line = wait_for_line(live.log_dir / "api.log", "[no-worker-1]")
        assert "answered 503 no_workers" in line and "WARNING api.requests" in line
    finally:
        live.start_worker(1)
        live.wait_ready(120)


# -- a coalesced task carries every request's ID ------------------------------------------------
@pytest.fixture
def redis_url(tmp_path):
    stack = Stack(workers=0, log_dir=tmp_path)
    stack.start_redis()
    yield stack.redis_url
    stack.stop_redis()


def test_a_coalesced_task_carries_the_ids_of_all_its_requests(redis_url):
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    client.set(heartbeat_key("w@test"), json.dumps({"hostname": "w@test", "model_loaded": True}))
    dispatcher = Dispatcher(celery_client(load({"REDIS_URL": redis_url}).as_dict()), client,
                            WorkerRegistry(client), timeout=5.0, hedge_after=4.0, window=1,
                            linger=0.0)
    image = np.zeros((28, 28), np.uint8)

    def call(rid):
        with request_ids.bound(rid):
            dispatcher.predict(image)

    def next_message():
        _, raw = client.brpop([QUEUE], timeout=5)
        return json.loads(raw)

    def answer(message, n):
        task_id = message["headers"]["id"]
        raw = json.dumps({"status": "SUCCESS", "task_id": task_id, "result": {
            "probabilities": [[1.0] + [0.0] * 9] * n, "model_version": 1}})
        client.set(RESULT_PREFIX + task_id, raw)
        client.publish(RESULT_PREFIX + task_id, raw)

    threads = [threading.Thread(target=call, args=("req-a",), daemon=True)]
    threads[0].start()
    first = next_message()  # held: the window's one place is taken
    assert first["headers"]["request_ids"] == ["req-a"]
    for rid in ("req-b", "req-c"):
        threads.append(threading.Thread(target=call, args=(rid,), daemon=True))
        threads[-1].start()
    deadline = time.monotonic() + 5
    while dispatcher._queued_images < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    answer(first, 1)
    second = next_message()
    assert sorted(second["headers"]["request_ids"]) == ["req-b", "req-c"]
    args = json.loads(base64.b64decode(second["body"]))[0]
    assert len(base64.b64decode(args[0])) == 2 * 784  # both images in the one task
    answer(second, 2)
    for t in threads:
        t.join(5)
        assert not t.is_alive()
