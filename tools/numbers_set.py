"""Deterministic multi-digit "numbers" drawn on one wide canvas, as the page sends them.

Each number (1-8 digits by default) is one person's drawing: one brush width for
the whole number, one style, and digits whose size and baseline wander. Styles:

- ``mnist``: MNIST test digits redrawn as canvas strokes (the centre lines of
  tools/canvas_set.py, re-stroked with a round brush);
- ``mouse``: stroke templates for each digit, bent by a random slant, rotation,
  width and wobble, some in two strokes (a 4, a 5's bar, a 7's crossbar), some of
  those strokes apart (a 4 whose bar stops short of its stem, a 5's bar lifted off);
- ``font``: glyphs of the DejaVu and Liberation fonts.

Digits are laid out left to right. The gap between two neighbours is a horizontal
clearance between their inks (the smallest over the rows they share), drawn per
pair from wide (0.3-0.7 of the digit height) down to touching (the inks meet,
up to half a brush width deep) and overlapping (up to one brush width deep).
What the pixels show decides each pair's class afterwards: ``touching`` when the
two inks are 8-connected, ``overlapping`` when their columns overlap but the inks
do not meet, else ``separated``. A number is ``touching`` if any pair touches,
else ``overlapping`` if any pair overlaps, else ``separated``.

PNGs are what ``canvas.toDataURL()`` gives: black ink on transparency, or (one in
five) on opaque white. The same seed gives the same set.

    python -m tools.numbers_set --data ../shared/data/mnist --n 200 --out DIR
"""

from __future__ import annotations

import argparse
import io
import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tools.canvas_set import _edges, _skeleton
from trainer.numbers import BASELINE_JITTER, MARGIN, SIZE_JITTER, clearances, lay_out, tight

VERSION = 3
WIDTH, HEIGHT = 840, 280
RENDER = 2  # supersampling for anti-aliased edges
STYLES = (("mnist", 0.6), ("mouse", 0.25), ("font", 0.15))
LENGTHS = tuple(range(1, 9))
BRUSH = (8.0, 24.0)  # brush width in canvas pixels (the page's is 18)
MAX_BRUSH_RATIO = 0.22  # brush at most this fraction of the digit height
HEIGHT_RANGE = (0.4, 0.88)  # the number's digit height, fraction of the canvas height
MAX_ASPECT = 1.0  # a digit wider than tall is drawn lower, not wider than the row's height
CROWDED = 0.5  # share of numbers drawn crowded (some pairs touch or overlap)
WHITE_BACKGROUND = 0.2
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation")


@dataclass
class Number:
    png: bytes
    label: str
    category: str  # separated | overlapping | touching
    pairs: list[str]  # per neighbour pair: separated | overlapping | touching
    boxes: list[list[int]]  # per digit: [x, y, w, h] of its ink
    style: str
    background: str  # transparent | white
    brush: float
    meta: dict = field(default_factory=dict)
    # Each digit's own ink (alpha, cropped to its box), to read the digits one by one:
    # what a perfect segmentation would hand the model. Not written to disk.
    alphas: list[np.ndarray] | None = field(default=None, repr=False)


# ---------------------------------------------------------------- shapes
# A shape is a digit before placement: either strokes (polylines in a frame whose
# height is 1 and whose width is its aspect) or a glyph mask (an "L" image).


def _arc(cx, cy, rx, ry, a0, a1, n=14):
    """Points along an ellipse from angle a0 to a1 (degrees; 0 right, 90 down)."""
    t = np.radians(np.linspace(a0, a1, n))
    return list(zip((cx + rx * np.cos(t)).tolist(), (cy + ry * np.sin(t)).tolist(), strict=True))


