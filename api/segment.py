"""Split a drawing of a multi-digit number into digits: segmentation by recognition.

numpy and Pillow only (this runs in the API process, which never imports
TensorFlow). Two halves around ONE forward pass of the model:

    plan = plan_number(img, max_digits)     # every candidate digit, as (k, 28, 28)
    probs = <the workers>(plan.crops)       # (k, 10) or (k, 11) answers, one task
    result = plan.decode(probs)             # the best reading, left to right

``plan_number`` works on the ink (api.preprocess.ink: any colours, any
transparency), scaled down so that the drawing is about ``WORK_HEIGHT`` px tall:

1. Pieces: the 8-connected components of the ink (api/seams.py). Dots (a dab of
   the brush) and specks (under ``SPECK`` of the digit height) are dropped.
2. Cuts: a piece wide enough to hold two digits gets candidate cuts, seams and
   slanted lines from its top to its bottom that cross little of its ink, each
   leaving a digit's worth of ink either side (api/seams.py), so that touching and
   overlapping neighbours can be parted along the curve where they meet.
3. Atoms: pieces and the parts between their cuts, left to right. A candidate
   digit is a run of consecutive atoms that could be one digit: at most
   ``MAX_PIECES`` strokes, none further than ``MERGE_GAP`` from the rest (the two
   strokes of a 4, the bar of a 5), and not wider than ``MAX_WIDTH``.
4. Every candidate is cut out (its own ink only; a neighbour's ink in its box
   stays out) and put through the MNIST recipe of /predict (api.preprocess.centred).

``Plan.decode`` picks the partition of the atoms into digits whose candidates'
scores add up highest (dynamic programming over the lattice of cuts). A
candidate's score is linear in ``FEATURES``: the model's top and second
probabilities (and its not_a_digit score when the model has one), its width and
height against the row's digit height, its ink, the gaps between its strokes, the
ink its cuts cross. ``WEIGHTS`` are fitted on drawn numbers by
tools/fit_segment.py (a structured perceptron on whole readings); the per-digit
bias is the prior against over-splitting. Refit them when the model changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from api.errors import ApiError
from api.preprocess import centred, ink
from api.seams import MIN_DIGIT_MASS, cuts, survey

DEFAULT_MAX_DIGITS = 12
WORK_HEIGHT = 64  # the ink is scaled (down only) so that it is about this tall
MAX_WORK_WIDTH = 2400
LEVEL = 64  # ink (0..255, strongest 255) at least this is part of a piece
SPECK = 0.16  # pieces whose longer side is under this fraction of the digit height
MIN_PIECE_PIXELS = 4
DOT = 2.0  # pieces whose longer side is under this many stroke widths are dots
# Candidates.
MAX_PIECES = 3  # pieces (strokes) in one digit
MAX_WIDTH = 1.35  # a candidate wider than this (times the digit height) is two digits
MERGE_GAP = 0.12  # strokes further apart than this (times the height) are not one digit
# The score scale at which exp(score) behaves as a probability over partitions
# (fitted with WEIGHTS, for the whole-string confidence).
SEGMENT_TEMPERATURE = 4.0
# A candidate's score: WEIGHTS . FEATURES (see features), fitted by tools/fit_segment.py.
WEIGHTS = {
    "log_top": 2.4890,
    "log_rest": -0.8000,
    "log_second": 0.2618,
    "one": -1.5009,
    "wide": 3.9274,
    "wide_over_75": -3.4610,
    "wide_over_100": -15.1665,
    "one_wide": 2.1352,
    "whole_wide": -2.8344,
    "short_of_75": -19.4356,
    "short_of_60": 18.3778,
    "light_short": -14.7327,
    "gaps": -10.5967,
    "cuts": 0.4821,
    "sides": -0.2590,
    "more_pieces": -1.7651,
    "partial": -3.6383,
    "log_digit": 1.1004,
    "log_not_digit": -1.1397,
    "bias": -2.0712,
}


def _too_many(found: int, limit: int) -> ApiError:
    return ApiError(422, "too_many_digits",
                    f"the drawing holds {found} digits or more; the limit is {limit}")


# ---------------------------------------------------------------- the plan


@dataclass
class Piece:
    """One connected component of the ink (work coordinates, exclusive ends)."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1
    own: np.ndarray  # (y1 - y0, x1 - x0) bool: its pixels


