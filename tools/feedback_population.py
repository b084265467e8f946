"""Drawings in styles MNIST lacks, for measuring the learning loop (docs/feedback.md).

Two families, both 280x280 RGBA canvases as the page exports them:

* ``mouse``: digits drawn the way a mouse draws them: one or two strokes through
  hand-placed control points (written here, independently of trainer/templates.py),
  angular (straight mouse drags) or smooth, jittered, slanted, trembling, with round
  caps and widths from a hairline to a marker (6..40 px);
* ``font``: digits of handwriting fonts that no training set here uses (``FONTS``),
  filled, slanted and thickened by trainer/drawing.py's ``font_glyph``.

``population(n, seed)`` is deterministic. The measurement draws the corrections and
the test set with different seeds, so the two are disjoint samples of the same styles.

    python -m tools.feedback_population --n 40 --sheet artifacts/population.png
"""

from __future__ import annotations

import argparse
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from trainer import drawing

# Handwriting fonts outside trainer/render.py's TRAIN_FONTS: (file, Debian package).
FONTS = (
    ("ComicNeue-Regular.otf", "fonts-comic-neue"),
    ("ComicNeue-BoldItalic.otf", "fonts-comic-neue"),
    ("ComicNeue-Light.otf", "fonts-comic-neue"),
    ("KaushanScript-Regular.otf", "fonts-kaushanscript"),
    ("Purisa.otf", "fonts-tlwg-purisa-otf"),
    ("Purisa-BoldOblique.otf", "fonts-tlwg-purisa-otf"),
    ("Ecolier-court.ttf", "fonts-ecolier-court"),
    ("femkeklaver.ttf", "fonts-femkeklaver"),
    ("Humor-Sans.ttf", "fonts-humor-sans"),
    ("Isabella.ttf", "fonts-isabella"),
    ("TomsonTalks.ttf", "fonts-tomsontalks"),
    ("BecauseWeLearn-Regular.otf", "fonts-bwht"),
    ("BecauseWeCreate-Regular.otf", "fonts-bwht"),
)
FAMILIES = ("mouse", "font")
MOUSE_SHARE = 0.6  # of the population; the rest is fonts

# Control points of mouse-drawn digits, x right and y down in a box about 0.7 x 1. Each
# digit: variants; each variant: strokes; each stroke: points the pen passes through.
MOUSE = {
    0: [[[(0.35, 0.0), (0.05, 0.2), (0.0, 0.6), (0.3, 1.0), (0.65, 0.7), (0.65, 0.25),
          (0.4, 0.0), (0.3, 0.05)]],
        [[(0.5, 0.05), (0.15, 0.05), (0.0, 0.5), (0.2, 0.95), (0.55, 0.9), (0.7, 0.4),
          (0.55, 0.02), (0.35, 0.08)]]],
    1: [[[(0.2, 0.15), (0.4, 0.0), (0.38, 0.5), (0.36, 1.0)]],
        [[(0.4, 0.0), (0.35, 0.5), (0.3, 1.0)]],
        [[(0.1, 0.2), (0.35, 0.0), (0.35, 1.0)], [(0.1, 1.0), (0.6, 1.0)]]],
    2: [[[(0.05, 0.2), (0.35, 0.0), (0.62, 0.15), (0.55, 0.45), (0.0, 1.0), (0.7, 0.98)]],
        [[(0.0, 0.3), (0.2, 0.02), (0.55, 0.05), (0.6, 0.35), (0.25, 0.7), (0.05, 1.0),
          (0.35, 0.9), (0.7, 1.0)]]],
    3: [[[(0.05, 0.1), (0.4, 0.0), (0.6, 0.2), (0.3, 0.48), (0.65, 0.7), (0.45, 1.0),
          (0.0, 0.9)]],
        [[(0.0, 0.05), (0.6, 0.05), (0.25, 0.45), (0.6, 0.6), (0.6, 0.9), (0.25, 1.0),
          (0.0, 0.85)]]],
    4: [[[(0.45, 0.0), (0.0, 0.65), (0.7, 0.65)], [(0.5, 0.3), (0.5, 1.0)]],
        [[(0.1, 0.0), (0.05, 0.55), (0.65, 0.55)], [(0.55, 0.0), (0.55, 1.0)]],
        [[(0.1, 0.0), (0.05, 0.55), (0.6, 0.55), (0.6, 0.0), (0.6, 1.0)]]],
    5: [[[(0.65, 0.0), (0.1, 0.0), (0.05, 0.45), (0.45, 0.4), (0.65, 0.7), (0.4, 1.0),
          (0.0, 0.9)]],
        [[(0.1, 0.0), (0.05, 0.45), (0.5, 0.42), (0.6, 0.75), (0.3, 1.0), (0.0, 0.85)],
         [(0.1, 0.0), (0.65, 0.0)]]],
    6: [[[(0.55, 0.0), (0.15, 0.35), (0.0, 0.75), (0.3, 1.0), (0.6, 0.8), (0.45, 0.5),
          (0.05, 0.65)]],
        [[(0.6, 0.05), (0.2, 0.2), (0.05, 0.7), (0.35, 1.0), (0.65, 0.75), (0.35, 0.5),
          (0.05, 0.7)]]],
    7: [[[(0.0, 0.05), (0.65, 0.0), (0.3, 1.0)]],
        [[(0.0, 0.1), (0.6, 0.05), (0.45, 0.5), (0.3, 1.0)], [(0.15, 0.5), (0.6, 0.48)]],
        [[(0.05, 0.2), (0.05, 0.0), (0.65, 0.0), (0.25, 1.0)]]],
    8: [[[(0.55, 0.1), (0.3, 0.0), (0.05, 0.2), (0.6, 0.7), (0.35, 1.0), (0.05, 0.7),
          (0.6, 0.2), (0.4, 0.0)]],
        [[(0.35, 0.5), (0.05, 0.25), (0.35, 0.0), (0.6, 0.25), (0.35, 0.5), (0.0, 0.75),
          (0.35, 1.0), (0.65, 0.75), (0.35, 0.5)]]],
    9: [[[(0.6, 0.2), (0.3, 0.0), (0.05, 0.25), (0.3, 0.5), (0.6, 0.3), (0.6, 0.0),
          (0.55, 1.0)]],
        [[(0.6, 0.15), (0.3, 0.0), (0.0, 0.2), (0.25, 0.45), (0.6, 0.2), (0.45, 0.6),
          (0.3, 1.0)]]],
}


