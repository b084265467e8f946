"""Liveness the rest of the system can see cheaply.

Every ``interval`` seconds each worker writes ``digits:worker:<hostname>`` to
Redis with a short TTL. The API reads these keys for /ready, for its fast 503
when no worker lives, and to export per-worker metrics (model version, batch
sizes, inference latency) on /metrics. The same thread touches a local file
that an orchestrator's liveness probe checks (``python -m worker.probe``), so
liveness does not depend on Redis.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import redis

from digits.protocol import heartbeat_key

log = logging.getLogger("worker.heartbeat")

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)


def alive_file(folder: str | os.PathLike, hostname: str) -> Path:
    return Path(folder) / f"digits-worker-{hostname.replace('/', '_')}.alive"


def _buckets(edges, counts) -> dict:
    return {str(edge): count for edge, count in zip(edges, counts, strict=True)}


class Stats:
    """Cumulative histograms in Prometheus' shape, shipped inside each heartbeat."""

    def __init__(self):
        self._lock = threading.Lock()
        self.batches = 0
        self.images = 0
        self.seconds = 0.0
        self.batch_buckets = [0] * len(BATCH_BUCKETS)
        self.latency_buckets = [0] * len(LATENCY_BUCKETS)

    def observe_batch(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batches += 1
            self.images += size
            self.seconds += seconds
            for i, edge in enumerate(BATCH_BUCKETS):
                if size <= edge:
                    self.batch_buckets[i] += 1
            for i, edge in enumerate(LATENCY_BUCKETS):
                if seconds <= edge:
                    self.latency_buckets[i] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "batches": self.batches,
                "images": self.images,
                "inference_seconds": round(self.seconds, 6),
                "batch_buckets": _buckets(BATCH_BUCKETS, self.batch_buckets),
                "latency_buckets": _buckets(LATENCY_BUCKETS, self.latency_buckets),
            }


class Heartbeat:
    def __init__(self, hostname: str, describe, redis_url: str, alive_dir: str | os.PathLike,
                 interval: float = 0.5, ttl: float = 3.0):
        self.hostname = hostname
        self.describe = describe  # () -> dict: model version, loaded, stats...
        self.interval = interval
        self.ttl = ttl
        self.key = heartbeat_key(hostname)
        self.alive_path = alive_file(alive_dir, hostname)
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self.started = time.time()

    def start(self) -> None:
        self._thread.start()

    def payload(self) -> dict:
        return {
            "hostname": self.hostname,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started,
            "time": time.time(),
            **self.describe(),
        }

    def beat(self) -> None:
        data = self.payload()
        self.alive_path.write_text(json.dumps(data))
        self._redis.set(self.key, json.dumps(data), px=int(self.ttl * 1000))

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.beat()
                if failing:
                    log.info("heartbeat to Redis restored")
                failing = False
            except (redis.RedisError, OSError) as exc:
                if not failing:
                    log.warning("heartbeat failed (will keep trying): %s", exc)
                failing = True
                # Keep the local liveness file fresh: the worker itself is alive.
                with contextlib.suppress(OSError):
                    self.alive_path.write_text(json.dumps(self.payload()))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """Say goodbye at once so the API stops routing here (best effort).

        The beat thread is joined first: a beat already under way would otherwise
        write the key again after the delete, and the API would route to this
        worker until the key's TTL ran out.
        """
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.5)  # a beat is bounded by its 1 s socket timeouts
        with contextlib.suppress(redis.RedisError):
            self._redis.delete(self.key)
        with contextlib.suppress(OSError):
            self.alive_path.unlink()
