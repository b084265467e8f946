"""The evaluation canvas set: digits and not-digits as the page receives them.

Families (each sample a PNG exactly as ``canvas.toDataURL()`` gives it, with its label):

* ``mnist``: MNIST *test* digits redrawn with a round brush (tools/canvas_set.py);
* ``mouse``: digits drawn with a mouse on the page: waypoints (tools/eval_shapes.py)
  become a hand movement (a minimum-jerk stroke between corners, tremor), sampled as
  pointer events on a CSS-pixel grid, then painted as web/app.js paints them
  (quadratic curves through the midpoints, an 18 px round pen, black on transparency);
* ``fonts``: digits typed in fonts the trainer never uses (``EVAL_FONTS``);
* ``neg_letters``, ``neg_symbols``, ``neg_shapes``, ``neg_scribbles``, ``neg_several``:
  not digits, drawn by mouse or typed in the evaluation fonts.

Nothing here is used for training: trainer/render.py has its own renderers, fonts and
shapes; tests/unit/test_render.py checks that the font lists are disjoint.

    python -m tools.canvas_families --data ../shared/data/mnist --n 40 --sheet sheet.png
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from tools import eval_shapes  # noqa: E402
from trainer.drawing import (  # noqa: E402
    CANVAS,
    Pen,
    family_rng,
    font_paths,
    has_glyph,
    paint,
    spawn_pool,
    worker_count,
)
from trainer.render import LETTERS, NOT_A_DIGIT, SYMBOLS  # noqa: E402

LINE_WIDTH = 18.0  # web/app.js LINE_WIDTH: the page's pen, in export-canvas pixels
MIN_STEP = 0.75  # web/app.js MIN_STEP: shorter pointer moves are ignored
MPL_FONTS = Path(__import__("matplotlib").__file__).parent / "mpl-data" / "fonts" / "ttf"
EVAL_FONT_DIRS = (Path("/usr/share/fonts"), MPL_FONTS)
# (file name, package): handwriting-like fonts the trainer never sees, and two of
# matplotlib's (a pinned PyPI package).
EVAL_FONTS = (
    ("BecauseWeBuild-Regular.otf", "fonts-bwht"),
    ("BecauseWeConnect-Regular.otf", "fonts-bwht"),
    ("BecauseWeCreate-Regular.otf", "fonts-bwht"),
    ("BecauseWeLearn-Regular.otf", "fonts-bwht"),
    ("BecauseWeMentor-Regular.otf", "fonts-bwht"),
    ("BecauseWeOrganize-Regular.otf", "fonts-bwht"),
    ("ComicNeue-Regular.otf", "fonts-comic-neue"),
    ("ComicNeue-Bold.otf", "fonts-comic-neue"),
    ("ComicNeue-Italic.otf", "fonts-comic-neue"),
    ("ComicNeue-LightItalic.otf", "fonts-comic-neue"),
    ("Humor-Sans.ttf", "fonts-humor-sans"),
    ("Purisa.otf", "fonts-tlwg-purisa-otf"),
    ("Purisa-Bold.otf", "fonts-tlwg-purisa-otf"),
    ("Purisa-Oblique.otf", "fonts-tlwg-purisa-otf"),
    ("KaushanScript-Regular.otf", "fonts-kaushanscript"),
    ("Isabella.ttf", "fonts-isabella"),
    ("TomsonTalks.ttf", "fonts-tomsontalks"),
    ("STIXGeneral.ttf", "matplotlib (PyPI)"),
    ("STIXGeneralItalic.ttf", "matplotlib (PyPI)"),
)
DIGIT_FAMILIES = ("mnist", "mouse", "fonts")
NEGATIVE_FAMILIES = ("neg_letters", "neg_symbols", "neg_shapes", "neg_scribbles", "neg_several")
FAMILIES = DIGIT_FAMILIES + NEGATIVE_FAMILIES


@dataclass(frozen=True)
class Drawing:
    png: bytes
    label: int  # 0..9, or NOT_A_DIGIT
    family: str


# ---------------------------------------------------------------- the hand and the mouse


def chaikin(points: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Corner cutting: a smooth curve near (not through) the waypoints, ends kept."""
    p = np.asarray(points, dtype=np.float64)
    for _ in range(rounds):
        if len(p) < 3:
            break
        q = 0.75 * p[:-1] + 0.25 * p[1:]
        r = 0.25 * p[:-1] + 0.75 * p[1:]
        p = np.vstack([p[:1], np.column_stack([q, r]).reshape(-1, 2)[1:-1], p[-1:]])
    return p


