"""worker.batcher.Batcher on its own, with a plain numpy forward pass.

``Forward`` stands where the model stands: (n, 28, 28) uint8 -> ((n, 10) float32,
version). It records each call's size and thread, and can hold a call (the model
busy) or fail one, so the tests decide who runs when without timing anything.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from digits import protocol
from worker.batcher import Batcher

WAIT = 10.0  # bound for results that normally come within milliseconds


class Forward:
    def __init__(self):
        self.calls: list[tuple[int, threading.Thread]] = []
        self.entered = threading.Event()  # a call is under way
        self.release = threading.Event()  # cleared: calls hold until it is set
        self.release.set()
        self.fail_sizes: set[int] = set()

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, int]:
        self.calls.append((len(images), threading.current_thread()))
        self.entered.set()
        assert self.release.wait(WAIT)
        if len(images) in self.fail_sizes:
            raise RuntimeError(f"forward pass of {len(images)} failed")
        # Each image's answer is its first pixel, so every slice can be checked.
        probs = np.zeros((len(images), 10), np.float32)
        probs[:, 0] = images[:, 0, 0]
        return probs, 3

    def sizes(self) -> list[int]:
        return [n for n, _ in self.calls]

    def hold(self) -> None:
        self.entered.clear()
        self.release.clear()


def tagged(*tags: int) -> np.ndarray:
    return np.stack([np.full((28, 28), t, np.uint8) for t in tags])


def tags(result) -> list[int]:
    probs, version = result
    assert version == 3
    return [round(p) for p in probs[:, 0]]


class Stats:
    def __init__(self):
        self.batches = []

    def observe_batch(self, size, seconds):
        self.batches.append(size)


@pytest.fixture
def forward():
    f = Forward()
    yield f
    f.release.set()  # never leave a batcher thread held


def busy_with(batcher: Batcher, forward: Forward, *image_tags: int) -> threading.Thread:
    """A task running a forward pass itself, held in it: the model is busy."""
    forward.hold()
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("r", batcher.run(tagged(*image_tags))), daemon=True)
    thread.result = result
    thread.start()
    assert forward.entered.wait(WAIT)
    return thread


def test_alone_runs_in_the_callers_thread(forward):
    stats = Stats()
    batcher = Batcher(forward, stats=stats)
    with batcher.arriving() as arrival:  # as a task: decode, then run
        images = tagged(1, 2)
        assert tags(arrival.run(images)) == [1, 2]
    assert forward.calls == [(2, threading.current_thread())]
    assert stats.batches == [2]
    assert tags(batcher.run(tagged(3))) == [3]  # and without an arrival
    assert forward.calls[1] == (1, threading.current_thread())


def test_another_task_decoding_sends_a_run_to_the_batch(forward):
    batcher = Batcher(forward, max_wait=0.01)
    with batcher.arriving(), batcher.arriving() as mine:  # the first never hands over
        assert tags(mine.run(tagged(5))) == [5]
    assert forward.calls[0][1].name == "batcher"


def test_tasks_queued_while_the_model_is_busy_share_one_pass(forward):
    batcher = Batcher(forward, max_batch=128, max_wait=0.0)
    first = busy_with(batcher, forward, 1)
    futures = [batcher.submit(tagged(10 + i, 20 + i)) for i in range(3)]
    forward.release.set()
    first.join(WAIT)
    assert tags(first.result["r"]) == [1]
    for i, future in enumerate(futures):
        assert tags(future.result(WAIT)) == [10 + i, 20 + i]  # each task its own slice
    assert forward.sizes() == [1, 6]
    assert forward.calls[1][1].name == "batcher"


def test_a_task_finding_the_model_busy_joins_the_next_pass(forward):
    class Observed(Batcher):
        submitted = threading.Event()

        def submit(self, images, arrival=None):
            future = super().submit(images, arrival)
            self.submitted.set()
            return future

    batcher = Observed(forward, max_wait=0.0)
    first = busy_with(batcher, forward, 1)
    result = {}
    second = threading.Thread(target=lambda: result.setdefault("r", batcher.run(tagged(2))))
    second.start()
    assert batcher.submitted.wait(WAIT)  # it queued its images rather than wait its turn
    forward.release.set()
    second.join(WAIT)
    first.join(WAIT)
    assert tags(result["r"]) == [2] and tags(first.result["r"]) == [1]
    assert forward.sizes() == [1, 1] and forward.calls[1][1].name == "batcher"


def test_a_pass_takes_at_most_max_batch_images(forward):
    batcher = Batcher(forward, max_batch=4, max_wait=0.0)
    first = busy_with(batcher, forward, 1)
    futures = [batcher.submit(tagged(i, i)) for i in range(3)]
    forward.release.set()
    first.join(WAIT)
    assert [tags(f.result(WAIT)) for f in futures] == [[0, 0], [1, 1], [2, 2]]
    assert forward.sizes() == [1, 4, 2]


def test_a_batch_waits_for_a_task_still_decoding(forward):
    batcher = Batcher(forward, max_wait=WAIT)
    with batcher.arriving() as arrival:  # a task decoding its payload
        early = batcher.submit(tagged(1))  # another task's images
        late = batcher.submit(tagged(2), arrival)  # the decoding task's, handed over
    assert tags(early.result(WAIT)) == [1] and tags(late.result(WAIT)) == [2]
    assert forward.sizes() == [2]


def test_the_wait_for_decoding_tasks_is_bounded_by_max_wait(forward):
    batcher = Batcher(forward, max_wait=0.05)
    with batcher.arriving():  # never done while the batch is collected
        assert tags(batcher.submit(tagged(1)).result(WAIT)) == [1]
    assert forward.sizes() == [1]


def test_a_failed_pass_fails_its_tasks_and_the_batcher_lives_on(forward):
    batcher = Batcher(forward, max_wait=0.0)
    forward.fail_sizes = {3}
    first = busy_with(batcher, forward, 1)
    doomed = [batcher.submit(tagged(i)) for i in (5, 6, 7)]
    forward.release.set()
    first.join(WAIT)
    for future in doomed:
        with pytest.raises(RuntimeError, match="forward pass of 3 failed"):
            future.result(WAIT)
    assert batcher.alive()
    assert tags(batcher.submit(tagged(8)).result(WAIT)) == [8]  # and serves the next
    with pytest.raises(RuntimeError):  # alone, the failure is the caller's own
        batcher.run(tagged(1, 2, 3))
    assert tags(batcher.run(tagged(9))) == [9]


def test_a_failed_decoding_leaves_the_arriving_count(forward):
    batcher = Batcher(forward, max_wait=WAIT)
    with pytest.raises(ValueError), batcher.arriving():
        protocol.decode_batch("not 28x28 images")
    # Nobody is arriving: alone, in the caller's thread, no wait for a ghost.
    assert tags(batcher.run(tagged(4))) == [4]
    assert forward.calls == [(1, threading.current_thread())]


def test_an_undecodable_task_leaves_the_fast_path_open(forward, monkeypatch):
    """The predict task as Celery runs it: a payload that fails to decode used to
    leave the batcher counting it as arriving for good, so no task ever ran alone
    again and every batch waited the full BATCH_WAIT_MS."""
    from worker import app as worker_app

    monkeypatch.setattr(worker_app.Runtime, "batcher", Batcher(forward, max_wait=0.01))
    with pytest.raises(ValueError):
        worker_app.predict("this is not base64 of 28x28 images")
    for _ in range(3):
        answer = worker_app.predict(protocol.encode_batch(tagged(6)))
        assert answer == {"probabilities": [[6.0] + [0.0] * 9], "model_version": 3}
    assert forward.calls == [(1, threading.current_thread())] * 3
