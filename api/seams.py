"""The ink's pieces, and candidate cuts through pieces that may hold touching digits.

numpy only (api/segment.py uses it in the API process). ``label`` finds 8-connected
pieces of a mask from its horizontal runs; ``cuts`` finds, for every piece wide
enough to hold two digits, the seams along which it may part into digits.
"""

from __future__ import annotations

import numpy as np

# The least ink of a digit (a short "1"), in digit height x stroke width.
MIN_DIGIT_MASS = 0.6
# Pieces at least this wide (times the digit height), or this many stroke widths, may
# hold two digits: the second catches a touching "11". Cutting only pieces 0.7 of the
# height wide sends 26% fewer crops and reads 3 points fewer numbers (docs/numbers.md).
CUT_WIDTH = 0.55
CUT_MIN_STROKES = 2.2
CUT_SPACING = 0.45  # at most one cut per this much width (times the digit height)
SEAM_SPACING = 0.06  # two cuts differ by at least this much on average (times the height)
MAX_TRACES = 40  # cuts traced in one piece, cheapest first
SEAM_ROWS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # cuts are sought through these rows
MAX_CROSSINGS = 2.6  # a cut crossing more ink than this many strokes is no cut
SIDE_TALL = 0.55  # each side of a cut is at least this tall (times the digit height)
DIAGONAL_COST = 0.1  # per column a seam moves sideways, in pixels of ink


