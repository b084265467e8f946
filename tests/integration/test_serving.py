"""HTTP -> Redis -> worker -> result, through real processes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.conftest import (
    ONE,
    SEVEN,
    SHIPPED_VERSION,
    data_url,
    draw_png,
    get,
    post,
    start_stack,
)


def test_a_drawn_seven_is_a_seven(stack):
    status, body, headers = post(stack.url + "/predict", {"image": data_url(draw_png(SEVEN))})
    assert status == 200, body
    assert body["digit"] == 7
    assert set(body["probabilities"]) == {str(d) for d in range(10)}
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-3
    assert body["confidence"] == body["probabilities"]["7"] > 0.5
    assert body["model_version"] == SHIPPED_VERSION
    assert headers["Content-Type"] == "application/json"


def test_plain_base64_without_a_data_url_prefix(stack):
    import base64

    raw = base64.b64encode(draw_png(ONE, background=(255, 255, 255, 255))).decode()
    status, body, _ = post(stack.url + "/predict", {"image": raw})
    assert status == 200 and body["digit"] == 1


def test_a_blank_canvas_is_422_not_a_digit(stack):
    status, body, _ = post(stack.url + "/predict", {"image": data_url(draw_png([]))})
    assert status == 422
    assert body["error"]["code"] == "blank_image"


def test_health_and_ready(stack):
    status, body, _ = get(stack.url + "/health")
    assert status == 200 and body["status"] == "healthy" and body["model_loaded"] is True
    status, body, _ = get(stack.url + "/ready")
    assert status == 200 and body["workers_serving"] == 2 and body["redis"] == "ok"


def test_concurrent_requests_all_get_their_own_answer(stack):
    """Coalesced into shared tasks and batches, every request still gets its own digit."""
    bodies = {7: {"image": data_url(draw_png(SEVEN))}, 1: {"image": data_url(draw_png(ONE))}}
    results, lock = [], threading.Lock()

    def client(i):
        want = 7 if i % 2 else 1
        for _ in range(10):
            status, body, _ = post(stack.url + "/predict", bodies[want])
            with lock:
                results.append((want, status, body.get("digit")))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 160
    assert all(status == 200 and got == want for want, status, got in results)


def test_canvas_style_drawings_are_recognised(stack, mnist_dir):
    """MNIST test digits redrawn as canvas strokes, through /predict (the full figure
    comes from `make eval-canvas`; here a sample keeps CI fast)."""
    from tools.canvas_set import make_drawings
    from trainer.data import load

    data = load(mnist_dir)
    drawings = make_drawings(data.x_test, data.y_test, 300, seed=7)
    correct = 0
    for png, label in drawings:
        status, body, _ = post(stack.url + "/predict", {"image": data_url(png)})
        assert status == 200, body
        correct += body["digit"] == label
    assert correct / len(drawings) >= 0.97


def test_metrics_move_after_real_predictions(stack):
    def scrape():
        status, text, _ = get(stack.url + "/metrics")
        assert status == 200
        return text

    def value(text, prefix):
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(prefix))

    before = scrape()
    for _ in range(5):
        post(stack.url + "/predict", {"image": data_url(draw_png(SEVEN))})
    post(stack.url + "/predict", {"image": data_url(draw_png([]))})
    time.sleep(1.2)  # worker figures travel in heartbeats (every 0.5 s)
    after = scrape()
    assert value(after, 'digits_predictions_total{digit="7"}') >= \
        value(before, 'digits_predictions_total{digit="7"}') + 5
    assert value(after, 'digits_http_requests_total{method="POST",route="/predict",status="200"}') \
        >= 5
    assert value(after, 'digits_errors_total{code="blank_image"}') >= 1
    assert value(after, "digits_http_request_seconds_count") > value(
        before, "digits_http_request_seconds_count")
    assert value(after, "digits_worker_images_total") >= value(
        before, "digits_worker_images_total") + 5
    assert value(after, "digits_worker_batch_size_count") > 0
    assert value(after, "digits_worker_inference_seconds_count") > 0
    assert 'digits_worker_model_version{worker="worker1@' in after
    assert "digits_queue_depth " in after
    assert value(after, "digits_dispatch_group_size_count") >= 5


def test_no_live_worker_answers_503_fast(tmp_path):
    stack = start_stack(tmp_path, workers=1)
    try:
        stack.stop_worker(1)
        time.sleep(1.0)  # the registry refreshes every 0.5 s
        started = time.monotonic()
        status, body, _ = post(stack.url + "/predict", {"image": data_url(draw_png(SEVEN))})
        assert status == 503 and body["error"]["code"] == "no_workers", body
        # Fast means "without waiting out PREDICT_TIMEOUT (5 s)"; the margin is wide
        # so that a slow, shared box cannot fail it.
        assert time.monotonic() - started < 2.5
        status, body, _ = get(stack.url + "/ready")
        assert status == 503 and "no live worker" in body["reason"]
        assert get(stack.url + "/health")[0] == 200  # liveness is not readiness
    finally:
        stack.stop()


def test_a_worker_that_cannot_answer_in_time_gives_504(tmp_path):
    stack = start_stack(tmp_path, workers=1, env={"PREDICT_TIMEOUT": "0.3",
                                                   "HEDGE_AFTER": "5"})
    try:
        # Freeze the worker (SIGSTOP): its heartbeat key lives on for up to 3 s (its TTL), so the
        # API still believes in it and must time out rather than hang.
        import os
        import signal

        os.killpg(stack.workers[1].pid, signal.SIGSTOP)
        started = time.monotonic()
        status, body, _ = post(stack.url + "/predict", {"image": data_url(draw_png(SEVEN))})
        elapsed = time.monotonic() - started
        os.killpg(stack.workers[1].pid, signal.SIGCONT)
        assert status in (503, 504), body
        assert elapsed < 2.0
        if status == 504:
            assert body["error"]["code"] == "timeout"
    finally:
        stack.stop()


@pytest.mark.parametrize("n", [1, 5, 64])
def test_batched_answers_equal_single_answers(n, mnist_dir):
    """Micro-batching must not change answers: one forward pass for n images gives
    what n separate passes give."""
    from models.store import shipped_store
    from trainer.data import load
    from worker.batcher import Batcher
    from worker.predictor import Predictor

    predictor = Predictor(shipped_store())
    predictor.setup()
    images = load(mnist_dir).x_test[:n]
    singles = np.concatenate([predictor.predict(images[i : i + 1])[0] for i in range(n)])
    batched, _ = predictor.predict(images)
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    assert (batched.argmax(1) == singles.argmax(1)).all()
    batcher = Batcher(predictor.predict, max_batch=128, max_wait=0.005)
    futures = [batcher.submit(images[i : i + 1]) for i in range(n)]
    via_batcher = np.concatenate([f.result(timeout=10)[0] for f in futures])
    np.testing.assert_allclose(via_batcher, singles, atol=1e-5)
    # As tasks call it: from many threads at once, each running the pass itself when
    # the model is idle or joining the batcher's next one; every task gets its own.
    from concurrent.futures import ThreadPoolExecutor

    def task(i):
        with batcher.arriving() as arrival:
            return arrival.run(images[i : i + 1])[0]

    with ThreadPoolExecutor(8) as pool:
        via_tasks = np.concatenate(list(pool.map(task, range(n))))
    np.testing.assert_allclose(via_tasks, singles, atol=1e-5)
