"""Micro-batching: concurrent tasks in one worker share one forward pass.

A task decodes its payload and runs its images inside the arrival::

    with batcher.arriving() as arrival:
        images = decode(payload)
        probs, version = arrival.run(images)

A task that finds the model idle and nobody else arriving or waiting runs the
forward pass itself (no hand-over to another thread: the common case at low
load). Otherwise it queues its images and waits: one thread takes whatever is
queued (up to ``max_batch`` images), waits at most ``max_wait`` for tasks still
decoding theirs, runs the model once and hands each task its slice.

A task stops counting as arriving in the same step as its images enter the
queue, so a batch never leaves without images it was told to wait for. The
context manager stops the count however the task ends: a count left behind (a
payload that fails to decode) would make every later batch wait ``max_wait`` for
a task that never comes, and close the fast path for good.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

log = logging.getLogger("worker.batcher")


class Arrival:
    """One task from the start of its decoding until its images are handed over."""

    __slots__ = ("batcher", "counted")

    def __init__(self, batcher: Batcher):
        self.batcher = batcher
        self.counted = True

    def run(self, images: np.ndarray) -> tuple[np.ndarray, int]:
        return self.batcher.run(images, self)


class Batcher:
    def __init__(self, predict, max_batch: int = 128, max_wait: float = 0.002, stats=None):
        self._predict = predict  # (n, 28, 28) uint8 -> ((n, 10) probs, version)
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.stats = stats
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._arriving = 0  # tasks that have not handed over their images yet
        self._lock = threading.Lock()
        self._busy = threading.Lock()  # held while a forward pass runs
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def arriving(self):
        """Around a task's decoding and run: a batch being collected waits a moment
        (``max_wait`` at most) for its images."""
        arrival = Arrival(self)
        with self._lock:
            self._arriving += 1
        try:
            yield arrival
        finally:
            with self._lock:
                self._leave(arrival)

    def _leave(self, arrival: Arrival | None) -> None:
        """Under the lock: the task no longer counts as arriving."""
        if arrival is not None and arrival.counted:
            arrival.counted = False
            self._arriving -= 1

    def run(self, images: np.ndarray, arrival: Arrival | None = None) -> tuple[np.ndarray, int]:
        """Probabilities for these images, and the model version that gave them."""
        if self._busy.acquire(blocking=False):
            try:
                with self._lock:
                    mine = 1 if arrival is not None and arrival.counted else 0
                    alone = self._arriving == mine and self._queue.empty()
                    if alone:
                        self._leave(arrival)
                if alone:
                    return self._forward(images)
            finally:
                self._busy.release()
        return self.submit(images, arrival).result()

    def _forward(self, images: np.ndarray) -> tuple[np.ndarray, int]:
        started = time.perf_counter()
        probs, version = self._predict(images)
        if self.stats is not None:
            self.stats.observe_batch(len(images), time.perf_counter() - started)
        return probs, version

    def submit(self, images: np.ndarray, arrival: Arrival | None = None) -> Future:
        future: Future = Future()
        with self._lock:
            # Queued first, then no longer arriving: a collector that sees the count
            # drop finds the images already queued.
            self._queue.put((images, future))
            self._leave(arrival)
        return future

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _collect(self) -> list:
        """Wait for a task's images, then take what else is queued, waiting at most
        ``max_wait`` for tasks still decoding theirs."""
        items = [self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while True:
            arriving = self._arriving  # read before taking: see submit()
            items += self._take(items)
            if self._size(items) >= self.max_batch:
                return items
            if arriving <= 0 or time.monotonic() >= deadline:
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