@dataclass
class Atom:
    """A piece, or the part of one between two cuts."""

    piece: int  # index into the plan's pieces
    own: np.ndarray  # bool, in its piece's box
    x0: int  # its columns, work coordinates
    x1: int
    y0: int  # its rows, work coordinates
    y1: int
    centre: float  # its mass' centre column
    mass: int  # pixels
    cut_before: float | None  # strokes crossed by the cut on its left, if any
    order: int = 0  # rank among its piece's atoms, left to right


@dataclass
class Candidate:
    first: int  # atoms [first, last) in left-to-right order
    last: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1, work coordinates
    shape: dict  # geometry, for the score (SHAPE_FEATURES)
    blank: bool = False  # too little ink for the MNIST recipe: never a digit


@dataclass
class Plan:
    crops: np.ndarray  # (k, 28, 28) uint8: every candidate, MNIST style
    candidates: list[Candidate]
    atoms: list[Atom]
    height: float  # the digit height, work pixels
    stroke: float  # the stroke width, work pixels
    scale: tuple[float, float]  # work pixels per image pixel (x, y)
    origin: tuple[int, int]  # image pixel of work pixel (0, 0)
    image_size: tuple[int, int]
    max_digits: int
    pieces: list[Piece] = field(default_factory=list)
    piece_atoms: list[int] = field(default_factory=list)  # atoms in each piece

    def decode(self, probs: np.ndarray) -> dict:
        return decode(self, probs)


def plan_number(img: Image.Image, max_digits: int = DEFAULT_MAX_DIGITS) -> Plan:
    """Every candidate digit of a drawing, ready for one forward pass."""
    image, origin = ink(img)
    return plan_ink(np.asarray(image), max_digits, origin, img.size)


