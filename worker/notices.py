"""The trainer's notices on Redis: a new current version, check the store now.

One thread per worker subscribes to MODEL_CHANNEL and calls ``on_notice`` for each
notice, and once after every (re)connection, since a notice sent while this worker
was not subscribed is lost (Redis pub/sub keeps nothing). The predictor's poll of
the pointer covers that gap too; the notice only makes a reload immediate.
"""

from __future__ import annotations

import logging
import threading

import redis

from digits.protocol import MODEL_CHANNEL, parse_model_notice

log = logging.getLogger("worker.notices")


class NoticeListener:
    def __init__(self, redis_url: str, on_notice, retry_seconds: float = 0.5):
        self.redis_url = redis_url
        self.on_notice = on_notice  # () -> None
        self.retry_seconds = retry_seconds
        self.notices = 0
        self.subscribed = threading.Event()
        self._failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-notices", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except (redis.RedisError, OSError) as exc:
                if not self._failing:
                    log.warning("model notices: %s; reconnecting (the store is polled "
                                "meanwhile)", exc)
                self._failing = True
            self.subscribed.clear()
            self._stop.wait(self.retry_seconds)

    def _listen(self) -> None:
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2,
                                      socket_timeout=None, health_check_interval=10)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(MODEL_CHANNEL)
            self.subscribed.set()
            if self._failing:
                log.info("model notices: subscribed again")
                self._failing = False
            self.on_notice()  # whatever was announced while we were not listening
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message and message.get("type") == "message":
                    notice = parse_model_notice(message["data"])
                    if notice:
                        self.notices += 1
                        log.info("notice: version %s is current in %s", notice["version"],
                                 notice.get("store"))
                        self.on_notice()
        finally:
            pubsub.close()
            client.close()
