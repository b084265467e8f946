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

``Plan.decode`` picks the reading (api/lattice.py: the atoms split into digits left
to right, two neighbours sharing at most one narrow atom between their cuts) whose
scores add up highest, by dynamic programming. A digit's score is linear in
``EDGE_FEATURES``: the model's top and second probabilities (and its not_a_digit
score when the model has one), its width and height against the row's digit
height, its ink, the gaps between its strokes, the ink its cuts cross, the atom it
shares (the model's answer weighs differently for a part of a piece). Two
neighbours' score is linear in ``PAIR_FEATURES``: how their columns overlap, how
their heights and lines differ, how wide both are together, whether both are parts
of pieces. ``WEIGHTS`` are fitted on drawn
numbers by tools/fit_segment.py (a structured perceptron on whole readings); the
per-digit bias is the prior against over-splitting. Refit them when the model
changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from api.errors import ApiError
from api.lattice import Lattice, best_path, build, probability
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
# Where two digits' strokes run along each other no cut parts them, but two cuts close
# together leave the stroke they share as an atom of its own: a reading may give such
# an atom (inside a piece, cuts on both sides) to both neighbours.
SHARE_WIDTH = 1.0  # a shared atom is at most this wide (times the digit height)
# The score scale at which exp(score) behaves as a probability over partitions
# (fitted with WEIGHTS, for the whole-string confidence).
SEGMENT_TEMPERATURE = 4.0
# A reading's score: WEIGHTS . EDGE_FEATURES for each digit, WEIGHTS . PAIR_FEATURES for
# each two neighbours (see lattice_scores), fitted by tools/fit_segment.py.
WEIGHTS = {
    "log_top": 5.7218,
    "log_rest": -0.8122,
    "log_second": 0.4861,
    "one": 0.7848,
    "wide": 3.7068,
    "wide_over_75": -2.3100,
    "wide_over_100": -11.8138,
    "one_wide": 2.5922,
    "whole_wide": -5.6997,
    "short_of_75": -19.0658,
    "short_of_60": 18.8689,
    "light_short": -10.2788,
    "gaps": -9.0074,
    "cuts": -1.1596,
    "sides": -0.7210,
    "more_pieces": 2.0150,
    "partial": -2.4081,
    "log_digit": 0.9528,
    "log_not_digit": -3.8535,
    "bias": -5.0970,
    "partial_log_top": -4.4963,
    "partial_log_rest": -0.5018,
    "partial_log_not_digit": 2.8393,
    "shared": -1.6299,
    "shared_wide": -0.9598,
    "shared_light": 3.2114,
    "pair_covered": -3.1696,
    "pair_heights": -2.0092,
    "pair_middles": -0.5210,
    "pair_bottoms": -2.4897,
    "pair_span": 0.4011,
    "pair_parts": 3.3029,
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
    # Its ink as a candidate shows it (see _inks): values of work in ink_box.
    ink: np.ndarray | None = None
    ink_box: tuple[int, int, int, int] = (0, 0, 0, 0)  # x0, y0, x1, y1


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
    lattice: Lattice | None = None  # the readings (api/lattice.py)
    pair_x: np.ndarray | None = None  # (pairs, len(PAIR_FEATURES)): see _pair_features

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
    _inks(plan, work, ~mask)
    crops = []
    for first, last, gaps in _runs_of_atoms(atoms, height):
        candidate, crop = _candidate(plan, first, last, gaps)
        plan.candidates.append(candidate)
        crops.append(crop)
    plan.crops = np.stack(crops)
    plan.lattice = build([(c.first, c.last) for c in plan.candidates],
                         [_shareable(plan, a) for a in atoms], len(atoms))
    plan.pair_x = _pair_features(plan)
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


def _inks(plan: Plan, work: np.ndarray, faint: np.ndarray) -> None:
    """Each atom's ink as its candidates show it: its own pixels, and the faint edge
    pixels next to them (``faint``: the pixels of work in no piece, dot or speck); a
    neighbour's ink stays out. A candidate's ink is the union of its atoms' (a
    pixel's 8 neighbours of a union are the union of each one's)."""
    h, w = work.shape
    for atom in plan.atoms:
        px0, py0 = plan.pieces[atom.piece].box[:2]
        x0, y0 = max(atom.x0 - 1, 0), max(atom.y0 - 1, 0)
        x1, y1 = min(atom.x1 + 1, w), min(atom.y1 + 1, h)
        own = np.zeros((y1 - y0, x1 - x0), bool)
        own[atom.y0 - y0 : atom.y1 - y0, atom.x0 - x0 : atom.x1 - x0] = atom.own[
            atom.y0 - py0 : atom.y1 - py0, atom.x0 - px0 : atom.x1 - px0]
        keep = own | (_grow(own) & faint[y0:y1, x0:x1])
        atom.ink, atom.ink_box = work[y0:y1, x0:x1] * keep, (x0, y0, x1, y1)


def _candidate(plan: Plan, first: int, last: int, gaps: float):
    """One candidate: its atoms' ink (_inks) in the box of their own pixels, through
    the MNIST recipe."""
    members = plan.atoms[first:last]
    x0, y0 = min(a.x0 for a in members), min(a.y0 for a in members)
    x1, y1 = max(a.x1 for a in members), max(a.y1 for a in members)
    box = (x0, y0, x1, y1)
    values = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for atom in members:
        ax0, ay0 = atom.ink_box[:2]
        cx0, cy0 = max(ax0, x0), max(ay0, y0)
        cx1, cy1 = min(atom.ink_box[2], x1), min(atom.ink_box[3], y1)
        into = values[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        np.maximum(into, atom.ink[cy0 - ay0 : cy1 - ay0, cx0 - ax0 : cx1 - ax0], out=into)
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
        crop = centred(values)
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


# ---------------------------------------------------------------- the lattice


def _shareable(plan: Plan, atom: Atom) -> bool:
    """An atom between two cuts of one piece, narrow enough to be a shared stroke."""
    return (atom.cut_before is not None and atom.order + 1 < plan.piece_atoms[atom.piece]
            and atom.x1 - atom.x0 <= SHARE_WIDTH * plan.height)


def _pair_features(plan: Plan) -> np.ndarray:
    """(pairs, len(PAIR_FEATURES)): two digits side by side, by their boxes: how much
    of the narrower one's columns the other covers, how their heights differ, how
    far apart their middles and their bottoms are, how wide both are together (times
    the digit height), and whether both are parts of pieces. The digits of one
    number are alike in size and line up; a digit cut in two is not."""
    lattice = plan.lattice
    first, second = lattice.edges[lattice.pairs, 2].reshape(-1, 2).T  # their candidates
    boxes = np.array([c.box for c in plan.candidates], np.float64).reshape(-1, 4)
    a, b = boxes[first], boxes[second]
    narrower = np.maximum(np.minimum(a[:, 2] - a[:, 0], b[:, 2] - b[:, 0]), 1.0)
    covered = np.maximum(0.0, np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]))
    heights = np.log(np.maximum(a[:, 3] - a[:, 1], 1.0) / np.maximum(b[:, 3] - b[:, 1], 1.0))
    middles = np.abs(a[:, 1] + a[:, 3] - b[:, 1] - b[:, 3]) / (2 * plan.height)
    bottoms = np.abs(a[:, 3] - b[:, 3]) / plan.height
    span = (np.maximum(a[:, 2], b[:, 2]) - np.minimum(a[:, 0], b[:, 0])) / plan.height
    partial = np.array([c.shape["partial"] for c in plan.candidates]).reshape(-1)
    parts = partial[first] * partial[second]
    return np.stack((covered / narrower, np.abs(heights), middles, bottoms, span, parts),
                    axis=1)


# ---------------------------------------------------------------- decoding

_OWN_FEATURES = ("log_top", "log_rest", "log_second", "one", "wide", "wide_over_75",
                 "wide_over_100", "one_wide", "whole_wide", "short_of_75", "short_of_60",
                 "light_short", "gaps", "cuts", "sides", "more_pieces", "partial",
                 "log_digit", "log_not_digit", "bias")
# A part of a piece that the model reads with confidence is often a fragment of a digit
# (the stem of a 4 reads as a 1): for parts, these answers weigh differently.
_PARTIAL_OF = ("log_top", "log_rest", "log_not_digit")
FEATURES = _OWN_FEATURES + tuple(f"partial_{name}" for name in _PARTIAL_OF)
# An edge's features: its candidate's, then those of the atom it shares, if any.
SHARE_FEATURES = ("shared", "shared_wide", "shared_light")
EDGE_FEATURES = FEATURES + SHARE_FEATURES
PAIR_FEATURES = ("pair_covered", "pair_heights", "pair_middles", "pair_bottoms", "pair_span",
                 "pair_parts")


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
    out = np.asarray(rows, dtype=np.float64).reshape(-1, len(_OWN_FEATURES))
    partial = out[:, _OWN_FEATURES.index("partial"), None]
    return np.hstack((out, partial * out[:, [_OWN_FEATURES.index(n) for n in _PARTIAL_OF]]))


def edge_features(plan: Plan, probs: np.ndarray) -> np.ndarray:
    """(edges, len(EDGE_FEATURES)): what the score of each edge of the plan's lattice
    is made of."""
    edges = plan.lattice.edges
    shared = np.zeros((len(edges), len(SHARE_FEATURES)))
    for e in np.flatnonzero(edges[:, 3] >= 0):
        atom = plan.atoms[edges[e, 3]]
        shared[e] = (1.0, (atom.x1 - atom.x0) / plan.height,
                     atom.mass / (MIN_DIGIT_MASS * plan.height * plan.stroke))
    return np.hstack((features(plan, probs)[edges[:, 2]], shared))


def lattice_scores(plan: Plan, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per edge, its score as one digit of the reading (WEIGHTS . EDGE_FEATURES; -inf
    for a blank candidate), and per pair, its score (WEIGHTS . PAIR_FEATURES); fitted
    by tools/fit_segment.py. The best reading has the highest sum."""
    edge = edge_features(plan, probs) @ np.array([WEIGHTS[name] for name in EDGE_FEATURES])
    edge[[plan.candidates[k].blank for k in plan.lattice.edges[:, 2]]] = -np.inf
    pair = plan.pair_x @ np.array([WEIGHTS[name] for name in PAIR_FEATURES])
    return edge, pair


def decode(plan: Plan, probs: np.ndarray) -> dict:
    """The best partition of the atoms into digits, read left to right. ``probs``:
    the model's (k, 10) or (k, 11) answers for the plan's k candidates."""
    rows = np.asarray(probs, dtype=np.float64)
    if rows.ndim != 2 or len(rows) != len(plan.candidates) or rows.shape[1] < 10:
        raise ValueError(f"{rows.shape} answers for {len(plan.candidates)} candidates")
    scores, pair_scores = lattice_scores(plan, rows)
    chosen = best_path(plan.lattice, scores, pair_scores)
    if not chosen:
        raise ApiError(422, "blank_image", "the drawing holds too little ink for a digit")
    probs = rows[:, :10]
    if len(chosen) > plan.max_digits:
        raise _too_many(len(chosen), plan.max_digits)
    digits = []
    for k in plan.lattice.edges[chosen, 2]:
        p = probs[k]
        d = int(np.argmax(p))
        digits.append({
            "digit": d,
            "confidence": float(p[d]),
            "probabilities": {str(i): float(v) for i, v in enumerate(p)},
            "box": _image_box(plan, plan.candidates[k].box),
        })
    # The whole string is right when the partition is and every digit is read right.
    confidence = probability(plan.lattice, chosen, scores, pair_scores, SEGMENT_TEMPERATURE)
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
