"""Hand-authored centre lines of digits, and of drawings that are not digits (training only).

A digit is a list of strokes; a stroke is a list of pieces; a piece is a list of
control points (x right, y down; the digit about 0.6 wide and 1 tall). Within a
piece the pen moves smoothly (a spline through the points); a new piece starts at
a sharp corner. Each digit has the variants people commonly draw: a 1 with or
without a flag and a base, an open or a closed 4, a 7 with or without a bar, an 8
in one stroke or as two loops, and so on.

The evaluation set's mouse-drawn digits (tools/canvas_families.py) come from other,
independently written shapes.
"""

from __future__ import annotations

import math

import numpy as np


def arc(cx, cy, rx, ry, start_deg, end_deg, n: int = 0) -> list[tuple[float, float]]:
    """Points on an ellipse, angles in degrees, y down (90 is the bottom)."""
    n = n or max(3, int(abs(end_deg - start_deg) / 20) + 1)
    angles = np.radians(np.linspace(start_deg, end_deg, n))
    return list(zip((cx + rx * np.cos(angles)).tolist(), (cy + ry * np.sin(angles)).tolist(),
                    strict=True))


def _zero(r):
    start = r.uniform(-120, -60)
    over = r.uniform(-10, 30)
    rx = r.uniform(0.2, 0.32)
    return [[arc(0.3, 0.5, rx, 0.5, start, start - 360 - over, 14)]]


def _zero_cw(r):
    start = r.uniform(-120, -60)
    return [[arc(0.3, 0.5, r.uniform(0.18, 0.3), 0.5, start, start + 360 + r.uniform(-10, 25), 14)]]


