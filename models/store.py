"""The model-store contract, shared by the trainer (writer) and the workers (readers).

Layout, after TF Serving's ``<base>/<name>/<integer version>/``::

    $MODEL_DIR/digits/
        CURRENT              pointer: {"version": 3, "history": [1, 2], "updated": ...}
        1/model.keras
        1/manifest.json      version, created, sha256, accuracy, hyperparameters, ...
        1/history.png
        2/...

Rules this module enforces:

* A version folder appears whole or not at all: it is written under a temporary
  name in the same folder, fsynced, then renamed into place.
* The pointer file is replaced atomically (write, fsync, rename), so readers see
  the old or the new version and never half a file. Promote and rollback only
  move the pointer; nothing is ever deleted.
* Readers verify the model file's sha256 against the manifest before loading.

This module has no TensorFlow dependency, so the API and tooling may import it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
HISTORY_PLOT = "history.png"
POINTER_FILE = "CURRENT"
DEFAULT_NAME = "digits"
# The versions shipped in git live beside this module.
SHIPPED_ROOT = Path(__file__).resolve().parent


class StoreError(Exception):
    """A version is missing, incomplete or does not match its manifest."""


@dataclass(frozen=True)
class Version:
    number: int
    path: Path
    manifest: dict

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def _write_atomic(path: Path, data: bytes) -> None:
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


class ModelStore:
    """One model's versions under ``root/name``."""

    def __init__(self, root: str | os.PathLike, name: str = DEFAULT_NAME):
        self.root = Path(root)
        self.name = name
        self.base = self.root / name

    # -- reading -----------------------------------------------------------------
    def versions(self) -> list[int]:
        """Complete versions (a folder with an integer name and a manifest), ascending."""
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
        return Version(int(number), path, manifest)

    def pointer(self) -> dict:
        """The pointer file's content, or {} when nothing was ever made current."""
        try:
            data = json.loads((self.base / POINTER_FILE).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreError(f"unreadable pointer file: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("version"), int):
            raise StoreError("pointer file does not name an integer version")
        return data

    def current(self) -> int | None:
        return self.pointer().get("version")

    def current_version(self) -> Version:
        number = self.current()
        if number is None:
            raise StoreError(f"no current version in {self.base}")
        return self.get(number)

    def verify(self, number: int) -> Version:
        """The version, once its model file matches the manifest's sha256."""
        version = self.get(number)
        expected = version.manifest.get("sha256")
        try:
            actual = sha256_file(version.model_path)
        except OSError as exc:
            raise StoreError(f"version {number}: cannot read model file: {exc}") from exc
        if actual != expected:
            raise StoreError(
                f"version {number}: sha256 mismatch (manifest {expected}, file {actual})"
            )
        return version

    # -- writing -----------------------------------------------------------------
    def publish(self, write: Callable[[Path], dict]) -> Version:
        """Create the next version atomically.

        ``write(folder)`` fills a temporary folder with ``model.keras`` (and any
        extras, such as the history plot) and returns the manifest fields it knows.
        The store adds version, created and sha256, writes the manifest, fsyncs
        and renames the folder into place.
        """
        self.base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".publishing-", dir=self.base))
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide it from other service users
        try:
            fields = write(tmp)
            if not (tmp / MODEL_FILE).is_file():
                raise StoreError(f"publish: the writer produced no {MODEL_FILE}")
            while True:
                number = max(self.versions() + self._reserved(), default=0) + 1
                manifest = {
                    "name": self.name,
                    "version": number,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "sha256": sha256_file(tmp / MODEL_FILE),
                    **fields,
                }
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
                return Version(number, target, manifest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _reserved(self) -> list[int]:
        """Integer folders without a manifest (say, copied by hand) still take their number."""
        if not self.base.is_dir():
            return []
        return [int(c.name) for c in self.base.iterdir() if c.name.isdigit()]

    def set_current(self, number: int) -> dict:
        """Point at ``number`` (which must verify); the old one goes on the history stack."""
        self.verify(number)
        old = self.pointer()
        history = list(old.get("history", []))
        if old.get("version") is not None and old["version"] != number:
            history.append(old["version"])
        return self._write_pointer(number, history[-50:])

    def rollback(self) -> dict:
        """Point back at the version that was current before this one."""
        history = list(self.pointer().get("history", []))
        while history:
            previous = history.pop()
            try:
                self.verify(previous)
            except StoreError:
                continue
            return self._write_pointer(previous, history)
        raise StoreError("nothing to roll back to")

    def _write_pointer(self, number: int, history: list[int]) -> dict:
        data = {
            "version": int(number),
            "history": history,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.base.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.base / POINTER_FILE, (json.dumps(data) + "\n").encode())
        return data

    def seed_from(self, source: ModelStore) -> list[int]:
        """Copy ``source``'s versions into an empty store and adopt its current one.

        This is how a fresh deployment (an empty volume, ``var/models``) gets the
        default model shipped in git. A store that already has versions is left alone.
        """
        if self.current() is not None:
            return []
        if self.versions() and not set(source.versions()) <= set(self.versions()):
            return []  # a store of its own that merely lost its pointer: not ours to fill
        copied = []
        for number in source.versions():
            src = source.verify(number)
            target = self.base / str(number)
            if target.exists():
                continue
            self.base.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".seeding-", dir=self.base))
            os.chmod(tmp, 0o755)
            try:
                shutil.copytree(src.path, tmp, dirs_exist_ok=True)
                _fsync_tree(tmp)
                os.rename(tmp, target)
                copied.append(number)
            except OSError:
                if not target.exists():
                    raise
                # Another process seeding at the same moment won the rename: same files.
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        chosen = source.current() or (source.versions() or [None])[-1]
        if chosen is not None and self.current() is None:
            self.set_current(chosen)
        return copied


def shipped_store() -> ModelStore:
    """The store of versions committed to git (read-only by convention)."""
    return ModelStore(SHIPPED_ROOT)


def open_store(model_dir: str | os.PathLike | None = None, name: str | None = None,
               seed: bool = True) -> ModelStore:
    """The runtime store at ``model_dir`` (default: the MODEL_DIR setting).

    With ``seed``, an empty store is filled from the shipped default first.
    """
    from digits.settings import load

    settings = load()
    root = Path(model_dir or settings.MODEL_DIR)
    store = ModelStore(root, name or settings.MODEL_NAME)
    if seed and store.current() is None and root.resolve() != SHIPPED_ROOT:
        store.seed_from(shipped_store())
    return store
