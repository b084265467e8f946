"""The ink's pieces, and candidate cuts through pieces that may hold touching digits.

numpy only (api/segment.py uses it in the API process). ``label`` finds 8-connected
pieces of a mask from its horizontal runs (``survey``: with their boxes, sizes and the
stroke width); ``cuts`` finds, for every piece wide enough to hold two digits, the
seams and slanted lines along which it may part into digits.
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
STRAIGHT = (-0.25, 0.25)  # slopes (columns a row) of the straight cuts also tried
STRAIGHT_STEP = 2  # columns between straight cuts


def _runs(mask: np.ndarray):
    """Horizontal runs of True: rows, starts, ends (exclusive), in raster order."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), bool)
    padded[:, 1:-1] = mask
    # Where the ink starts or stops: each run's start, then its end, in raster order.
    rows, cols = np.nonzero(padded[:, 1:] != padded[:, :-1])
    return rows[::2], cols[::2], cols[1::2]


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components: (labels (h, w) int32, 0 = background; count)."""
    labels, count, _ = _label(mask.shape, _runs(mask))
    return labels, count


def _label(shape: tuple[int, int], runs) -> tuple[np.ndarray, int, np.ndarray]:
    """label, from the mask's runs (_runs); also each run's component (0..count-1)."""
    h, w = shape
    rows, starts, ends = runs
    n = len(rows)
    labels = np.zeros((h, w), np.int32)
    if not n:
        return labels, 0, np.zeros(0, np.int64)
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
    # A root is its component's first run and points at itself: numbering the roots in
    # order numbers the components as np.unique(root) would, without sorting.
    comp = np.cumsum(root == np.arange(n))[root] - 1
    lengths = ends - starts
    pixel_rows = np.repeat(rows, lengths)
    pixel_cols = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(
        lengths.sum())
    labels[pixel_rows, pixel_cols] = np.repeat(comp + 1, lengths)
    return labels, int(comp.max()) + 1, comp


def survey(mask: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, np.ndarray, float]:
    """label, boxes, each label's pixel count and stroke_width at once: (labels, count,
    boxes, sizes, stroke), all from one pass over the mask's runs."""
    runs = _runs(mask)
    labels, count, comp = _label(mask.shape, runs)
    rows, starts, ends = runs
    extents = np.empty((count, 4), np.int64)
    extents[:, :2] = np.iinfo(np.int64).max
    extents[:, 2:] = -1
    np.minimum.at(extents[:, 0], comp, starts)
    np.minimum.at(extents[:, 1], comp, rows)
    np.maximum.at(extents[:, 2], comp, ends)
    np.maximum.at(extents[:, 3], comp, rows + 1)
    sizes = np.bincount(comp, ends - starts, minlength=count).astype(np.int64)
    return labels, count, extents, sizes, stroke_width(mask, runs)


