"""Numbers drawn on a wide canvas, and the segmenter's candidate digits cut from them.

The number endpoint (api/segment.py) cuts a drawing into candidate digits and lets
the model read every one of them. Most candidates of a crowded number are not one
clean digit: a digit with a sliver of its neighbour, half a digit, two digits in one
crop. The ``part`` training family (``part_crops``) shows the model exactly those
crops, labelled from the drawing's own layers:

* a candidate that holds nearly all of one digit's ink and little else is that digit
  (a neighbour's sliver included, as the cuts leave it);
* one that holds most of two digits, or only a fragment of one, is not_a_digit;
* the ambiguous rest is left out.

The digits are drawn with the training renderers (trainer/render.py: the hand-made
templates, Hershey fonts, the training fonts, and MNIST *training* digits redrawn);
the evaluation set (tools/numbers_set.py) draws its numbers with other renderers and
MNIST test digits, and shares only the layout below: the heights, baselines and
clearances between neighbours, from wide apart to crossing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.drawing import Pen, font_glyph, paint, place

MARGIN = 8
SIZE_JITTER = 0.12  # each digit's height: the number's times 1 +- this
BASELINE_JITTER = 0.07  # each digit's bottom moves by +- this fraction of the height
INK_LEVEL = 128  # alpha at least this is ink, for classifying pairs and boxes
OWNER_LEVEL = 64  # alpha from which a canvas pixel belongs to a digit
# Gap classes: (name, weight when the number is spaced, weight when it is crowded,
# clearance range). Clearances are fractions of the digit height, or of the brush
# width for the negative (touching, overlapping) ones.
GAPS = (
    ("wide", 0.25, 0.0, (0.3, 0.7), "height"),
    ("normal", 0.5, 0.35, (0.08, 0.3), "height"),
    ("tight", 0.25, 0.3, (0.02, 0.08), "height"),
    ("touch", 0.0, 0.25, (-0.5, 0.0), "brush"),
    ("cross", 0.0, 0.1, (-1.0, -0.5), "brush"),
)
# Candidate labels (shares of a digit's own ink, and of the candidate's ink).
WHOLE_COVERAGE = 0.8  # a candidate is digit d when it holds this much of d's ink,
WHOLE_PURITY = 0.7  # d is this much of its ink,
STRAY_COVERAGE = 0.3  # and no other digit gives this much of its own
MERGED_COVERAGE = 0.5  # two digits with this much each: not one digit
FRAGMENT_COVERAGE = 0.45  # at most this much of any digit, and pure: a fragment
FRAGMENT_PURITY = 0.8


# ---------------------------------------------------------------- layout


def gap_class(crowded: bool, rng: np.random.Generator):
    weights = np.array([g[2] if crowded else g[1] for g in GAPS])
    return GAPS[rng.choice(len(GAPS), p=weights / weights.sum())]


def clearances(n: int, crowded: bool, rng: np.random.Generator) -> tuple[list, list[float]]:
    """Per neighbour pair of an n-digit number: its GAPS class and the fraction of that
    class's unit; a crowded number has at least one pair touching or crossing."""
    gaps = [gap_class(crowded, rng) for _ in range(n - 1)]
    if crowded and n > 1 and all(g[0] not in ("touch", "cross") for g in gaps):
        gaps[rng.integers(n - 1)] = GAPS[3 + rng.integers(2)]
    return gaps, [rng.uniform(*g[3]) for g in gaps]


