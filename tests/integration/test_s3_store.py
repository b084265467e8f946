"""The S3 backend of the model-store contract, against a real SeaweedFS server.

No mocks: every request goes to ``weed mini`` (tests/s3server.py). Where a test needs
to see the order of requests or to kill a publisher at a chosen moment, it listens on
botocore's own event hooks of the real client.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest

from models.store import MANIFEST_FILE, MODEL_FILE, StoreError, StoreUnavailable, shipped_store
from tests.conftest import ROOT, open_s3_store


def writer(content: bytes = b"model bytes", plot: bytes | None = b"png", **fields):
    def write(folder):
        (folder / MODEL_FILE).write_bytes(content)
        if plot is not None:
            (folder / "history.png").write_bytes(plot)
        return {"test_accuracy": 0.99, **fields}

    return write


@pytest.fixture
def store(s3_server, s3_url, tmp_path):
    return open_s3_store(s3_server, s3_url, tmp_path / "cache")


def keys(store) -> set[str]:
    listing = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.keys)
    return {item["Key"][len(store.keys):] for item in listing.get("Contents", [])}


def record_requests(store) -> list[tuple[str, str]]:
    """(operation, key below the model's prefix) of each request the client sends."""
    seen = []

    def before(params, model, **_):
        key = params.get("Key")
        if key:
            seen.append((model.name, key[len(store.keys):]))

    store.client.meta.events.register("before-parameter-build.s3", before)
    return seen


def test_publish_uploads_verifies_then_writes_the_manifest_and_leaves_the_pointer(store):
    seen = record_requests(store)
    v1 = store.publish(writer(b"one"))
    writes = [(op, key) for op, key in seen if op in ("PutObject", "DeleteObject")]
    assert writes == [
        ("PutObject", "1/.reserved"),
        ("PutObject", "1/history.png"),
        ("PutObject", "1/model.keras"),
        ("PutObject", "1/manifest.json"),  # the commit point, after every file
    ]
    assert ("HeadObject", "1/model.keras") in seen  # each upload is checked
    assert v1.number == 1 and v1.location == store.url(1) + "/"
    assert keys(store) == {"1/.reserved", "1/model.keras", "1/history.png", "1/manifest.json"}
    manifest = json.loads(store.client.get_object(
        Bucket=store.bucket, Key=store.key(1, MANIFEST_FILE))["Body"].read())
    assert manifest["version"] == 1 and manifest["sha256"] == v1.manifest["sha256"]
    assert store.current() is None  # publishing never makes a version current
    assert store._claim(1, "another model") is False  # the claim outlives the publish
    assert store.publish(writer(b"two")).number == 2
    assert store.versions() == [1, 2]


def test_concurrent_publishers_get_distinct_versions(s3_server, s3_url, tmp_path):
    numbers, errors = [], []

    def publish(i):
        try:  # a store (and so a client) of its own, as separate trainers would have
            mine = open_s3_store(s3_server, s3_url, tmp_path / f"cache{i}")
            numbers.append(mine.publish(writer(str(i).encode(), plot=None)).number)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]
    store = open_s3_store(s3_server, s3_url, tmp_path / "check")
    assert store.versions() == [1, 2, 3, 4, 5, 6]
    shas = {store.verify(n).manifest["sha256"] for n in store.versions()}
    assert len(shas) == 6  # each number holds its own publisher's model


KILLED_PUBLISHER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from tests.conftest import open_s3_store
    from tests.s3server import S3Server

    server = S3Server.__new__(S3Server)
    server.env = lambda: {env!r}
    store = open_s3_store(server, {url!r}, Path({cache!r}))

    def die(params, **_):
        if params["Key"].endswith("/manifest.json"):
            os.kill(os.getpid(), signal.SIGKILL)  # after the files, before the manifest

    store.client.meta.events.register("before-parameter-build.s3.PutObject", die)

    def write(folder):
        (folder / "model.keras").write_bytes(b"half a trainer's work")
        return {{}}

    store.publish(write)