DIGITS: dict[int, list] = {
    0: [_zero, _zero_cw],
    1: [
        lambda r: [[[(0.3, 0.0), (0.3, 1.0)]]],
        lambda r: [[[(0.1, 0.22), (0.3, 0.0)], [(0.3, 0.0), (0.3, 1.0)]]],
        lambda r: [[[(0.08, 0.25), (0.3, 0.0)], [(0.3, 0.0), (0.3, 1.0)]],
                   [[(0.08, 1.0), (0.52, 1.0)]]],
        lambda r: [[[(0.18, 0.12), (0.3, 0.0)], [(0.3, 0.0), (0.28, 0.5), (0.24, 1.0)]]],
        # The long flag of a continental 1: up-right, then straight down (a 7 goes across).
        lambda r: [[[(0.0, r.uniform(0.25, 0.4)), (0.32, 0.0)], [(0.32, 0.0), (0.3, 1.0)]]],
    ],
    2: [
        lambda r: [[[(0.04, 0.25), (0.15, 0.05), (0.32, 0.0), (0.52, 0.1), (0.56, 0.3),
                     (0.4, 0.55), (0.02, 0.98)], [(0.02, 0.98), (0.6, 0.98)]]],
        lambda r: [[[(0.05, 0.2), (0.3, 0.0), (0.55, 0.18), (0.45, 0.45), (0.05, 0.95),
                     (0.2, 0.85), (0.35, 0.95), (0.6, 0.97)]]],
        lambda r: [[[(0.02, 0.3), (0.2, 0.02), (0.45, 0.03), (0.55, 0.25), (0.3, 0.62),
                     (0.05, 1.0), (0.3, 0.93), (0.6, 1.0)]]],
    ],
    3: [
        lambda r: [[[(0.05, 0.12), (0.3, 0.0), (0.53, 0.13), (0.5, 0.33), (0.25, 0.47)],
                    [(0.25, 0.47), (0.52, 0.58), (0.58, 0.8), (0.35, 1.0), (0.02, 0.9)]]],
        lambda r: [[[(0.06, 0.1), (0.32, 0.0), (0.52, 0.15), (0.42, 0.4), (0.28, 0.48),
                     (0.55, 0.62), (0.55, 0.85), (0.3, 1.0), (0.04, 0.88)]]],
        lambda r: [[[(0.05, 0.0), (0.55, 0.0)], [(0.55, 0.0), (0.25, 0.4)],
                    [(0.25, 0.4), (0.52, 0.55), (0.58, 0.78), (0.35, 1.0), (0.02, 0.9)]]],
    ],
    4: [
        lambda r: [[[(0.12, 0.0), (0.03, 0.62)], [(0.03, 0.62), (0.62, 0.62)]],
                   [[(0.47, 0.08), (0.47, 1.0)]]],
        lambda r: [[[(0.45, 0.0), (0.0, 0.68)], [(0.0, 0.68), (0.62, 0.68)]],
                   [[(0.45, 0.0), (0.45, 1.0)]]],
        lambda r: [[[(0.45, 0.0), (0.0, 0.68)], [(0.0, 0.68), (0.62, 0.68)]],
                   [[(0.5, 0.3), (0.46, 1.0)]]],
        lambda r: [[[(0.15, 0.0), (0.05, 0.55)], [(0.05, 0.55), (0.5, 0.55)],
                    [(0.5, 0.55), (0.5, 0.0)], [(0.5, 0.0), (0.5, 1.0)]]],
    ],
    5: [
        lambda r: [[[(0.55, 0.0), (0.1, 0.0)], [(0.1, 0.0), (0.06, 0.45)],
                    [(0.06, 0.45), (0.35, 0.37), (0.57, 0.58), (0.55, 0.85), (0.3, 1.0),
                     (0.02, 0.9)]]],
        lambda r: [[[(0.1, 0.0), (0.06, 0.45)],
                    [(0.06, 0.45), (0.35, 0.37), (0.57, 0.58), (0.55, 0.85), (0.3, 1.0),
                     (0.02, 0.9)]], [[(0.1, 0.0), (0.56, 0.0)]]],
        lambda r: [[[(0.12, 0.02), (0.08, 0.42)],
                    [(0.08, 0.42), (0.4, 0.42), (0.58, 0.68), (0.4, 0.97), (0.05, 0.9)]],
                   [[(0.12, 0.02), (0.55, 0.0)]]],
    ],
    6: [
        lambda r: [[[(0.5, 0.02), (0.25, 0.15), (0.07, 0.5), (0.08, 0.82), (0.3, 1.0),
                     (0.52, 0.85), (0.52, 0.62), (0.3, 0.5), (0.08, 0.65)]]],
        lambda r: [[[(0.45, 0.0), (0.1, 0.45), (0.05, 0.75), (0.25, 1.0), (0.5, 0.9),
                     (0.5, 0.62), (0.25, 0.55), (0.06, 0.72)]]],
    ],
    7: [
        lambda r: [[[(0.0, 0.0), (0.6, 0.0)], [(0.6, 0.0), (0.22, 1.0)]]],
        lambda r: [[[(0.0, 0.0), (0.6, 0.0)], [(0.6, 0.0), (0.22, 1.0)]],
                   [[(0.15, 0.5), (0.55, 0.5)]]],
        lambda r: [[[(0.0, 0.15), (0.0, 0.0)], [(0.0, 0.0), (0.6, 0.02)],
                    [(0.6, 0.02), (0.4, 0.45), (0.3, 1.0)]]],
        lambda r: [[[(0.02, 0.05), (0.3, 0.0), (0.6, 0.03)], [(0.6, 0.03), (0.35, 0.55),
                                                             (0.25, 1.0)]]],
    ],
    8: [
        lambda r: [[[(0.5, 0.1), (0.3, 0.0), (0.08, 0.12), (0.1, 0.33), (0.3, 0.47),
                     (0.55, 0.65), (0.57, 0.87), (0.3, 1.0), (0.04, 0.87), (0.06, 0.65),
                     (0.3, 0.47), (0.5, 0.32), (0.53, 0.12), (0.32, 0.0)]]],
        lambda r: [[arc(0.3, 0.24, 0.2, 0.24, -90, 270, 12)],
                   [arc(0.3, 0.74, 0.26, 0.26, -90, 270, 12)]],
        lambda r: [[[(0.3, 0.47), (0.1, 0.3), (0.12, 0.08), (0.3, 0.0), (0.48, 0.08),
                     (0.5, 0.3), (0.3, 0.47), (0.06, 0.7), (0.12, 0.95), (0.3, 1.0),
                     (0.5, 0.95), (0.56, 0.7), (0.3, 0.47)]]],
    ],
    9: [
        lambda r: [[[(0.55, 0.15), (0.3, 0.0), (0.06, 0.15), (0.08, 0.38), (0.3, 0.48),
                     (0.55, 0.35), (0.56, 0.1)], [(0.56, 0.1), (0.52, 1.0)]]],
        lambda r: [[[(0.55, 0.15), (0.3, 0.0), (0.06, 0.15), (0.08, 0.38), (0.3, 0.48),
                     (0.55, 0.35), (0.56, 0.12), (0.55, 0.6), (0.4, 1.0)]]],
        lambda r: [[arc(0.3, 0.24, 0.25, 0.24, 0, -360, 12)], [[(0.55, 0.2), (0.5, 1.0)]]],
    ],
}


