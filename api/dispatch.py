"""From preprocessed images to answers, through Celery over Redis.

``Dispatcher.predict(image)`` blocks until a worker answers, or raises ApiError:
503 when no worker lives or Redis is down (fast), 504 when the timeout runs out.

Coalescing: request threads put their image on a queue. A few sender threads
each take whatever is queued (up to ``max_group`` images) and send it as ONE
Celery task, so the broker is paid once per group. A lone request is sent at
once: nobody waits for company, so latency at concurrency 1 does not suffer.

Hedging: a group unanswered after ``hedge_after`` seconds (its worker was
killed, say) is published once more under the same task id; whichever copy
finishes first writes the result, and the waiter sees no failure.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
import redis
from celery import Celery
from celery.exceptions import BackendError
from celery.exceptions import TimeoutError as CeleryTimeout

from api.errors import ApiError
from api.workers import ProcessThreads, WorkerRegistry
from worker.protocol import QUEUE, TASK_PREDICT, encode_batch

log = logging.getLogger("api.dispatch")

NO_WORKER = ApiError(503, "no_workers", "no worker with a loaded model is running")


def _unavailable(reason: str) -> ApiError:
    return ApiError(503, "broker_unavailable", f"the task queue (Redis) is unreachable: {reason}",
                    {"Retry-After": "1"})


def _lost_redis(exc: BaseException | None) -> bool:
    """Is this (or what it was raised while handling) a lost connection to Redis?

    Celery's result consumer gives up reconnecting with a bare RuntimeError, raised
    while handling the redis error.
    """
    while exc is not None:
        if isinstance(exc, BackendError | redis.RedisError | OSError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class Dispatcher:
    def __init__(self, celery: Celery, registry: WorkerRegistry, timeout: float = 5.0,
                 hedge_after: float = 1.0, max_group: int = 64, senders: int = 4,
                 on_group=None):
        self.celery = celery
        self.registry = registry
        self.timeout = timeout
        self.hedge_after = hedge_after
        self.max_group = max(1, max_group)
        self.on_group = on_group  # metrics hook: (size, hedged)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._senders = ProcessThreads(self._send_loop, "sender", senders)

    # -- request side --------------------------------------------------------------
    def predict(self, image: np.ndarray) -> dict:
        redis_ok, _, error = self.registry.snapshot()
        if not redis_ok:
            raise _unavailable(error)
        if not self.registry.serving():
            # The view may predate a worker's first heartbeat (up to half a second,
            # or longer in a process that only ever refreshed it for /ready): confirm.
            self.registry.refresh()
            if not self.registry.serving():
                raise NO_WORKER
        self._senders.ensure()
        future: Future = Future()
        deadline = time.monotonic() + self.timeout
        self._queue.put((image, future, deadline))
        try:
            return future.result(timeout=self.timeout + 0.5)
        except FutureTimeout:
            future.cancel()
            raise ApiError(504, "timeout",
                           f"no answer from a worker within {self.timeout} s") from None

    # -- sender side -----------------------------------------------------------------
    def _take_group(self) -> list:
        group = []
        item = self._queue.get()
        while True:
            image, future, deadline = item
            # Skip requests whose client already gave up.
            if future.set_running_or_notify_cancel() and deadline > time.monotonic():
                group.append(item)
            elif not future.done():
                future.set_exception(ApiError(504, "timeout", "expired while queued"))
            if len(group) >= self.max_group:
                return group
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return group

    def _send_loop(self) -> None:
        while True:
            group = self._take_group()
            if not group:
                continue
            try:
                answers = self._round_trip(group)
            except ApiError as exc:
                for _, future, _ in group:
                    future.set_exception(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - every waiter must hear back
                log.exception("dispatch failed")
                err = ApiError(502, "worker_error", f"the worker failed: {type(exc).__name__}")
                for _, future, _ in group:
                    future.set_exception(err)
                continue
            for (_, future, _), answer in zip(group, answers, strict=True):
                future.set_result(answer)

    def _publish(self, payload: str, task_id: str, expires: float) -> None:
        try:
            self.celery.send_task(
                TASK_PREDICT, args=[payload], task_id=task_id, queue=QUEUE,
                expires=expires, retry=False,
            )
        except Exception as exc:  # kombu raises its own and socket errors
            self.registry.nudge()
            raise _unavailable(str(exc)) from exc

    def _round_trip(self, group: list) -> list[dict]:
        images = np.stack([image for image, _, _ in group])
        payload = encode_batch(images)
        deadline = min(d for _, _, d in group)
        task_id = uuid.uuid4().hex
        self._publish(payload, task_id, max(0.5, deadline - time.monotonic()))
        result = self.celery.AsyncResult(task_id)
        started = time.monotonic()
        hedged = False
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ApiError(504, "timeout",
                                   f"no answer from a worker within {self.timeout} s")
                try:
                    value = result.get(timeout=min(0.25, remaining), propagate=True,
                                       disable_sync_subtasks=False)
                    break
                except CeleryTimeout:
                    pass
                except Exception as exc:
                    if not _lost_redis(exc):
                        raise  # the task's own failure: a 502 from the send loop
                    # Redis went away while we waited: the same 503 as when it is down.
                    self.registry.nudge()
                    raise _unavailable(str(exc).strip()[:200]) from exc
                if not self.registry.serving():
                    raise NO_WORKER
                if not hedged and time.monotonic() - started >= self.hedge_after:
                    hedged = True
                    log.warning("task %s unanswered after %.1f s: sending it again",
                                task_id, self.hedge_after)
                    self._publish(payload, task_id, max(0.5, deadline - time.monotonic()))
        finally:
            self._release(result)
        if self.on_group:
            self.on_group(len(group), hedged)
        version = value["model_version"]
        return [{"probabilities": p, "model_version": version} for p in value["probabilities"]]

    def _release(self, result) -> None:
        """Delete the result (it has been read) and drop the subscription."""
        with contextlib.suppress(Exception):  # Redis may be down; the result expires anyway
            result.forget()