def movements(stroke) -> list[np.ndarray]:
    """A stroke's waypoints split at its corners: each part is one smooth hand movement."""
    parts, current = [], []
    for point in stroke:
        current.append(tuple(point))
        if isinstance(point, eval_shapes.C) and len(current) > 1:
            parts.append(np.array(current))
            current = [tuple(point)]
    if len(current) > 1 or not parts:
        parts.append(np.array(current))
    return parts


def hand(drawing, rng: np.random.Generator):
    """Each stroke as smooth movements, after a personal slant, tilt, width and jitter."""
    jitter = rng.uniform(0.015, 0.05)  # how far the hand misses each waypoint
    italic = math.radians(rng.uniform(-18, 18))
    tilt = math.radians(rng.uniform(-10, 10))
    wide = math.exp(rng.uniform(-0.25, 0.25))
    shear = np.array([[wide, -math.tan(italic)], [0.0, 1.0]])
    turn = np.array([[math.cos(tilt), -math.sin(tilt)], [math.sin(tilt), math.cos(tilt)]])
    matrix = turn @ shear
    out = []
    for stroke in drawing:
        moved = []
        for part in movements(stroke):
            part = part + rng.normal(0, jitter, part.shape)
            if moved:
                part[0] = moved[-1][-1]
            moved.append(chaikin(part) @ matrix.T)
        out.append(moved)
    return out