def stroke_width(mask: np.ndarray, runs=None) -> float:
    """The typical stroke width: the median run across the ink, the smaller of
    the horizontal and the vertical median (a bar is long one way only). ``runs``:
    the mask's horizontal runs (_runs), when they are already found."""
    widths = []
    for found in (_runs(mask) if runs is None else runs, _runs(mask.T)):
        _, starts, ends = found
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
    rows of each piece (SEAM_ROWS). Straight lines at the slopes STRAIGHT are
    candidates too: a seam follows the thinnest ink, which between two crossing
    digits often runs into one of them. All are tried cheapest first. One is kept if
    it crosses at most MAX_CROSSINGS strokes, differs from those kept, and the two
    parts it makes both look like digits; at most one cut per CUT_SPACING digit
    heights of width.

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
    own = np.zeros((rows, at), bool)
    walls = np.zeros(at, bool)
    for i, offset in zip(wanted, offsets, strict=True):
        x0, y0, x1, y1 = pieces[i].box
        own[y0:y1, offset : offset + x1 - x0] = pieces[i].own
        energy[y0:y1, offset : offset + x1 - x0] = np.where(
            pieces[i].own, work[y0:y1, x0:x1] * (1 / 255), 0.0)
        walls[offset + x1 - x0] = True
    energy[:, walls] = 1e9  # no seam crosses from one piece into the next
    # Both passes in one sweep: the strip and the strip upside down, side by side (the
    # strip ends with a wall, so no seam crosses from one into the other).
    table, steps = _seam_table(np.concatenate((energy, energy[::-1]), axis=1))
    down, steps_down = table[:, :at], steps[:, :at]
    up, steps_up = table[::-1, at:], steps[::-1, at:]
    through = down + up - energy
    # The rows each piece's seams are sought through (SEAM_ROWS): in every piece's
    # columns, row j of ``lines`` holds the costs along its j-th row.
    picked = np.zeros((len(SEAM_ROWS), at), np.int64)
    sought = np.zeros((len(SEAM_ROWS), at), bool)
    for i, offset in zip(wanted, offsets, strict=True):
        x0, y0, x1, y1 = pieces[i].box
        mine = sorted({y0 + min(y1 - y0 - 1, int(f * (y1 - y0))) for f in SEAM_ROWS})
        picked[: len(mine), offset : offset + x1 - x0] = np.array(mine)[:, None]
        sought[: len(mine), offset : offset + x1 - x0] = True
    lines = through[picked, np.arange(at)]
    # The walls cost more than any seam: a piece's first and last columns have no
    # neighbour to beat.
    low = sought & (lines <= MAX_CROSSINGS * stroke)
    low[:, 1:] &= lines[:, 1:] <= lines[:, :-1]
    low[:, :-1] &= lines[:, :-1] <= lines[:, 1:]
    which, cols = np.nonzero(low)
    values = lines[which, cols]
    # The pixels of one seam all have its cost: one start per seam, the first found,
    # cheapest first in each piece (a stable sort, as np.unique's with return_index).
    widths = [pieces[i].box[2] - pieces[i].box[0] + 1 for i in wanted]
    owner = np.repeat(np.arange(len(wanted)), widths)[cols]  # index into wanted
    rounded = np.round(values, 6)
    order = np.lexsort((rounded, owner))
    rounded, owner = rounded[order], owner[order]
    first = np.ones(len(order), bool)
    first[1:] = (rounded[1:] != rounded[:-1]) | (owner[1:] != owner[:-1])
    order, owner = order[first], owner[first]
    rank = np.arange(len(order)) - np.searchsorted(owner, owner)  # in its piece
    chosen, owner = order[rank < MAX_TRACES], owner[rank < MAX_TRACES]
    if not len(chosen):
        return out
    which, cols = which[chosen], cols[chosen]
    paths = _trace(steps_down, steps_up, picked[which, cols], cols)
    costs = values[chosen] / stroke
    lines, line_costs, line_owner = _straight(energy, pieces, wanted, offsets, height, stroke)
    paths = np.concatenate((paths, lines))
    costs = np.concatenate((costs, line_costs))
    owner = np.concatenate((owner, line_owner))
    order = np.lexsort((costs, owner))  # each piece's cuts, cheapest first
    paths, costs, owner = paths[order], costs[order], owner[order]
    least = MIN_DIGIT_MASS * height * stroke
    # The ink of the strip left of each column, row by row: the ink of a part between
    # two columns is a difference of two lookups, with no mask per part. A seam never
    # crosses a wall, so the part left of it (its own column included) and the part
    # right of it are its piece's own, for every seam of every piece at once (the rows
    # outside a piece's box hold none of its ink).
    before = np.zeros((at + 1, rows), np.int64)  # column by column: whole rows to gather
    np.cumsum(own.T, axis=0, out=before[1:])
    ends = np.array([(offset, offset + width - 1)
                     for offset, width in zip(offsets, widths, strict=True)])
    seam_ink = before[paths + 1, np.arange(rows)]
    piece_ends = before[ends[owner]]  # (seams, 2, rows)
    parts = np.concatenate((seam_ink - piece_ends[:, 0], piece_ends[:, 1] - seam_ink))
    ok = np.flatnonzero(_digit_like(parts, height, least).reshape(2, -1).all(axis=0))
    # The seams are in piece order: each piece's are one slice of them.
    groups = np.searchsorted(owner[ok], np.arange(len(wanted) + 1)).tolist()
    for n, (i, (offset, end)) in enumerate(zip(wanted, ends.tolist(), strict=True)):
        mine = ok[groups[n] : groups[n + 1]]
        if len(mine):
            y0, y1 = pieces[i].box[1::2]
            out[i] = _keep(before[offset : end + 1, y0:y1],
                           paths[mine, y0:y1] - offset + 1, costs[mine], height, least)
    return out


