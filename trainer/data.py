"""MNIST loading: IDX files (raw or gzipped), an .npz, or Keras' downloader."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8}


@dataclass
class Mnist:
    x_train: np.ndarray  # (n, 28, 28) uint8, white ink on black
    y_train: np.ndarray  # (n,) uint8
    x_test: np.ndarray
    y_test: np.ndarray
    fingerprint: str  # sha256 over the arrays, so a manifest names its exact data
    source: str

    def limit(self, n: int | None) -> Mnist:
        if not n:
            return self
        return Mnist(
            self.x_train[:n], self.y_train[:n], self.x_test[:n], self.y_test[:n],
            _fingerprint(self.x_train[:n], self.y_train[:n], self.x_test[:n], self.y_test[:n]),
            f"{self.source} (first {n})",
        )


def _fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return "sha256:" + digest.hexdigest()


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (the format MNIST ships in), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=header)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, file holds {array.size} values")
    return array.reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder}: neither {stem} nor {stem}.gz")


def load(data: str | Path | None) -> Mnist:
    """MNIST from a folder of IDX files, an .npz file, or (None) Keras' downloader."""
    if data is None:
        import keras  # downloads to ~/.keras; needs internet

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        source = "keras.datasets.mnist"
    else:
        path = Path(data)
        if path.is_file() and path.suffix == ".npz":
            with np.load(path) as npz:
                x_train, y_train = npz["x_train"], npz["y_train"]
                x_test, y_test = npz["x_test"], npz["y_test"]
        elif path.is_dir():
            arrays = {key: read_idx(_find(path, stem)) for key, stem in IDX_FILES.items()}
            x_train, y_train = arrays["x_train"], arrays["y_train"]
            x_test, y_test = arrays["x_test"], arrays["y_test"]
        else:
            raise FileNotFoundError(f"{path}: not a folder of IDX files nor an .npz file")
        source = str(path)
    for name, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise ValueError(f"{name}: expected (n, 28, 28) images with n labels")
    arrays = [np.asarray(a, dtype=np.uint8) for a in (x_train, y_train, x_test, y_test)]
    return Mnist(*arrays, fingerprint=_fingerprint(*arrays), source=source)
