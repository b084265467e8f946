"""Drawing on a browser-sized canvas: the pen, the geometry of strokes, fonts, and the
API's own preprocessing. Shared by the training renderers (trainer/render.py) and the
evaluation renderers (tools/canvas_families.py); it holds no data source of its own.

numpy, Pillow, fontTools and the Hershey fonts only: no TensorFlow, so rendering may
run in worker processes started before (or independently of) the training process.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from api.preprocess import to_mnist

CANVAS = 280  # the page's export canvas (web/app.js SIZE)
SUPERSAMPLE = 2  # drawn at 2x and reduced: anti-aliased edges, as a browser draws
WHITE_BACKGROUND = 0.2  # share of canvases filled white first (other clients do this)
FONT_DIRS = (Path("/usr/share/fonts"),)


class FontMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Pen:
    """How a drawing is put on the canvas."""

    height: float  # ink height, canvas pixels
    width: float  # stroke width, canvas pixels
    white: bool  # opaque white background instead of transparency


# ---------------------------------------------------------------- geometry


def catmull_rom(points, per_segment: int = 10) -> np.ndarray:
    """A centripetal Catmull-Rom curve through points (k, 2): smooth, no cusps or loops."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 3:
        return p
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    # Knot gaps sqrt(|segment|); all segments at once: axis 0 segment, 1 sample, 2 xy.
    gap = np.maximum(np.linalg.norm(np.diff(p, axis=0), axis=1) ** 0.5, 1e-6)
    p0, p1, p2, p3 = (p[i : len(p) - 3 + i, None, :] for i in range(4))
    d0, d1, d2 = (gap[i : len(gap) - 2 + i, None, None] for i in range(3))
    t = np.linspace(0, 1, per_segment + 1)[1:][None, :, None]
    t0, t1 = -d0, 0.0
    t2, t3 = d1, d1 + d2
    u = d1 * t
    a1 = ((t1 - u) * p0 + (u - t0) * p1) / d0
    a2 = ((t2 - u) * p1 + (u - t1) * p2) / d1
    a3 = ((t3 - u) * p2 + (u - t2) * p3) / d2
    b1 = ((t2 - u) * a1 + (u - t0) * a2) / (d0 + d1)
    b2 = ((t3 - u) * a2 + (u - t1) * a3) / (d1 + d2)
    curve = ((t2 - u) * b1 + (u - t1) * b2) / d1
    return np.vstack([p[1:2], curve.reshape(-1, 2)])


