"""Fault injection and the workers' own account of it, for tools/soak.py and the fault
tests (tests/hardening/test_faults.py).

Processes are killed and restarted through ``digits.stack.Stack`` (``stop_worker``,
``stop_redis``, ``start_*``). Here: what the workers say in their Redis heartbeats
(alive, which model version, how many rejections and batches), and broken model
versions, each damaged a different way, for the workers to reject while serving on.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import redis

from digits.protocol import HEARTBEAT_PREFIX, parse_heartbeat
from models.store import MODEL_FILE, POINTER_FILE, ModelStore, Version

CORRUPTIONS = ("garbage", "truncated")


# -- heartbeats ----------------------------------------------------------------------------------
def redis_client(url: str) -> redis.Redis:
    """A client that gives up within a second: Redis may be the fault."""
    return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)


def heartbeats(client: redis.Redis) -> list[dict]:
    """Every worker's latest heartbeat; none while Redis is unreachable."""
    try:
        keys = list(client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=1000))
        values = client.mget(keys) if keys else []
    except (redis.RedisError, OSError):
        return []
    return [beat for beat in map(parse_heartbeat, values) if beat is not None]


def serving(beats: list[dict], since: float | None = None) -> dict[str, dict]:
    """Stack worker index -> heartbeat, for workers (``worker<index>@...``) with a model
    loaded, and, with ``since`` (a wall-clock time), started after it."""
    found = {}
    for beat in beats:
        match = re.match(r"worker(\d+)@", str(beat.get("hostname", "")))
        if not match or not beat.get("model_loaded"):
            continue
        if since is not None and beat.get("started", 0) < since:
            continue
        found[match.group(1)] = beat
    return found


# -- model versions ------------------------------------------------------------------------------
def publish_file(store: ModelStore, data: bytes, note: str, **manifest) -> Version:
    """Publish ``data`` as a version's model file, properly: its sha256 matches."""

    def write(folder) -> dict:
        (folder / MODEL_FILE).write_bytes(data)
        return {**manifest, "note": note}

    return store.publish(write)


def publish_copy(store: ModelStore, note: str, source: int | None = None) -> Version:
    """A new version holding the model file and manifest fields of ``source`` (default:
    the current version): a second good version for a set_current or rollback to flip to."""
    first = store.verify(store.current() if source is None else source)
    keep = {k: v for k, v in first.manifest.items()
            if k not in ("name", "version", "created", "sha256")}
    return publish_file(store, first.model_path.read_bytes(), note, **keep)


def corrupted(good: bytes, how: str) -> bytes:
    """A model file that fails to load: not a Keras file at all, or a truncated copy of
    a good one (a corrupt zip)."""
    if how == "garbage":
        return b"not a keras file " * 100
    if how == "truncated":
        return good[: len(good) // 3]
    raise ValueError(f"unknown corruption {how!r}; choose from {CORRUPTIONS}")


def point_at(store: ModelStore, number: int) -> None:
    """Move the pointer by hand (set_current() refuses a version that fails to verify),
    atomically, as the store does: the workers see only the damaged version."""
    pointer = store.base / POINTER_FILE
    tmp = pointer.with_name(".CURRENT.fault")
    tmp.write_text(json.dumps({"version": number, "history": [], "updated": "now"}))
    os.replace(tmp, pointer)


def replaced_after_publishing(store: ModelStore, source: int) -> Version:
    """A copy of version ``source`` whose model file changed after publishing (its sha256
    no longer matches), made current by hand."""
    version = publish_copy(store, "to be damaged", source)
    good = version.model_path.read_bytes()
    version.model_path.write_bytes(good[: len(good) // 2] + b"\0" * 100)
    point_at(store, version.number)
    return version


def folder_moved_away(store: ModelStore, source: int) -> Version:
    """A copy of version ``source``, its folder moved away, and the pointer naming it."""
    version = publish_copy(store, "to be moved away", source)
    shutil.move(version.path, store.root / f"moved-away-{version.number}")
    point_at(store, version.number)
    return version


def pointer_not_json(store: ModelStore) -> None:
    tmp = store.base / ".CURRENT.fault"
    tmp.write_text("{not json")
    os.replace(tmp, store.base / POINTER_FILE)