def tight(alpha: np.ndarray) -> np.ndarray:
    """An alpha image cropped to its ink (1x1 and empty when it has none)."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if not len(rows):
        return np.zeros((1, 1), np.uint8)
    return alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _profile(alpha: np.ndarray, right: bool) -> np.ndarray:
    """Per row, the rightmost (or leftmost) ink column; -1 (or a large value) if none."""
    ink = alpha >= INK_LEVEL
    if right:
        last = ink.shape[1] - 1 - np.argmax(ink[:, ::-1], axis=1)
        return np.where(ink.any(axis=1), last, -1)
    return np.where(ink.any(axis=1), np.argmax(ink, axis=1), 1 << 20)


def pair_class(a: np.ndarray, b: np.ndarray) -> str:
    """Two digits' full-canvas ink masks: touching, overlapping or separated."""
    ca, cb = np.flatnonzero(a.any(axis=0)), np.flatnonzero(b.any(axis=0))
    if not len(ca) or not len(cb):
        return "separated"
    lo, hi = max(ca[0], cb[0]) - 1, min(ca[-1], cb[-1]) + 1
    if lo <= hi:
        sa = np.pad(a[:, max(lo, 0) : hi + 1], 1)
        grown = sa[1:-1, 1:-1].copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                grown |= sa[1 + dy : sa.shape[0] - 1 + dy, 1 + dx : sa.shape[1] - 1 + dx]
        if (grown & b[:, max(lo, 0) : hi + 1]).any():
            return "touching"
    return "overlapping" if ca[-1] >= cb[0] else "separated"


@dataclass
class Row:
    canvas: np.ndarray  # (height, width) uint8 alpha of the whole number
    origins: list[list[int]]  # per digit: canvas x, y of its alpha's top-left pixel
    boxes: list[list[int]]  # per digit: [x, y, w, h] of its ink
    pairs: list[str]  # per neighbour pair: separated | overlapping | touching
    category: str  # touching if any pair is, else overlapping if any is, else separated


def lay_out(alphas: list[np.ndarray], gaps: list, fractions: list[float], digit_h: float,
            brush: float, rng: np.random.Generator, width: int, height: int) -> Row:
    """Digits (alpha images, left to right) on one baseline with the given clearances:
    each gap is a GAPS entry and a fraction of its range's unit, measured between the
    inks where their rows meet (negative: touching or crossing by that much)."""
    usable_h = height - 2 * MARGIN
    base = MARGIN + (usable_h + digit_h) / 2 + rng.uniform(-1, 1) * max(
        0.0, (usable_h - digit_h * (1 + SIZE_JITTER + BASELINE_JITTER)) / 2)
    tops, lefts = [], []
    for i, alpha in enumerate(alphas):
        bottom = base + rng.uniform(-BASELINE_JITTER, BASELINE_JITTER) * digit_h
        top = int(round(min(max(bottom - alpha.shape[0], MARGIN),
                            height - MARGIN - alpha.shape[0])))
        tops.append(max(top, 0))
        if i == 0:
            lefts.append(0)
            continue
        prev, (_, _, _, _, unit) = alphas[i - 1], gaps[i - 1]
        clearance = fractions[i - 1] * (digit_h if unit == "height" else brush)
        # Shared rows: the previous digit's right edge against this one's left edge.
        r_prev = np.full(height + 2 * max(a.shape[0] for a in alphas), -1)
        l_this = np.full_like(r_prev, 1 << 20)
        rp = _profile(prev, right=True)
        r_prev[tops[i - 1] : tops[i - 1] + len(rp)] = np.where(rp >= 0, rp + lefts[i - 1], -1)
        lp = _profile(alpha, right=False)
        l_this[tops[i] : tops[i] + len(lp)] = lp
        shared = (r_prev >= 0) & (l_this < 1 << 20)
        if shared.any():
            touch_at = int(np.max(r_prev[shared] - l_this[shared])) + 1
        else:
            touch_at = lefts[i - 1] + prev.shape[1]
        lefts.append(touch_at + int(round(clearance)))
        lefts[-1] = max(lefts[-1], lefts[i - 1] + 1)  # never behind its neighbour

    span = max(lf + a.shape[1] for lf, a in zip(lefts, alphas, strict=True))
    room = width - 2 * MARGIN - span
    shift = MARGIN + (rng.uniform(0, room) if room > 0 else room / 2)
    layers, boxes, origins = [], [], []
    canvas = np.zeros((height, width), np.uint8)
    for alpha, top, left in zip(alphas, tops, lefts, strict=True):
        x0 = int(round(left + shift))
        origins.append([x0, top])
        layer = np.zeros((height, width), np.uint8)
        ys, xs = slice(top, top + alpha.shape[0]), slice(max(x0, 0), x0 + alpha.shape[1])
        layer[ys, xs] = alpha[: height - top, max(0, -x0) : max(0, -x0) + width - max(x0, 0)]
        np.maximum(canvas, layer, out=canvas)
        mask = layer >= INK_LEVEL
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        boxes.append([int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1),
                      int(rows[-1] - rows[0] + 1)] if len(rows) else [0, 0, 0, 0])
        layers.append(mask)
    pairs = [pair_class(layers[i], layers[i + 1]) for i in range(len(alphas) - 1)]
    if "touching" in pairs:
        category = "touching"
    elif "overlapping" in pairs:
        category = "overlapping"
    else:
        category = "separated"
    return Row(canvas, origins, boxes, pairs, category)


