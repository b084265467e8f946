"""From preprocessed images to answers, through Celery workers over Redis.

``Dispatcher.predict(image)`` and ``Dispatcher.predict_many(images)`` block until
a worker answers, or raise ApiError: 503 when no worker lives or Redis is down
(fast), 504 when the timeout runs out, 502 when the task itself failed. Both take
the same path: ``predict`` is ``predict_many`` of one image.

1. Coalescing. Requests queue their images. Each API process keeps at most
   ``window`` tasks in flight. A request that finds room sends everything queued
   (up to ``max_group`` images) as ONE Celery task, so the broker and a worker's
   per-task cost are paid once per group. A request's images always travel
   together, so the worker answers them with one forward pass; only a request of
   more than ``max_group`` images is cut, into ceil(n / max_group) parts, each
   sent whole. With ``coalesce`` off, a task carries one request (or one part of
   it) and nothing else. A lone request is sent at once: nobody waits for
   company, so latency at concurrency 1 does not suffer. Requests that arrive
   while the window is full travel together in the next group, which is sent the
   moment an answer frees a place. Before sending, a group waits at most
   ``linger`` seconds for requests this process is still reading and
   preprocessing (there are none at concurrency 1, so no wait there): larger
   groups, so fewer tasks per request when the box is busy.
2. Sending. Celery builds the task message; it is LPUSHed onto the queue
   (``protocol.task_message``) instead of going through kombu's producer, which
   costs about 1.5 ms a message. The envelope is kombu 5.7's: the integration
   test test_protocol.py compares it with what ``send_task`` queues.
3. Answers. Celery's Redis result backend (celery 5.7: ``RedisBackend._set``)
   publishes every result it stores on a channel named after the task id. One
   listener thread per process holds a pattern subscription to its own task ids,
   so an answer costs no extra round trip: no per-task subscribe, poll or delete.
   Read results are deleted in bulk once per tick; the rest expire
   (RESULT_EXPIRES). tests/integration/test_workarounds.py fails if the backend
   stops publishing.
4. Hedging. A group unanswered after ``hedge_after`` seconds (its worker died,
   say) is first looked up, in case its notice was lost while the subscription
   reconnected, and otherwise published once more under the same task id:
   whichever copy finishes first answers.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_EXCEPTION, Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field

import numpy as np
import redis
from celery import Celery

from api.errors import ApiError
from api.workers import ProcessThread, WorkerRegistry
from digits import request_ids
from digits.protocol import (
    IMAGE_SHAPE,
    QUEUE,
    RESULT_PREFIX,
    encode_batch,
    parse_result,
    task_message,
)

log = logging.getLogger("api.dispatch")

NO_WORKER = ApiError(503, "no_workers", "no worker with a loaded model is running",
                     {"Retry-After": "1"})
NO_WORKER_AFTER = 0.25  # seconds in flight before a group checks that a worker lives


def _unavailable(reason: str) -> ApiError:
    return ApiError(503, "broker_unavailable", f"the task queue (Redis) is unreachable: {reason}",
                    {"Retry-After": "1"})


def _timeout(seconds: float) -> ApiError:
    return ApiError(504, "timeout", f"no answer from a worker within {seconds} s")


@dataclass(eq=False)
class _Part:
    """A request's images, or a ``max_group``-sized share of them: they travel in one task."""

    images: np.ndarray  # (k, 28, 28) uint8
    future: Future  # -> k answers, in order
    deadline: float
    request_id: str | None = field(default_factory=request_ids.current)  # the caller's


@dataclass(eq=False)
class _Group:
    """Parts travelling as one task, their images in order."""

    task_id: str
    items: list[_Part]
    deadline: float
    sent: float  # monotonic time it was (last) published
    message: str = ""  # set once built, before it is published
    hedged: bool = False

    @property
    def size(self) -> int:
        return sum(len(part.images) for part in self.items)

    @property
    def request_ids(self) -> list[str]:
        return [part.request_id for part in self.items if part.request_id]