def digit(d: int, rng: np.random.Generator) -> list:
    """The pieces of one variant of digit d, picked by rng."""
    variants = DIGITS[d]
    return variants[int(rng.integers(len(variants)))](rng)


# ---------------------------------------------------------------- not digits


def _polygon(r, sides: int):
    turn = r.uniform(0, 2 * math.pi)
    pts = [(0.5 + 0.5 * math.cos(turn + 2 * math.pi * i / sides),
            0.5 + 0.5 * math.sin(turn + 2 * math.pi * i / sides)) for i in range(sides + 1)]
    return [[[pts[i], pts[i + 1]] for i in range(sides)]]


def _star(r):
    points = int(r.choice([5, 5, 6, 7]))
    inner = r.uniform(0.3, 0.5)
    pts = []
    for i in range(2 * points + 1):
        rad = 0.5 if i % 2 == 0 else 0.5 * inner
        a = -math.pi / 2 + math.pi * i / points
        pts.append((0.5 + rad * math.cos(a), 0.5 + rad * math.sin(a)))
    return [[[pts[i], pts[i + 1]] for i in range(len(pts) - 1)]]


def _pentagram(r):
    pts = [(0.5 + 0.5 * math.cos(-math.pi / 2 + 4 * math.pi * i / 5),
            0.5 + 0.5 * math.sin(-math.pi / 2 + 4 * math.pi * i / 5)) for i in range(6)]
    return [[[pts[i], pts[i + 1]] for i in range(5)]]


def _heart(r):
    t = np.linspace(0, 2 * math.pi, 24)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [[list(zip(x.tolist(), y.tolist(), strict=True))]]


def _smiley(r):
    face = [arc(0.5, 0.5, 0.5, 0.5, 0, 360, 14)]
    eyes = [[[(0.33, 0.35), (0.34, 0.4)]], [[(0.66, 0.35), (0.67, 0.4)]]]
    mouth = [arc(0.5, 0.55, 0.25, r.uniform(0.1, 0.22), 20, 160, 6)]
    return [face, *eyes, mouth]


def _cross(r):
    if r.random() < 0.5:
        return [[[(0.5, 0.0), (0.5, 1.0)]], [[(0.0, 0.5), (1.0, 0.5)]]]
    return [[[(0.0, 0.0), (1.0, 1.0)]], [[(1.0, 0.0), (0.0, 1.0)]]]


def _arrow(r):
    return [[[(0.0, 0.5), (1.0, 0.5)]], [[(0.7, 0.2), (1.0, 0.5)], [(1.0, 0.5), (0.7, 0.8)]]]


def _house(r):
    return [[[(0.1, 1.0), (0.1, 0.45)], [(0.1, 0.45), (0.5, 0.0)], [(0.5, 0.0), (0.9, 0.45)],
             [(0.9, 0.45), (0.9, 1.0)], [(0.9, 1.0), (0.1, 1.0)]]]


def _spiral(r):
    turns = r.uniform(2.5, 4.0)  # fewer turns read as a 6 or a 0
    t = np.linspace(0, turns * 2 * math.pi, int(turns * 10))
    rad = 0.05 + 0.45 * t / t[-1]
    return [[list(zip((0.5 + rad * np.cos(t)).tolist(), (0.5 + rad * np.sin(t)).tolist(),
                      strict=True))]]


def _grid(r):
    n = int(r.integers(2, 4))
    lines = []
    for i in range(n + 1):
        v = i / n
        lines += [[[(v, 0.0), (v, 1.0)]], [[(0.0, v), (1.0, v)]]]
    return lines


def _target(r):
    return [[arc(0.5, 0.5, 0.5, 0.5, 0, 360, 14)], [arc(0.5, 0.5, 0.22, 0.22, 0, 360, 10)],
            [[(0.5, 0.0), (0.5, 1.0)]], [[(0.0, 0.5), (1.0, 0.5)]]]


def _wave(r):
    n = int(r.integers(2, 5))
    t = np.linspace(0, n * 2 * math.pi, n * 8)
    return [[list(zip((t / t[-1]).tolist(), (0.5 + 0.2 * np.sin(t)).tolist(), strict=True))]]


def _rectangle(r):
    w, h = r.uniform(0.6, 1.0), r.uniform(0.6, 1.0)  # not narrow: that is a boxy 0
    corners = [(0, 0), (w, 0), (w, h), (0, h), (0, 0)]
    return [[[corners[i], corners[i + 1]] for i in range(4)]]


