"""The Celery app and the predict task. Run with ``python -m worker``.

The model loads in ``worker_init`` in the worker's own process: the threads
pool never forks, so TensorFlow is never loaded in a parent that forks.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import time

from celery import Celery, signals
from celery.worker import consumer as celery_consumer

from digits import protocol, request_ids
from digits.settings import load_or_exit

log = logging.getLogger("worker")
# Celery logs two INFO lines per task (received, succeeded): at hundreds of tasks a
# second that is a measurable share of a core. Failures are still logged.
for _name in ("celery.app.trace", "celery.worker.strategy"):
    logging.getLogger(_name).setLevel(logging.WARNING)

SETTINGS = load_or_exit()
app = Celery("digits")
app.conf.update(protocol.celery_config(SETTINGS.REDIS_URL, SETTINGS.RESULT_EXPIRES))
app.conf.worker_consumer = "worker.app:Consumer"
app.conf.broker_transport = "worker.transport:Transport"  # survives junk in the queue
# Each line names the requests of the task it is about (digits/request_ids.py).
app.conf.worker_log_format = (
    "[%(asctime)s: %(levelname)s/%(processName)s] [%(request_id)s] %(message)s")


@signals.after_setup_logger.connect
def _name_requests(logger=None, **_):
    request_ids.add_to_handlers(logger)


@signals.task_prerun.connect
def _bind_request_ids(task=None, **_):
    """The task's request IDs for its log lines, Celery's failure line included (it is
    written before task_postrun)."""
    ids = getattr(task.request, protocol.REQUEST_IDS_HEADER, None) if task else None
    request_ids.CURRENT.set(request_ids.joined(ids) if isinstance(ids, list) else request_ids.NONE)


@signals.task_postrun.connect
def _unbind_request_ids(**_):
    request_ids.CURRENT.set(request_ids.NONE)


class Consumer(celery_consumer.Consumer):
    """Celery's consumer, surviving its own cleanup after the broker connection is lost.

    Workaround for celery 5.7.0 (no upstream issue found): its
    ``Consumer.on_connection_error_after_connected`` closes the broken connection
    after ``collect()`` has already dropped its transport. With messages still
    unacked (Redis restarted under load), restoring them raises AttributeError, which
    kombu's ``ignore_errors`` lets through and Celery treats as unrecoverable: the
    worker exits (code 0) instead of reconnecting. Those messages went with Redis
    anyway, and the API's hedged resend covers their requests.
    tests/unit/test_workarounds.py fails when celery moves on from 5.7 or that code
    path changes.
    """

    def ensure_connected(self, conn):
        """Reconnect to a restarted Redis within about a second.

        celery 5.7.0 calls ``conn.ensure_connection`` with kombu 5.7.0's default
        back-off (2, 4, 6... up to 30 s between attempts) and has no setting for it,
        while the heartbeat (and so /ready) is back at once: tasks would queue
        unserved. tests/unit/test_workarounds.py fails when either default changes.
        """
        conn.ensure_connection = functools.partial(
            conn.ensure_connection, interval_start=0.25, interval_step=0.25, interval_max=1.0)
        return super().ensure_connected(conn)

    def on_connection_error_after_connected(self, exc):
        try:
            super().on_connection_error_after_connected(exc)
        except Exception:  # noqa: BLE001 - anything here would end the worker
            log.warning("cleanup after losing the broker failed; reconnecting anyway",
                        exc_info=True)
            self.connection = None


class Runtime:
    """What one worker process holds: the predictor, its batcher and its heartbeat."""

    predictor = None
    batcher = None
    heartbeat = None
    notices = None
    stats = None

    @classmethod
    def start(cls, hostname: str) -> None:
        from models.store import StoreUnavailable, open_store
        from worker.batcher import Batcher
        from worker.heartbeat import Heartbeat, Stats
        from worker.notices import NoticeListener
        from worker.predictor import Predictor

        cls.stats = Stats()
        s = SETTINGS
        try:
            store = open_store(name=s.MODEL_NAME, settings=s)
        except StoreUnavailable:  # the predictor starts from this host's cache, if it can
            store = open_store(name=s.MODEL_NAME, settings=s, seed=False)
        cls.predictor = Predictor(
            store, poll_seconds=s.MODEL_POLL_SECONDS,
            threads=(s.TF_NUM_INTRAOP_THREADS, s.TF_NUM_INTEROP_THREADS))
        cls.predictor.setup()
        cls.batcher = Batcher(cls.predictor.predict, max_batch=s.BATCH_MAX,
                              max_wait=s.BATCH_WAIT_MS / 1000, stats=cls.stats)
        cls.predictor.start_watching()
        cls.notices = NoticeListener(s.REDIS_URL, cls.predictor.wake)
        cls.notices.start()
        cls.heartbeat = Heartbeat(hostname, cls.describe, s.REDIS_URL, s.WORKER_ALIVE_DIR)
        cls.heartbeat.start()
        cls.predictor.on_swap = cls.beat_now  # /ready and the API see a new version at once

    @classmethod
    def beat_now(cls) -> None:
        import redis

        with contextlib.suppress(redis.RedisError, OSError):
            cls.heartbeat.beat()

    @classmethod
    def describe(cls) -> dict:
        p = cls.predictor
        return {
            "model_loaded": bool(p and p.version is not None and cls.batcher.alive()),
            "model_version": p.version if p else None,
            "reloads": p.reloads if p else 0,
            "rejections": p.rejections if p else 0,
            "store": p.store_report() if p else {},
            "stats": cls.stats.snapshot() if cls.stats else {},
        }

    @classmethod
    def stop(cls) -> None:
        if cls.heartbeat:
            cls.heartbeat.stop()
        if cls.notices:
            cls.notices.stop()
        if cls.predictor:
            cls.predictor.stop()


@signals.worker_init.connect
def _load_model(sender=None, **_):
    try:
        Runtime.start(sender.hostname)
    except Exception:
        # Celery would log this and consume tasks without a model: exit instead, so
        # the supervisor (compose, Kubernetes, make up) sees it and restarts or stops.
        log.exception("cannot start: no model could be loaded")
        logging.shutdown()
        os._exit(3)


@signals.worker_shutting_down.connect
def _say_goodbye(**_):
    Runtime.stop()


@signals.worker_ready.connect
def _drain_on_sigterm(**_):
    """On SIGTERM, keep taking tasks for WORKER_DRAIN_SECONDS, then Celery's warm shutdown.

    When the API and the workers are stopped together (compose down, a deploy),
    requests the API already holds still publish their tasks for a moment: with
    the consumer stopped at once they would find no worker (503). The API stops
    taking requests at once and lingers at most 2 s on kept-alive connections.
    celery 5.7.0 has no drain setting, so this wraps the SIGTERM handler Celery
    installs in ``celery.platforms.signals`` (tests/unit/test_workarounds.py).
    """
    from celery import platforms

    drain = SETTINGS.WORKER_DRAIN_SECONDS
    celery_handler = platforms.signals["SIGTERM"]
    if drain <= 0 or not callable(celery_handler) or getattr(celery_handler, "drains", False):
        return
    draining = threading.Event()

    def later():
        log.warning("SIGTERM: taking tasks for %.1f s more, then shutting down", drain)
        time.sleep(drain)
        os.kill(os.getpid(), signal.SIGTERM)  # back in the handler, now draining

    def handler(signum, frame):
        if draining.is_set():  # our own wake-up call, or a second SIGTERM
            return celery_handler(signum, frame)
        draining.set()
        threading.Thread(target=later, name="drain", daemon=True).start()

    handler.drains = True
    platforms.signals["SIGTERM"] = handler


@app.task(name=protocol.TASK_PREDICT, ignore_result=False)
def predict(payload: str) -> dict:
    """Base64 uint8 (n, 28, 28) images -> probability rows and the model version: n rows
    of 10 digit probabilities, plus not_a_digit as an 11th value when the version has
    it (digits/protocol.py)."""
    started = time.perf_counter()
    # Counted as arriving until the images are handed over, however the task ends.
    with Runtime.batcher.arriving() as arrival:
        images = protocol.decode_batch(payload)
        probs, version = arrival.run(images)
    # One line a task (not a request: coalesced requests share it), so the log can
    # follow a request ID from the API to the worker that answered it.
    log.info("predicted %d image(s) with model %s in %.1f ms", len(images), version,
             (time.perf_counter() - started) * 1000)
    return {"probabilities": probs.round(6).tolist(), "model_version": version}
