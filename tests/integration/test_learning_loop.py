"""The whole loop on small data, through the real stack: drawings answered by /predict,
corrected through POST /feedback, ``trainer watch`` fine-tunes once enough arrived, the
gate passes, the version is published and promoted, the worker hot-reloads it, and
GET /feedback/<id> then names the serving version that learned from a correction."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from digits import feedback_db as fdb
from digits.settings import ROOT, child_environment
from models.store import ModelStore
from tests.conftest import data_url, get, post, start_stack
from tests.integration.test_finetune import SMALL
from tools.feedback_population import population

pytestmark = pytest.mark.slow


def _watch(stack, *args):
    return subprocess.run(
        [sys.executable, "-m", "trainer", "--model-dir", str(stack.model_dir), "watch",
         "--once", *SMALL, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=child_environment(DATABASE_URL=stack.extra_env["DATABASE_URL"],
                              REDIS_URL=stack.redis_url, FINETUNE_AFTER="150"))


def test_feedback_finetune_gate_publish_hot_reload(tmp_path):
    stack = start_stack(tmp_path, workers=1, env={"TRUSTED_PROXIES": "1",
                                                   "FEEDBACK_RATE_LIMIT": ""})
    store = ModelStore(stack.model_dir)
    base, new = store.current(), max(store.versions()) + 1
    try:
        ids = []
        for i, d in enumerate(population(200, seed=21)):
            image = data_url(d.png)
            status, answer, headers = post(stack.url + "/predict", {"image": image})
            assert status == 200, answer
            status, saved, _ = post(stack.url + "/feedback", {
                "image": image, "label": d.label, "predicted": answer["digit"],
                "model_version": answer["model_version"],
                "request_id": headers.get("X-Request-ID") or f"loop-{i}",
            }, headers={"X-Forwarded-For": f"192.0.2.{i % 12 + 1}"})
            assert status == 201, saved
            ids.append(saved["id"])
        assert answer["model_version"] == base

        done = _watch(stack)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "round 1: 200 new labels after id 0: fine-tuning" in done.stdout
        assert "round 1: promoted" in done.stdout

        deadline = time.monotonic() + 60  # bounds the wait; the test asserts no speed
        while post(stack.url + "/predict", {"image": image})[1]["model_version"] != new:
            assert time.monotonic() < deadline, stack.tail("worker1")
            time.sleep(0.2)
        assert get(stack.url + "/health")[1]["model_versions"] == [new]

        trained = [i for i, h in zip(ids, fdb.held_out(ids, 20), strict=True) if not h]
        status, body, _ = get(f"{stack.url}/feedback/{trained[0]}")
        assert status == 200 and body["learned_in"] == new and body["learned_by"] == [new]

        again = _watch(stack)
        assert again.returncode == 0 and "nothing to do" in again.stdout
        probe = subprocess.run([sys.executable, "-m", "trainer", "watch", "--probe"],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert probe.returncode == 0 and "watch alive" in probe.stdout
    finally:
        stack.stop()
