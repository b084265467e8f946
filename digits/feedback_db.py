"""Feedback storage: labelled drawings from the page, kept for fine-tuning.

SQLAlchemy Core over SQLite (the embedded default, a file under ``var/``) or
PostgreSQL (compose; several API hosts share it), named by ``DATABASE_URL``. The API
writes rows (``FeedbackStore.add``); the trainer reads them and records which rows
each fine-tuned version learned from (``record_finetune``). Neither Flask nor
TensorFlow is imported here: both roles use this module.

Why Core and not the ORM: every operation is one statement in one short
transaction, and the rows are read in bulk into numpy arrays; there are no object
graphs to map. Why psycopg 3: maintained, binary wheels with their own libpq for
the API's slim image, and SQLAlchemy's first-class PostgreSQL dialect for it.

SQLite specifics (``_sqlite_connect``): WAL, so readers never block the writer and
several gunicorn processes share the file; ``synchronous=FULL``, so a commit that
was acknowledged survives a power cut, not only a killed process; ``busy_timeout``,
so a writer waits for the lock instead of failing; and ``BEGIN IMMEDIATE`` for every
transaction, so the write lock is taken up front (a deferred transaction that reads
first can fail with SQLITE_BUSY mid-way, which no timeout helps).

The schema is built by Alembic migrations (``digits/feedback_migrations``), run by
``python -m digits.feedback_db upgrade``, never by the API's request path.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event, exc

MIGRATIONS = Path(__file__).resolve().parent / "feedback_migrations"
PIXELS = 28 * 28
SALT_KEY = "client_salt"
REQUEST_ID_LENGTH = 128
BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 10_000
# An arbitrary constant: the PostgreSQL advisory lock that serialises migrations.
MIGRATION_LOCK = 0x6469_6769_7473  # "digits"

metadata = sa.MetaData()

# The tables as the migrations build them (a test compares the two).
feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("label", sa.SmallInteger, nullable=False),
    sa.Column("predicted", sa.SmallInteger, nullable=True),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("request_id", sa.String(REQUEST_ID_LENGTH), nullable=True),
    sa.Column("client", sa.String(32), nullable=False),
    sa.Column("image", sa.LargeBinary, nullable=False),
    sa.Column("image_format", sa.String(8), nullable=False),
    sa.Column("pixels", sa.LargeBinary, nullable=False),
    sa.CheckConstraint("label >= 0 AND label <= 9", name="feedback_label_digit"),
    sa.Index("feedback_request_id", "request_id", unique=True),
    sa.Index("feedback_client", "client"),
    sqlite_autoincrement=True,  # ids are never reused, even after a row is removed by hand
)
finetunes = sa.Table(
    "finetunes", metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("base_version", sa.Integer, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("max_feedback_id", sa.Integer, nullable=False),
    sa.Column("trained", sa.Integer, nullable=False),
    sa.Column("held_out", sa.Integer, nullable=False),
    sa.Column("promoted", sa.Boolean, nullable=False),
)
learned = sa.Table(
    "feedback_learned", metadata,
    sa.Column("feedback_id", sa.Integer, sa.ForeignKey("feedback.id"), primary_key=True),
    sa.Column("version", sa.Integer, sa.ForeignKey("finetunes.version"), primary_key=True),
)
meta = sa.Table(
    "feedback_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# Errors that mean "storage unavailable now" rather than "this request is wrong".
UNAVAILABLE = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError,
               exc.ProgrammingError)


# ---------------------------------------------------------------- engines


def normalise_url(url: str) -> str:
    """postgres:// and postgresql:// mean psycopg 3 here (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, **kwargs) -> sa.Engine:
    """An engine for DATABASE_URL with this module's SQLite or PostgreSQL settings."""
    url = normalise_url(url)
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": BUSY_TIMEOUT_MS / 1000})
        engine = sa.create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("connect_args", {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS} "
                       f"-c lock_timeout={STATEMENT_TIMEOUT_MS}",
        })
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_timeout", 5)
        return sa.create_engine(url, **kwargs)
    raise ValueError(f"DATABASE_URL: unsupported database {parsed.get_backend_name()!r} "
                     "(sqlite:///path or postgresql://user:password@host/db)")


def _sqlite_connect(dbapi_connection, _record) -> None:
    # pysqlite would open its own deferred transactions; the "begin" listener opens them.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", f"busy_timeout={BUSY_TIMEOUT_MS}",
                   "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


# ---------------------------------------------------------------- migrations


def _alembic_config(connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: sa.Engine, revision: str = "head") -> str | None:
    """Migrate to ``revision`` in one transaction; concurrent runs wait for each other
    (SQLite: the write lock of BEGIN IMMEDIATE; PostgreSQL: an advisory lock)."""
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                         {"key": MIGRATION_LOCK})
        command.upgrade(_alembic_config(conn), revision)
    return current_revision(engine)


