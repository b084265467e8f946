"""The upstream behaviour our workarounds and shortcuts rest on, against a real Redis.

When one of these fails after an upgrade, upstream changed: the message names the
code of ours to re-examine (see also tests/unit/test_workarounds.py).
"""

from __future__ import annotations

import base64
import json
import logging
from importlib.metadata import version

import pytest
import redis
from celery import Celery
from kombu import Connection, Consumer, Queue

from digits.protocol import QUEUE, RESULT_PREFIX, celery_config, parse_result
from digits.stack import Stack
from worker.transport import Transport


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    stack = Stack(workers=0, log_dir=tmp_path_factory.mktemp("redis"))
    stack.start_redis()
    yield stack.redis_url
    stack.stop_redis()


def _drain(url: str, transport=None, entries=()) -> list:
    """LPUSH ``entries`` onto the queue, then read it as a Celery worker would."""
    client = redis.Redis.from_url(url)
    client.delete(QUEUE)
    got = []
    conn = Connection(url, transport=transport, transport_options={"ack_emulation": False})
    with conn, Consumer(conn, [Queue(QUEUE)], callbacks=[lambda body, m: got.append(body)],
                        accept=["json"]):
        for entry in entries:
            client.lpush(QUEUE, entry)
        for _ in range(len(entries) + 2):
            try:
                conn.drain_events(timeout=0.5)
            except TimeoutError:
                break
    return got


def _message(body: str) -> str:
    return json.dumps({
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8", "content-type": "application/json", "headers": {},
        "properties": {"delivery_tag": "t", "body_encoding": "base64", "delivery_info": {
            "exchange": "", "routing_key": QUEUE}, "priority": 0}})


def test_kombu_still_raises_on_a_queue_entry_that_is_not_a_message(redis_url):
    """worker/transport.py: kombu's Channel._brpop_read lets the entry's JSON error out,
    and Celery treats it as unrecoverable (the worker exits)."""
    try:
        _drain(redis_url, entries=[b"not json"])
    except ValueError:
        return
    pytest.fail(f"kombu {version('kombu')}: a queue entry that is not JSON no longer raises "
                "out of the Redis transport: check whether worker/transport.py is still needed")


def test_our_transport_drops_the_entry_and_reads_on(redis_url, caplog):
    with caplog.at_level(logging.ERROR, logger="worker.transport"):
        got = _drain(redis_url, Transport, [b"not json", b'{"body": 1}', _message("next")])
    assert got == ["next"]
    assert len([r for r in caplog.records if "dropped a queue entry" in r.message]) == 2


def test_redis_backend_still_publishes_each_result_on_its_key(redis_url):
    """api/dispatch.py waits on a pattern subscription instead of polling: it needs
    Celery's Redis backend to PUBLISH every stored result on the key's own channel."""
    app = Celery("guard")
    app.conf.update(celery_config(redis_url, 60))
    pubsub = redis.Redis.from_url(redis_url).pubsub()
    pubsub.psubscribe(RESULT_PREFIX + "guard-*")
    assert pubsub.get_message(timeout=5)["type"] == "psubscribe"
    value = {"probabilities": [[0.1] * 10], "model_version": 4}
    app.backend.store_result("guard-1", value, "SUCCESS")
    message = pubsub.get_message(timeout=5)
    pubsub.close()
    assert message is not None and message["type"] == "pmessage", (
        "celery: the Redis result backend no longer publishes results: api/dispatch.py's "
        "listener never hears an answer (it would hedge and time out)")
    assert message["channel"].decode() == RESULT_PREFIX + "guard-1"
    assert parse_result(message["data"]) == ("SUCCESS", value)
