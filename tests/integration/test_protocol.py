"""The API pushes task messages onto the queue itself (digits/protocol.task_message):
they must be what Celery's own client would have queued, as the real worker reads them."""

from __future__ import annotations

import json
import time

import numpy as np
import redis

from api import celery_client
from digits.protocol import QUEUE, encode_batch, task_message
from digits.settings import load
from digits.stack import Stack


def test_pushed_message_is_what_send_task_queues(tmp_path):
    stack = Stack(workers=0, log_dir=tmp_path)
    stack.start_redis()
    try:
        client = redis.Redis.from_url(stack.redis_url)
        celery = celery_client(load({"REDIS_URL": stack.redis_url}).as_dict())
        payload = encode_batch(np.zeros((2, 28, 28), np.uint8))
        celery.send_task("digits.predict", args=[payload], task_id="t-1", queue=QUEUE,
                         expires=5.0, retry=False)
        theirs = json.loads(client.rpop(QUEUE))
        ours = json.loads(task_message(celery, "t-1", payload, 2, expires=5.0))
    finally:
        stack.stop()

    assert ours.keys() == theirs.keys()
    assert ours["body"] == theirs["body"]  # the task's arguments, byte for byte
    for key in ("content-type", "content-encoding"):
        assert ours[key] == theirs[key]
    # Headers: the same fields and values, but for the ones that name the moment and
    # the process (expires, origin), the argument's log line (ours is short), and
    # ignore_result: send_task leaves it to the task's own setting (None); ours says
    # outright that the result is wanted (False).
    assert ours["headers"].keys() == theirs["headers"].keys()
    assert ours["headers"]["ignore_result"] is False
    volatile = {"expires", "origin", "argsrepr", "ignore_result"}
    assert {k: v for k, v in ours["headers"].items() if k not in volatile} == {
        k: v for k, v in theirs["headers"].items() if k not in volatile}
    assert ours["headers"]["argsrepr"] == "(2 images)"
    assert len(theirs["headers"]["argsrepr"]) > 1000  # what we leave out: a kilobyte of base64
    # Both expire about 5 s from now.
    from datetime import datetime

    for message in (ours, theirs):
        expires = datetime.fromisoformat(message["headers"]["expires"]).timestamp()
        assert 3.0 < expires - time.time() <= 5.0
    # Properties: kombu's envelope. Only reply_to (a per-client id) and the random
    # delivery tag differ.
    assert ours["properties"].keys() == theirs["properties"].keys()
    same = {k for k in theirs["properties"] if k not in ("reply_to", "delivery_tag")}
    assert {k: ours["properties"][k] for k in same} == {k: theirs["properties"][k] for k in same}