def _sun(r):
    out = [[arc(0.5, 0.5, 0.22, 0.22, 0, 360, 10)]]
    for i in range(8):
        a = 2 * math.pi * i / 8
        out.append([[(0.5 + 0.3 * math.cos(a), 0.5 + 0.3 * math.sin(a)),
                     (0.5 + 0.5 * math.cos(a), 0.5 + 0.5 * math.sin(a))]])
    return out


def _cloud(r):
    pieces = []
    x = 0.0
    for _ in range(int(r.integers(3, 6))):
        w = r.uniform(0.15, 0.3)
        pieces.append(arc(x + w / 2, 0.5, w / 2, w * 0.7, 180, 360, 6))
        x += w
    pieces.append([pieces[-1][-1], (pieces[0][0][0], pieces[0][0][1])])
    return [pieces]


# No pentagon or hexagon, no plain circle: drawn thick and small, they are 0s.
SHAPES = (
    lambda r: _polygon(r, 3), lambda r: _polygon(r, 4), _star, _pentagram, _heart, _smiley,
    _cross, _arrow, _house, _spiral, _grid, _target, _wave, _rectangle, _sun, _cloud,
)


def shape(rng: np.random.Generator) -> list:
    return SHAPES[int(rng.integers(len(SHAPES)))](rng)


def path_length(strokes) -> float:
    return float(sum(np.linalg.norm(np.diff(np.asarray(p, dtype=np.float64), axis=0),
                                    axis=1).sum() for s in strokes for p in s if len(p) > 1))


def busyness(strokes) -> float:
    """Ink path length over the drawing's larger side: 1 for a "1", about 3 for an
    "8", 5 or more for a scribble."""
    pts = np.vstack([np.asarray(p, dtype=np.float64) for s in strokes for p in s])
    return path_length(strokes) / max(float((pts.max(0) - pts.min(0)).max()), 1e-6)


def _loops(r):
    n = int(r.integers(3, 9))
    t = np.linspace(0, 2 * math.pi * n, 12 * n)
    a, b = r.uniform(0.3, 0.8), 1.0
    pts = np.column_stack([a * t - b * np.sin(t), -b * np.cos(t) * r.uniform(0.6, 1.4)])
    return [[pts.tolist()]]


def _zigzag(r):
    """Back and forth, advancing in any direction (scribbles have no upright)."""
    n = int(r.integers(5, 13))
    xs = np.cumsum(r.uniform(0.2, 1.0, n))
    ys = np.where(np.arange(n) % 2 == 0, 0.0, 1.0) + r.normal(0, 0.15, n)
    a = r.uniform(0, math.pi)
    xs, ys = xs * math.cos(a) - ys * math.sin(a), xs * math.sin(a) + ys * math.cos(a)
    pts = list(zip(xs.tolist(), ys.tolist(), strict=True))
    return [[[pts[i], pts[i + 1]] for i in range(n - 1)]]


def _walk(r):
    n = int(r.integers(25, 61))
    turn = r.normal(0, r.uniform(0.7, 1.6), n) + r.choice([-1, 1]) * r.uniform(0, 0.7)
    headings = r.uniform(0, 2 * math.pi) + np.cumsum(turn)
    steps = np.column_stack([np.cos(headings), np.sin(headings)]) * r.uniform(0.5, 1.5, (n, 1))
    return [[np.vstack([[0.0, 0.0], np.cumsum(steps, axis=0)]).tolist()]]


def _tangle(r):
    out = []
    for _ in range(int(r.integers(2, 5))):
        k = int(r.integers(5, 9))
        pts = r.uniform(0, 1, (k, 2))
        out.append([np.vstack([pts, pts[:1]]).tolist()])
    return out


def _hatch(r):
    n = int(r.integers(4, 10))
    angle = r.uniform(0, math.pi)
    c, s = math.cos(angle), math.sin(angle)
    out = []
    for i in range(n):
        off = i / (n - 1) - 0.5
        half = r.uniform(0.35, 0.5)
        out.append([[(off * -s - half * c, off * c - half * s),
                     (off * -s + half * c, off * c + half * s)]])
    if r.random() < 0.4:  # cross-hatched
        out += [[[(y, -x) for x, y in stroke[0]]] for stroke in out]
    return out


SCRIBBLES = (_loops, _zigzag, _walk, _tangle, _hatch)
BUSY = 4.5  # scribbles at least this busy: digit-like squiggles are redrawn


def scribble(rng: np.random.Generator) -> list:
    """Strokes that wander and turn a lot: loops, zigzags, random walks, tangles, hatching."""
    for _ in range(20):
        strokes = SCRIBBLES[int(rng.integers(len(SCRIBBLES)))](rng)
        if busyness(strokes) >= BUSY:
            return strokes
    return _hatch(rng)