def downgrade(engine: sa.Engine, revision: str) -> str | None:
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(_alembic_config(conn), revision)
    return current_revision(engine)


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


# ---------------------------------------------------------------- policy (pure)


def client_hash(salt: str, address: str) -> str:
    """A client's address as 32 hex digits of HMAC-SHA256: the same client gives the same
    value (the per-client cap needs that), and without the salt it cannot be reversed."""
    return hmac.new(salt.encode(), (address or "").encode(), hashlib.sha256).hexdigest()[:32]


def held_out(ids, percent: int) -> np.ndarray:
    """Which feedback ids the gate keeps for itself: a fixed function of the id alone, so
    a row never moves between training and evaluation from one fine-tune to the next."""
    ids = np.asarray(ids, dtype=np.int64)
    buckets = np.array([_bucket("holdout", i) for i in ids.tolist()], dtype=np.int64)
    return buckets < percent if len(ids) else np.zeros(0, bool)


def _bucket(purpose: str, i: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{purpose}:{i}".encode()).digest()[:8], "big") % 100


def client_quota(counts: dict, share: float) -> int:
    """The most rows any one client may give, so that no client is more than ``share``
    of the rows used: the largest k with k <= share * sum(min(c, k)). 0 if none."""
    if share >= 1:
        return max(counts.values(), default=0)
    best, low, high = 0, 0, max(counts.values(), default=0)
    while low <= high:  # sum(min(c, k)) grows with k more slowly than k / share
        k = (low + high) // 2
        if k <= share * sum(min(c, k) for c in counts.values()):
            best, low = k, k + 1
        else:
            high = k - 1
    return best


def cap_clients(ids, clients, share: float) -> np.ndarray:
    """A mask keeping at most ``client_quota`` rows per client; which rows a client keeps
    is a fixed pseudo-random function of the id, so no client picks its own."""
    ids = np.asarray(ids, dtype=np.int64)
    clients = np.asarray(clients)
    quota = client_quota(Counter(clients.tolist()), share)
    keep = np.zeros(len(ids), bool)
    for client in np.unique(clients):
        rows = np.flatnonzero(clients == client)
        order = sorted(rows.tolist(), key=lambda r: (_bucket("cap", int(ids[r])), int(ids[r])))
        keep[order[:quota]] = True
    return keep


# ---------------------------------------------------------------- the store


@dataclass
class Rows:
    """Feedback rows as arrays, ordered by id."""

    ids: np.ndarray  # int64
    labels: np.ndarray  # uint8
    predicted: np.ndarray  # int16, -1 when not given
    model_versions: np.ndarray  # int32, -1 when not given
    clients: np.ndarray  # str
    images: np.ndarray  # (n, 28, 28) uint8
    created: list

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, mask) -> Rows:
        mask = np.asarray(mask)
        return Rows(self.ids[mask], self.labels[mask], self.predicted[mask],
                    self.model_versions[mask], self.clients[mask], self.images[mask],
                    [c for c, m in zip(self.created, mask.tolist(), strict=True) if m])


class Conflict(Exception):
    """A request_id already names a correction with another label."""