def _straight(energy, pieces, wanted, offsets, height, stroke):
    """Straight cuts through every piece: lines every STRAIGHT_STEP columns at the
    slopes STRAIGHT, with the ink they cross (the strip's columns per row, as _trace's)."""
    rows = energy.shape[0]
    every_row = np.arange(rows)
    slopes = np.array(STRAIGHT)
    paths, costs, owner = [], [], []
    for n, (i, offset) in enumerate(zip(wanted, offsets, strict=True)):
        x0, y0, x1, y1 = pieces[i].box
        width, mid = x1 - x0, (y0 + y1) / 2
        margin = max(1, int(0.2 * height))
        starts = np.arange(margin, width - margin, STRAIGHT_STEP)
        if not len(starts):
            continue
        cols = starts[:, None, None] + slopes[None, :, None] * (every_row - mid)[None, None]
        cols = np.clip(np.round(cols), 0, width - 1).astype(np.int64).reshape(-1, rows)
        cols += offset
        cost = energy[every_row[y0:y1], cols[:, y0:y1]].sum(axis=1) / stroke
        keep = cost <= MAX_CROSSINGS
        paths.append(cols[keep])
        costs.append(cost[keep])
        owner.append(np.full(int(keep.sum()), n))
    if not paths:
        return np.zeros((0, rows), np.int64), np.zeros(0), np.zeros(0, np.int64)
    return np.concatenate(paths), np.concatenate(costs), np.concatenate(owner)


def _keep(before: np.ndarray, cuts: np.ndarray, costs: np.ndarray, height: float,
          least: float) -> list:
    """The cuts worth keeping, cheapest first (see cuts), as [(cut, cost)] left to right.
    ``before``: the piece's own ink left of each column 0..width, row by row (width + 1,
    rows), give or take a constant per row (only differences count); ``cuts``: the
    candidates whose two parts both look like digits, cheapest first. A cut's column
    in each row is the first one of its right part (1..width)."""
    width, rows = before.shape[0] - 1, before.shape[1]
    budget = max(1, round(width / (CUT_SPACING * height)))
    if budget == 1 or len(cuts) == 1:  # the cheapest, which is always kept
        return [(cuts[0], float(costs[0]))]
    every_row = np.arange(rows)
    centres = cuts.mean(axis=1)
    zeros, full = np.zeros(rows, np.int64), np.full(rows, width, np.int64)
    found = []  # (cut, cost, mean column), left to right
    # Cheapest first, a cut is kept unless it comes near one kept, or the parts it
    # makes between those kept do not look like digits. The cuts kept change only
    # when one is kept, so every candidate left is tried against them at once, and
    # the first that passes is the one a loop over them would keep.
    waiting = np.arange(len(cuts))
    while len(waiting) and len(found) < budget:
        if found:
            bounds = np.stack([zeros, *(f[0] for f in found), full])
            at = np.searchsorted([f[2] for f in found], centres[waiting])  # kept on its left
            lo, hi = bounds[at], bounds[at + 1]
            kept = np.clip(cuts[waiting], lo, hi)  # cuts never cross
            # The cuts kept never cross, so lo <= kept <= hi in every row.
            ink = np.diff(before[np.stack((lo, kept, hi)), every_row], axis=0)
            passes = _digit_like(ink.reshape(-1, rows), height, least).reshape(2, -1).all(axis=0)
            passes &= (np.abs(cuts[waiting, None] - bounds[None, 1:-1]).mean(axis=2)
                       >= SEAM_SPACING * height).all(axis=1)
            first = int(np.argmax(passes))
            if not passes[first]:
                break
            k, cut, at = int(waiting[first]), kept[first], int(at[first])
        else:
            k, at = int(waiting[0]), 0
            first, cut = 0, cuts[k]
        found.insert(at, (cut, float(costs[k]), float(centres[k])))
        waiting = waiting[first + 1 :]
    return [(cut, cost) for cut, cost, _ in found]


