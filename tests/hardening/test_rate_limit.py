"""RATE_LIMIT on the real stack: a burst gets 429 rate_limited with Retry-After, then recovers.

The limiter keeps its counters in the stack's Redis, shared by both gunicorn processes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import start_stack
from tests.hardening.helpers import VALID_BODY, assert_error_shape


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("rate-limit"), workers=1,
                    env={"RATE_LIMIT": "5/second"})
    yield s
    s.stop()


def _post(url: str) -> requests.Response:
    return requests.post(url + "/predict", json=VALID_BODY, timeout=30)


def test_burst_is_limited_then_recovers(limited):
    with ThreadPoolExecutor(20) as pool:
        burst = list(pool.map(lambda _: _post(limited.url), range(20)))
    statuses = [r.status_code for r in burst]
    assert set(statuses) <= {200, 429}, statuses
    limited_replies = [r for r in burst if r.status_code == 429]
    # 20 concurrent requests cannot all fit in a 5-per-second window, however slow the box.
    assert len(limited_replies) >= 5, statuses
    assert statuses.count(200) >= 1, statuses
    for r in limited_replies:
        assert_error_shape(r.status_code, r.headers.get("Content-Type"), r.json(), r.content)
        error = r.json()["error"]
        assert error["code"] == "rate_limited", error
        assert "5 per 1 second" in error["message"], error
        retry_after = r.headers.get("Retry-After")
        assert retry_after is not None and retry_after.isdigit(), r.headers
        assert 0 <= int(retry_after) <= 2, r.headers

    wait = max(int(r.headers["Retry-After"]) for r in limited_replies)
    time.sleep(wait + 1.1)
    for _ in range(3):  # a few in sequence, well under the limit
        r = _post(limited.url)
        assert r.status_code == 200, r.text
        assert r.json()["digit"] == 7
        time.sleep(0.3)


def test_other_routes_are_not_limited(limited):
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(
            lambda _: requests.get(limited.url + "/health", timeout=30).status_code, range(20)))
    assert statuses == [200] * 20


def test_limiter_fails_open_when_redis_is_down(limited):
    """Its storage gone, the limiter must not turn /predict into a 500 or a hang: 503 fast."""
    limited.stop_redis(kill=True)
    try:
        time.sleep(1.5)  # let the API's registry notice
        for _ in range(3):
            started = time.monotonic()
            r = _post(limited.url)
            elapsed = time.monotonic() - started
            assert r.status_code == 503, r.text
            assert_error_shape(r.status_code, r.headers.get("Content-Type"), r.json(), r.content)
            assert elapsed < 2.5, elapsed
    finally:
        limited.start_redis()
    limited.wait_ready(30)
    time.sleep(1.1)
    assert _post(limited.url).status_code == 200
