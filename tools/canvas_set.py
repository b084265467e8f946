"""Deterministic "canvas drawings" of MNIST test digits, as a browser would send them.

Each digit is redrawn the way a person draws on the 280x280 HTML canvas: its
strokes are thinned to a one-pixel centre line, which is then re-stroked with a
round brush of a random width (8..28 px, but at most 30% of the digit height:
a thicker brush on a small digit fills its loops and leaves a blob no one could
read), at a random size (digit height 25..85% of the canvas) and a random place
(off-centre, fully inside), rendered at 2x and downsampled for anti-aliased edges.
The PNG is what ``canvas.toDataURL()`` gives: RGBA, black opaque ink on a
transparent background, or (1 in 5) on opaque white.

``style="pixels"`` instead puts the MNIST digit itself on the canvas, as
``drawImage`` of the 28x28 picture scaled to 280x280 (bicubic) would: its grey
levels become the ink's opacity, on a transparent background or (1 in 5) on white.
No centre line is extracted, so nothing of the digit is lost; it measures the
serving path (decoding, preprocessing, batching) rather than a change of style.

Used to measure accuracy through the HTTP API and as benchmark request bodies.

    python -m tools.canvas_set --data ../shared/data/mnist --n 1000 --out DIR

writes DIR/NNNN_<label>.png and DIR/labels.json.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from trainer.skeleton import skeleton_points as _skeleton

VERSION = 2  # bump when the drawings change, so cached sets are remade
STYLES = ("redrawn", "pixels")
CANVAS = 280
RENDER = 2  # supersampling factor for anti-aliasing
HEIGHT = (0.25, 0.85)  # digit height, fraction of the canvas
THICKNESS = (8.0, 28.0)  # brush width in canvas pixels
WHITE_BACKGROUND = 0.2  # share of drawings on opaque white instead of transparent
MARGIN = 4  # canvas pixels kept free around the digit
MAX_THICKNESS_RATIO = 0.3  # brush at most this fraction of the digit height: no ink blobs


def _edges(points: np.ndarray) -> list[tuple[int, int]]:
    """Pairs of 8-neighbouring skeleton points, each pair once."""
    index = {(int(r), int(c)): i for i, (r, c) in enumerate(points)}
    pairs = []
    for (r, c), i in index.items():
        for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):
            j = index.get((r + dr, c + dc))
            if j is not None:
                pairs.append((i, j))
    return pairs


def draw(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """One MNIST digit (28x28 uint8) redrawn as a canvas PNG."""
    points = _skeleton(digit)
    extent = np.maximum(points.max(axis=0) - points.min(axis=0), 1.0)  # (rows, cols)
    points -= points.min(axis=0)

    height = rng.uniform(*HEIGHT) * CANVAS
    thickness = rng.uniform(THICKNESS[0], min(THICKNESS[1], MAX_THICKNESS_RATIO * height))
    room = CANVAS - 2 * MARGIN - thickness
    scale = min((height - thickness) / extent[0], room / extent[1], room / extent[0])
    scale = max(scale, 0.5)
    size = extent * scale + thickness  # (height, width) in canvas pixels
    top = rng.uniform(MARGIN, max(MARGIN, CANVAS - MARGIN - size[0]))
    left = rng.uniform(MARGIN, max(MARGIN, CANVAS - MARGIN - size[1]))

    radius = thickness / 2 * RENDER
    ys = (top + thickness / 2 + points[:, 0] * scale) * RENDER
    xs = (left + thickness / 2 + points[:, 1] * scale) * RENDER
    coords = list(zip(xs.tolist(), ys.tolist(), strict=True))
    ink = Image.new("L", (CANVAS * RENDER,) * 2, 0)
    pen = ImageDraw.Draw(ink)
    for i, j in _edges(points):
        pen.line([coords[i], coords[j]], fill=255, width=round(2 * radius))
    for x, y in coords:
        pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return _canvas_png(np.asarray(ink.reduce(RENDER)), rng)


def draw_pixels(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """One MNIST digit (28x28 uint8) scaled onto the canvas as it is."""
    big = Image.fromarray(digit).resize((CANVAS, CANVAS), Image.Resampling.BICUBIC)
    return _canvas_png(np.asarray(big), rng)


def _canvas_png(alpha: np.ndarray, rng: np.random.Generator) -> bytes:
    """Black ink of opacity alpha (CANVASxCANVAS uint8) as the page's PNG export."""
    rgba = np.zeros((CANVAS, CANVAS, 4), dtype=np.uint8)
    if rng.random() < WHITE_BACKGROUND:  # fillRect(white) first: opaque everywhere
        rgba[..., :3] = (255 - alpha)[..., None]
        rgba[..., 3] = 255
    else:  # black strokes on the untouched transparent canvas
        rgba[..., 3] = alpha
    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, format="PNG")
    return out.getvalue()