# Templates in a unit box (x right, y down), with the box's width/height aspect.
# A digit has several variants; each variant is a list of strokes.
TEMPLATES = {
    0: [(0.7, [_arc(0.5, 0.5, 0.5, 0.5, -90, 285, 24)]),
        (0.6, [_arc(0.5, 0.5, 0.5, 0.5, -60, 310, 24)])],
    1: [(0.15, [[(0.5, 0.0), (0.5, 1.0)]]),
        (0.4, [[(0.1, 0.22), (0.75, 0.0), (0.75, 1.0)]]),
        (0.55, [[(0.1, 0.22), (0.55, 0.0), (0.55, 1.0)], [(0.0, 1.0), (1.0, 1.0)]])],
    2: [(0.7, [_arc(0.5, 0.3, 0.46, 0.3, 195, 380) + [(0.02, 1.0), (1.0, 1.0)]]),
        (0.65, [_arc(0.5, 0.28, 0.45, 0.28, 180, 400) + [(0.05, 0.95), (0.5, 0.9), (1.0, 1.0)]])],
    3: [(0.6, [_arc(0.5, 0.26, 0.42, 0.26, 200, 450) + _arc(0.5, 0.73, 0.48, 0.27, 270, 500)]),
        (0.6, [[(0.05, 0.0), (0.95, 0.0), (0.4, 0.42)] + _arc(0.5, 0.7, 0.48, 0.3, 250, 500)])],
    4: [(0.75, [[(0.65, 0.0), (0.0, 0.68), (1.0, 0.68)], [(0.72, 0.3), (0.72, 1.0)]]),
        (0.7, [[(0.1, 0.0), (0.02, 0.6), (1.0, 0.6)], [(0.75, 0.02), (0.75, 1.0)]]),
        (0.75, [[(0.12, 0.0), (0.02, 0.62), (0.55, 0.62)], [(0.8, 0.0), (0.8, 1.0)]])],
    5: [(0.65, [[(0.2, 0.02), (0.12, 0.45)] + _arc(0.5, 0.68, 0.48, 0.32, 215, 500),
                [(0.2, 0.02), (0.95, 0.02)]]),
        (0.65, [[(0.95, 0.0), (0.18, 0.0), (0.12, 0.45)] + _arc(0.5, 0.68, 0.48, 0.32, 215, 500)]),
        (0.65, [[(0.15, 0.12), (0.12, 0.45)] + _arc(0.5, 0.68, 0.48, 0.32, 215, 500),
                [(0.32, 0.0), (0.95, 0.0)]])],
    6: [(0.62, [_arc(0.62, 0.62, 0.56, 0.62, 262, 172) + _arc(0.5, 0.73, 0.46, 0.27, 180, -180)])],
    7: [(0.65, [[(0.0, 0.0), (1.0, 0.0), (0.35, 1.0)]]),
        (0.7, [[(0.0, 0.05), (1.0, 0.0), (0.4, 1.0)], [(0.3, 0.52), (0.9, 0.5)]])],
    8: [(0.6, [_arc(0.5, 0.25, 0.38, 0.25, 0, 360), _arc(0.5, 0.74, 0.48, 0.26, -90, 270)]),
        (0.6, [_arc(0.5, 0.25, 0.4, 0.25, 90, 360 + 90) + _arc(0.5, 0.74, 0.48, 0.26, -90, 270)])],
    9: [(0.6, [_arc(0.5, 0.3, 0.48, 0.3, 0, 360) + [(0.98, 0.3), (0.9, 1.0)]]),
        (0.6, [_arc(0.5, 0.28, 0.48, 0.28, 10, 370) + _arc(0.2, 0.3, 0.78, 0.7, 0, 80, 8)])],
}


def mouse_shape(digit: int, rng: np.random.Generator) -> Strokes:
    """A template bent the way a mouse draws it."""
    variants = TEMPLATES[digit]
    aspect, strokes = variants[rng.integers(len(variants))]
    aspect *= rng.uniform(0.85, 1.2)
    slant = rng.uniform(-0.25, 0.1)  # x shifts by slant * (y - 0.5): forward lean < 0
    turn = math.radians(rng.uniform(-6, 6))
    cos, sin = math.cos(turn), math.sin(turn)
    out = []
    for stroke in strokes:
        pts = np.asarray(stroke, dtype=np.float64)
        pts = pts + rng.normal(0, 0.02, pts.shape)  # the hand wobbles
        x, y = pts[:, 0] * aspect, pts[:, 1]
        x = x - slant * (y - 0.5)
        x, y = cos * x - sin * (y - 0.5), sin * x + cos * (y - 0.5) + 0.5
        out.append(np.stack([x, y], axis=1))
    return _normalise(out, np.concatenate(out))


def mnist_shape(image: np.ndarray) -> Strokes:
    """An MNIST digit's centre line: a segment per pair of neighbouring points."""
    points = _skeleton(image)[:, ::-1]  # (x, y)
    lines = [points[[i, j]] for i, j in _edges(points[:, ::-1])]
    return _normalise(lines or [points[:1]], points)


