"""Micro-batching: concurrent tasks in one worker share one forward pass.

Task threads ``submit()`` their images and wait. One thread takes whatever is
queued (up to ``max_batch`` images), waits at most ``max_wait`` for tasks that
are already being decoded, runs the model once and hands each task its slice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

log = logging.getLogger("worker.batcher")


class Batcher:
    def __init__(self, predict, max_batch: int = 128, max_wait: float = 0.002, stats=None):
        self._predict = predict  # (n, 28, 28) uint8 -> ((n, 10) probs, version)
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.stats = stats
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._arriving = 0  # tasks started but not yet submitted
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def arriving(self) -> None:
        """A task has started decoding: worth waiting a moment for its images."""
        with self._lock:
            self._arriving += 1

    def submit(self, images: np.ndarray) -> Future:
        future: Future = Future()
        with self._lock:
            self._arriving = max(0, self._arriving - 1)
        self._queue.put((images, future))
        return future

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _collect(self) -> list:
        items = [self._queue.get()]
        size = len(items[0][0])
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if self._arriving <= 0 or time.monotonic() >= deadline:
                    break
                time.sleep(0.0002)
                continue
            items.append(item)
            size += len(item[0])
        return items

    def _run(self) -> None:
        while True:
            items = self._collect()
            images = np.concatenate([imgs for imgs, _ in items])
            started = time.perf_counter()
            try:
                probs, version = self._predict(images)
            except Exception as exc:
                log.exception("forward pass failed for %d images", len(images))
                for _, future in items:
                    future.set_exception(exc)
                continue
            if self.stats is not None:
                self.stats.observe_batch(len(images), time.perf_counter() - started)
            offset = 0
            for imgs, future in items:
                future.set_result((probs[offset : offset + len(imgs)], version))
                offset += len(imgs)
