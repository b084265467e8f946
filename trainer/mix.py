"""The training mix: MNIST plus drawings the trainer renders (trainer/render.py).

``prepare`` runs before TensorFlow is imported: it renders in spawned worker
processes, whose cores TensorFlow would otherwise be fighting for.

Splits:

* fit: MNIST training images but the last ``validation``, plus the rendered drawings
  but a tenth of them;
* held out: the last ``validation`` MNIST training images, plus that tenth of the
  rendered drawings (the ``mnist`` family redraws only fit images). It gives the
  per-epoch validation figures, the calibration temperature and the not-a-digit
  threshold measurement; it is never trained on.

MNIST test stays the test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer import render
from trainer.data import Mnist

# Rendered drawings per MNIST fit image, by family: 0.44 digits, 0.33 not digits, and
# 0.6 candidate digits of drawn numbers (about half of them not digits).
SHARES = {
    "skeleton": 0.10, "hershey": 0.06, "font": 0.10, "mnist": 0.18,
    "letter": 0.09, "symbol": 0.07, "shape": 0.07, "scribble": 0.05, "several": 0.05,
    "part": 0.6,
}
HELD_OUT_EVERY = 10  # every tenth rendered drawing is held out


@dataclass
class Mix:
    x_fit: np.ndarray  # (n, 28, 28) uint8
    y_fit: np.ndarray  # (n,) int32, 0..10
    x_held: np.ndarray
    y_held: np.ndarray
    held_family: np.ndarray  # (n,) family name of each held-out image ("mnist-val" for MNIST)
    rendered: dict  # counts per family, seconds, processes

    @property
    def classes(self) -> int:
        return len(render.CLASSES)


def counts_for(fit_images: int, scale: float) -> dict[str, int]:
    return {family: int(round(share * fit_images * scale)) for family, share in SHARES.items()}


def prepare(data: Mnist, validation: int, seed: int, scale: float = 1.0,
            processes: int | None = None) -> Mix:
    x, y = data.x_train, data.y_train.astype(np.int32)
    val = min(validation, len(x) // 10)
    x_fit, y_fit = x[: len(x) - val], y[: len(y) - val]
    x_val, y_val = x[len(x) - val :], y[len(y) - val :]
    counts = counts_for(len(x_fit), scale)
    drawn = render.render_set(counts, seed, processes, mnist=(x_fit, y_fit))
    held = np.zeros(len(drawn.labels), bool)
    for i in range(len(drawn.names)):  # every tenth of each family, by position
        where = np.flatnonzero(drawn.families == i)
        held[where[HELD_OUT_EVERY - 1 :: HELD_OUT_EVERY]] = True
    names = np.array(drawn.names, dtype=object)[drawn.families]
    return Mix(
        x_fit=np.concatenate([x_fit, drawn.images[~held]]),
        y_fit=np.concatenate([y_fit, drawn.labels[~held].astype(np.int32)]),
        x_held=np.concatenate([x_val, drawn.images[held]]),
        y_held=np.concatenate([y_val, drawn.labels[held].astype(np.int32)]),
        held_family=np.concatenate([np.full(len(y_val), "mnist-val", dtype=object),
                                    names[held]]),
        rendered={"counts": drawn.counts(), "seconds": round(drawn.seconds, 1),
                  "processes": processes or render.worker_count(), "seed": seed,
                  "scale": scale},
    )