@dataclass
class Strokes:
    aspect: float  # width / height
    lines: list[np.ndarray]  # polylines (k, 2) of (x, y); the frame's height is 1
    dots: np.ndarray  # (m, 2) points that get a round brush dab (caps and joins)


def _normalise(lines: list[np.ndarray], dots: np.ndarray) -> Strokes:
    """Moved and scaled so that y spans 0..1 and x starts at 0."""
    every = np.concatenate([*lines, dots])
    low, high = every.min(axis=0), every.max(axis=0)
    height = max(high[1] - low[1], 1e-6)
    aspect = max((high[0] - low[0]) / height, 0.02)
    return Strokes(aspect, [(s - low) / height for s in lines], (dots - low) / height)


@lru_cache(maxsize=1)
def _fonts() -> tuple[str, ...]:
    found = []
    for folder in FONT_DIRS:
        for path in sorted(Path(folder).glob("*.ttf")):
            if "Math" not in path.name and "ExtraLight" not in path.name:
                found.append(str(path))
    return tuple(found)


@lru_cache(maxsize=256)
def _glyph(path: str, digit: int) -> Image.Image:
    font = ImageFont.truetype(path, 200)
    img = Image.new("L", (320, 320), 0)
    ImageDraw.Draw(img).text((40, 20), str(digit), fill=255, font=font)
    return img.crop(img.getbbox())


def font_shape(digit: int, rng: np.random.Generator) -> Image.Image | None:
    fonts = _fonts()
    if not fonts:
        return None
    return _glyph(fonts[rng.integers(len(fonts))], digit)


# ---------------------------------------------------------------- rendering


def render_strokes(shape: Strokes, scale: float, thickness: float) -> np.ndarray:
    """Strokes at ``scale`` canvas px per unit with a round brush: alpha (h, w) uint8."""
    pad = thickness / 2 + 1
    every = np.concatenate([*shape.lines, shape.dots])
    width = int(math.ceil(every[:, 0].max() * scale + 2 * pad))
    height = int(math.ceil(every[:, 1].max() * scale + 2 * pad))
    ink = Image.new("L", (width * RENDER, height * RENDER), 0)
    pen = ImageDraw.Draw(ink)
    radius = thickness / 2 * RENDER
    for line in shape.lines:
        if len(line) > 1:
            coords = ((line * scale + pad) * RENDER).ravel().tolist()
            pen.line(coords, fill=255, width=round(2 * radius))
    for x, y in ((shape.dots * scale + pad) * RENDER).tolist():  # round caps and joins
        pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return tight(np.asarray(ink.reduce(RENDER)))


def render_glyph(glyph: Image.Image, height: float) -> np.ndarray:
    width = max(1, round(glyph.width * height / glyph.height))
    return tight(np.asarray(glyph.resize((width, max(1, round(height))), Image.LANCZOS)))


# ---------------------------------------------------------------- layout


