"""The model-store contract, shared by the trainer (writer) and the workers (readers).

One contract (models/store/base.py), two backends:

* a folder (models/store/folder.py): ``MODEL_DIR``, or ``MODEL_STORE=/path`` or
  ``file:///path``; the default is ``var/models``;
* an S3-compatible bucket (models/store/s3.py): ``MODEL_STORE=s3://bucket/prefix``, with
  ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION``.
  Readers fetch versions into ``MODEL_CACHE`` and verify them there.

When both ``MODEL_STORE`` and ``MODEL_DIR`` are set, ``MODEL_STORE`` wins. docs/registry.md
gives the layouts and the publish order.

This package has no TensorFlow dependency, so the API and tooling may import it.
"""

from __future__ import annotations

import os
from pathlib import Path

from models.store.base import (
    DEFAULT_NAME,
    HISTORY_PLOT,
    MANIFEST_FILE,
    MODEL_FILE,
    POINTER_FILE,
    Store,
    StoreError,
    StoreUnavailable,
    Version,
    sha256_file,
)
from models.store.folder import FolderStore

# The folder store under the name it has always had: ModelStore(folder) still works.
ModelStore = FolderStore
# The versions shipped in git live beside this package.
SHIPPED_ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "DEFAULT_NAME", "HISTORY_PLOT", "MANIFEST_FILE", "MODEL_FILE", "POINTER_FILE",
    "SHIPPED_ROOT", "FolderStore", "ModelStore", "Store", "StoreError", "StoreUnavailable",
    "Version", "open_store", "sha256_file", "shipped_store", "store_location",
]


def shipped_store() -> FolderStore:
    """The store of versions committed to git (read-only by convention)."""
    return FolderStore(SHIPPED_ROOT)


def store_location(settings=None) -> str:
    """Where the store is: MODEL_STORE when set, else MODEL_DIR."""
    if settings is None:
        from digits.settings import load

        settings = load()
    return settings.MODEL_STORE or settings.MODEL_DIR


def open_store(location: str | os.PathLike | None = None, name: str | None = None,
               seed: bool = True, settings=None) -> Store:
    """The runtime store at ``location``: a folder, ``file://`` folder or ``s3://`` URL
    (default: ``store_location()``). With ``seed``, an empty store is filled from the
    shipped default first."""
    if settings is None:
        from digits.settings import load

        settings = load()
    where = str(location or store_location(settings))
    name = name or settings.MODEL_NAME
    if where.startswith("s3://"):
        from models.store.s3 import S3Store, make_client

        client = make_client(settings.AWS_ENDPOINT_URL, settings.AWS_ACCESS_KEY_ID,
                             settings.AWS_SECRET_ACCESS_KEY, settings.AWS_REGION)
        store: Store = S3Store(where, name, settings.MODEL_CACHE, client,
                               settings.AWS_ENDPOINT_URL)
    else:
        root = Path(where.removeprefix("file://"))
        if seed and root.resolve() == SHIPPED_ROOT:
            seed = False
        store = FolderStore(root, name)
    if seed and store.current() is None:
        store.seed_from(shipped_store())
    return store
