"""A local cache of versions fetched from a remote store (``MODEL_CACHE``)::

    $MODEL_CACHE/<bucket>/<prefix>/<name>/
        CURRENT               the pointer as last read from the store
        3/model.keras
        3/manifest.json       the manifest as read from the store when 3 was fetched
        .fetch-XXXX/          a download in progress (never read)

A version is fetched into a temporary folder beside its final place, its model file's
sha256 is checked against the store's manifest, and only then is the folder renamed
into place: a cached folder is always whole and verified. Several workers on one host
may share the cache; the loser of a rename uses the winner's copy once it verifies.
The newest ``keep`` versions stay; older ones are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from models.store.base import MANIFEST_FILE, MODEL_FILE, POINTER_FILE, StoreError, sha256_file
from models.store.folder import write_atomic

KEEP = 3


class Cache:
    def __init__(self, folder: str | os.PathLike, keep: int = KEEP):
        self.folder = Path(folder)
        self.keep = keep

    def path(self, number: int) -> Path:
        return self.folder / str(int(number))

    def verified(self, number: int, manifest: dict | None = None) -> Path | None:
        """The cached folder if its model file matches ``manifest`` (default: the manifest
        cached with it), else None."""
        path = self.path(number)
        try:
            cached = json.loads((path / MANIFEST_FILE).read_text())
            expected = (manifest or cached).get("sha256")
            ok = expected and cached.get("sha256") == expected and \
                sha256_file(path / MODEL_FILE) == expected
        except (OSError, ValueError):
            return None
        return path if ok else None

    def fetch(self, number: int, manifest: dict,
              download: Callable[[str, Path], None], names: tuple[str, ...]) -> Path:
        """The version's folder, downloading ``names`` first unless the cache has it.

        ``download(name, dest)`` writes one object to ``dest``. Raises StoreError when
        the model file does not match the manifest; nothing is then cached.
        """
        found = self.verified(number, manifest)
        if found:
            return found
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.folder))
        try:
            for name in names:
                download(name, tmp / name)
            actual = sha256_file(tmp / MODEL_FILE)
            if actual != manifest.get("sha256"):
                raise StoreError(f"version {number}: sha256 mismatch (manifest "
                                 f"{manifest.get('sha256')}, downloaded {actual})")
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
            return self._place(tmp, number, manifest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def adopt(self, folder: Path, number: int, manifest: dict) -> Path:
        """Cache a version the trainer has just published from ``folder`` (copied)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.folder))
        try:
            for child in folder.iterdir():
                if child.is_file():
                    shutil.copyfile(child, tmp / child.name)
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
            return self._place(tmp, number, manifest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _place(self, tmp: Path, number: int, manifest: dict) -> Path:
        os.chmod(tmp, 0o755)
        target = self.path(number)
        for _ in range(3):
            try:
                os.rename(tmp, target)
                break
            except OSError:
                if self.verified(number, manifest):
                    break  # another worker on this host fetched it first
                # A stale or damaged copy (an old manifest, a torn disk): replace it.
                stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=self.folder))
                with contextlib.suppress(OSError):
                    os.rename(target, stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
        else:
            raise StoreError(f"version {number}: cannot place it in the cache {self.folder}")
        self.prune(protect=number)
        return target

    def prune(self, protect: int) -> None:
        numbers = sorted((int(p.name) for p in self.folder.iterdir() if p.name.isdigit()),
                         reverse=True)
        for number in numbers[self.keep:]:
            if number != protect:
                shutil.rmtree(self.path(number), ignore_errors=True)

    # -- the last pointer seen, for a worker starting while the store is down -------------
    def remember_pointer(self, raw: bytes) -> None:
        with contextlib.suppress(OSError):
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / POINTER_FILE
            if not path.exists() or path.read_bytes() != raw:
                write_atomic(path, raw)

    def last_pointer(self) -> bytes | None:
        try:
            return (self.folder / POINTER_FILE).read_bytes()
        except OSError:
            return None
