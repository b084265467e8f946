"""`make up` supervises (digits.stack.Supervisor): a process that dies is started again,
as compose's `restart: unless-stopped` does, and a crash loop stops the stack plainly.

Real processes throughout: a private redis-server, Celery workers, gunicorn.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis

from digits.protocol import HEARTBEAT_PREFIX, parse_heartbeat
from digits.stack import ROOT, CrashLoop, Stack, Supervisor, free_port
from tests.conftest import SEVEN, data_url, draw_png, get, post, start_stack
from tools.load import predict_clients

BODY = {"image": data_url(draw_png(SEVEN))}


class Supervised:
    """A Supervisor running in a thread beside the test, its messages collected."""

    def __init__(self, stack: Stack, **kwargs):
        self.said: list[str] = []
        self.supervisor = Supervisor(stack, say=lambda *a, **_: self.said.append(" ".join(a)),
                                     **kwargs)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.supervisor.run(self._stop.is_set, interval=0.1)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def failures(load) -> list:
    """Answers that are not a 200 reading the 7."""
    return [(a.status, a.body) for a in load.records
            if a.status != 200 or not isinstance(a.body, dict) or a.body.get("digit") != 7]


def serving(stack: Stack) -> int:
    """Workers serving, as /ready reports them (0 while the API itself is down)."""
    try:
        _, body, _ = get(stack.url + "/ready", timeout=5)
    except OSError:
        return 0
    return body.get("workers_serving", 0) if isinstance(body, dict) else 0


def beating_pids(stack: Stack) -> set[int]:
    """Process ids of the workers whose heartbeat says they serve a model."""
    client = redis.Redis.from_url(stack.redis_url)
    beats = [parse_heartbeat(client.get(k)) for k in client.scan_iter(HEARTBEAT_PREFIX + "*")]
    return {b["pid"] for b in beats if b and b.get("model_loaded")}


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_a_killed_worker_is_restarted_and_no_request_fails(tmp_path):
    stack = start_stack(tmp_path, workers=2)
    try:
        with Supervised(stack) as sup, predict_clients(stack.url, BODY) as load:
            wait_for(lambda: len(load.records) >= 20, 60, "the load to get going")
            old = stack.workers[1].pid
            killed = time.monotonic()
            os.killpg(old, signal.SIGKILL)
            wait_for(lambda: stack.workers[1].pid != old, 30, "the worker to be started again")
            wait_for(lambda: stack.workers[1].pid in beating_pids(stack), 120,
                     "the restarted worker to serve")
            back = time.monotonic() - killed
            answered = len(load.records)
            wait_for(lambda: len(load.records) >= answered + 20, 60, "more answers")
        assert sup.error is None
        assert failures(load) == [], failures(load)[:5]
        assert sup.supervisor.restarts == 1
        assert any("worker1" in line and "exited with code -9" in line for line in sup.said)
        assert any(line.startswith("worker1 restarted") for line in sup.said), sup.said
        print(f"worker back serving {back:.1f} s after kill -9; {len(load.records)} answers")
    finally:
        stack.stop()


def test_every_worker_killed_answers_503_then_the_stack_serves_again(tmp_path):
    stack = start_stack(tmp_path, workers=2)
    try:
        with Supervised(stack) as sup:
            for proc in stack.workers.values():
                os.killpg(proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            status, body, headers = post(stack.url + "/predict", BODY, timeout=15)
            waited = time.monotonic() - killed
            # No worker left: 503 no_workers well before PREDICT_TIMEOUT's 504.
            assert status == 503, body
            assert body["error"]["code"] == "no_workers"
            assert waited < 5.0
            wait_for(lambda: serving(stack) == 2, 180, "both workers to serve again")
            status, body, _ = post(stack.url + "/predict", BODY)
            assert status == 200 and body["digit"] == 7, body
        assert sup.error is None and sup.supervisor.restarts == 2
    finally:
        stack.stop()


def test_a_dead_api_and_redis_are_restarted(tmp_path):
    stack = start_stack(tmp_path, workers=1)
    try:
        with Supervised(stack) as sup:
            os.killpg(stack.api.pid, signal.SIGKILL)
            wait_for(lambda: serving(stack) == 1, 60, "the API to answer again")
            os.killpg(stack.redis.pid, signal.SIGKILL)
            wait_for(lambda: serving(stack) == 1, 60, "the worker to serve through a new Redis")
            status, body, _ = post(stack.url + "/predict", BODY)
            assert status == 200 and body["digit"] == 7, body
        assert sup.error is None and sup.supervisor.restarts == 2
    finally:
        stack.stop()


def test_a_crash_loop_is_reported_with_the_log(tmp_path):
    """A worker that cannot start exits each time; the fifth exit ends supervision."""
    stack = Stack(workers=0, log_dir=tmp_path)
    stack.start_redis()
    try:
        stack.start_worker(1, BATCH_MAX="many")  # refused at start, exit code 2
        sup = Supervisor(stack, first_delay=0.05, max_delay=0.2, say=lambda *a, **k: None)
        with pytest.raises(CrashLoop) as loop:
            sup.run(interval=0.05)
        message = str(loop.value)
        assert "worker1 exited 5 times in 60 s (last exit code 2)" in message
        assert "configuration error: BATCH_MAX must be an integer (got 'many')" in message
        assert sup.restarts == 4
    finally:
        stack.stop()


def test_make_up_exits_non_zero_when_it_cannot_start(tmp_path):
    """`python -m digits.stack` with a store that names a missing version: the worker
    cannot load a model, and the stack says so and exits 1 (not a traceback)."""
    store = tmp_path / "models" / "digits"
    store.mkdir(parents=True)
    (store / "CURRENT").write_text('{"version": 99, "history": []}\n')
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(MODEL_DIR=str(tmp_path / "models"), WORKERS="1", PORT=str(free_port()))
    run = subprocess.run([sys.executable, "-m", "digits.stack"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 1, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert "stopping: worker1 exited with 3" in run.stderr, run.stderr[-2000:]
    assert last.startswith(("stopping:", "(worker1")), last