def plan_ink(strength: np.ndarray, max_digits: int = DEFAULT_MAX_DIGITS,
             origin: tuple[int, int] = (0, 0),
             image_size: tuple[int, int] | None = None) -> Plan:
    """The plan for an ink map (h, w) uint8 whose (0, 0) is image pixel ``origin``."""
    h, w = strength.shape
    image_size = image_size or (w + origin[0], h + origin[1])
    scale = min(1.0, WORK_HEIGHT / h, MAX_WORK_WIDTH / w)
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        work = np.asarray(Image.fromarray(strength).resize(size, Image.Resampling.BOX))
        scale_xy = (size[0] / w, size[1] / h)
    else:
        work, scale_xy = strength, (1.0, 1.0)
    mask = work >= LEVEL
    labels, count, extents, sizes, stroke = survey(mask)
    if not count:
        raise ApiError(422, "blank_image", "the image has no ink: draw a digit first")
    heights = extents[:, 3] - extents[:, 1]
    longest = np.maximum(extents[:, 2] - extents[:, 0], heights)
    # A dab of the brush is a dot, not a digit; the digit height is that of the rest.
    keep = (longest >= DOT * stroke) & (sizes >= MIN_PIECE_PIXELS)
    if not keep.any():
        raise ApiError(422, "blank_image", "the image holds only dots: draw a digit first")
    tall = heights[keep]
    height = float(np.median(tall[tall >= 0.5 * tall.max()]))
    keep &= longest >= SPECK * height
    if np.count_nonzero(keep) > 3 * max_digits:
        raise _too_many(np.count_nonzero(keep) // 3, max_digits)
    pieces = []
    for i in np.flatnonzero(keep):
        x0, y0, x1, y1 = (int(v) for v in extents[i])
        pieces.append(Piece((x0, y0, x1, y1), labels[y0:y1, x0:x1] == i + 1))

    atoms: list[Atom] = []
    for index, (piece, found) in enumerate(zip(pieces, cuts(pieces, work, height, stroke),
                                               strict=True)):
        atoms.extend(_atoms(index, piece, found))
    atoms.sort(key=lambda a: a.centre)
    if len(atoms) > 4 * max_digits:
        raise _too_many(len(atoms) // 4, max_digits)

    plan = Plan(np.zeros((0, 28, 28), np.uint8), [], atoms, height, stroke,
                (float(scale_xy[0]), float(scale_xy[1])), origin, image_size, max_digits,
                pieces, np.bincount([a.piece for a in atoms], minlength=len(pieces)).tolist())
    faint = ~mask  # the pixels of no piece, dot or speck
    crops = []
    for first, last, gaps in _runs_of_atoms(atoms, height):
        candidate, crop = _candidate(plan, first, last, gaps, work, faint)
        plan.candidates.append(candidate)
        crops.append(crop)
    plan.crops = np.stack(crops)
    return plan


# ---------------------------------------------------------------- cuts


def _atoms(index: int, piece: Piece, cuts: list) -> list[Atom]:
    """A piece as one atom, or as the parts between its cuts."""
    x0, y0, x1, y1 = piece.box
    if not cuts:
        return [_atom(index, piece.box, piece.own, None, 0)]
    width = x1 - x0
    columns = np.arange(width)
    out: list[Atom] = []
    left = np.zeros(y1 - y0, np.int64)
    crossing = None
    for path, crosses in [*cuts, (np.full(y1 - y0, width, np.int64), None)]:
        part = piece.own & (columns >= left[:, None]) & (columns < path[:, None])
        out.append(_atom(index, piece.box, part, crossing, len(out)))
        left, crossing = path, crosses
    return out


def _atom(index, box, part, crossing, order) -> Atom:
    x0, y0 = box[:2]
    weights = part.sum(axis=0)
    cols = np.flatnonzero(weights)
    rows = np.flatnonzero(part.any(axis=1))
    mass = int(weights.sum())
    centre = float(weights @ np.arange(len(weights)) / mass)
    return Atom(index, part, x0 + int(cols[0]), x0 + int(cols[-1]) + 1,
                y0 + int(rows[0]), y0 + int(rows[-1]) + 1, x0 + centre, mass, crossing, order)


# ---------------------------------------------------------------- candidates


def _runs_of_atoms(atoms: list[Atom], height: float):
    """(first, last, gaps): runs of consecutive atoms that could be one digit."""
    for i in range(len(atoms)):
        x0, x1 = atoms[i].x0, atoms[i].x1
        pieces = {atoms[i].piece}
        gaps = 0.0
        yield i, i + 1, gaps
        for j in range(i + 2, len(atoms) + 1):
            atom = atoms[j - 1]
            if atom.piece not in pieces:
                gap = max(0.0, atom.x0 - x1, x0 - atom.x1)
                if gap > MERGE_GAP * height or len(pieces) >= MAX_PIECES:
                    break
                gaps += gap
                pieces.add(atom.piece)
            x0, x1 = min(x0, atom.x0), max(x1, atom.x1)
            if x1 - x0 > MAX_WIDTH * height:
                break
            yield i, j, gaps


def candidate_mask(plan: Plan, first: int, last: int):
    """The pixels of atoms [first, last): (box x0, y0, x1, y1 in work coordinates, mask)."""
    members = plan.atoms[first:last]
    # The box of the atoms' pixels is the one around their own boxes.
    x0, y0 = min(a.x0 for a in members), min(a.y0 for a in members)
    x1, y1 = max(a.x1 for a in members), max(a.y1 for a in members)
    mine = np.zeros((y1 - y0, x1 - x0), bool)
    for atom in members:
        px0, py0 = plan.pieces[atom.piece].box[:2]
        mine[atom.y0 - y0 : atom.y1 - y0, atom.x0 - x0 : atom.x1 - x0] |= atom.own[
            atom.y0 - py0 : atom.y1 - py0, atom.x0 - px0 : atom.x1 - px0]
    return (x0, y0, x1, y1), mine


def _candidate(plan: Plan, first: int, last: int, gaps: float, work, faint):
    """One candidate: its own ink in its box, through the MNIST recipe. ``faint``: the
    pixels of work in no piece (nor dot, nor speck)."""
    members = plan.atoms[first:last]
    box, mine = candidate_mask(plan, first, last)
    x0, y0, x1, y1 = box
    # Faint edge pixels next to its own ink belong to it; a neighbour's ink does not.
    keep = _grow(mine)
    keep &= mine | faint[y0:y1, x0:x1]
    values = work[y0:y1, x0:x1] * keep  # uint8
    orders = {(a.piece, a.order) for a in members}
    # The cuts on its sides: on the left of an atom whose left neighbour is not in it
    # (their strokes crossed count), on the right of one whose right neighbour is not.
    cut_left = [a.cut_before for a in members
                if a.cut_before is not None and (a.piece, a.order - 1) not in orders]
    cuts = sum(cut_left)
    sides = len(cut_left) + sum(1 for a in members if (a.piece, a.order + 1) not in orders
                                and a.order + 1 < plan.piece_atoms[a.piece])
    whole = all(sum(1 for a in members if a.piece == piece) == plan.piece_atoms[piece]
                for piece in {a.piece for a in members})
    candidate = Candidate(first, last, box, {
        "wide": (box[2] - box[0]) / plan.height,
        "tall": (box[3] - box[1]) / plan.height,
        "light": sum(a.mass for a in members) / (MIN_DIGIT_MASS * plan.height * plan.stroke),
        "gaps": gaps / plan.height,
        "cuts": cuts,
        "sides": sides,
        "pieces": len({a.piece for a in members}),
        "partial": 0.0 if whole else 1.0,
    })
    try:
        crop = centred(Image.frombuffer("L", values.shape[::-1], values, "raw", "L", 0, 1))
    except ApiError:  # too little ink to be a digit
        candidate.blank = True
        crop = np.zeros((28, 28), np.uint8)
    return candidate, crop


def _grow(mask: np.ndarray) -> np.ndarray:
    """The mask and its 8 neighbours."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    out = rows.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


# ---------------------------------------------------------------- decoding

FEATURES = ("log_top", "log_rest", "log_second", "one", "wide", "wide_over_75",
            "wide_over_100", "one_wide", "whole_wide", "short_of_75", "short_of_60",
            "light_short", "gaps", "cuts", "sides", "more_pieces", "partial",
            "log_digit", "log_not_digit", "bias")


def features(plan: Plan, probs: np.ndarray) -> np.ndarray:
    """(k, len(FEATURES)): what the score of each candidate is made of. ``probs`` is
    (k, 10), or (k, 11) from a model whose last output is not_a_digit (models/outputs.py);
    without that output its two features are 0."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] > 10:
        not_digit = np.clip(probs[:, 10], 1e-9, 1 - 1e-9)
        digit_logs = np.stack((np.log1p(-not_digit), np.log(not_digit)), axis=1)
    else:
        digit_logs = np.zeros((len(probs), 2))
    probs = probs[:, :10]
    ranked = np.sort(probs, axis=1)
    top, second = ranked[:, -1], ranked[:, -2]
    one = (probs.argmax(axis=1) == 1).astype(np.float64)
    rows = []
    for k, c in enumerate(plan.candidates):
        g = c.shape
        rows.append((
            math.log(max(top[k], 1e-9)), math.log(max(1.0 - top[k], 1e-9)),
            math.log(max(second[k], 1e-9)), one[k],
            g["wide"], max(0.0, g["wide"] - 0.75), max(0.0, g["wide"] - 1.0),
            one[k] * g["wide"], (1.0 - g["partial"]) * g["wide"],
            max(0.0, 0.75 - g["tall"]), max(0.0, 0.6 - g["tall"]),
            max(0.0, 1.0 - g["light"]), g["gaps"], g["cuts"], g["sides"], g["pieces"] - 1,
            g["partial"], digit_logs[k, 0], digit_logs[k, 1], 1.0))
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURES))


