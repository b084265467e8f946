"""The feedback database on real SQLite and a real private PostgreSQL: the migration
builds exactly the schema the code uses, rows round-trip, a request_id is idempotent,
the client hash is salted and stable, and the split and cap rules hold."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from digits import feedback_db as fdb


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'feedback.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = fdb.make_engine(url)
    yield engine
    engine.dispose()


def _add(store, label=3, client="10.0.0.1", request_id=None, fill=0):
    pixels = np.full((28, 28), fill, np.uint8)
    return store.add(label=label, image=b"\x89PNG original bytes", image_format="png",
                     pixels=pixels, client_address=client, predicted=5, model_version=1,
                     request_id=request_id)


def test_migration_builds_the_schema_the_code_uses(engine):
    assert fdb.current_revision(engine) is None
    assert fdb.upgrade(engine) == fdb.head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), fdb.metadata)
        tables = set(sa.inspect(conn).get_table_names())
    assert diff == [], diff
    assert {"feedback", "finetunes", "feedback_learned", "feedback_meta"} <= tables
    assert fdb.upgrade(engine) == fdb.head_revision()  # again: nothing to do
    assert fdb.downgrade(engine, "base") is None
    with engine.connect() as conn:
        assert "feedback" not in sa.inspect(conn).get_table_names()


def test_concurrent_upgrades_wait_for_each_other(engine):
    errors = []

    def run():
        try:
            fdb.upgrade(engine)
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert fdb.current_revision(engine) == fdb.head_revision()
    with engine.connect() as conn:
        salts = conn.execute(sa.select(fdb.meta.c.value)).scalars().all()
    assert len(salts) == 1 and len(salts[0]) == 64


def test_rows_round_trip_with_original_bytes_and_salted_client(engine):
    fdb.upgrade(engine)
    store = fdb.FeedbackStore(engine)
    first, created = _add(store, label=7, fill=9)
    assert created
    assert _add(store, label=2, client="10.0.0.2")[0] == first + 1
    rows = store.rows()
    assert rows.ids.tolist() == [first, first + 1] and store.max_id() == first + 1
    assert rows.labels.tolist() == [7, 2]
    assert rows.predicted.tolist() == [5, 5] and rows.model_versions.tolist() == [1, 1]
    assert (rows.images[0] == 9).all() and rows.images.shape == (2, 28, 28)
    assert store.originals([first]) == {first: (b"\x89PNG original bytes", "png")}
    salt = store.salt()
    assert rows.clients[0] == fdb.client_hash(salt, "10.0.0.1") != rows.clients[1]
    assert "10.0.0.1" not in rows.clients[0]
    # Another process (another store) hashes the same client alike.
    assert fdb.FeedbackStore(engine).salt() == salt


def test_request_id_names_one_correction(engine):
    fdb.upgrade(engine)
    store = fdb.FeedbackStore(engine)
    row_id, created = _add(store, request_id="abc-1")
    assert created
    assert _add(store, request_id="abc-1") == (row_id, False)
    with pytest.raises(fdb.Conflict):
        _add(store, label=4, request_id="abc-1")
    assert store.count() == 1


def test_label_outside_0_9_is_refused_by_the_database(engine):
    fdb.upgrade(engine)
    with pytest.raises(sa.exc.IntegrityError):
        _add(fdb.FeedbackStore(engine), label=10)


def test_finetune_rounds_record_what_they_learned(engine):
    fdb.upgrade(engine)
    store = fdb.FeedbackStore(engine)
    ids = [_add(store)[0] for _ in range(3)]
    store.record_finetune(version=2, base_version=1, max_feedback_id=ids[-1],
                          trained_ids=ids[:2], held_out_count=1, promoted=False)
    store.mark_promoted(2)
    assert store.get(ids[0])["learned_by"] == [2]
    assert store.get(ids[2])["learned_by"] == []
    last = store.last_finetune()
    assert (last["version"], last["max_feedback_id"], last["promoted"]) == (2, ids[-1], True)
    assert store.count(after_id=last["max_feedback_id"]) == 0


def test_postgres_urls_mean_psycopg_3():
    assert fdb.normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert fdb.normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    with pytest.raises(ValueError, match="unsupported"):
        fdb.make_engine("mysql://u@h/db")


def test_holdout_is_a_fixed_share_decided_by_the_id_alone():
    ids = np.arange(1, 20_001)
    held = fdb.held_out(ids, 20)
    assert 0.19 < held.mean() < 0.21
    assert (fdb.held_out(ids[::-1], 20) == held[::-1]).all()  # order does not matter
    assert (fdb.held_out(ids[:500], 20) == held[:500]).all()  # nor what else is stored


def test_client_cap_bounds_every_clients_share():
    ids = np.arange(1, 1101)
    clients = np.array(["attacker"] * 600 + [f"user{i % 10}" for i in range(500)])
    keep = fdb.cap_clients(ids, clients, 0.1)
    counts = Counter(clients[keep].tolist())
    assert max(counts.values()) <= 0.1 * keep.sum()
    # The honest clients keep everything; the attacker keeps 55 of 555 (k <= 0.1 * (k + 500)).
    assert counts["attacker"] == 55 and counts["user0"] == 50
    assert keep.sum() == 555
    # A single client can never be a bounded share of anything; with no cap it is whole.
    assert fdb.client_quota({"one": 100}, 0.1) == 0
    assert fdb.client_quota({"one": 100}, 1.0) == 100