""")


def test_a_publisher_killed_before_its_manifest_leaves_no_loadable_version(
        s3_server, s3_url, store, tmp_path):
    store.publish(writer(b"good"))
    store.set_current(1)
    script = KILLED_PUBLISHER.format(root=str(ROOT), env=s3_server.env(), url=s3_url,
                                     cache=str(tmp_path / "killed-cache"))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert run.returncode == -9, run.stderr.decode()[-2000:]
    assert "2/model.keras" in keys(store) and "2/manifest.json" not in keys(store)
    assert store.versions() == [1]  # not listed
    with pytest.raises(StoreError, match="does not exist"):
        store.verify(2)
    with pytest.raises(StoreError):
        store.set_current(2)
    assert store.current() == 1
    assert store.publish(writer(b"next")).number == 3  # its number is never reused


def test_a_tampered_or_truncated_model_is_rejected_and_never_cached(store, tmp_path):
    good = b"x" * 50_000
    store.publish(writer(good))
    shutil.rmtree(store.cache.folder)  # the publisher's own copy: fetch from the bucket
    for bad in (b"y" * 50_000, good[:20_000]):
        store.client.put_object(Bucket=store.bucket, Key=store.key(1, MODEL_FILE), Body=bad)
        with pytest.raises(StoreError, match="sha256 mismatch"):
            store.verify(1)
        assert not store.cache.path(1).exists()
        assert not [p for p in store.cache.folder.iterdir() if p.name.startswith(".fetch")]
    with pytest.raises(StoreError):
        store.set_current(1)
    store.client.put_object(Bucket=store.bucket, Key=store.key(1, MODEL_FILE), Body=good)
    assert store.verify(1).model_path.read_bytes() == good


def test_a_pointer_naming_a_missing_version_is_an_error(store):
    store.client.put_object(Bucket=store.bucket, Key=store.key("CURRENT"),
                            Body=json.dumps({"version": 9, "history": []}).encode())
    assert store.current() == 9
    with pytest.raises(StoreError, match="version 9 does not exist"):
        store.current_version()
    with pytest.raises(StoreError, match="does not exist"):
        store.verify(9)
    store.client.put_object(Bucket=store.bucket, Key=store.key("CURRENT"), Body=b"{not json")
    with pytest.raises(StoreError, match="pointer"):
        store.current()


def test_promote_and_rollback_move_only_the_pointer(store):
    for i in range(3):
        store.publish(writer(str(i).encode(), plot=None))
    for n in (1, 3, 2):
        store.set_current(n)
    assert store.pointer()["history"] == [1, 3]
    assert store.rollback()["version"] == 3
    assert store.rollback()["version"] == 1
    with pytest.raises(StoreError, match="nothing to roll back"):
        store.rollback()
    assert store.versions() == [1, 2, 3]


def test_the_pointer_moves_by_compare_and_swap(store):
    """A writer holding a stale ETag is refused, re-reads and re-applies: nothing lost."""
    for i in range(3):
        store.publish(writer(str(i).encode(), plot=None))
    store.set_current(1)
    _, stale = store._read_pointer()
    store.set_current(2)  # another trainer's promote lands in between
    assert store._swap_pointer(b'{"version": 3, "history": []}', stale) is False
    assert store.current() == 2
    moved = store.set_current(3)
    assert moved["history"] == [1, 2]


def test_racing_promotes_lose_no_update(s3_server, s3_url, store, tmp_path):
    for i in range(4):
        store.publish(writer(str(i).encode(), plot=None))
    stores = [open_s3_store(s3_server, s3_url, tmp_path / f"c{i}") for i in range(4)]

    def promote(i):
        for _ in range(5):
            stores[i].set_current(i + 1)

    threads = [threading.Thread(target=promote, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pointer = store.pointer()
    # 20 moves: every one that changed the version pushed the old one on the stack.
    chain = pointer["history"] + [pointer["version"]]
    assert all(a != b for a, b in zip(chain, chain[1:], strict=False))
    assert len(chain) >= 4


def test_the_pointer_poll_is_conditional(store):
    store.publish(writer(b"a", plot=None))
    store.publish(writer(b"b", plot=None))
    store.set_current(1)
    statuses = []
    store.client.meta.events.register(
        "after-call.s3.GetObject",
        lambda http_response, **_: statuses.append(http_response.status_code))
    first = store.pointer_state()
    assert store.pointer_state() == first == (1, first[1])
    assert statuses[-1] == 304  # unchanged: no body sent
    store.set_current(2)
    number, stamp = store.pointer_state()
    assert number == 2 and stamp != first[1]


def test_fetched_versions_are_cached_verified_and_pruned(store, tmp_path):
    for i in range(5):
        store.publish(writer(str(i).encode() * 1000, plot=None))
    shutil.rmtree(store.cache.folder)
    store.cache.keep = 2
    gets = record_requests(store)
    for n in (1, 2, 1, 3):
        assert store.verify(n).model_path.read_bytes() == str(n - 1).encode() * 1000
    downloads = [k for op, k in gets if op == "GetObject" and k.endswith(MODEL_FILE)]
    assert downloads == ["1/model.keras", "2/model.keras", "3/model.keras"]  # 1 was cached
    cached = sorted(int(p.name) for p in store.cache.folder.iterdir() if p.name.isdigit())
    assert cached == [2, 3]


def test_seeding_an_empty_bucket_with_the_shipped_default(s3_server, s3_url, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    shipped = shipped_store()
    with ThreadPoolExecutor(4) as pool:  # workers starting together on an empty store
        stores = list(pool.map(
            lambda i: open_s3_store(s3_server, s3_url, tmp_path / f"c{i}", seed=True),
            range(4)))
    assert all(s.current() == shipped.current() for s in stores)
    store = stores[0]
    assert store.versions() == shipped.versions()
    assert store.verify(1).manifest["sha256"] == shipped.verify(1).manifest["sha256"]
    assert store.seed_from(shipped) == []  # a store with versions is left alone


def test_a_store_that_is_down_is_reported_and_cached_versions_still_verify(tmp_path):
    from tests.s3server import S3Server

    with S3Server(tmp_path / "s3") as server:
        store = open_s3_store(server, server.url("down"), tmp_path / "cache")
        store.publish(writer(b"cached", plot=None))
        store.set_current(1)
        server.stop(kill=True)
        with pytest.raises(StoreUnavailable, match="unreachable"):
            store.current()
        with pytest.raises(StoreUnavailable):
            store.publish(writer(b"new", plot=None))
        assert "unreachable" in store.status()
        assert store.verify(1).model_path.read_bytes() == b"cached"  # from the cache
        assert store.cached_current() == 1
        server.start()
        assert store.current() == 1 and store.status() == "ok"


def test_the_trainer_fails_clearly_when_the_store_is_down(s3_server, tmp_path):
    env = {**s3_server.env(), "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
           "MODEL_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    import os

    run = subprocess.run([sys.executable, "-m", "trainer", "--store", "s3://models/x", "list"],
                         capture_output=True, text=True, env={**os.environ, **env},
                         cwd=ROOT, timeout=120)
    assert run.returncode == 2
    assert "model store s3://models/x is unreachable at http://127.0.0.1:9" in run.stderr
    assert "Traceback" not in run.stderr


def test_wrong_keys_and_a_missing_bucket_are_clear_errors(s3_server, tmp_path):
    import os

    base = {**os.environ, **s3_server.env(), "MODEL_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": str(ROOT)}
    for env, store, expected in (
            ({"AWS_SECRET_ACCESS_KEY": "wrong"}, s3_server.url("x"), "access denied"),
            ({}, "s3://no-such-bucket", "bucket 'no-such-bucket' does not exist")):
        run = subprocess.run([sys.executable, "-m", "trainer", "--store", store, "list"],
                             capture_output=True, text=True, env={**base, **env}, cwd=ROOT,
                             timeout=120)
        assert run.returncode == 2 and expected in run.stderr, run.stderr[-2000:]
        assert "Traceback" not in run.stderr
