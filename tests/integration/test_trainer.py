"""Trainer CLI, publishing and hot reload, with real workers and a real API."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import zipfile

import pytest

from models.store import MODEL_FILE, ModelStore, shipped_store
from tests.conftest import (
    NEXT_VERSION,
    ROOT,
    SEVEN,
    SHIPPED_VERSION,
    copy_store,
    data_url,
    draw_png,
    get,
    post,
    seeded_store,
    start_stack,
)


def trainer(*args, model_dir, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_NUM_INTRAOP_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "trainer", "--model-dir", str(model_dir), *map(str, args)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, mnist_dir):
    """The shipped default (current) plus a tiny trained version, NEXT_VERSION."""
    folder = tmp_path_factory.mktemp("tiny") / "models"
    seeded_store(folder)
    run = trainer("train", "--data", mnist_dir, "--limit", 600, "--epochs", 1, "--force",
                  "--quiet", model_dir=folder)
    assert run.returncode == 0, run.stdout + run.stderr
    store = ModelStore(folder)
    store.rollback()  # keep the good default current; NEXT_VERSION waits to be promoted
    return store


def test_tiny_training_run_through_the_cli(tiny_store):
    v2 = tiny_store.verify(NEXT_VERSION)
    m = v2.manifest
    assert m["train_samples"] == 600 and m["hyperparameters"]["epochs"] == 1
    assert m["data_fingerprint"].startswith("sha256:")
    assert 0 < m["test_accuracy"] <= 1 and m["training_seconds"] > 0
    assert (v2.path / "history.png").stat().st_size > 1000
    with zipfile.ZipFile(v2.model_path) as z:  # a real Keras v3 archive
        assert "config.json" in z.namelist()


def test_the_gate_keeps_a_weak_model_but_does_not_serve_it(tmp_path, mnist_dir):
    folder = tmp_path / "models"
    seeded_store(folder)
    run = trainer("train", "--data", mnist_dir, "--limit", 300, "--epochs", 1, "--quiet",
                  model_dir=folder)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "not made current" in run.stdout
    store = ModelStore(folder)
    assert store.versions() == [*shipped_store().versions(), NEXT_VERSION]
    assert store.current() == SHIPPED_VERSION


def test_list_promote_rollback_evaluate(tiny_store, tmp_path, mnist_dir):
    folder = copy_store(tiny_store, tmp_path / "models").root
    listing = trainer("list", model_dir=folder)
    assert listing.returncode == 0
    current_line = next(line for line in listing.stdout.splitlines() if line.startswith("*"))
    assert current_line.split()[1] == str(SHIPPED_VERSION)
    assert trainer("promote", NEXT_VERSION, model_dir=folder).returncode == 0
    assert ModelStore(folder).current() == NEXT_VERSION
    assert trainer("rollback", model_dir=folder).returncode == 0
    assert ModelStore(folder).current() == SHIPPED_VERSION
    bad = trainer("promote", 9, model_dir=folder)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_the_shipped_model_reaches_its_manifest_accuracy(mnist_dir, tmp_path):
    store = seeded_store(tmp_path / "models")
    run = trainer("evaluate", "--data", mnist_dir, model_dir=store.root)
    assert run.returncode == 0, run.stderr
    import json

    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["test_samples"] == 10000
    assert result["test_accuracy"] >= result["manifest_test_accuracy"] - 1e-4
    assert result["test_accuracy"] >= 0.994


def _versions_served(stack) -> list:
    status, body, _ = get(stack.url + "/ready")
    return body.get("model_versions", []) if status == 200 else []


def _wait_for_versions(stack, want: list, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _versions_served(stack) == want:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"workers serve {_versions_served(stack)}, not {want}, after {timeout} s")


def test_promote_and_rollback_reach_every_worker_within_5s_with_no_failed_request(
        tiny_store, tmp_path):
    store = copy_store(tiny_store, tmp_path / "models")
    stack = start_stack(tmp_path, workers=2, model_dir=store.root)
    body = {"image": data_url(draw_png(SEVEN))}
    failures, versions, stop = [], set(), threading.Event()

    def client():
        while not stop.is_set():
            status, answer, _ = post(stack.url + "/predict", body)
            if status != 200:
                failures.append((status, answer))
            else:
                versions.add(answer["model_version"])

    try:
        clients = [threading.Thread(target=client) for _ in range(4)]
        for c in clients:
            c.start()
        time.sleep(1)
        for _ in range(2):
            store.set_current(NEXT_VERSION)
            _wait_for_versions(stack, [NEXT_VERSION])
            time.sleep(0.5)
            store.rollback()
            _wait_for_versions(stack, [SHIPPED_VERSION])
            time.sleep(0.5)
        stop.set()
        for c in clients:
            c.join()
    finally:
        stop.set()
        stack.stop()
    assert failures == []
    assert versions == {SHIPPED_VERSION, NEXT_VERSION}


def test_a_corrupt_or_truncated_model_is_rejected_and_the_old_one_keeps_serving(
        tiny_store, tmp_path):
    store = copy_store(tiny_store, tmp_path / "models")
    good = store.verify(NEXT_VERSION).model_path.read_bytes()

    def publish(content: bytes) -> int:
        def write(folder):
            (folder / MODEL_FILE).write_bytes(content)
            return {"test_accuracy": 0.999}

        return store.publish(write).number

    stack = start_stack(tmp_path, workers=1, model_dir=store.root)
    body = {"image": data_url(draw_png(SEVEN))}
    try:
        for bad in (b"not a zip at all", good[: len(good) // 2]):
            number = publish(bad)  # its manifest's sha256 matches: only loading can tell
            store.set_current(number)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                status, answer, _ = post(stack.url + "/predict", body)
                assert status == 200 and answer["model_version"] == SHIPPED_VERSION
                time.sleep(0.1)
        # A file swapped after publishing fails the sha256 check instead.
        (store.base / str(NEXT_VERSION) / MODEL_FILE).write_bytes(good[:-10] + b"0123456789")
        store._write_pointer(NEXT_VERSION, [SHIPPED_VERSION])
        time.sleep(1.5)
        status, answer, _ = post(stack.url + "/predict", body)
        assert status == 200 and answer["model_version"] == SHIPPED_VERSION
        log = (stack.log_dir / "worker1.log").read_text()
        assert log.count("rejected model version") >= 3
        assert "sha256 mismatch" in log
    finally:
        stack.stop()