class Dispatcher:
    def __init__(self, celery: Celery, client: redis.Redis, registry: WorkerRegistry,
                 timeout: float = 5.0, hedge_after: float = 1.0, max_group: int = 64,
                 window: int = 1, linger: float = 0.002, on_group=None,
                 tick: float = 0.05, coalesce: bool = True):
        self.celery = celery  # builds the task messages
        self.client = client  # publishes them
        self.registry = registry
        self.timeout = timeout
        self.hedge_after = hedge_after
        self.max_group = max(1, max_group)  # images in one task
        self.coalesce = coalesce  # several requests may share a task
        self.window = max(1, window)
        self.linger = linger
        self.on_group = on_group  # metrics hook: (size, hedged)
        self.tick = tick
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a request queued or arrived
        self._queued: deque[_Part] = deque()
        self._queued_images = 0
        self._arriving = 0  # requests being read and preprocessed
        self._holding = 0  # window places held while lingering
        self._inflight: dict[str, _Group] = {}
        self._read: list[str] = []  # result keys to delete
        self._subscribed = threading.Event()
        self._ever_subscribed = False
        self._listen_error = "not subscribed yet"
        self._prefix = ""
        self._ids = itertools.count()
        self._listener = ProcessThread(self._listen, "results", setup=self._new_process)

    def _new_process(self) -> None:
        """This process's own task ids (the listener subscribes to them alone)."""
        self._prefix = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}-"
        self._subscribed.clear()
        self._ever_subscribed = False
        self._queued.clear()
        self._queued_images = 0
        self._inflight.clear()

    # -- request side --------------------------------------------------------------
    @contextlib.contextmanager
    def arriving(self):
        """Around a request's reading and preprocessing: worth a short wait (linger).

        Leaving normally wakes nobody: the request queues its images next, and that
        wakes a lingering group with them already queued (woken here, it would leave
        without them). A request that fails here wakes the group at once.
        """
        with self._lock:
            self._arriving += 1
        try:
            yield
        except BaseException:
            with self._lock:
                self._arriving -= 1
                self._changed.notify_all()
            raise
        with self._lock:
            self._arriving -= 1

    def predict(self, image: np.ndarray) -> dict:
        """One (28, 28) uint8 image -> {"probabilities": [10 floats], "model_version"}."""
        return self.predict_many(np.asarray(image)[np.newaxis])[0]

    def predict_many(self, images: np.ndarray) -> list[dict]:
        """(n, 28, 28) uint8 images -> n answers as ``predict`` gives them, in order.

        The images travel in one task (ceil(n / max_group) when there are more than
        ``max_group``), so a worker answers them with one forward pass. The request
        fails as a whole: the first error any of its parts meets is raised.
        """
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"expected (n, 28, 28) images, got {images.shape}")
        if not len(images):
            return []
        self._ready()
        deadline = time.monotonic() + self.timeout
        parts = [_Part(images[i : i + self.max_group], Future(), deadline)
                 for i in range(0, len(images), self.max_group)]
        with self._lock:
            self._queued.extend(parts)
            self._queued_images += len(images)
            self._changed.notify_all()
        self._send_queued(self.linger)
        futures = [part.future for part in parts]
        done, pending = wait_futures(futures, timeout=self.timeout + 0.5,
                                     return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None or pending:
            for future in pending:
                future.cancel()  # still queued: never sent; in flight: its answer is dropped
            if failed is not None:
                raise failed.exception()
            raise _timeout(self.timeout)
        return [answer for future in futures for answer in future.result()]

    def _ready(self) -> None:
        """Fail fast (503) when nothing could answer: Redis down, no worker, no listener."""
        redis_ok, _, error = self.registry.snapshot()
        if not redis_ok:
            raise _unavailable(error)
        if not self.registry.serving():
            # The view may predate a worker's first heartbeat (up to half a second,
            # or longer in a process that only ever refreshed it for /ready): confirm.
            self.registry.refresh()
            if not self.registry.serving():
                raise NO_WORKER
        self._listener.ensure()
        # A process's first request waits for its listener; later, a lost
        # subscription means Redis is gone: answer at once.
        if not self._subscribed.wait(0.0 if self._ever_subscribed else 1.0):
            raise _unavailable(self._listen_error)

    # -- sending -------------------------------------------------------------------
    def _take_group(self) -> _Group | None:
        """Under the lock: the queued parts still wanted, in order, as one group of at
        most ``max_group`` images (each part is at most that, so none is ever cut)."""
        items, size, now = [], 0, time.monotonic()
        while self._queued:
            part = self._queued[0]
            if items and (not self.coalesce or size + len(part.images) > self.max_group):
                break
            self._queued.popleft()
            self._queued_images -= len(part.images)
            # Skip requests whose client already gave up.
            if part.future.set_running_or_notify_cancel() and part.deadline > now:
                items.append(part)
                size += len(part.images)
            elif not part.future.done():
                part.future.set_exception(ApiError(504, "timeout", "expired while queued"))
        if not items:
            return None
        group = _Group(self._prefix + str(next(self._ids)), items,
                       min(part.deadline for part in items), sent=now)
        self._inflight[group.task_id] = group  # holds its place in the window
        return group

    def _send_queued(self, linger: float = 0.0) -> None:
        """Send queued requests while the window has room, first waiting up to
        ``linger`` for those still being preprocessed."""
        while True:
            with self._lock:
                if not self._queued or len(self._inflight) + self._holding >= self.window:
                    return
                if linger and self._arriving and self._queued_images < self.max_group:
                    self._holding += 1  # requests meanwhile queue rather than go alone
                    try:
                        self._changed.wait_for(
                            lambda: not self._arriving or self._queued_images >= self.max_group,
                            timeout=linger)
                    finally:
                        self._holding -= 1
                    linger = 0.0
                group = self._take_group()
            if group is None:
                continue
            try:
                images = np.concatenate([part.images for part in group.items])
                group.message = task_message(
                    self.celery, group.task_id, encode_batch(images), len(images),
                    expires=max(0.5, group.deadline - time.monotonic()),
                    request_ids=group.request_ids)
                self._publish(group)
            except Exception as exc:  # noqa: BLE001 - every waiter must hear back
                self._drop(group)
                if isinstance(exc, redis.RedisError | OSError):
                    self.registry.nudge()
                    exc = _unavailable(str(exc))
                elif not isinstance(exc, ApiError):
                    log.exception("cannot send a task")
                    exc = ApiError(500, "internal_error", "the task could not be sent")
                self._fail(group, exc)

    def _publish(self, group: _Group) -> None:
        group.sent = time.monotonic()
        self.client.lpush(QUEUE, group.message)

    def _drop(self, group: _Group) -> bool:
        """Take a group out of the window; False if something else already had."""
        with self._lock:
            return self._inflight.pop(group.task_id, None) is not None

    # -- answers -------------------------------------------------------------------
    @staticmethod
    def _fail(group: _Group, error: ApiError) -> None:
        for part in group.items:
            if not part.future.done():
                part.future.set_exception(error)

    def _settle(self, group: _Group, raw: bytes) -> None:
        """Hand each request its answer from the stored result."""
        try:
            state, value = parse_result(raw)
        except ValueError:
            state, value = "UNREADABLE", None
        if state == "SUCCESS":
            try:
                version, probs = value["model_version"], list(value["probabilities"])
                if len(probs) != group.size:
                    raise ValueError(f"{len(probs)} answers for {group.size} images")
            except (KeyError, TypeError, ValueError):
                state = "MALFORMED"
        if state == "SUCCESS":
            offset = 0
            for part in group.items:
                answers = probs[offset : offset + len(part.images)]
                offset += len(part.images)
                if not part.future.done():
                    part.future.set_result(
                        [{"probabilities": p, "model_version": version} for p in answers])
        elif state == "REVOKED":  # Celery drops a task whose `expires` passed in the queue
            self._fail(group, ApiError(504, "timeout", "the task expired before a worker took it"))
        else:
            kind = value.get("exc_type", state) if isinstance(value, dict) else state
            with request_ids.bound(request_ids.joined(group.request_ids)):
                log.error("task %s failed: %s", group.task_id, value)
            self._fail(group, ApiError(502, "worker_error", f"the worker failed: {kind}"))
        with self._lock:
            self._read.append(RESULT_PREFIX + group.task_id)
        if self.on_group:
            self.on_group(group.size, group.hedged)

    def _answer(self, task_id: str, raw: bytes) -> None:
        with self._lock:
            group = self._inflight.pop(task_id, None)
        if group is not None:  # else a hedged copy's second answer, or one too late
            self._settle(group, raw)
            self._send_queued(self.linger)

    def _check_inflight(self, now: float) -> None:
        """Time out, hedge, or fail fast (no worker left) the groups still in flight."""
        with self._lock:
            groups = list(self._inflight.values())
        freed = False
        # Waiting on no live worker: give up at once (checked only for groups that
        # have waited a while: a passing blip in the view must not fail fresh ones).
        no_worker = (any(now - g.sent >= NO_WORKER_AFTER for g in groups)
                     and not self.registry.serving())
        for group in groups:
            if now >= group.deadline or (no_worker and now - group.sent >= NO_WORKER_AFTER):
                if self._drop(group):
                    self._fail(group, NO_WORKER if no_worker else _timeout(self.timeout))
                    freed = True
            elif group.message and not group.hedged and now - group.sent >= self.hedge_after:
                group.hedged = True
                raw = self.client.get(RESULT_PREFIX + group.task_id)
                if raw is not None:  # answered while the subscription was down
                    self._answer(group.task_id, raw)
                    continue
                with request_ids.bound(request_ids.joined(group.request_ids)):
                    log.warning("task %s unanswered after %.1f s: sending it again",
                                group.task_id, self.hedge_after)
                self._publish(group)
        if freed:
            self._send_queued()

    def _housekeeping(self) -> None:
        with self._lock:
            read, self._read = self._read, []
        if read:
            self.client.unlink(*read)
        self._check_inflight(time.monotonic())

    def _lost_redis(self, exc: BaseException) -> None:
        """Redis went away: what is in flight went with it (503, as when it is down)."""
        self._subscribed.clear()
        self._listen_error = str(exc).strip()[:200] or type(exc).__name__
        self.registry.nudge()
        with self._lock:
            groups, self._inflight = list(self._inflight.values()), {}
        for group in groups:
            self._fail(group, _unavailable(self._listen_error))
        self._send_queued()  # fails fast too, unless Redis is already back

    def _listen(self) -> None:
        """The process's result listener: notices in, hedges and timeouts, cleanup."""
        while True:
            pubsub = self.client.pubsub()
            try:
                pubsub.psubscribe(RESULT_PREFIX + self._prefix + "*")
                if pubsub.get_message(timeout=1.0) is None:  # the confirmation
                    raise redis.ConnectionError("no answer to PSUBSCRIBE within 1 s")
                self._subscribed.set()
                self._ever_subscribed = True
                # Anything answered while we were not listening (a reconnect).
                for task_id in list(self._inflight):
                    raw = self.client.get(RESULT_PREFIX + task_id)
                    if raw is not None:
                        self._answer(task_id, raw)
                next_tick = time.monotonic() + self.tick
                while True:
                    message = pubsub.get_message(timeout=max(0.0, next_tick - time.monotonic()))
                    if message is not None and message["type"] == "pmessage":
                        self._answer(message["channel"][len(RESULT_PREFIX):].decode(),
                                     message["data"])
                    if time.monotonic() >= next_tick:
                        self._housekeeping()
                        next_tick = time.monotonic() + self.tick
            except (redis.RedisError, OSError) as exc:
                self._lost_redis(exc)
            except Exception:  # noqa: BLE001 - the listener must outlive anything
                log.exception("result listener error")
                self._lost_redis(RuntimeError("result listener error"))
            finally:
                pubsub.close()
            time.sleep(0.1)
