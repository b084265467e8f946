"""The contract every model store keeps, whatever holds its bytes.

A store holds one model's versions, numbered 1, 2, 3... Each version is a model file,
a manifest (version, created, sha256, accuracy, hyperparameters...) and extras such as
the history plot. A pointer names the current version and keeps a history stack for
rollback. The rules, for every backend:

* A version is complete once its manifest exists, and only complete versions are
  listed, verified or loaded. The manifest is written after the files it describes.
* Publishing never makes a version current; only ``set_current`` and ``rollback`` move
  the pointer, and nothing is ever deleted.
* The pointer moves by compare-and-swap: a promote and a rollback racing each other
  both land, one after the other, and neither undoes the other.
* ``verify`` hands back a version whose model file is on local disk and matches the
  manifest's sha256; readers load nothing else.

Backends implement the primitives at the bottom of ``Store``; the pointer logic
(promote, rollback, seeding) lives here once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
HISTORY_PLOT = "history.png"
POINTER_FILE = "CURRENT"
DEFAULT_NAME = "digits"
HISTORY_LIMIT = 50


class StoreError(Exception):
    """A version is missing, incomplete or does not match its manifest."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (down, timing out, refusing): nothing is known."""


@dataclass(frozen=True)
class Version:
    number: int
    path: Path  # local folder holding the files (for S3: the cache; filled by verify)
    manifest: dict
    location: str = ""  # where the version lives, for people: a folder or an s3:// URL

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_manifest(name: str, number: int, sha256: str, fields: dict) -> dict:
    return {"name": name, "version": number, "created": now_text(), "sha256": sha256,
            **fields}


def parse_pointer(raw: bytes | str) -> dict:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise StoreError(f"unreadable pointer file: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        raise StoreError("pointer file does not name an integer version")
    return data


def pointer_bytes(number: int, history: list[int]) -> bytes:
    data = {"version": int(number), "history": history[-HISTORY_LIMIT:], "updated": now_text()}
    return (json.dumps(data) + "\n").encode()


class Store:
    """One model's versions. Subclasses: FolderStore (a folder), S3Store (a bucket)."""

    name: str
    location: str  # the store, for people and for /ready: a folder or s3://bucket/prefix
    # Called with the new pointer after every move (the trainer tells the workers).
    on_pointer_moved: Callable[[dict], None] | None = None

    # -- reading -------------------------------------------------------------------------
    def pointer(self) -> dict:
        """The pointer's content, or {} when nothing was ever made current."""
        return self._read_pointer()[0]

    def current(self) -> int | None:
        return self.pointer().get("version")

    def current_version(self) -> Version:
        number = self.current()
        if number is None:
            raise StoreError(f"no current version in {self.location}")
        return self.get(number)

    def pointer_state(self) -> tuple[int | None, object]:
        """(current version, a stamp that changes whenever the pointer does): what a
        worker polls. Backends make this as cheap as they can."""
        data, token = self._read_pointer()
        return data.get("version"), token

    def cached_current(self) -> int | None:
        """The current version as last seen, when the store cannot be asked (S3 only)."""
        return None

    # -- moving the pointer ----------------------------------------------------------------
    def set_current(self, number: int) -> dict:
        """Point at ``number`` (which must verify); the old one goes on the history stack."""
        self.verify(number)

        def change(old: dict) -> tuple[int, list[int]]:
            history = list(old.get("history", []))
            if old.get("version") is not None and old["version"] != number:
                history.append(old["version"])
            return number, history

        return self._update_pointer(change)

    def rollback(self) -> dict:
        """Point back at the version that was current before this one."""

        def change(old: dict) -> tuple[int, list[int]]:
            history = list(old.get("history", []))
            while history:
                previous = history.pop()
                try:
                    self.verify(previous)
                except StoreUnavailable:
                    raise
                except StoreError:
                    continue
                return previous, history
            raise StoreError("nothing to roll back to")

        return self._update_pointer(change)

    def _write_pointer(self, number: int, history: list[int]) -> dict:
        """Point at ``number`` unverified: for fault tests that need a bad pointer."""
        return self._update_pointer(lambda old: (number, history))

    def _update_pointer(self, change) -> dict:
        """Compare-and-swap: re-read and re-decide when another writer moved it first."""
        for _ in range(100):
            old, token = self._read_pointer()
            number, history = change(old)
            raw = pointer_bytes(number, history)
            if self._swap_pointer(raw, token):
                data = json.loads(raw)
                if self.on_pointer_moved:
                    self.on_pointer_moved(data)
                return data
        raise StoreError("the pointer kept moving under 100 attempts to update it")

    # -- seeding -----------------------------------------------------------------------------
    def seed_from(self, source: Store) -> list[int]:
        """Copy ``source``'s versions into an empty store and adopt its current one.

        This is how a fresh deployment (an empty folder or bucket) gets the default
        model shipped in git. A store that already has versions is left alone.
        """
        if self.current() is not None:
            return []
        mine = self.versions()
        if mine and not set(source.versions()) <= set(mine):
            return []  # a store of its own that merely lost its pointer: not ours to fill
        copied = [n for n in source.versions() if self._seed_version(source.verify(n))]
        chosen = source.current() or (source.versions() or [None])[-1]
        if chosen is not None and self.current() is None:
            self._update_pointer(lambda old: (old.get("version") or chosen,
                                              list(old.get("history", []))))
        return copied

    # -- what a backend provides -----------------------------------------------------------
    def versions(self) -> list[int]:
        """Complete versions (with a manifest), ascending."""
        raise NotImplementedError

    def get(self, number: int) -> Version:
        """A complete version's manifest (its files are local only after ``verify``)."""
        raise NotImplementedError

    def verify(self, number: int) -> Version:
        """The version, once its model file is local and matches the manifest's sha256."""
        raise NotImplementedError

    def publish(self, write: Callable[[Path], dict]) -> Version:
        """Create the next version. ``write(folder)`` fills a local temporary folder with
        ``model.keras`` (and extras, such as the history plot) and returns the manifest
        fields it knows; the store adds version, created and sha256."""
        raise NotImplementedError

    def status(self) -> str:
        """'ok', or why the store cannot be used right now (for /ready)."""
        raise NotImplementedError

    def _read_pointer(self) -> tuple[dict, object]:
        """(content or {}, a token naming this exact content for ``_swap_pointer``)."""
        raise NotImplementedError

    def _swap_pointer(self, raw: bytes, token) -> bool:
        """Write ``raw`` if the pointer still is what ``token`` names; False if not."""
        raise NotImplementedError

    def _seed_version(self, source: Version) -> bool:
        """Copy a verified version in under its own number. True if this call copied it."""
        raise NotImplementedError