def pointer_events(parts, rng: np.random.Generator, hz: float, speed: float, grid: float,
                   tremor: float) -> np.ndarray:
    """Where the page sees the pointer during one stroke (canvas pixels)."""
    samples = []
    for part in parts:
        seg = np.linalg.norm(np.diff(part, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        if s[-1] <= 0:
            samples.append(part[:1])
            continue
        duration = 0.06 + s[-1] / speed
        tau = np.linspace(0, 1, max(2, int(duration * hz) + 1))
        along = s[-1] * (10 * tau**3 - 15 * tau**4 + 6 * tau**5)  # minimum jerk
        samples.append(np.column_stack([np.interp(along, s, part[:, 0]),
                                        np.interp(along, s, part[:, 1])]))
    points = np.vstack(samples)
    shake = rng.normal(0, tremor, points.shape)
    if len(shake) > 2:  # tremor is slow: a moving average
        shake = (shake[:-2] + shake[1:-1] + shake[2:]) / 3 * math.sqrt(3)
        shake = np.vstack([shake[:1], shake, shake[-1:]])
    points = np.round((points + shake) / grid) * grid  # whole CSS pixels
    kept = [points[0]]
    for p in points[1:]:
        if np.hypot(*(p - kept[-1])) >= MIN_STEP:
            kept.append(p)
    return np.array(kept)


def page_path(points: np.ndarray, per_curve: int = 6) -> np.ndarray:
    """web/app.js paint(): quadratic curves through the midpoints, then a line to the end."""
    if len(points) < 3:
        return points
    out = [points[:1]]
    start = points[0]
    t = np.linspace(0, 1, per_curve + 1)[1:, None]
    for i in range(1, len(points) - 1):
        ctrl, end = points[i], (points[i] + points[i + 1]) / 2
        out.append((1 - t) ** 2 * start + 2 * (1 - t) * t * ctrl + t**2 * end)
        start = end
    out.append(points[-1:])
    return np.vstack(out)


def mouse_png(drawing, rng: np.random.Generator, height=(0.25, 0.9)) -> bytes:
    """One drawing made with a mouse on the page, exported as the page exports it."""
    strokes = hand(drawing, rng)
    allp = np.vstack([p for s in strokes for p in s])
    lo, hi = allp.min(0), allp.max(0)
    extent = np.maximum(hi - lo, 1e-6)
    room = CANVAS - 2 * (LINE_WIDTH / 2 + 3)
    scale = min(rng.uniform(*height) * CANVAS / extent[1], room / extent[0], room / extent[1])
    size = extent * scale
    offset = np.array([rng.uniform(0, room - size[0]), rng.uniform(0, room - size[1])])
    offset += LINE_WIDTH / 2 + 3 - lo * scale
    grid = CANVAS / rng.uniform(240, 420)  # the canvas' CSS size: pointer resolution
    hz, speed = rng.uniform(60, 144), rng.uniform(250, 900)
    tremor = rng.uniform(0.2, 1.0)
    painted = []
    for parts in strokes:
        events = pointer_events([p * scale + offset for p in parts], rng, hz, speed, grid,
                                tremor)
        painted.append(page_path(events))
    return png(paint(painted, Pen(CANVAS, LINE_WIDTH, white=False)))


def png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


# ---------------------------------------------------------------- typed text


_EVAL_PATHS: list[Path] = []


def eval_fonts() -> list[Path]:
    if not _EVAL_PATHS:
        _EVAL_PATHS.extend(font_paths(EVAL_FONTS, EVAL_FONT_DIRS))
    return _EVAL_PATHS


def typed_png(path: Path, text: str, rng: np.random.Generator) -> bytes:
    """text typed in a font straight onto the canvas: random size, place, weight, tilt."""
    from PIL import ImageFont

    probe = ImageFont.truetype(str(path), 100)
    box = probe.getbbox(text)
    glyph_h = max(1, box[3] - box[1])
    glyph_w = max(1, box[2] - box[0])
    target = rng.uniform(0.3, 0.85) * CANVAS
    size = max(8, int(100 * min(target / glyph_h, (CANVAS - 30) / glyph_w)))
    font = ImageFont.truetype(str(path), size)
    left, top, right, bottom = font.getbbox(text)
    stroke = int(rng.integers(0, 4))
    x = rng.uniform(8, max(8, CANVAS - 8 - (right - left))) - left
    y = rng.uniform(8, max(8, CANVAS - 8 - (bottom - top))) - top
    layer = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(layer).text((x, y), text, font=font, fill=255, stroke_width=stroke,
                               stroke_fill=255)
    layer = layer.rotate(rng.uniform(-6, 6), Image.Resampling.BICUBIC)
    alpha = np.asarray(layer)
    if rng.random() < 0.2:
        rgba = np.dstack([255 - alpha] * 3 + [np.full_like(alpha, 255)])
    else:
        rgba = np.dstack([np.zeros_like(alpha)] * 3 + [alpha])
    return png(Image.fromarray(rgba, "RGBA"))


_GLYPHS: dict[str, list] = {}


def typed_chars(chars: str) -> list[tuple[Path, str]]:
    if chars not in _GLYPHS:
        _GLYPHS[chars] = [(p, c) for p in eval_fonts() for c in chars if has_glyph(p, c)]
    return _GLYPHS[chars]


# ---------------------------------------------------------------- families


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _mouse_digit(d: int, rng) -> list:
    return _pick(rng, eval_shapes.MOUSE_DIGITS[d])


def _side_by_side(drawings, rng) -> list:
    out, x = [], 0.0
    for drawing in drawings:
        pts = np.vstack([np.asarray(p, dtype=np.float64) for s in drawing for p in s])
        lo, hi = pts.min(0), pts.max(0)
        shift = (x - lo[0], rng.uniform(-0.1, 0.1))
        out += [[_shifted(p, shift) for p in s] for s in drawing]
        x += hi[0] - lo[0] + rng.uniform(0.2, 0.5)
    return out


def _shifted(point, shift):
    moved = (point[0] + shift[0], point[1] + shift[1])
    return eval_shapes.C(*moved) if isinstance(point, eval_shapes.C) else moved


def draw_sample(family: str, index: int, rng, mnist=None) -> Drawing:
    if family == "mouse":
        d = index % 10
        return Drawing(mouse_png(_mouse_digit(d, rng), rng), d, family)
    if family == "fonts":
        d = index % 10
        return Drawing(typed_png(_pick(rng, eval_fonts()), str(d), rng), d, family)
    if family == "neg_letters" or family == "neg_symbols":
        mouse = eval_shapes.MOUSE_LETTERS if family == "neg_letters" else eval_shapes.MOUSE_SYMBOLS
        if rng.random() < 0.5:
            return Drawing(mouse_png(mouse[_pick(rng, sorted(mouse))], rng), NOT_A_DIGIT, family)
        path, char = _pick(rng, typed_chars(LETTERS if family == "neg_letters" else SYMBOLS))
        return Drawing(typed_png(path, char, rng), NOT_A_DIGIT, family)
    if family == "neg_shapes":
        shape = eval_shapes.MOUSE_SHAPES[_pick(rng, sorted(eval_shapes.MOUSE_SHAPES))]
        return Drawing(mouse_png(shape, rng), NOT_A_DIGIT, family)
    if family == "neg_scribbles":
        return Drawing(mouse_png(eval_shapes.mouse_scribble(rng), rng), NOT_A_DIGIT, family)
    if family == "neg_several":
        digits = rng.integers(0, 10, int(rng.choice([2, 2, 3])))
        if rng.random() < 0.5:
            text = "".join(str(int(d)) for d in digits)
            return Drawing(typed_png(_pick(rng, eval_fonts()), text, rng), NOT_A_DIGIT, family)
        drawing = _side_by_side([_mouse_digit(int(d), rng) for d in digits], rng)
        return Drawing(mouse_png(drawing, rng, height=(0.2, 0.45)), NOT_A_DIGIT, family)
    raise ValueError(f"unknown family {family!r}")


def _chunk(task) -> list[Drawing]:
    family, seed, start, stop = task
    return [draw_sample(family, i, family_rng(seed, "eval-" + family, i))
            for i in range(start, stop)]


def make_set(counts: dict[str, int], seed: int = 0, mnist=None,
             processes: int | None = None) -> list[Drawing]:
    """The canvas set: counts per family; mnist = (test images, labels) for ``mnist``."""
    from tools.canvas_set import make_drawings

    out: list[Drawing] = []
    tasks = [(f, seed, a, min(n, a + 200)) for f, n in counts.items() if f != "mnist"
             for a in range(0, n, 200)]
    processes = worker_count() if processes is None else processes
    if processes > 1 and len(tasks) > 1:
        with spawn_pool(min(processes, len(tasks))) as pool:
            chunks = pool.map(_chunk, tasks, chunksize=1)
    else:
        chunks = [_chunk(t) for t in tasks]
    if counts.get("mnist"):
        if mnist is None:
            raise ValueError("the mnist family needs the MNIST test set")
        out += [Drawing(p, label, "mnist")
                for p, label in make_drawings(mnist[0], mnist[1], counts["mnist"], seed)]
    for chunk in chunks:
        out += chunk
    return out


def sheet(drawings: list[Drawing], per_family: int = 30, zoom: int = 2) -> Image.Image:
    """One row per family of the drawings after the API's preprocessing."""
    import base64

    from api.preprocess import preprocess

    rows = []
    for family in dict.fromkeys(d.family for d in drawings):
        picked = [d for d in drawings if d.family == family][:per_family]
        cells = [preprocess(base64.b64encode(d.png).decode()) for d in picked]
        cells += [np.zeros((28, 28), np.uint8)] * (per_family - len(cells))
        rows.append(np.hstack([np.pad(c, 1, constant_values=80) for c in cells]))
    grid = np.vstack(rows)
    return Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom),
                                        Image.Resampling.NEAREST)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="MNIST folder (for the mnist family)")
    p.add_argument("--n", type=int, default=30, help="drawings per family")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sheet", required=True, help="PNG contact sheet to write")
    args = p.parse_args(argv)
    from trainer.data import load

    mnist = load(args.data)
    drawings = make_set(dict.fromkeys(FAMILIES, args.n), args.seed,
                        (mnist.x_test, mnist.y_test))
    sheet(drawings, args.n).save(args.sheet)
    print(f"wrote {args.sheet}: {len(drawings)} drawings")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