def _runs(mask: np.ndarray):
    """Horizontal runs of True: rows, starts, ends (exclusive), in raster order."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)
    return rows, starts, ends


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components: (labels (h, w) int32, 0 = background; count)."""
    h, w = mask.shape
    rows, starts, ends = _runs(mask)
    n = len(rows)
    labels = np.zeros((h, w), np.int32)
    if not n:
        return labels, 0
    stride = w + 2
    lo = np.searchsorted(rows * stride + ends, (rows + 1) * stride + starts, "left")
    hi = np.searchsorted(rows * stride + starts, (rows + 1) * stride + ends, "right")
    counts = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(n), counts)
    b = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    root = np.arange(n)
    while len(a):
        ra, rb = root[a], root[b]
        differ = ra != rb
        if not differ.any():
            break
        a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]
        np.minimum.at(root, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:  # pointer jumping: every run points at its root
            jumped = root[root]
            if np.array_equal(jumped, root):
                break
            root = jumped
    _, comp = np.unique(root, return_inverse=True)
    lengths = ends - starts
    pixel_rows = np.repeat(rows, lengths)
    pixel_cols = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(
        lengths.sum())
    labels[pixel_rows, pixel_cols] = np.repeat(comp + 1, lengths)
    return labels, int(comp.max()) + 1


def stroke_width(mask: np.ndarray) -> float:
    """The typical stroke width: the median run across the ink, the smaller of
    the horizontal and the vertical median (a bar is long one way only)."""
    widths = []
    for m in (mask, mask.T):
        _, starts, ends = _runs(m)
        if len(starts):
            widths.append(float(np.median(ends - starts)))
    return max(1.0, min(widths)) if widths else 1.0


def boxes(labels: np.ndarray, count: int) -> np.ndarray:
    """(count, 4) x0, y0, x1, y1 of each label (exclusive ends)."""
    ys, xs = np.nonzero(labels)
    ids = labels[ys, xs] - 1
    out = np.empty((count, 4), np.int64)
    out[:, :2] = np.iinfo(np.int64).max
    out[:, 2:] = -1
    np.minimum.at(out[:, 0], ids, xs)
    np.minimum.at(out[:, 1], ids, ys)
    np.maximum.at(out[:, 2], ids, xs + 1)
    np.maximum.at(out[:, 3], ids, ys + 1)
    return out


def cuts(pieces: list, work: np.ndarray, height: float, stroke: float) -> list:
    """Candidate cuts of every piece (``.box`` x0, y0, x1, y1 and ``.own``, its mask in
    that box) wide enough to hold two digits: per piece, a list of (per-row column in
    the piece's box, strokes crossed), left to right.

    A cut is a seam from the top row to the bottom one that moves at most one
    column a row (seam carving); its cost is the ink of its own piece it crosses
    (0..1 a pixel) plus DIAGONAL_COST per sideways step. Two passes (downwards,
    upwards) give the cheapest seam through every pixel. Seams branch (two
    neighbours touch at one point, or a stroke of one digit can be crossed
    instead), so the candidates are the local minima of that cost along several
    rows of each piece (SEAM_ROWS), cheapest first. One is kept if it crosses at
    most MAX_CROSSINGS strokes, differs from those kept, and the two parts it makes
    both look like digits; at most one cut per CUT_SPACING digit heights of width.

    The pieces sit side by side on one strip, walled apart, so that each pass is one
    sweep over the rows for all of them.
    """
    wanted = [i for i, p in enumerate(pieces)
              if p.box[2] - p.box[0] >= min(CUT_WIDTH * height, CUT_MIN_STROKES * stroke)]
    out: list = [[] for _ in pieces]
    if not wanted:
        return out
    rows = work.shape[0]
    offsets, at = [], 0
    for i in wanted:
        offsets.append(at)
        at += pieces[i].box[2] - pieces[i].box[0] + 1  # and a wall
    energy = np.zeros((rows, at))
    walls = np.zeros(at, bool)
    for i, offset in zip(wanted, offsets, strict=True):
        x0, y0, x1, y1 = pieces[i].box
        energy[y0:y1, offset : offset + x1 - x0] = np.where(
            pieces[i].own, work[y0:y1, x0:x1] * (1 / 255), 0.0)
        walls[offset + x1 - x0] = True
    energy[:, walls] = 1e9  # no seam crosses from one piece into the next
    down, steps_down = _seam_table(energy)
    up, steps_up = _seam_table(energy[::-1])
    up, steps_up = up[::-1], steps_up[::-1]
    through = down + up - energy
    steps_down, steps_up = steps_down.tolist(), steps_up.tolist()
    paths, costs, piece_of = [], [], []
    for i, offset in zip(wanted, offsets, strict=True):
        x0, y0, x1, y1 = pieces[i].box
        picked = sorted({y0 + min(y1 - y0 - 1, int(f * (y1 - y0))) for f in SEAM_ROWS})
        lines = through[picked, offset : offset + x1 - x0]
        low = lines <= MAX_CROSSINGS * stroke
        low[:, 1:] &= lines[:, 1:] <= lines[:, :-1]
        low[:, :-1] &= lines[:, :-1] <= lines[:, 1:]
        which, cols = np.nonzero(low)
        values = lines[which, cols]
        # The pixels of one seam all have its cost: one start per seam.
        _, first = np.unique(np.round(values, 6), return_index=True)
        for k in first[:MAX_TRACES].tolist():  # np.unique sorts: cheapest first
            paths.append(_trace(steps_down, steps_up, picked[which[k]], offset + cols[k]))
            costs.append(values[k] / stroke)
            piece_of.append(i)
    if not paths:
        return out
    paths, costs, piece_of = np.array(paths), np.array(costs), np.array(piece_of)
    least = MIN_DIGIT_MASS * height * stroke
    for i, offset in zip(wanted, offsets, strict=True):
        mine = np.flatnonzero(piece_of == i)
        if len(mine):
            x0, y0, x1, y1 = pieces[i].box
            out[i] = _keep(pieces[i].own, paths[mine, y0:y1] - offset + 1, costs[mine],
                           height, least)
    return out


def _keep(own: np.ndarray, cuts: np.ndarray, costs: np.ndarray, height: float,
          least: float) -> list:
    """The cuts worth keeping, cheapest first (see _cuts), as [(cut, cost)] left to right.
    A cut's column in each row is the first one of its right part."""
    rows, width = own.shape
    columns = np.arange(width)
    left = own[None] & (columns[None, None] < cuts[:, :, None])
    ok = _digit_like(left, height, least) & _digit_like(own[None] & ~left, height, least)
    budget = max(1, round(width / (CUT_SPACING * height)))
    full = np.full(rows, width, np.int64)
    found = []  # (cut, cost, mean column), left to right
    for k in np.flatnonzero(ok).tolist():
        if len(found) >= budget:
            break
        cut = np.clip(cuts[k], 0, width)
        if any(np.abs(cut - f[0]).mean() < SEAM_SPACING * height for f in found):
            continue
        centre = float(cut.mean())
        at = sum(1 for f in found if f[2] < centre)
        lo = found[at - 1][0] if at else np.zeros(rows, np.int64)
        hi = found[at][0] if at < len(found) else full
        cut = np.clip(cut, lo, hi)  # cuts never cross
        if found:  # the parts it makes between the cuts kept must look like digits too
            parts = np.stack([own & (columns >= a[:, None]) & (columns < b[:, None])
                              for a, b in ((lo, cut), (cut, hi))])
            if not _digit_like(parts, height, least).all():
                continue
        found.insert(at, (cut, float(costs[k]), centre))
    return [(cut, cost) for cut, cost, _ in found]


def _seam_table(energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative seam costs row by row from the first row, and each pixel's step
    (-1, 0, 1) to its column in the row before on its cheapest seam."""
    rows, width = energy.shape
    table = np.empty((rows, width + 2))
    table[:, 0] = table[:, -1] = np.inf  # walls either side
    table[0, 1:-1] = energy[0]
    steps = np.zeros((rows, width), np.int8)
    side = np.empty(width)
    for r in range(1, rows):
        above, row = table[r - 1], table[r, 1:-1]
        np.minimum(above[:-2], above[2:], out=side)
        side += DIAGONAL_COST
        sideways = side < above[1:-1]
        np.minimum(side, above[1:-1], out=row)
        row += energy[r]
        steps[r] = np.where(sideways, np.where(above[:-2] <= above[2:], -1, 1), 0)
    return table[:, 1:-1], steps


def _trace(steps_down: list, steps_up: list, row: int, col: int) -> np.ndarray:
    """The columns of the cheapest seam through (row, col): up the downward steps,
    then down the upward ones."""
    rows = len(steps_down)
    path = [0] * rows
    path[row] = c = col
    for r in range(row, 0, -1):
        c += steps_down[r][c]
        path[r - 1] = c
    c = col
    for r in range(row, rows - 1):
        c += steps_up[r][c]
        path[r + 1] = c
    return np.array(path)


def _digit_like(parts: np.ndarray, height: float, least: float) -> np.ndarray:
    """Per part (k, rows, width): tall enough and inky enough to hold a digit."""
    rows = parts.any(axis=2)
    tall = rows.shape[1] - np.argmax(rows[:, ::-1], axis=1) - np.argmax(rows, axis=1)
    return rows.any(axis=1) & (tall >= SIDE_TALL * height) & (parts.sum(axis=(1, 2)) >= least)


