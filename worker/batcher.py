"""Micro-batching: concurrent tasks in one worker share one forward pass.

Task threads ``run()`` their images. A task that finds the model idle and
nobody waiting runs the forward pass itself (no hand-over to another thread:
the common case at low load). Otherwise it queues them and waits: one thread
takes whatever is queued (up to ``max_batch`` images), waits at most
``max_wait`` for tasks that are already being decoded, runs the model once and
hands each task its slice.
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
        self._busy = threading.Lock()  # held while a forward pass runs
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def arriving(self) -> None:
        """A task has started decoding: worth waiting a moment for its images."""
        with self._lock:
            self._arriving += 1

    def run(self, images: np.ndarray) -> tuple[np.ndarray, int]:
        """Probabilities for these images, and the model version that gave them."""
        if self._busy.acquire(blocking=False):
            try:
                with self._lock:
                    alone = self._arriving <= 1 and self._queue.empty()
                    if alone:
                        self._arriving = max(0, self._arriving - 1)
                if alone:
                    return self._forward(images)
            finally:
                self._busy.release()
        return self.submit(images).result()

    def _forward(self, images: np.ndarray) -> tuple[np.ndarray, int]:
        started = time.perf_counter()
        probs, version = self._predict(images)
        if self.stats is not None:
            self.stats.observe_batch(len(images), time.perf_counter() - started)
        return probs, version

    def submit(self, images: np.ndarray) -> Future:
        future: Future = Future()
        with self._lock:
            self._arriving = max(0, self._arriving - 1)
        self._queue.put((images, future))
        return future

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _collect(self) -> list:
        """Wait for a task's images, then take what else is queued, waiting at most
        ``max_wait`` for tasks still decoding theirs."""
        items = [self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while True:
            items += self._take(items)
            if self._size(items) >= self.max_batch:
                return items
            if self._arriving <= 0 or time.monotonic() >= deadline:
                return items
            time.sleep(0.0002)

    @staticmethod
    def _size(items: list) -> int:
        return sum(len(imgs) for imgs, _ in items)

    def _take(self, items: list) -> list:
        """Whatever is queued now, up to the batch size."""
        more, size = [], self._size(items)
        while size < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            more.append(item)
            size += len(item[0])
        return more

    def _run(self) -> None:
        while True:
            items = self._collect()
            try:
                with self._busy:  # a task may be running one itself: take its followers too
                    items += self._take(items)
                    probs, version = self._forward(np.concatenate([imgs for imgs, _ in items]))
            except Exception as exc:
                log.exception("forward pass failed for %d images", self._size(items))
                for _, future in items:
                    future.set_exception(exc)
                continue
            offset = 0
            for imgs, future in items:
                future.set_result((probs[offset : offset + len(imgs)], version))
                offset += len(imgs)
