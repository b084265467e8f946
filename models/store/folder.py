"""The folder backend, after TF Serving's ``<base>/<name>/<integer version>/``::

    $MODEL_DIR/digits/
        CURRENT              pointer: {"version": 3, "history": [1, 2], "updated": ...}
        1/model.keras
        1/manifest.json      version, created, sha256, accuracy, hyperparameters, ...
        1/history.png
        2/...

* A version folder appears whole or not at all: it is written under a temporary
  name in the same folder, fsynced, then renamed into place.
* The pointer file is replaced atomically (write, fsync, rename), so readers see
  the old or the new version and never half a file. Writers hold an flock on the
  model's folder while they compare and replace it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from models.store.base import (
    MANIFEST_FILE,
    MODEL_FILE,
    POINTER_FILE,
    Store,
    StoreError,
    Version,
    new_manifest,
    parse_pointer,
    sha256_file,
)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for child in path.iterdir():
        if child.is_file():
            with open(child, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(path)


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def locked(folder: Path):
    """An exclusive flock on the folder itself: no lock file to leave behind."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class FolderStore(Store):
    """One model's versions under ``root/name``."""

    def __init__(self, root: str | os.PathLike, name: str = "digits"):
        self.root = Path(root)
        self.name = name
        self.base = self.root / name
        self.location = str(self.root)

    def status(self) -> str:
        return "ok" if self.base.is_dir() else f"{self.base} does not exist"

    # -- reading -----------------------------------------------------------------------
    def versions(self) -> list[int]:
        if not self.base.is_dir():
            return []
        found = []
        for child in self.base.iterdir():
            if child.name.isdigit() and (child / MANIFEST_FILE).is_file():
                found.append(int(child.name))
        return sorted(found)

    def get(self, number: int) -> Version:
        path = self.base / str(int(number))
        try:
            manifest = json.loads((path / MANIFEST_FILE).read_text())
        except FileNotFoundError as exc:
            raise StoreError(f"version {number} does not exist in {self.base}") from exc
        except (OSError, ValueError) as exc:
            raise StoreError(f"version {number}: unreadable manifest: {exc}") from exc
        return Version(int(number), path, manifest, str(path))

    def verify(self, number: int) -> Version:
        version = self.get(number)
        expected = version.manifest.get("sha256")
        try:
            actual = sha256_file(version.model_path)
        except OSError as exc:
            raise StoreError(f"version {number}: cannot read model file: {exc}") from exc
        if actual != expected:
            raise StoreError(
                f"version {number}: sha256 mismatch (manifest {expected}, file {actual})")
        return version

    def pointer_state(self):
        """The pointer file's mtime is the stamp: one stat and one small read."""
        number = self.current()
        try:
            return number, (self.base / POINTER_FILE).stat().st_mtime_ns
        except FileNotFoundError:
            return number, None

    def _read_pointer(self) -> tuple[dict, object]:
        try:
            raw = (self.base / POINTER_FILE).read_bytes()
        except FileNotFoundError:
            return {}, None
        except OSError as exc:
            raise StoreError(f"unreadable pointer file: {exc}") from exc
        return parse_pointer(raw), raw

    def _swap_pointer(self, raw: bytes, token) -> bool:
        self.base.mkdir(parents=True, exist_ok=True)
        path = self.base / POINTER_FILE
        with locked(self.base):
            try:
                now = path.read_bytes()
            except FileNotFoundError:
                now = None
            if now != token:
                return False
            write_atomic(path, raw)
        return True

    # -- writing -----------------------------------------------------------------------
    def publish(self, write: Callable[[Path], dict]) -> Version:
        """The version is filled under a temporary name, fsynced, and renamed into place:
        the rename fails when another publisher took the number first, and we take the
        next one."""
        self.base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".publishing-", dir=self.base))
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide it from other service users
        try:
            fields = write(tmp)
            if not (tmp / MODEL_FILE).is_file():
                raise StoreError(f"publish: the writer produced no {MODEL_FILE}")
            sha = sha256_file(tmp / MODEL_FILE)
            while True:
                number = max(self.versions() + self._reserved(), default=0) + 1
                manifest = new_manifest(self.name, number, sha, fields)
                (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
                _fsync_tree(tmp)
                target = self.base / str(number)
                try:
                    os.rename(tmp, target)  # atomic; fails if another publisher won
                except OSError:
                    if target.exists():
                        continue
                    raise
                _fsync_dir(self.base)
                return Version(number, target, manifest, str(target))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _reserved(self) -> list[int]:
        """Integer folders without a manifest (say, copied by hand) still take their number."""
        if not self.base.is_dir():
            return []
        return [int(c.name) for c in self.base.iterdir() if c.name.isdigit()]

    def _seed_version(self, source: Version) -> bool:
        target = self.base / str(source.number)
        if target.exists():
            return False
        self.base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".seeding-", dir=self.base))
        os.chmod(tmp, 0o755)
        try:
            shutil.copytree(source.path, tmp, dirs_exist_ok=True)
            _fsync_tree(tmp)
            os.rename(tmp, target)
            return True
        except OSError:
            if not target.exists():
                raise
            return False  # another process seeding at the same moment won the rename
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