def digit_scores(plan: Plan, probs: np.ndarray) -> np.ndarray:
    """Per candidate, its score as one digit of the reading: WEIGHTS . FEATURES,
    fitted by tools/fit_segment.py. The best reading has the highest sum."""
    out = features(plan, probs) @ np.array([WEIGHTS[name] for name in FEATURES])
    out[[c.blank for c in plan.candidates]] = -np.inf
    return out


def best_path(spans: list[tuple[int, int]], scores: np.ndarray, n: int) -> list[int]:
    """The candidates (spans of atoms [first, last)) that cover atoms 0..n once, in
    order, with the highest total score."""
    best = np.full(n + 1, -np.inf)
    best[0] = 0.0
    back = np.full(n + 1, -1)
    for k in sorted(range(len(spans)), key=lambda k: spans[k][1]):
        first, last = spans[k]
        score = best[first] + scores[k]
        if score > best[last]:
            best[last], back[last] = score, k
    chosen = []
    j = n
    while j > 0:
        k = int(back[j])
        chosen.append(k)
        j = spans[k][0]
    return chosen[::-1]


def segmentation_probability(spans: list[tuple[int, int]], scores: np.ndarray, n: int,
                             chosen: list[int], temperature: float) -> float:
    """How sure the scores are of the chosen partition: exp(its score / T) over the sum
    of exp(score / T) over every partition of the atoms (the forward algorithm)."""
    total = np.full(n + 1, -np.inf)
    total[0] = 0.0
    scaled = np.asarray(scores, dtype=np.float64) / temperature
    for k in sorted(range(len(spans)), key=lambda k: spans[k][1]):
        first, last = spans[k]
        total[last] = np.logaddexp(total[last], total[first] + scaled[k])
    return float(np.exp(min(0.0, scaled[chosen].sum() - total[n])))


