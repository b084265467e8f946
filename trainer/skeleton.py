"""Centre lines of MNIST digits: Zhang-Suen thinning on a 3x grid.

Used to redraw MNIST digits with a round pen: the evaluation's canvas set
(tools/canvas_set.py, MNIST test) and the trainer's ``mnist`` family (trainer/render.py,
MNIST training images).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

UPSCALE = 3  # MNIST digits are thinned on a 3x grid (84x84) for smoother centre lines
INK_LEVEL = 128  # MNIST pixels at least this bright are stroke (higher keeps small loops open)


def _thinning_tables() -> tuple[np.ndarray, np.ndarray]:
    """Zhang-Suen deletion rules for both sub-steps, indexed by the 8-neighbour code.

    Bit i of the code is neighbour P(i+2), clockwise from north: P2=N, P3=NE, P4=E,
    P5=SE, P6=S, P7=SW, P8=W, P9=NW.
    """
    tables = np.zeros((2, 256), dtype=bool)
    for code in range(256):
        p = [(code >> i) & 1 for i in range(8)]  # p[0] is P2 ... p[7] is P9
        neighbours = sum(p)
        transitions = sum(p[i] == 0 and p[(i + 1) % 8] == 1 for i in range(8))
        p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
        if 2 <= neighbours <= 6 and transitions == 1:
            tables[0, code] = p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0
            tables[1, code] = p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0
    return tables[0], tables[1]


_DELETABLE = _thinning_tables()


def _thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean mask to an 8-connected one-pixel skeleton."""
    img = np.pad(mask, 1).astype(np.uint8)
    centre = img[1:-1, 1:-1]
    while True:
        changed = False
        for table in _DELETABLE:
            code = (
                img[:-2, 1:-1]
                | img[:-2, 2:] << 1
                | img[1:-1, 2:] << 2
                | img[2:, 2:] << 3
                | img[2:, 1:-1] << 4
                | img[2:, :-2] << 5
                | img[1:-1, :-2] << 6
                | img[:-2, :-2] << 7
            )
            remove = table[code] & (centre == 1)
            if remove.any():
                centre[remove] = 0
                changed = True
        if not changed:
            return centre.astype(bool)


def skeleton_points(digit: np.ndarray) -> np.ndarray:
    """(k, 2) float array of centre-line points (row, col) in 3x-grid units."""
    grid = Image.fromarray(digit).resize((28 * UPSCALE,) * 2, Image.Resampling.BICUBIC)
    mask = np.asarray(grid) >= INK_LEVEL
    if not mask.any():
        mask = np.asarray(grid) >= max(1, int(np.asarray(grid).max()) // 2)
    rows, cols = np.nonzero(mask)
    top, left = rows.min(), cols.min()
    crop = mask[top : rows.max() + 1, left : cols.max() + 1]
    skeleton = _thin(crop)
    if not skeleton.any():
        skeleton = crop
    return np.argwhere(skeleton).astype(np.float64)