def make_drawings(
    images: np.ndarray, labels: np.ndarray, n: int, seed: int = 0, style: str = "redrawn"
) -> list[tuple[bytes, int]]:
    """The first n digits of images (cycling if needed) as (PNG bytes, label) pairs."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, not {style!r}")
    if len(images) == 0 or n <= 0:
        return []
    rng = np.random.default_rng(seed)
    render = draw if style == "redrawn" else draw_pixels
    return [(render(images[i % len(images)], rng), int(labels[i % len(labels)]))
            for i in range(n)]


def _mnist_test(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    from trainer.data import load

    mnist = load(data_dir)
    return mnist.x_test, mnist.y_test


def write(drawings: list[tuple[bytes, int]], out: str | Path, seed: int = 0,
          style: str = "redrawn") -> Path:
    """Write NNNN_<label>.png files and labels.json into out."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for i, (png, label) in enumerate(drawings):
        name = f"{i:04d}_{label}.png"
        (out / name).write_bytes(png)
        files[name] = label
    meta = {"version": VERSION, "style": style, "seed": seed, "n": len(drawings),
            "labels": files}
    (out / "labels.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out


def read(folder: str | Path) -> list[tuple[bytes, int]]:
    """A set written by write()."""
    folder = Path(folder)
    meta = json.loads((folder / "labels.json").read_text())
    return [((folder / name).read_bytes(), int(label)) for name, label in meta["labels"].items()]


def load_or_make(
    data_dir: str | Path, n: int, seed: int = 0, cache_dir: str | Path | None = None,
    style: str = "redrawn",
) -> list[tuple[bytes, int]]:
    """n drawings from the MNIST test set in data_dir; reused from cache_dir if it
    already holds this exact set (same n, seed, style and generator version), else
    written there."""
    if cache_dir is not None:
        labels_file = Path(cache_dir) / "labels.json"
        try:
            meta = json.loads(labels_file.read_text())
            want = (VERSION, style, seed, n)
            if (meta.get("version"), meta.get("style"), meta.get("seed"), meta.get("n")) == want:
                return read(cache_dir)
        except (OSError, ValueError, KeyError):
            pass
    images, labels = _mnist_test(data_dir)
    drawings = make_drawings(images, labels, n, seed, style)
    if cache_dir is not None:
        shutil.rmtree(cache_dir, ignore_errors=True)  # no stale files of another set
        write(drawings, cache_dir, seed, style)
    return drawings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MNIST folder (IDX files) or .npz")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--style", choices=STYLES, default="redrawn")
    parser.add_argument("--out", required=True, help="folder for the PNGs and labels.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    images, labels = _mnist_test(args.data)
    drawings = make_drawings(images, labels, args.n, args.seed, args.style)
    out = write(drawings, args.out, args.seed, args.style)
    took = time.perf_counter() - started
    print(f"wrote {len(drawings)} drawings to {out} in {took:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