# ---------------------------------------------------------------- candidate labels


def owners(alphas: list[np.ndarray], origins, size: tuple[int, int]) -> np.ndarray:
    """(height, width) int: which digit's ink each canvas pixel is (-1: none)."""
    width, height = size
    best = np.zeros((height, width), np.uint8)
    owner = np.full((height, width), -1, np.int16)
    for i, (alpha, (x0, y0)) in enumerate(zip(alphas, origins, strict=True)):
        ys, xs = slice(max(y0, 0), min(y0 + alpha.shape[0], height)), slice(
            max(x0, 0), min(x0 + alpha.shape[1], width))
        patch = alpha[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        stronger = (patch >= OWNER_LEVEL) & (patch > best[ys, xs])
        best[ys, xs] = np.where(stronger, patch, best[ys, xs])
        owner[ys, xs] = np.where(stronger, i, owner[ys, xs])
    return owner


def candidate_ink(plan, owner: np.ndarray, digits: int):
    """How much of each digit's ink each candidate of a plan holds: (candidates,
    digits + 1) pixel counts, column 0 for pixels of no digit (faint edges), then
    digit by digit; and (digits,): each digit's pixels among all the plan's atoms."""
    (sx, sy), (ox, oy) = plan.scale, plan.origin
    counts = np.zeros((len(plan.atoms), digits + 1))
    for k, atom in enumerate(plan.atoms):
        x0, y0 = plan.pieces[atom.piece].box[:2]
        ys, xs = np.nonzero(atom.own)
        cx = np.clip((ox + (xs + x0 + 0.5) / sx).astype(int), 0, owner.shape[1] - 1)
        cy = np.clip((oy + (ys + y0 + 0.5) / sy).astype(int), 0, owner.shape[0] - 1)
        counts[k] = np.bincount(owner[cy, cx] + 1, minlength=digits + 1)[: digits + 1]
    ink = np.zeros((len(plan.candidates), digits + 1))
    for k, c in enumerate(plan.candidates):
        ink[k] = counts[c.first : c.last].sum(axis=0)
    return ink, counts[:, 1:].sum(axis=0)


def whole_digit(ink: np.ndarray, per_digit: np.ndarray):
    """Per candidate (candidate_ink's): (its main digit, the share of the candidate's
    pixels that are that digit's, the share of that digit's ink it holds, the largest
    share of another digit's ink it holds)."""
    digits = ink[:, 1:]
    main = digits.argmax(axis=1)
    mine = digits[np.arange(len(digits)), main]
    purity = mine / np.maximum(ink.sum(axis=1), 1)
    coverage = digits / np.maximum(per_digit, 1)
    own = coverage[np.arange(len(digits)), main]
    others = coverage.copy()
    others[np.arange(len(digits)), main] = 0
    return main, purity, own, others.max(axis=1, initial=0.0)


def part_labels(ink: np.ndarray, per_digit: np.ndarray, label: str, blank) -> np.ndarray:
    """Per candidate (candidate_ink's): its digit, 10 (not_a_digit), or -1 (left out:
    neither clearly one digit nor clearly not)."""
    main, purity, own, other = whole_digit(ink, per_digit)
    digit = np.array([int(ch) for ch in label])[main]
    whole = (purity >= WHOLE_PURITY) & (own >= WHOLE_COVERAGE) & (other < STRAY_COVERAGE)
    merged = (own >= MERGED_COVERAGE) & (other >= MERGED_COVERAGE)
    fragment = (np.maximum(own, other) <= FRAGMENT_COVERAGE) & (purity >= FRAGMENT_PURITY)
    out = np.where(whole, digit, np.where(merged | fragment, 10, -1))
    out[np.asarray(blank, bool) | (ink[:, 1:].sum(axis=1) == 0)] = -1
    return out


# ---------------------------------------------------------------- the part family

WIDTH, HEIGHT = 840, 280  # the page's number canvas
LENGTHS = (2, 3, 4, 5, 6)
CROWDED = 0.7  # share of numbers with at least one touching or crossing pair
HEIGHT_RANGE = (0.4, 0.88)  # the number's digit height, fraction of the canvas height
BRUSH = (8.0, 24.0)
MAX_BRUSH_RATIO = 0.22
STYLES = (("mnist", 0.5), ("skeleton", 0.3), ("hershey", 0.1), ("font", 0.1))


def _digit_alpha(style: str, d: int, rng, pen: Pen, mnist_pool) -> np.ndarray:
    """One digit drawn with a training renderer, cropped to its ink."""
    from trainer import render, templates

    if style == "font":
        paths = render.fonts_for()
        canvas = font_glyph(paths[int(rng.integers(len(paths)))], str(d), rng, pen)
    else:
        if style == "mnist":
            strokes = render.mnist_strokes(mnist_pool[d][rng.integers(len(mnist_pool[d]))], rng)
        elif style == "hershey":
            font = render.TRAIN_HERSHEY[int(rng.integers(len(render.TRAIN_HERSHEY)))]
            strokes = render.hershey_pen(render.hershey_strokes(font, str(d)), rng)
        else:
            strokes = render.pen_strokes(templates.digit(d, rng), rng)
        canvas = paint(place(strokes, pen, rng), pen)
    return tight(np.asarray(canvas)[..., 3])


def draw_number(rng: np.random.Generator, mnist_pool) -> tuple[str, Row, list[np.ndarray]]:
    """One number of 2-6 digits on the page's number canvas, in one training style."""
    n = int(rng.choice(LENGTHS))
    label = "".join(str(d) for d in rng.integers(0, 10, n))
    names, weights = zip(*STYLES, strict=True)
    style = names[rng.choice(len(names), p=np.array(weights) / sum(weights))]
    crowded = rng.random() < CROWDED
    gaps, fractions = clearances(n, crowded, rng)
    # Digits about as wide as tall at most: the row fits the canvas at this height.
    digit_h = min(rng.uniform(*HEIGHT_RANGE) * (HEIGHT - 2 * MARGIN) / 1.2,
                  (WIDTH - 2 * MARGIN) / (n * 1.25))
    brush = min(rng.uniform(*BRUSH), MAX_BRUSH_RATIO * digit_h)
    sizes = 1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER, n)
    alphas = [_digit_alpha(style, int(ch), rng, Pen(digit_h * k, brush, False), mnist_pool)
              for ch, k in zip(label, sizes, strict=True)]
    return label, lay_out(alphas, gaps, fractions, digit_h, brush, rng, WIDTH, HEIGHT), alphas


def part_crops(rng: np.random.Generator, count: int, mnist) -> tuple[np.ndarray, np.ndarray]:
    """``count`` labelled candidate crops (28x28, as the endpoint sends them) of drawn
    numbers: (images, labels 0..10). ``mnist`` = (images, labels) to redraw digits from."""
    from api.errors import ApiError
    from api.segment import plan_number
    from trainer.drawing import canvas_from_alpha

    pool = {d: mnist[0][mnist[1] == d] for d in range(10)}
    images, labels = [], []
    total = 0
    while total < count:
        label, row, alphas = draw_number(rng, pool)
        canvas = canvas_from_alpha(row.canvas, bool(rng.random() < 0.2))
        try:
            plan = plan_number(canvas)
        except ApiError:
            continue
        ink, per_digit = candidate_ink(plan, owners(alphas, row.origins, (WIDTH, HEIGHT)),
                                       len(label))
        found = part_labels(ink, per_digit, label, [c.blank for c in plan.candidates])
        keep = found >= 0
        images.append(plan.crops[keep])
        labels.append(found[keep])
        total += int(keep.sum())
    return (np.concatenate(images)[:count],
            np.concatenate(labels)[:count].astype(np.int64))

