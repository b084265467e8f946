"""The shipped model run in this process, for offline evaluation and for tests.

Loads a version the way a worker does (``worker.predictor.load_version``: verified,
traced graph, small thread pools), so offline figures match what the workers
compute. Only for tools and tests: the API never imports TensorFlow.

    forward = load_forward()          # the store's current version
    probs = forward(images)           # (n, 28, 28) uint8 -> (n, 10) float32
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np


@lru_cache(maxsize=4)
def load_forward(model_dir: str | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A callable (n, 28, 28) uint8 -> (n, 10) probabilities, from model_dir's current
    version (default: the shipped store, models/digits)."""
    from models.store import ModelStore, shipped_store
    from worker.predictor import configure_tensorflow, load_version

    configure_tensorflow()
    store = ModelStore(Path(model_dir)) if model_dir else shipped_store()
    loaded = load_version(store, store.current())

    def forward(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32).reshape(-1, 28, 28, 1)
        if not len(images):
            return np.zeros((0, 10), np.float32)
        return np.asarray(loaded.forward(images))

    return forward