class FeedbackStore:
    def __init__(self, engine: sa.Engine, salt: str = ""):
        self.engine = engine
        self._salt = salt

    @classmethod
    def from_url(cls, url: str, salt: str = "", **kwargs) -> FeedbackStore:
        return cls(make_engine(url, **kwargs), salt)

    def salt(self) -> str:
        """FEEDBACK_SALT when set, else the random one the first migration stored."""
        if not self._salt:
            with self.engine.begin() as conn:
                value = conn.execute(sa.select(meta.c.value).where(meta.c.key == SALT_KEY))
                self._salt = value.scalar_one()
        return self._salt

    def add(self, *, label: int, image: bytes, image_format: str, pixels: np.ndarray,
            client_address: str, predicted: int | None = None,
            model_version: int | None = None, request_id: str | None = None) -> tuple[int, bool]:
        """Insert one row in one transaction; returns (id, created). A request_id seen
        before with the same label is the same correction: its id, created False."""
        row = {
            "created_at": datetime.now(UTC), "label": int(label),
            "predicted": predicted, "model_version": model_version,
            "request_id": request_id, "client": client_hash(self.salt(), client_address),
            "image": bytes(image), "image_format": image_format,
            "pixels": np.ascontiguousarray(pixels, dtype=np.uint8).reshape(PIXELS).tobytes(),
        }
        try:
            with self.engine.begin() as conn:
                new_id = conn.execute(feedback.insert().returning(feedback.c.id), row)
                return int(new_id.scalar_one()), True
        except exc.IntegrityError:
            if request_id is None:
                raise
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(feedback.c.id, feedback.c.label)
                                 .where(feedback.c.request_id == request_id)).one()
        if found.label != int(label):
            raise Conflict(f"request_id {request_id!r} already holds label {found.label}")
        return int(found.id), False

    def get(self, feedback_id: int) -> dict | None:
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(feedback.c.id, feedback.c.label, feedback.c.created_at)
                               .where(feedback.c.id == feedback_id)).one_or_none()
            if row is None:
                return None
            versions = conn.execute(sa.select(learned.c.version)
                                    .where(learned.c.feedback_id == feedback_id)
                                    .order_by(learned.c.version)).scalars().all()
        return {"id": row.id, "label": row.label, "learned_by": list(versions)}

    def count(self, after_id: int = 0) -> int:
        with self.engine.begin() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(feedback)
                                .where(feedback.c.id > after_id)).scalar_one()

    def max_id(self) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(sa.select(sa.func.max(feedback.c.id))).scalar() or 0)

    def rows(self, up_to_id: int | None = None) -> Rows:
        cols = [feedback.c.id, feedback.c.label, feedback.c.predicted,
                feedback.c.model_version, feedback.c.client, feedback.c.pixels,
                feedback.c.created_at]
        query = sa.select(*cols).order_by(feedback.c.id)
        if up_to_id is not None:
            query = query.where(feedback.c.id <= up_to_id)
        with self.engine.begin() as conn:
            fetched = conn.execute(query).all()
        n = len(fetched)
        images = np.frombuffer(b"".join(r.pixels for r in fetched), np.uint8)
        return Rows(
            ids=np.array([r.id for r in fetched], np.int64),
            labels=np.array([r.label for r in fetched], np.uint8),
            predicted=np.array([-1 if r.predicted is None else r.predicted for r in fetched],
                               np.int16),
            model_versions=np.array([-1 if r.model_version is None else r.model_version
                                     for r in fetched], np.int32),
            clients=np.array([r.client for r in fetched], dtype=str),
            images=images.reshape(n, 28, 28),
            created=[r.created_at for r in fetched],
        )

    def originals(self, ids) -> dict[int, tuple[bytes, str]]:
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(feedback.c.id, feedback.c.image,
                                           feedback.c.image_format)
                                 .where(feedback.c.id.in_([int(i) for i in ids]))).all()
        return {r.id: (bytes(r.image), r.image_format) for r in found}

    # -- fine-tuning rounds ------------------------------------------------------------
    def last_finetune(self) -> dict | None:
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(finetunes)
                               .order_by(finetunes.c.max_feedback_id.desc(),
                                         finetunes.c.version.desc()).limit(1)).one_or_none()
        return dict(row._mapping) if row else None

    def record_finetune(self, *, version: int, base_version: int | None, max_feedback_id: int,
                        trained_ids, held_out_count: int, promoted: bool) -> None:
        """One fine-tune round and the rows it learned from, in one transaction."""
        trained_ids = [int(i) for i in trained_ids]
        with self.engine.begin() as conn:
            conn.execute(finetunes.insert(), {
                "version": version, "base_version": base_version,
                "created_at": datetime.now(UTC), "max_feedback_id": int(max_feedback_id),
                "trained": len(trained_ids), "held_out": int(held_out_count),
                "promoted": bool(promoted),
            })
            if trained_ids:
                conn.execute(learned.insert(),
                             [{"feedback_id": i, "version": version} for i in trained_ids])

    def mark_promoted(self, version: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(finetunes.update().where(finetunes.c.version == version)
                         .values(promoted=True))


def wait_until_up(engine: sa.Engine, timeout: float = 30.0) -> None:
    """Block until the database answers (compose starts services in parallel)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return
        except UNAVAILABLE:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main(argv=None) -> int:
    """``python -m digits.feedback_db upgrade|current|heads``: the schema, by hand or
    before the API starts (compose's db-migrate, digits.stack)."""
    from digits.settings import load_or_exit

    args = sys.argv[1:] if argv is None else argv
    settings = load_or_exit()
    if args in (["upgrade"], ["current"]):
        engine = make_engine(settings.DATABASE_URL)
        try:
            wait_until_up(engine)
            revision = upgrade(engine) if args == ["upgrade"] else current_revision(engine)
        except UNAVAILABLE as err:
            print(f"feedback database unreachable: {err.orig or err}", file=sys.stderr)
            return 1
        finally:
            engine.dispose()
        print(f"feedback database at revision {revision} (head {head_revision()})")
        return 0
    if args == ["heads"]:
        print(head_revision())
        return 0
    print("usage: python -m digits.feedback_db upgrade|current|heads", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
