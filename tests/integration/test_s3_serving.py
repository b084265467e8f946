"""Workers serving from an S3 store (real SeaweedFS), hot-reloading on the trainer's notice,
and riding out a store that is down, a tampered version and a pointer to nothing.

The workers poll the pointer only every 60 s here, so a reload within seconds can only
be the trainer's notice on Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from models.store import MODEL_FILE
from tests.conftest import (
    ROOT,
    SEVEN,
    SHIPPED_VERSION,
    data_url,
    draw_png,
    get,
    open_s3_store,
    start_stack,
)
from tools.faults import corrupted, publish_copy
from tools.load import predict_clients
from trainer.notice import announce

BODY = {"image": data_url(draw_png(SEVEN))}


def trainer(server, url: str, stack, *args, cache) -> subprocess.CompletedProcess:
    env = {**os.environ, **server.env(), "PYTHONPATH": str(ROOT), "MODEL_CACHE": str(cache),
           "REDIS_URL": stack.redis_url}
    return subprocess.run([sys.executable, "-m", "trainer", "--store", url, *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def ready(stack) -> dict:
    status, body, _ = get(stack.url + "/ready")
    return body if isinstance(body, dict) else {}


def wait_for(check, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


def failures(load) -> list:
    return [(a.status, a.body) for a in load.records if a.status != 200]


def versions(load) -> set:
    return {a.version for a in load.records if a.status == 200}


@pytest.fixture
def s3_stack(s3_server, s3_url, tmp_path):
    env = {**s3_server.env(), "MODEL_CACHE": str(tmp_path / "cache"),
           "MODEL_POLL_SECONDS": "60"}
    stack = start_stack(tmp_path, workers=2, model_dir=s3_url, env=env)
    yield stack
    stack.stop()


def test_workers_serve_from_s3_and_reload_on_the_trainers_notice_under_load(
        s3_server, s3_url, s3_stack, tmp_path):
    store = open_s3_store(s3_server, s3_url, tmp_path / "test-cache")
    # The stack seeded the empty bucket with the shipped default.
    assert store.current() == SHIPPED_VERSION
    assert ready(s3_stack)["model_store"] == {s3_url: "ok"}
    second = publish_copy(store, "second").number
    with predict_clients(s3_stack.url, BODY) as load:
        wait_for(lambda: len(load.records) > 20, 30, "load running")
        for number, command in ((second, ("promote", second)), (SHIPPED_VERSION, ("rollback",))):
            run = trainer(s3_server, s3_url, s3_stack, *command, cache=tmp_path / "trainer")
            exited = time.monotonic()
            assert run.returncode == 0, run.stderr
            assert "told 2 worker(s)" in run.stdout
            seconds = wait_for(lambda n=number: ready(s3_stack).get("model_versions") == [n],
                               30, f"every worker serving version {number}")
            print(f"version {number} served by every worker {seconds:.2f} s after the "
                  f"trainer exited ({time.monotonic() - exited:.2f} s)")
    assert failures(load) == []
    assert versions(load) == {SHIPPED_VERSION, second}
    logs = s3_stack.tail("worker1", None)
    assert f"notice: version {SHIPPED_VERSION} is current" in logs


def test_a_tampered_version_or_a_missing_one_is_rejected_and_the_old_one_serves_on(
        s3_server, s3_url, s3_stack, tmp_path):
    store = open_s3_store(s3_server, s3_url, tmp_path / "test-cache")
    store.on_pointer_moved = announce(store, s3_stack.redis_url)  # as the trainer does
    good = store.verify(1).model_path.read_bytes()
    tampered = publish_copy(store, "tampered after publishing")
    store.client.put_object(Bucket=store.bucket, Key=store.key(tampered.number, MODEL_FILE),
                            Body=corrupted(good, "truncated"))
    with predict_clients(s3_stack.url, BODY, n=2) as load:
        for rejected, number in enumerate((tampered.number, 9), start=1):
            store._write_pointer(number, [SHIPPED_VERSION])  # by hand: set_current would refuse
            wait_for(lambda want=2 * rejected: sum(
                w["rejections"] for w in _beats(s3_stack)) >= want,
                30, f"both workers rejecting version {number}")
    assert failures(load) == [] and versions(load) == {SHIPPED_VERSION}
    logs = s3_stack.tail("worker1", None)
    assert f"rejected model version {tampered.number}" in logs and "sha256 mismatch" in logs
    assert "rejected model version 9" in logs and "does not exist" in logs


def _beats(stack) -> list[dict]:
    from tools.faults import heartbeats, redis_client

    return heartbeats(redis_client(stack.redis_url))


def test_the_store_going_down_leaves_workers_serving_and_ready_names_it(tmp_path):
    from tests.s3server import S3Server

    with S3Server(tmp_path / "s3") as server:
        url = server.url("down")
        env = {**server.env(), "MODEL_CACHE": str(tmp_path / "cache"),
               "MODEL_POLL_SECONDS": "0.2"}
        stack = start_stack(tmp_path, workers=1, model_dir=url, env=env)
        try:
            with predict_clients(stack.url, BODY, n=2) as load:
                wait_for(lambda: len(load.records) > 10, 30, "load running")
                server.stop(kill=True)
                wait_for(lambda: ready(stack).get("model_store", {}).get(url, "ok") != "ok",
                         30, "/ready reporting the store")
                body = ready(stack)
                assert body["status"] == "ready"  # the workers serve what they have
                assert body["model_store"][url].startswith("unreachable: ")
                before = len(load.records)
                wait_for(lambda: len(load.records) > before + 20, 30,
                         "requests served meanwhile")
                server.start()
                wait_for(lambda: ready(stack).get("model_store") == {url: "ok"}, 30,
                         "the store reported ok again")
            assert failures(load) == []
        finally:
            stack.stop()