def smooth_stroke(pieces, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """One pen stroke from pieces (lists of points; a new piece is a sharp corner).

    Each control point moves by ``jitter`` (a fraction of the unit height), then each
    piece is splined; pieces share their end points.
    """
    parts = []
    last = None
    for piece in pieces:
        p = np.asarray(piece, dtype=np.float64)
        p = p + rng.normal(0, jitter, p.shape)
        if last is not None:
            p[0] = last
        curve = catmull_rom(p) if len(p) >= 3 else p
        parts.append(curve if last is None else curve[1:])
        last = curve[-1]
    return np.vstack(parts)


def resample(stroke: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` along the stroke (at least its two ends)."""
    if len(stroke) < 2:
        return stroke
    seg = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return stroke[:1]
    at = np.linspace(0, s[-1], max(2, int(s[-1] / step) + 1))
    return np.column_stack([np.interp(at, s, stroke[:, 0]), np.interp(at, s, stroke[:, 1])])


def wobble(strokes, rng: np.random.Generator, amount: float) -> list[np.ndarray]:
    """Smooth, low-frequency hand tremor: a few random sinusoids along each stroke."""
    out = []
    for stroke in strokes:
        if len(stroke) < 2 or amount <= 0:
            out.append(stroke)
            continue
        dense = resample(stroke, 0.02)
        s = np.linspace(0, 1, len(dense))
        shift = np.zeros_like(dense)
        for _ in range(3):
            freq = rng.uniform(0.5, 3.0)
            phase = rng.uniform(0, 2 * math.pi, 2)
            shift += rng.normal(0, amount, 2) * np.sin(2 * math.pi * freq * s[:, None] + phase)
        out.append(dense + shift / 2)
    return out


def random_affine(rng: np.random.Generator, slant=0.35, rotate_deg=12.0, aspect=0.25):
    """A 2x2 matrix: horizontal shear (slant), rotation and an aspect change."""
    angle = math.radians(rng.uniform(-rotate_deg, rotate_deg))
    c, s = math.cos(angle), math.sin(angle)
    k = rng.uniform(-slant, slant)
    a = math.exp(rng.uniform(-aspect, aspect))
    return np.array([[c, -s], [s, c]]) @ np.array([[a, -k], [0.0, 1.0]])


def transform(strokes, matrix) -> list[np.ndarray]:
    return [np.asarray(s, dtype=np.float64) @ np.asarray(matrix).T for s in strokes]


def bounds(strokes) -> tuple[np.ndarray, np.ndarray]:
    pts = np.vstack([s for s in strokes if len(s)])
    return pts.min(axis=0), pts.max(axis=0)


# ---------------------------------------------------------------- the canvas


def random_pen(rng: np.random.Generator, thin=0.035, thick=0.32, max_width=48.0) -> Pen:
    """Ink height 25..90% of the canvas; width log-uniform from thin to very thick
    (as a fraction of the height), the page's own 18 px pen half of the time."""
    height = rng.uniform(0.25, 0.9) * CANVAS
    if rng.random() < 0.5:
        width = 18.0
    else:
        width = height * math.exp(rng.uniform(math.log(thin), math.log(thick)))
    width = float(np.clip(width, 2.0, min(max_width, thick * height)))
    return Pen(height, width, bool(rng.random() < WHITE_BACKGROUND))


def place(strokes, pen: Pen, rng: np.random.Generator, margin: float = 4.0) -> list[np.ndarray]:
    """Scale strokes so the ink is pen.height tall (narrower if it must fit) and put them
    at a random spot fully inside the canvas."""
    lo, hi = bounds(strokes)
    extent = np.maximum(hi - lo, 1e-6)
    room = CANVAS - 2 * margin - pen.width
    scale = min((pen.height - pen.width) / extent[1], room / extent[0], room / extent[1])
    scale = max(scale, 1e-3)
    size = extent * scale + pen.width
    left = rng.uniform(margin, max(margin, CANVAS - margin - size[0]))
    top = rng.uniform(margin, max(margin, CANVAS - margin - size[1]))
    offset = np.array([left, top]) + pen.width / 2
    return [(np.asarray(s) - lo) * scale + offset for s in strokes]


def paint(strokes, pen: Pen, supersample: int = SUPERSAMPLE) -> Image.Image:
    """Strokes (canvas pixels) drawn with a round pen: the RGBA canvas the page exports.

    A round pen's mark is the polyline widened plus a disc at every vertex (round caps
    and joins). The path is resampled every quarter pen width first, so that the discs
    are few (PIL's own round joins cost 3x more) and still fill every join.
    """
    k = supersample
    ink = Image.new("L", (CANVAS * k, CANVAS * k), 0)
    draw = ImageDraw.Draw(ink)
    r = pen.width * k / 2
    for stroke in strokes:
        stroke = resample(np.asarray(stroke, dtype=np.float64), max(1.5, pen.width / 4)) * k
        pts = [(float(x), float(y)) for x, y in stroke]
        if len(pts) > 1:
            draw.line(pts, fill=255, width=max(1, round(2 * r)))
        for x, y in pts:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return canvas_from_alpha(np.asarray(ink.reduce(k) if k > 1 else ink), pen.white)


def canvas_from_alpha(alpha: np.ndarray, white: bool) -> Image.Image:
    """Black ink of the given coverage, on transparency or on opaque white."""
    rgba = np.zeros((*alpha.shape, 4), dtype=np.uint8)
    if white:
        rgba[..., :3] = (255 - alpha)[..., None]
        rgba[..., 3] = 255
    else:
        rgba[..., 3] = alpha
    return Image.fromarray(rgba, "RGBA")


def to_input(img: Image.Image) -> np.ndarray:
    """The API's own preprocessing: (28, 28) uint8, white ink on black."""
    return to_mnist(img)


def draw_strokes(strokes, rng: np.random.Generator, pen: Pen | None = None) -> np.ndarray:
    pen = pen or random_pen(rng)
    return to_input(paint(place(strokes, pen, rng), pen))


# ---------------------------------------------------------------- fonts


def find_font(name: str, dirs=FONT_DIRS) -> Path:
    for root in dirs:
        for path in root.rglob(name):
            return path
    raise FontMissing(name)


def font_paths(fonts, dirs=FONT_DIRS) -> list[Path]:
    """The files of fonts ((file name, Debian package) pairs), or FontMissing naming the
    Debian packages to install."""
    found, missing = [], set()
    for name, package in fonts:
        try:
            found.append(find_font(name, dirs))
        except FontMissing:
            missing.add(package)
    if missing:
        raise FontMissing("fonts missing; install: apt-get install " + " ".join(sorted(missing)))
    return found


_FONT_CACHE: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}


def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    key = (str(path), size)
    if key not in _FONT_CACHE:
        _FONT_CACHE[key] = ImageFont.truetype(str(path), size)
    return _FONT_CACHE[key]


def has_glyph(path: Path, char: str) -> bool:
    """Whether the font draws char itself (not a .notdef box or nothing)."""
    from fontTools.ttLib import TTFont

    key = str(path)
    cmap = _CMAPS.get(key)
    if cmap is None:
        cmap = _CMAPS[key] = set(TTFont(key, lazy=True).getBestCmap() or {})
    return ord(char) in cmap


_CMAPS: dict[str, set[int]] = {}


def font_glyph(path: Path, text: str, rng: np.random.Generator, pen: Pen | None = None,
               size: int = 0) -> Image.Image:
    """text in a font, filled, at a random size, slant and weight: an RGBA canvas."""
    pen = pen or random_pen(rng)
    size = size or 160
    font = _font(path, size)
    left, top, right, bottom = font.getbbox(text)
    # Thicker (a stroke round the outline) or as designed.
    stroke = int(rng.choice([0, 0, 0, 2, 5, 9])) if size >= 100 else 0
    pad = 20 + stroke
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).text((pad - left, pad - top), text, font=font, fill=255,
                             stroke_width=stroke, stroke_fill=255)
    if rng.random() < 0.25:  # thinner: a min filter eats into the outline
        from PIL import ImageFilter

        img = img.filter(ImageFilter.MinFilter(3))
    matrix = random_affine(rng, slant=0.3, rotate_deg=10, aspect=0.2)
    return _place_bitmap(img, matrix, pen, rng)


def _place_bitmap(img: Image.Image, matrix, pen: Pen, rng: np.random.Generator) -> Image.Image:
    """An ink bitmap warped by matrix, scaled to pen.height and put at a random spot."""
    box = img.getbbox()
    if box is None:
        return canvas_from_alpha(np.zeros((CANVAS, CANVAS), np.uint8), pen.white)
    img = img.crop(box)
    w, h = img.size
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64) @ matrix.T
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    extent = hi - lo
    scale = min(pen.height / extent[1], (CANVAS - 8) / extent[0], (CANVAS - 8) / extent[1])
    m = matrix * scale
    out_w, out_h = (int(math.ceil(v)) for v in extent * scale)
    left = rng.uniform(4, max(4, CANVAS - 4 - out_w))
    top = rng.uniform(4, max(4, CANVAS - 4 - out_h))
    # Output pixel (u, v) -> input: inverse of x' = m x + t.
    shift = np.array([left, top]) - lo * scale
    inv = np.linalg.inv(m)
    t = -inv @ shift
    coeffs = (inv[0, 0], inv[0, 1], t[0], inv[1, 0], inv[1, 1], t[1])
    warped = img.transform((CANVAS, CANVAS), Image.Transform.AFFINE, coeffs,
                           resample=Image.Resampling.BILINEAR, fillcolor=0)
    return canvas_from_alpha(np.asarray(warped), pen.white)


# ---------------------------------------------------------------- Hershey stroke fonts


_HERSHEY: dict[str, object] = {}


def hershey_strokes(font: str, text: str) -> list[np.ndarray]:
    """The centre lines of text in a Hershey font (its coordinates are y down already)."""
    from HersheyFonts import HersheyFonts

    h = _HERSHEY.get(font)
    if h is None:
        h = _HERSHEY[font] = HersheyFonts()
        h.load_default_font(font)
    strokes = [np.array(s, dtype=np.float64) for s in h.strokes_for_text(text)]
    return [s for s in strokes if len(s)]


def hershey_has(font: str, char: str) -> bool:
    return bool(hershey_strokes(font, char))


# ---------------------------------------------------------------- deterministic seeds


def family_rng(seed: int, family: str, index: int, attempt: int = 0) -> np.random.Generator:
    """The generator of one sample: a function of (seed, family, index) only."""
    return np.random.default_rng([seed, zlib.crc32(family.encode()), index, attempt])


def worker_count() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def spawn_pool(processes: int):
    """Worker processes that start fresh (never forked): safe even if TensorFlow is loaded."""
    return multiprocessing.get_context("spawn").Pool(processes)