def compose(label: str, rng: np.random.Generator, by_digit: dict[int, np.ndarray] | None,
            width: int = WIDTH, height: int = HEIGHT) -> Number:
    """One number drawn on a width x height canvas."""
    n = len(label)
    weights = np.array([w for name, w in STYLES if name != "mnist" or by_digit])
    styles = [name for name, _ in STYLES if name != "mnist" or by_digit]
    style = styles[rng.choice(len(styles), p=weights / weights.sum())]
    if style == "font" and not _fonts():
        style = "mouse"
    crowded = rng.random() < CROWDED
    shapes = []
    for ch in label:
        d = int(ch)
        if style == "mnist":
            pool = by_digit[d]
            shapes.append(mnist_shape(pool[rng.integers(len(pool))]))
        elif style == "mouse":
            shapes.append(mouse_shape(d, rng))
        else:
            shapes.append(font_shape(d, rng))
    sizes = 1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER, n)
    gaps, fractions = clearances(n, crowded, rng)

    usable_h = height - 2 * MARGIN
    digit_h = rng.uniform(*HEIGHT_RANGE) * usable_h / (1 + SIZE_JITTER + BASELINE_JITTER)
    brush = rng.uniform(*BRUSH)

    def aspect(shape):
        return shape.aspect if isinstance(shape, Strokes) else shape.width / shape.height

    # Shrink until the row fits (a clearance is at most its bounding-box gap).
    def row_width(h):
        b = min(brush, MAX_BRUSH_RATIO * h)
        body = sum(min(aspect(s), MAX_ASPECT) * h * k + b
                   for s, k in zip(shapes, sizes, strict=True))
        spaces = sum(f * (h if g[4] == "height" else 0) for f, g in
                     zip(fractions, gaps, strict=True))
        return body + max(spaces, 0)

    while row_width(digit_h) > width - 2 * MARGIN and digit_h > 12:
        digit_h *= 0.95
    brush = min(brush, MAX_BRUSH_RATIO * digit_h)

    alphas = []
    for shape, k in zip(shapes, sizes, strict=True):
        h = digit_h * k * min(1.0, MAX_ASPECT / aspect(shape))
        if isinstance(shape, Strokes):
            alphas.append(render_strokes(shape, max(h - brush, 2.0), brush))
        else:
            alphas.append(render_glyph(shape, h))

    row = lay_out(alphas, gaps, fractions, digit_h, brush, rng, width, height)
    white = rng.random() < WHITE_BACKGROUND
    rgba = np.zeros((height, width, 4), np.uint8)
    if white:
        rgba[..., :3] = (255 - row.canvas)[..., None]
        rgba[..., 3] = 255
    else:
        rgba[..., 3] = row.canvas
    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, format="PNG", compress_level=1)
    return Number(out.getvalue(), label, row.category, row.pairs, row.boxes, style,
                  "white" if white else "transparent", round(brush, 1),
                  {"digit_height": round(digit_h, 1), "gaps": [g[0] for g in gaps],
                   "origins": row.origins}, alphas)


def mnist_by_digit(data_dir: str | Path) -> dict[int, np.ndarray]:
    from trainer.data import load

    mnist = load(data_dir)
    return {d: mnist.x_test[mnist.y_test == d] for d in range(10)}


def make_numbers(n: int, seed: int = 0, lengths=LENGTHS,
                 by_digit: dict[int, np.ndarray] | None = None,
                 width: int = WIDTH, height: int = HEIGHT) -> list[Number]:
    """n numbers, lengths cycling through ``lengths``; number i depends on (seed, i) only."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        length = lengths[i % len(lengths)]
        label = "".join(str(d) for d in rng.integers(0, 10, length))
        out.append(compose(label, rng, by_digit, width, height))
    return out


def write(numbers: list[Number], out: str | Path, seed: int = 0, mnist: bool = True) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = {}
    for i, number in enumerate(numbers):
        name = f"{i:05d}_{number.label}.png"
        (out / name).write_bytes(number.png)
        meta = asdict(number)
        del meta["png"], meta["alphas"]
        index[name] = meta
    (out / "numbers.json").write_text(json.dumps(
        {"version": VERSION, "seed": seed, "n": len(numbers), "mnist": mnist,
         "numbers": index}, indent=1) + "\n")
    return out


def read(folder: str | Path) -> list[Number]:
    """A set written by write()."""
    folder = Path(folder)
    meta = json.loads((folder / "numbers.json").read_text())
    return [Number(png=(folder / name).read_bytes(), **fields)
            for name, fields in meta["numbers"].items()]


def load_or_make(n: int, seed: int = 0, data_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None) -> list[Number]:
    """make_numbers(n, seed), reused from cache_dir when it holds this exact set."""
    if cache_dir is not None:
        try:
            meta = json.loads((Path(cache_dir) / "numbers.json").read_text())
            if (meta.get("version"), meta.get("seed"), meta.get("n"),
                    meta.get("mnist")) == (VERSION, seed, n, bool(data_dir)):
                return read(cache_dir)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    numbers = make_numbers(n, seed, by_digit=mnist_by_digit(data_dir) if data_dir else None)
    if cache_dir is not None:
        write(numbers, cache_dir, seed, mnist=bool(data_dir))
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.numbers_set",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="MNIST folder (IDX files); without it, no mnist style")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    by_digit = mnist_by_digit(args.data) if args.data else None
    numbers = make_numbers(args.n, args.seed, by_digit=by_digit)
    write(numbers, args.out, args.seed, mnist=by_digit is not None)
    print(f"wrote {len(numbers)} numbers to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
