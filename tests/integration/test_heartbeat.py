"""The heartbeat's goodbye, against a real redis-server of the test's own."""

import threading
import time

import redis

from digits.stack import Stack
from worker.heartbeat import Heartbeat


def test_stop_mid_beat_leaves_no_key_behind(tmp_path):
    """A worker that stops while a beat is under way must not be revived by that beat.

    The key outliving the worker made the API route to it until the TTL ran out,
    so /predict answered "no_workers" seconds late.
    """
    stack = Stack(workers=0, log_dir=tmp_path)
    stack.start_redis()
    try:
        in_beat = threading.Event()

        def describe():  # holds the beat between its payload and its SET
            in_beat.set()
            time.sleep(0.3)
            return {"model_loaded": True}

        beat = Heartbeat("worker1@test", describe, stack.redis_url, tmp_path, interval=0.05)
        beat.start()
        assert in_beat.wait(10)
        beat.stop()
        beat._thread.join(5)  # whatever the beat was doing is over now
        assert not beat._thread.is_alive()
        assert redis.Redis.from_url(stack.redis_url).exists(beat.key) == 0
        assert not beat.alive_path.exists()
    finally:
        stack.stop_redis()