def _seam_table(energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative seam costs row by row from the first row, and each pixel's step
    (-1, 0, 1) to its column in the row before on its cheapest seam."""
    rows, width = energy.shape
    table = np.empty((rows, width + 2))
    table[:, 0] = table[:, -1] = np.inf  # walls either side
    table[0, 1:-1] = energy[0]
    side = np.empty(width)
    left, right, mid = table[:, :-2], table[:, 2:], table[:, 1:-1]
    # Row by row (views made once: the rows are short, and the loop is overhead).
    for above_left, above_right, above, row, cost in zip(
            left[:-1], right[:-1], mid[:-1], mid[1:], energy[1:], strict=True):
        np.minimum(above_left, above_right, out=side)
        side += DIAGONAL_COST
        np.minimum(side, above, out=row)
        row += cost
    # The steps depend on the row above only: all rows at once, once the table is done.
    side = np.minimum(left[:-1], right[:-1])
    side += DIAGONAL_COST
    steps = np.zeros((rows, width), np.int8)
    below = steps[1:]
    # 1 where the right neighbour above is the cheaper, else -1 (a tie goes left); then
    # 0 where the pixel straight above is cheaper than either plus DIAGONAL_COST.
    np.greater(left[:-1], right[:-1], out=below.view(bool))
    below *= 2
    below -= 1
    below *= side < mid[:-1]
    return table[:, 1:-1], steps


def _trace(steps_down: np.ndarray, steps_up: np.ndarray, rows: np.ndarray,
           cols: np.ndarray) -> np.ndarray:
    """(k, rows) the columns of the cheapest seams through (rows[k], cols[k]): up the
    downward steps, then down the upward ones.

    All seams walk together, one row a step, upwards and downwards at once; a walk
    stays at its start column until it reaches the row its seam starts from.
    """
    height, width = steps_down.shape
    k = len(cols)
    columns = np.arange(width)
    # Step i takes the upward walks from row height-1-i to the one above and the
    # downward walks from row i to the one below, through one table per step: the
    # upward walks index its first half, the downward ones its second.
    tables = np.empty((height - 1, 2 * width), np.int64)
    tables[:, :width] = columns + steps_down[:0:-1]
    tables[:, width:] = columns + width + steps_up[:-1]
    # The upward walks by their start row, then the downward ones: those that move at
    # a step (upward from a row at or above their start's, downward from one at or
    # below it) are one slice, which only grows from step to step.
    order = np.argsort(rows, kind="stable")
    starts = rows[order]
    walks = np.empty((height, 2 * k), np.int64)
    walks[:] = np.concatenate((cols[order], cols[order] + width))
    step = np.arange(height - 1)
    first = np.searchsorted(starts, height - 1 - step)  # the first upward walk moving
    last = k + np.searchsorted(starts, step, "right")  # after the last downward one
    for table, a, b, now, after in zip(tables, first.tolist(), last.tolist(), walks[:-1],
                                       walks[1:], strict=True):
        after[a:b] = table[now[a:b]]
    # walks[i + 1, :k] is each upward walk in row height-2-i, walks[i + 1, k:] each
    # downward one in row i+1, both the start column until the walk moves.
    upward = walks[::-1, :k]  # rows 0..height-1 (the last: the start column)
    downward = walks[:, k:] - width  # rows 0..height-1 (the first: the start column)
    paths = np.empty((k, height), np.int64)
    paths[order] = np.where(np.arange(height)[:, None] < starts, upward, downward).T
    return paths


def _digit_like(ink: np.ndarray, height: float, least: float) -> np.ndarray:
    """Per part, from its ink in each row (k, rows): tall enough and inky enough to
    hold a digit."""
    rows = ink > 0
    tall = rows.shape[1] - np.argmax(rows[:, ::-1], axis=1) - np.argmax(rows, axis=1)
    return rows.any(axis=1) & (tall >= SIDE_TALL * height) & (ink.sum(axis=1) >= least)