@dataclass(frozen=True)
class Drawing:
    png: bytes
    label: int
    family: str


def mouse_strokes(digit: int, rng: np.random.Generator) -> list[np.ndarray]:
    variants = MOUSE[digit]
    strokes = []
    angular = rng.random() < 0.5  # a mouse drag: straight pieces between samples
    for stroke in variants[int(rng.integers(len(variants)))]:
        points = np.asarray(stroke, dtype=np.float64)
        points = points + rng.normal(0, 0.03, points.shape)
        path = points if angular else drawing.catmull_rom(points, per_segment=8)
        strokes.append(drawing.resample(path, 0.04) if angular else path)
    strokes = drawing.transform(strokes, drawing.random_affine(rng, slant=0.3, rotate_deg=10))
    return drawing.wobble(strokes, rng, rng.uniform(0.0, 0.02))


def _mouse_pen(rng: np.random.Generator) -> drawing.Pen:
    height = rng.uniform(0.3, 0.9) * drawing.CANVAS
    width = math.exp(rng.uniform(math.log(6), math.log(40)))
    return drawing.Pen(height, float(min(width, 0.3 * height)), bool(rng.random() < 0.2))


def draw(family: str, digit: int, rng: np.random.Generator) -> Image.Image:
    if family == "mouse":
        pen = _mouse_pen(rng)
        return drawing.paint(drawing.place(mouse_strokes(digit, rng), pen, rng), pen)
    paths = drawing.font_paths(FONTS)
    return drawing.font_glyph(paths[int(rng.integers(len(paths)))], str(digit), rng)


def png_bytes(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def population(n: int, seed: int) -> list[Drawing]:
    """n drawings, digits in turn, MOUSE_SHARE of them mouse strokes, the rest fonts."""
    out = []
    for i in range(n):
        family = "mouse" if (i * 0.6180339887) % 1 < MOUSE_SHARE else "font"
        rng = drawing.family_rng(seed, f"feedback-{family}", i)
        out.append(Drawing(png_bytes(draw(family, i % 10, rng)), i % 10, family))
    return out


def inputs(drawings: list[Drawing]) -> np.ndarray:
    """The 28x28 inputs the API makes of the drawings (its own preprocessing)."""
    from api.preprocess import load_image, to_mnist

    return np.stack([to_mnist(load_image(d.png)) for d in drawings])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.feedback_population", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sheet", default="artifacts/population.png",
                   help="a contact sheet of the 28x28 inputs")
    args = p.parse_args(argv)
    drawings = population(args.n, args.seed)
    grid = inputs(drawings)
    cols = 20
    rows = -(-len(grid) // cols)
    sheet = np.zeros((rows * 30, cols * 30), np.uint8)
    for i, image in enumerate(grid):
        r, c = divmod(i, cols)
        sheet[r * 30 + 1 : r * 30 + 29, c * 30 + 1 : c * 30 + 29] = image
    Path(args.sheet).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2)).save(args.sheet)
    print(f"{len(drawings)} drawings; sheet in {args.sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
