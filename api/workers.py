"""What the API knows about the workers, from their Redis heartbeats.

A background thread refreshes the view every half second, so /health and the
fast-fail path of /predict never wait on Redis.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import redis

from digits.protocol import HEARTBEAT_PREFIX, QUEUE, parse_heartbeat

log = logging.getLogger("api.workers")


class ProcessThread:
    """A daemon thread started once per process, on first use.

    A thread does not survive gunicorn's fork, so each process starts its own.
    ``setup`` runs first, once per process, before the thread starts.
    """

    def __init__(self, target, name: str, setup=None):
        self.target, self.name, self.setup = target, name, setup
        self._pid = None
        self._lock = threading.Lock()

    def ensure(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            if self.setup:
                self.setup()
            threading.Thread(target=self.target, name=self.name, daemon=True).start()
            self._pid = os.getpid()


class WorkerRegistry:
    def __init__(self, client: redis.Redis, interval: float = 0.5):
        self.client = client
        self.interval = interval
        self.workers: list[dict] = []
        self.redis_ok = False
        self.redis_error = "not checked yet"
        self.updated = 0.0
        self._wake = threading.Event()
        self._thread = ProcessThread(self._loop, "worker-registry")

    def _loop(self) -> None:
        while True:
            self.refresh()
            self._wake.wait(self.interval)
            self._wake.clear()

    def refresh(self) -> None:
        try:
            keys = list(self.client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=1000))
            values = self.client.mget(keys) if keys else []
            workers = [w for w in map(parse_heartbeat, values) if w]
            self.workers, self.redis_ok, self.redis_error = workers, True, ""
        except (redis.RedisError, OSError) as exc:
            if self.redis_ok:
                log.warning("Redis unreachable: %s", exc)
            self.workers, self.redis_ok, self.redis_error = [], False, str(exc)
        self.updated = time.monotonic()

    def _current(self) -> None:
        """Start the refresher, and refresh now if the view is missing or stale: /ready
        refreshes without the thread, so a process's first /predict or /health could
        otherwise act on a view taken before its workers were up (or still alive)."""
        self._thread.ensure()
        if not self.updated or time.monotonic() - self.updated > 3 * self.interval:
            self.refresh()

    def snapshot(self) -> tuple[bool, list[dict], str]:
        """(redis reachable, live workers, error) as of the last refresh (<= 0.5 s old)."""
        self._current()
        return self.redis_ok, self.workers, self.redis_error

    def cached(self) -> list[dict]:
        """Live workers as last seen, for /health: it waits on Redis (bounded by the 1 s
        socket timeout) only when the refresher has not been running in this process."""
        self._current()
        return self.workers

    def serving(self) -> list[dict]:
        return [w for w in self.snapshot()[1] if w.get("model_loaded")]

    def nudge(self) -> None:
        """Refresh now (after a failure), rather than at the next tick."""
        self._wake.set()

    def queue_depth(self) -> int | None:
        try:
            return int(self.client.llen(QUEUE))
        except (redis.RedisError, OSError):
            return None
