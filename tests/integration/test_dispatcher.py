"""api.dispatch.Dispatcher on its own, against a real redis-server of the test's own.

The worker side is ``Consumer`` below: a thread that BRPOPs the real queue, reads the
real task messages (digits/protocol.task_message) and stores each result as Celery's
Redis result backend does (SET, then PUBLISH on ``celery-task-meta-<id>``), with the
holds and drops the tests need. One test runs a real Celery worker instead, to show
that a request's images reach the model as one task and one forward pass.
"""

from __future__ import annotations

import base64
import json
import threading
import time

import numpy as np
import pytest
import redis

from api import celery_client
from api.dispatch import Dispatcher
from api.errors import ApiError
from api.workers import WorkerRegistry
from digits.protocol import QUEUE, RESULT_PREFIX, decode_batch, heartbeat_key
from digits.settings import load
from digits.stack import Stack
from tests.conftest import seeded_store

WAIT = 10.0  # generous bound for conditions that normally hold within milliseconds


def until(check, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def tagged(*tags: int) -> np.ndarray:
    """Images whose every pixel is their tag: the consumer answers with it."""
    return np.stack([np.full((28, 28), t, np.uint8) for t in tags])


def tags_of(answers: list[dict]) -> list[int]:
    return [round(a["probabilities"][0]) for a in answers]


class Consumer:
    """The worker's side of the wire, in a thread of the test."""

    def __init__(self, url: str):
        self.client = redis.Redis.from_url(url)
        self.received: list[tuple[str, int]] = []  # (task id, images) per copy taken
        self.gate = threading.Event()  # cleared: the next task is held until set
        self.gate.set()
        self.held = threading.Event()  # a task is being held at the gate
        self.answer = self.success  # (task id, images) -> result meta, or None: no answer
        self.publish = True  # False: store the result without the notice
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Consumer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.gate.set()
        self._thread.join(5)

    def sizes(self) -> list[int]:
        return [n for _, n in self.received]

    @staticmethod
    def success(task_id: str, images: np.ndarray, version: int = 7) -> dict:
        probs = [[float(img[0, 0])] + [0.0] * 9 for img in images]
        return {"status": "SUCCESS", "result": {"probabilities": probs, "model_version": version}}

    def store(self, task_id: str, meta: dict) -> None:
        raw = json.dumps({**meta, "traceback": None, "children": [], "task_id": task_id,
                          "date_done": "2025-01-01T00:00:00"})
        pipe = self.client.pipeline()
        pipe.set(RESULT_PREFIX + task_id, raw, ex=60)
        if self.publish:
            pipe.publish(RESULT_PREFIX + task_id, raw)
        pipe.execute()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                popped = self.client.brpop([QUEUE], timeout=0.1)
            except (redis.RedisError, OSError):
                return  # Redis is gone (the test that kills it)
            if popped is None:
                continue
            message = json.loads(popped[1])
            task_id = message["headers"]["id"]
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            images = decode_batch(args[0])
            self.received.append((task_id, len(images)))
            if not self.gate.is_set():
                self.held.set()
                self.gate.wait()
                self.held.clear()
            meta = self.answer(task_id, images)
            if meta is not None and not self._stop.is_set():
                try:
                    self.store(task_id, meta)
                except (redis.RedisError, OSError):
                    return


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    stack = Stack(workers=0, log_dir=tmp_path_factory.mktemp("redis"))
    stack.start_redis()
    yield stack.redis_url
    stack.stop_redis()


def make_dispatcher(url: str, serving: bool = True, **options) -> Dispatcher:
    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    client.flushdb()
    if serving:  # what WorkerRegistry needs to believe a worker serves
        client.set(heartbeat_key("consumer@test"),
                   json.dumps({"hostname": "consumer@test", "model_loaded": True}))
    settings = {"timeout": 5.0, "hedge_after": 2.0, "max_group": 64, "window": 1,
                "linger": 0.0, **options}
    celery = celery_client(load({"REDIS_URL": url}).as_dict())
    return Dispatcher(celery, client, WorkerRegistry(client), **settings)


@pytest.fixture
def consumer(redis_url):
    c = Consumer(redis_url).start()
    yield c
    c.stop()


class Call(threading.Thread):
    """A request in a thread of its own: its answers, or the ApiError it met."""

    def __init__(self, dispatcher: Dispatcher, images: np.ndarray):
        super().__init__(daemon=True)
        self.dispatcher, self.images = dispatcher, images
        self.answers, self.error = None, None
        self.start()

    def run(self):
        try:
            self.answers = self.dispatcher.predict_many(self.images)
        except ApiError as exc:
            self.error = exc

    def result(self) -> list[dict]:
        self.join(WAIT)
        assert not self.is_alive(), "the request never returned"
        if self.error is not None:
            raise self.error
        return self.answers


def queued(dispatcher: Dispatcher, images: int) -> None:
    until(lambda: dispatcher._queued_images == images, f"{images} images queued")


def test_predict_answers_one_image(redis_url, consumer):
    dispatcher = make_dispatcher(redis_url)
    answer = dispatcher.predict(tagged(5)[0])
    assert answer == {"probabilities": [5.0] + [0.0] * 9, "model_version": 7}
    assert consumer.sizes() == [1]


def test_window_full_requests_travel_together(redis_url, consumer):
    """With the window's one place taken, requests queue; the answer that frees the
    place sends all of them as ONE task."""
    dispatcher = make_dispatcher(redis_url, window=1)
    consumer.gate.clear()
    first = Call(dispatcher, tagged(1))
    until(consumer.held.is_set, "the first task at the worker")
    others = [Call(dispatcher, tagged(10 + i)) for i in range(5)]
    queued(dispatcher, 5)
    assert dispatcher.client.llen(QUEUE) == 0  # the window holds them back
    consumer.gate.set()
    assert tags_of(first.result()) == [1]
    for i, call in enumerate(others):
        assert tags_of(call.result()) == [10 + i]  # each its own answer
    assert consumer.sizes() == [1, 5]


def test_wider_window_sends_while_one_is_out(redis_url, consumer):
    dispatcher = make_dispatcher(redis_url, window=2)
    consumer.gate.clear()
    first = Call(dispatcher, tagged(1))
    until(consumer.held.is_set, "the first task at the worker")
    second = Call(dispatcher, tagged(2))
    until(lambda: dispatcher.client.llen(QUEUE) == 1, "the second task in the queue")
    consumer.gate.set()
    assert tags_of(first.result()) == [1] and tags_of(second.result()) == [2]
    assert consumer.sizes() == [1, 1]


def test_group_stops_at_max_group(redis_url, consumer):
    dispatcher = make_dispatcher(redis_url, window=1, max_group=3)
    consumer.gate.clear()
    first = Call(dispatcher, tagged(1))
    until(consumer.held.is_set, "the first task at the worker")
    others = [Call(dispatcher, tagged(10 + i)) for i in range(5)]
    queued(dispatcher, 5)
    consumer.gate.set()
    for call in [first, *others]:
        call.result()
    assert consumer.sizes() == [1, 3, 2]


def test_coalesce_off_sends_each_request_alone(redis_url, consumer):
    dispatcher = make_dispatcher(redis_url, window=1, coalesce=False)
    consumer.gate.clear()
    first = Call(dispatcher, tagged(1))
    until(consumer.held.is_set, "the first task at the worker")
    others = [Call(dispatcher, tagged(10 + i, 20 + i)) for i in range(3)]
    queued(dispatcher, 6)
    consumer.gate.set()
    for i, call in enumerate(others):
        assert tags_of(call.result()) == [10 + i, 20 + i]
    first.result()
    assert consumer.sizes() == [1, 2, 2, 2]  # a request's images still travel together


def test_linger_waits_for_a_request_still_arriving(redis_url, consumer):
    """A request being preprocessed holds the group back (at most ``linger``), so a
    request queued meanwhile shares its task instead of going alone."""
    dispatcher = make_dispatcher(redis_url, linger=WAIT)
    with dispatcher.arriving():  # "A": still reading and preprocessing
        early = Call(dispatcher, tagged(1))
        until(lambda: dispatcher._holding == 1 and dispatcher._queued_images == 1,
              "the early request lingering")
        assert dispatcher.client.llen(QUEUE) == 0 and consumer.sizes() == []
    late = dispatcher.predict_many(tagged(2))
    assert tags_of(late) == [2] and tags_of(early.result()) == [1]
    assert consumer.sizes() == [2]


def test_linger_is_bounded(redis_url, consumer):
    """A request that never finishes arriving delays the others by ``linger`` only."""
    dispatcher = make_dispatcher(redis_url, linger=0.05)
    with dispatcher.arriving():
        assert tags_of(dispatcher.predict_many(tagged(3))) == [3]
    assert consumer.sizes() == [1]


def test_predict_many_is_one_task(redis_url, consumer):
    dispatcher = make_dispatcher(redis_url)
    answers = dispatcher.predict_many(tagged(*range(5)))
    assert tags_of(answers) == [0, 1, 2, 3, 4]
    assert all(a["model_version"] == 7 for a in answers)
    assert consumer.sizes() == [5]
    assert dispatcher.predict_many(np.zeros((0, 28, 28), np.uint8)) == []
    with pytest.raises(ValueError):
        dispatcher.predict_many(np.zeros((2, 28, 27), np.uint8))


def test_predict_many_above_max_group_is_split(redis_url, consumer):
    dispatcher = make_dispatcher(redis_url, max_group=4)
    answers = dispatcher.predict_many(tagged(*range(10)))
    assert tags_of(answers) == list(range(10))  # in order across the parts
    assert consumer.sizes() == [4, 4, 2]  # ceil(10 / 4) tasks


def test_requests_are_never_split_to_fill_a_task(redis_url, consumer):
    """Queued requests of 3 images each do not fit a task of 4 together: each goes
    whole in a task of its own rather than 3 + 1 and 2."""
    dispatcher = make_dispatcher(redis_url, window=1, max_group=4)
    consumer.gate.clear()
    first = Call(dispatcher, tagged(1))
    until(consumer.held.is_set, "the first task at the worker")
    x = Call(dispatcher, tagged(10, 11, 12))
    queued(dispatcher, 3)
    y = Call(dispatcher, tagged(20, 21, 22))
    queued(dispatcher, 6)
    z = Call(dispatcher, tagged(30))
    queued(dispatcher, 7)
    consumer.gate.set()
    assert tags_of(x.result()) == [10, 11, 12]
    assert tags_of(y.result()) == [20, 21, 22]
    assert tags_of(z.result()) == [30]
    first.result()
    assert consumer.sizes() == [1, 3, 4]  # y and z share, in order


def test_unanswered_task_is_hedged_and_first_answer_wins(redis_url, consumer):
    """The first copy is held unanswered (its worker died, say): after ``hedge_after``
    the same task id goes once more; the copy answered first is the answer."""
    dispatcher = make_dispatcher(redis_url, hedge_after=0.2)
    groups = []
    dispatcher.on_group = lambda size, hedged: groups.append((size, hedged))
    stash = []

    def answer(task_id, images):
        if not stash:  # the first copy: no answer yet
            stash.append((task_id, images))
            return None
        consumer.store(task_id, consumer.success(task_id, images, version=2))
        return consumer.success(task_id, images, version=1)  # the first copy, late

    consumer.answer = answer
    answers = dispatcher.predict_many(tagged(4, 5))
    assert [a["model_version"] for a in answers] == [2, 2] and tags_of(answers) == [4, 5]
    (first_id, _), (second_id, _) = consumer.received
    assert first_id == second_id and consumer.sizes() == [2, 2]
    until(lambda: groups, "the group's metrics")
    assert groups == [(2, True)]
    consumer.answer = consumer.success  # the late answer left nothing behind
    assert tags_of(dispatcher.predict_many(tagged(6))) == [6]


def test_answer_whose_notice_was_lost_is_found_before_hedging(redis_url, consumer):
    dispatcher = make_dispatcher(redis_url, hedge_after=0.2)
    consumer.publish = False  # stored, never announced
    assert tags_of(dispatcher.predict_many(tagged(8))) == [8]
    assert consumer.sizes() == [1]  # looked up, not sent again


def test_timeout_is_504_after_one_hedge(redis_url):
    dispatcher = make_dispatcher(redis_url, timeout=0.6, hedge_after=0.2)  # no consumer
    with pytest.raises(ApiError) as caught:
        dispatcher.predict(tagged(1)[0])
    assert (caught.value.status, caught.value.code) == (504, "timeout")
    assert dispatcher.client.llen(QUEUE) == 2  # the task and its one hedge


@pytest.mark.parametrize("meta, status, code", [
    ({"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["x"]}},
     502, "worker_error"),
    ({"status": "SUCCESS", "result": {"probabilities": [[1.0] * 10], "model_version": 1}},
     502, "worker_error"),  # one answer for two images
    ({"status": "REVOKED", "result": None}, 504, "timeout"),
])
def test_failed_task_fails_every_request_in_it(redis_url, consumer, meta, status, code):
    dispatcher = make_dispatcher(redis_url, window=1)
    consumer.gate.clear()
    first = Call(dispatcher, tagged(1))
    until(consumer.held.is_set, "the first task at the worker")
    a, b = Call(dispatcher, tagged(2)), Call(dispatcher, tagged(3))
    queued(dispatcher, 2)
    consumer.answer = lambda task_id, images: meta if len(images) == 2 else consumer.success(
        task_id, images)
    consumer.gate.set()
    first.result()
    for call in (a, b):
        with pytest.raises(ApiError) as caught:
            call.result()
        assert (caught.value.status, caught.value.code) == (status, code)


def test_no_serving_worker_is_503_at_once(redis_url):
    dispatcher = make_dispatcher(redis_url, serving=False)
    with pytest.raises(ApiError) as caught:
        dispatcher.predict_many(tagged(1, 2))
    assert (caught.value.status, caught.value.code) == (503, "no_workers")
    assert dispatcher.client.llen(QUEUE) == 0


def test_redis_lost_fails_waiters_and_later_requests_fast(tmp_path):
    stack = Stack(workers=0, log_dir=tmp_path)
    stack.start_redis()
    consumer = Consumer(stack.redis_url).start()
    try:
        dispatcher = make_dispatcher(stack.redis_url, timeout=60.0, hedge_after=30.0)
        assert tags_of(dispatcher.predict_many(tagged(1))) == [1]  # the listener is up
        consumer.gate.clear()
        waiting = Call(dispatcher, tagged(2, 3))
        until(consumer.held.is_set, "the task at the worker")
        stack.stop_redis(kill=True)
        with pytest.raises(ApiError) as caught:
            waiting.result()  # well before its 60 s timeout
        assert (caught.value.status, caught.value.code) == (503, "broker_unavailable")
        with pytest.raises(ApiError) as caught:
            dispatcher.predict_many(tagged(4))
        assert (caught.value.status, caught.value.code) == (503, "broker_unavailable")
    finally:
        consumer.stop()
        stack.stop_redis()


def test_real_worker_answers_a_request_with_one_forward_pass(tmp_path):
    stack = Stack(workers=0, log_dir=tmp_path / "logs", model_dir=tmp_path / "models",
                  env={"WORKER_DRAIN_SECONDS": "0"})
    seeded_store(tmp_path / "models")
    stack.start_redis()
    try:
        stack.start_worker(1)
        client = redis.Redis.from_url(stack.redis_url)

        def beat():
            keys = client.keys(heartbeat_key("*"))
            data = json.loads(client.get(keys[0])) if keys else {}
            return data if data.get("model_loaded") else None

        until(beat, "the worker's model", timeout=120)
        celery = celery_client(load({"REDIS_URL": stack.redis_url}).as_dict())
        dispatcher = Dispatcher(celery, client, WorkerRegistry(client), timeout=30.0,
                                hedge_after=30.0)
        images = tagged(0, 0, 0, 0, 0)
        images[1:, 8:20, 12:16] = 255  # a bar: not the blank image's answer
        before = beat()["stats"]
        answers = dispatcher.predict_many(images)
        assert len(answers) == 5
        for a in answers:
            # Ten digit probabilities, then the not_a_digit score of an 11-output version.
            assert len(a["probabilities"]) in (10, 11)
            assert abs(sum(a["probabilities"][:10]) - 1) < 1e-3
            assert a["model_version"] == beat()["model_version"]
        assert answers[1] == answers[2] and answers[0] != answers[1]
        stats = until(lambda: (s := beat()["stats"])["batches"] > before["batches"] and s,
                      "the worker's stats")
        # One forward pass of all five images.
        assert (stats["batches"], stats["images"]) == (before["batches"] + 1,
                                                       before["images"] + 5)
    finally:
        stack.stop()
