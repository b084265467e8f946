"""The model holder: load once in ``setup()``, then a typed ``predict()`` (after Cog).

It also watches the model store and hot-reloads: a new current version is loaded
in the background, verified (sha256, safe_mode, smoke prediction) and only then
swapped in. A batch already running keeps the model it started with. The watcher
checks the pointer every ``poll_seconds``, and at once when ``wake()`` is called (the
trainer's notice on Redis, worker/notices.py). A store that cannot be reached changes
nothing: the loaded version serves on, and ``store_report()`` says what is wrong.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from models.outputs import Outputs, OutputsError, from_manifest, served_rows
from models.store import MODEL_FILE, Store, StoreError, StoreUnavailable

log = logging.getLogger("worker.predictor")


def configure_tensorflow(intra: int = 1, inter: int = 1) -> None:
    """Small thread pools: several workers share two cores with the API and Redis."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        # TensorFlow already runs in this process (a test or tool loading a second
        # model): its pools are fixed once started, and the first call set them.
        log.debug("TensorFlow's thread pools are already fixed in this process")


@dataclass(frozen=True)
class Loaded:
    version: int
    # float32 (n, 28, 28, 1) -> served rows: (n, 10) digit probabilities, or (n, 11) with
    # not_a_digit last, the manifest's temperature applied (models/outputs.py)
    forward: object
    sha256: str
    outputs: Outputs = Outputs(10, 1.0)


class ModelRejected(Exception):
    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient  # the store was unreachable: worth trying again


def load_version(store: Store, number: int) -> Loaded:
    """Verify and load one version, or raise ModelRejected saying why."""
    import keras
    import tensorflow as tf

    try:
        version = store.verify(number)
    except StoreUnavailable as exc:
        raise ModelRejected(str(exc), transient=True) from exc
    except (StoreError, OSError) as exc:
        raise ModelRejected(str(exc)) from exc
    path = version.model_path
    if path.name != MODEL_FILE or path.suffix != ".keras":
        raise ModelRejected(f"{path}: only .keras files are loaded")
    try:
        outputs = from_manifest(version.manifest)
    except OutputsError as exc:
        raise ModelRejected(f"version {number}: {exc}") from exc
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # corrupt zip, unsafe lambda, wrong config: all are rejections
        raise ModelRejected(f"version {number}: cannot load {path.name}: {exc}") from exc
    # The traced graph itself: calling it skips tf.function's argument matching,
    # which cost 0.7 ms of a 1.8 ms single-image call between tasks (measured).
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([None, 28, 28, 1], tf.float32))
    # Tempering and renormalising a batch's rows in numpy costs microseconds.
    loaded = Loaded(number, lambda x: served_rows(graph(tf.constant(x)).numpy(), outputs),
                    version.manifest["sha256"], outputs)
    smoke_test(loaded)
    return loaded


def smoke_test(loaded: Loaded) -> None:
    """A model must give a probability vector for each image before it serves."""
    probe = np.zeros((2, 28, 28, 1), np.float32)
    probe[1, 6:22, 12:16] = 255.0  # a plain "1"
    try:
        out = np.asarray(loaded.forward(probe))
    except Exception as exc:
        raise ModelRejected(f"version {loaded.version}: smoke prediction failed: {exc}") from exc
    if out.shape != (2, loaded.outputs.count) or not np.all(np.isfinite(out)):
        raise ModelRejected(f"version {loaded.version}: smoke output has shape {out.shape}")
    if not np.allclose(out[:, :10].sum(axis=1), 1.0, atol=1e-3) or not (
            (out >= 0).all() and (out <= 1).all()):
        raise ModelRejected(f"version {loaded.version}: outputs are not probabilities")


class Predictor:
    def __init__(self, store: Store, poll_seconds: float = 0.5,
                 threads: tuple[int, int] = (1, 1)):
        self.store = store
        self.poll_seconds = poll_seconds
        self.threads = threads  # TensorFlow's (intra-op, inter-op) pools
        self._loaded: Loaded | None = None
        self._rejected: tuple | None = None  # (version, pointer mtime) not to retry
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._watcher: threading.Thread | None = None
        self.reloads = 0
        self.rejections = 0
        self.store_status = "ok"
        self.on_swap = None  # () -> None, after each swap: the worker beats at once

    # -- Cog's shape -------------------------------------------------------------
    def setup(self) -> None:
        """Load the current version (blocking). Start serving only once this returns."""
        configure_tensorflow(*self.threads)
        try:
            number = self.store.current()
        except StoreUnavailable as exc:
            # Started while the store is down: the version this host last verified.
            number = self.store.cached_current()
            if number is None:
                raise
            self.store_status = f"unreachable: {exc}"
            log.warning("%s; starting with cached version %s", exc, number)
        if number is None:
            raise StoreError(f"no current model version in {self.store.location}")
        self._loaded = load_version(self.store, number)
        log.info("serving model version %s from %s", number, self.store.location)

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, int]:
        """(n, 28, 28) uint8 -> (served rows, model version): (n, 10) digit probabilities,
        or (n, 11) with not_a_digit last for a version that has it (Loaded.forward)."""
        loaded = self._loaded  # one reference for the whole batch: a swap can't split it
        if loaded is None:
            raise RuntimeError("predict() before setup()")
        x = images.reshape(-1, 28, 28, 1).astype(np.float32)
        return np.asarray(loaded.forward(x)), loaded.version

    @property
    def version(self) -> int | None:
        return self._loaded.version if self._loaded else None

    # -- hot reload ----------------------------------------------------------------
    def start_watching(self) -> None:
        self._watcher = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Check the store now rather than at the next poll."""
        self._wake.set()

    def store_report(self) -> dict:
        return {"location": self.store.location, "status": self.store_status}

    def _set_status(self, status: str) -> None:
        if status != self.store_status:
            if status == "ok":
                log.info("model store %s reachable again", self.store.location)
            else:
                log.warning("model store %s: %s; still serving version %s",
                            self.store.location, status, self.version)
        self.store_status = status

    def _pointer_state(self):
        try:
            state = self.store.pointer_state()
        except StoreUnavailable as exc:
            self._set_status(f"unreachable: {exc}")
            return None, repr(exc)
        except (StoreError, OSError) as exc:
            self._set_status("ok")
            return None, repr(exc)
        self._set_status("ok")
        return state

    def check_once(self) -> bool:
        """Reload if the pointer names another version. True when a swap happened."""
        number, stamp = self._pointer_state()
        if number is None or number == self.version or self._rejected == (number, stamp):
            return False
        started = time.monotonic()
        try:
            candidate = load_version(self.store, number)
        except ModelRejected as exc:
            if exc.transient:  # not the version's fault: try again at the next check
                self._set_status(f"unreachable: {exc}")
                return False
            self._rejected = (number, stamp)
            self.rejections += 1
            log.error("rejected model version %s, still serving %s: %s",
                      number, self.version, exc)
            return False
        self._loaded = candidate  # the swap: one reference assignment, between batches
        self.reloads += 1
        log.info("now serving model version %s (loaded in %.2f s)",
                 number, time.monotonic() - started)
        if self.on_swap:
            self.on_swap()
        return True

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.check_once()
            except Exception:  # the watcher must outlive anything a bad store throws
                log.exception("model watcher error; still serving %s", self.version)