def decode(plan: Plan, probs: np.ndarray) -> dict:
    """The best partition of the atoms into digits, read left to right. ``probs``:
    the model's (k, 10) or (k, 11) answers for the plan's k candidates."""
    rows = np.asarray(probs, dtype=np.float64)
    if rows.ndim != 2 or len(rows) != len(plan.candidates) or rows.shape[1] < 10:
        raise ValueError(f"{rows.shape} answers for {len(plan.candidates)} candidates")
    spans = [(c.first, c.last) for c in plan.candidates]
    scores = digit_scores(plan, rows)
    chosen = best_path(spans, scores, len(plan.atoms))
    probs = rows[:, :10]
    if len(chosen) > plan.max_digits:
        raise _too_many(len(chosen), plan.max_digits)
    digits = []
    for k in chosen:
        p = probs[k]
        d = int(np.argmax(p))
        digits.append({
            "digit": d,
            "confidence": float(p[d]),
            "probabilities": {str(i): float(v) for i, v in enumerate(p)},
            "box": _image_box(plan, plan.candidates[k].box),
        })
    # The whole string is right when the partition is and every digit is read right.
    confidence = segmentation_probability(spans, scores, len(plan.atoms), chosen,
                                          SEGMENT_TEMPERATURE)
    confidence *= float(np.prod([dg["confidence"] for dg in digits]))
    return {"number": "".join(str(dg["digit"]) for dg in digits), "digits": digits,
            "confidence": confidence}


def _image_box(plan: Plan, box) -> list[int]:
    (sx, sy), (ox, oy) = plan.scale, plan.origin
    x0 = max(0, math.floor(box[0] / sx) + ox)
    y0 = max(0, math.floor(box[1] / sy) + oy)
    x1 = min(plan.image_size[0], math.ceil(box[2] / sx) + ox)
    y1 = min(plan.image_size[1], math.ceil(box[3] / sy) + oy)
    return [x0, y0, x1 - x0, y1 - y0]
