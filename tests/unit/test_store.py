"""The model-store contract: atomic publish, pointer, promote, rollback, verification."""

import json
import threading

import pytest

from models.store import MANIFEST_FILE, MODEL_FILE, ModelStore, StoreError, shipped_store


def writer(content: bytes = b"model bytes", **fields):
    def write(folder):
        (folder / MODEL_FILE).write_bytes(content)
        return {"test_accuracy": 0.99, **fields}

    return write


def test_publish_assigns_increasing_versions_with_a_verified_manifest(tmp_path):
    store = ModelStore(tmp_path)
    v1 = store.publish(writer(b"one"))
    v2 = store.publish(writer(b"two"))
    assert (v1.number, v2.number) == (1, 2)
    assert store.versions() == [1, 2]
    manifest = json.loads((v2.path / MANIFEST_FILE).read_text())
    assert manifest["version"] == 2 and manifest["name"] == "digits"
    assert store.verify(2).manifest["sha256"] == manifest["sha256"]
    assert store.current() is None  # publishing never makes a version current


def test_a_failed_publish_leaves_nothing_behind(tmp_path):
    store = ModelStore(tmp_path)

    def broken(folder):
        (folder / MODEL_FILE).write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.publish(broken)
    assert store.versions() == []
    assert list(store.base.iterdir()) == []  # no temporary folder left


def test_a_writer_without_a_model_file_is_refused(tmp_path):
    with pytest.raises(StoreError, match=MODEL_FILE):
        ModelStore(tmp_path).publish(lambda folder: {})


def test_concurrent_publishers_get_distinct_versions(tmp_path):
    store = ModelStore(tmp_path)
    numbers = []

    def publish(i):
        numbers.append(store.publish(writer(str(i).encode())).number)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]


def test_promote_and_rollback_move_only_the_pointer(tmp_path):
    store = ModelStore(tmp_path)
    for i in range(3):
        store.publish(writer(str(i).encode()))
    store.set_current(1)
    store.set_current(3)
    store.set_current(2)
    assert store.current() == 2
    assert store.rollback()["version"] == 3
    assert store.rollback()["version"] == 1
    with pytest.raises(StoreError, match="nothing to roll back"):
        store.rollback()
    assert store.versions() == [1, 2, 3]  # nothing deleted


def test_rollback_skips_versions_that_no_longer_verify(tmp_path):
    store = ModelStore(tmp_path)
    for i in range(3):
        store.publish(writer(str(i).encode()))
    for n in (1, 2, 3):
        store.set_current(n)
    (store.base / "2" / MODEL_FILE).write_bytes(b"tampered")
    assert store.rollback()["version"] == 1


def test_a_tampered_model_fails_verification_and_cannot_be_promoted(tmp_path):
    store = ModelStore(tmp_path)
    store.publish(writer(b"good"))
    (store.base / "1" / MODEL_FILE).write_bytes(b"evil")
    with pytest.raises(StoreError, match="sha256 mismatch"):
        store.verify(1)
    with pytest.raises(StoreError):
        store.set_current(1)
    assert store.current() is None


def test_missing_and_garbled_versions_are_store_errors(tmp_path):
    store = ModelStore(tmp_path)
    with pytest.raises(StoreError, match="does not exist"):
        store.get(7)
    store.base.mkdir(parents=True)
    (store.base / "CURRENT").write_text("not json")
    with pytest.raises(StoreError, match="pointer"):
        store.current()


def test_the_pointer_is_replaced_atomically(tmp_path):
    """Readers polling the pointer while it flips never see a partial file."""
    store = ModelStore(tmp_path)
    store.publish(writer(b"a"))
    store.publish(writer(b"b"))
    store.set_current(1)
    seen, stop = set(), threading.Event()

    def read():
        while not stop.is_set():
            seen.add(store.current())  # raises StoreError on a torn read

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(200):
        store.set_current(1 + i % 2)
    stop.set()
    reader.join()
    assert seen <= {1, 2}


def test_seeding_copies_the_shipped_default_once(tmp_path):
    store = ModelStore(tmp_path)
    shipped = shipped_store()
    assert store.seed_from(shipped) == shipped.versions()
    assert store.current() == shipped.current()
    store.verify(store.current())
    assert store.seed_from(shipped) == []  # a store with versions is left alone


def test_the_shipped_default_is_complete():
    shipped = shipped_store()
    version = shipped.verify(shipped.current())
    m = version.manifest
    for key in ("version", "created", "sha256", "test_accuracy", "training_seconds",
                "data_fingerprint", "hyperparameters", "keras_version", "tensorflow_version"):
        assert key in m, key
    assert (version.path / "history.png").is_file()
    assert m["model_bytes"] <= 5_000_000


def test_workers_seeding_one_empty_store_at_once_all_succeed(tmp_path):
    """Several workers start together on a fresh volume: each must end up served."""
    from concurrent.futures import ThreadPoolExecutor

    from models.store import open_store

    with ThreadPoolExecutor(6) as pool:
        stores = list(pool.map(lambda _: open_store(tmp_path), range(6)))
    shipped = shipped_store()
    assert all(s.current() == shipped.current() for s in stores)
    assert ModelStore(tmp_path).versions() == shipped.versions()
    assert not [p for p in (tmp_path / "digits").iterdir() if p.name.startswith(".")
                and p.name != ".CURRENT"]


def test_model_store_wins_over_model_dir_and_file_urls_name_folders(tmp_path):
    from digits.settings import load
    from models.store import FolderStore, open_store, store_location

    settings = load({"MODEL_STORE": f"file://{tmp_path / 'chosen'}",
                     "MODEL_DIR": str(tmp_path / "ignored")})
    assert store_location(settings) == f"file://{tmp_path / 'chosen'}"
    store = open_store(settings=settings)
    assert isinstance(store, FolderStore) and store.root == tmp_path / "chosen"
    assert store.current() == shipped_store().current()  # seeded
    assert not (tmp_path / "ignored").exists()  # nothing written to MODEL_DIR
    plain = open_store(settings=load({"MODEL_DIR": str(tmp_path / "dir")}))
    assert plain.root == tmp_path / "dir"


def test_s3_urls_name_a_bucket_and_an_optional_prefix():
    from models.store.s3 import split_url

    assert split_url("s3://models") == ("models", "")
    assert split_url("s3://models/team/a/") == ("models", "team/a")
    with pytest.raises(StoreError, match="s3://bucket"):
        split_url("s3:///nothing")
