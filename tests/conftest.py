"""Shared fixtures. Integration tests run the real topology through digits.stack:
their own redis-server on a free port, real Celery worker processes, real gunicorn.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from digits.stack import Stack
from models.store import ModelStore, shipped_store

ROOT = Path(__file__).resolve().parent.parent
# The shipped default's current version (models/digits/CURRENT), and the number the next
# version published into a store seeded from it gets.
SHIPPED_VERSION = shipped_store().current()
NEXT_VERSION = max(shipped_store().versions()) + 1
MNIST_DIR = Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))
ARTIFACTS = ROOT / "artifacts"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST not found in {MNIST_DIR} (set MNIST_DIR)")
    return MNIST_DIR


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def seeded_store(folder: Path) -> ModelStore:
    """A fresh store holding a copy of the shipped default model (made current)."""
    store = ModelStore(folder)
    store.seed_from(shipped_store())
    return store


@pytest.fixture
def model_store(tmp_path) -> ModelStore:
    return seeded_store(tmp_path / "models")


def draw_png(strokes, size=280, width=18, background=None) -> bytes:
    """A canvas-like PNG: black round strokes, transparent background unless given."""
    img = Image.new("RGBA", (size, size), background or (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    for stroke in strokes:
        d.line(stroke, fill=(0, 0, 0, 255), width=width, joint="curve")
        for x, y in (stroke[0], stroke[-1]):
            r = width / 2
            d.ellipse((x - r, y - r, x + r, y + r), fill=(0, 0, 0, 255))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


SEVEN = [[(70, 60), (210, 60), (120, 240)]]
ONE = [[(140, 40), (140, 240)]]


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def post(url: str, body, timeout: float = 10, headers: dict | None = None):
    """POST JSON (or raw bytes); returns (status, parsed JSON or text, headers)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method="POST",
        headers={"Content-Type": "application/json", **(headers or {})})
    return _open(req, timeout)


def get(url: str, timeout: float = 10):
    return _open(urllib.request.Request(url), timeout)


def _open(req, timeout):
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status, hdrs = r.read(), r.status, r.headers
    except urllib.error.HTTPError as e:
        raw, status, hdrs = e.read(), e.code, e.headers
    try:
        return status, json.loads(raw), hdrs
    except ValueError:
        return status, raw.decode(errors="replace"), hdrs


def start_stack(tmp_path: Path, workers: int = 1, **kwargs) -> Stack:
    models = kwargs.pop("model_dir", None)
    if models is None:
        models = tmp_path / "models"
        seeded_store(models)
    # Test stacks stop at once; the SIGTERM test turns the workers' drain back on.
    # Each stack has its own feedback database, never the checkout's var/feedback.db.
    env = {"HEDGE_AFTER": "1.0", "WORKER_DRAIN_SECONDS": "0",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'feedback.db'}", **kwargs.pop("env", {})}
    wait = kwargs.pop("wait", 120)  # 0: return at once (a stack with no worker is never ready)
    return Stack(workers=workers, model_dir=models, log_dir=tmp_path / "logs", env=env,
                 **kwargs).start(wait)


def _module_stack(tmp_path_factory, workers: int):
    s = start_stack(tmp_path_factory.mktemp("stack"), workers=workers)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One running stack (2 workers) shared by a module's read-only tests."""
    yield from _module_stack(tmp_path_factory, 2)


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory):
    """One running stack with a single worker, shared by a module's tests."""
    yield from _module_stack(tmp_path_factory, 1)


def copy_store(src: ModelStore, folder: Path) -> ModelStore:
    shutil.copytree(src.root, folder)
    return ModelStore(folder, src.name)


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL cluster (Debian's initdb/pg_ctl) on a free port, for the session."""
    from tools.pgcluster import PgCluster

    with PgCluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres):
    """A fresh, empty database in the session's cluster, for one test."""
    yield postgres.create_database()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (SeaweedFS, tests/s3server.py) for the session."""
    from tests.s3server import S3Server

    with S3Server() as server:
        yield server


@pytest.fixture
def s3_url(s3_server, request) -> str:
    """An s3:// store URL with a prefix of its own in the session's bucket, for one test."""
    import uuid

    return s3_server.url(f"t-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}")


def open_s3_store(server, url: str, cache: Path, name: str = "digits", seed: bool = False):
    """The S3 store at ``url`` on ``server``, with a cache of its own."""
    from digits.settings import load
    from models.store import open_store

    settings = load({"MODEL_CACHE": str(cache), **server.env()})
    return open_store(url, name, seed=seed, settings=settings)
