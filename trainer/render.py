"""Training drawings made the way the page makes them, then preprocessed as the API does.

Every sample is a 280x280 RGBA canvas (black ink on transparency, or on opaque white
for a fifth of them), exactly what ``canvas.toDataURL()`` sends, turned into 28x28 by
``api.preprocess.to_mnist`` itself: the model learns from the very pixels it is
served. Sources (all deterministic given a seed; see ``FAMILIES``):

* ``skeleton``: hand-authored digit centre lines (trainer/templates.py), jittered,
  slanted, rotated and wobbled, drawn with a round pen from thin to very thick;
* ``hershey``: the digits of the Hershey stroke fonts (PyPI ``hershey-fonts``), drawn
  with the same pen;
* ``font``: digits of TrueType fonts Debian ships (``TRAIN_FONTS``), filled, slanted,
  thickened or thinned;
* ``mnist``: MNIST *training* digits thinned to their centre lines and re-stroked with
  a round pen (MNIST test stays the test);
* ``negative``: not-a-digit drawings, label ``NOT_A_DIGIT``: letters that do not pass
  for digits and symbols (from the training fonts and Hershey), geometric shapes,
  scribbles, and several digits in one box.
* ``part``: the candidate digits the number endpoint cuts from crowded numbers drawn
  with the renderers above (trainer/numbers.py): one digit with a neighbour's sliver
  is that digit; two digits in one crop, or a fragment of one, are not digits.

The evaluation families live in ``tools/canvas_families.py`` and use other fonts
and other renderers, so that the canvas set measures drawings the model never saw.

Rendering runs in worker processes started with ``spawn`` before TensorFlow is
imported (``render_set``); each sample's random generator is seeded from
(seed, family, index), so the result does not depend on how work is split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from api.errors import ApiError
from trainer import numbers
from trainer.drawing import (
    bounds,
    draw_strokes,
    family_rng,
    font_glyph,
    font_paths,
    has_glyph,
    hershey_has,
    hershey_strokes,
    random_affine,
    smooth_stroke,
    spawn_pool,
    to_input,
    transform,
    wobble,
    worker_count,
)

NOT_A_DIGIT = 10  # the label of the eleventh class
CLASSES = [str(d) for d in range(10)] + ["not_a_digit"]

# Training fonts: (file name, Debian package). The evaluation fonts (tools/) are others.
TRAIN_FONTS = (
    ("DejaVuSans.ttf", "fonts-dejavu-core"),
    ("DejaVuSans-Bold.ttf", "fonts-dejavu-core"),
    ("DejaVuSans-Oblique.ttf", "fonts-dejavu-extra"),
    ("DejaVuSansMono.ttf", "fonts-dejavu-core"),
    ("DejaVuSerif.ttf", "fonts-dejavu-core"),
    ("DejaVuSerif-Italic.ttf", "fonts-dejavu-extra"),
    ("DejaVuSansCondensed-Bold.ttf", "fonts-dejavu-extra"),
    ("DejaVuSans-ExtraLight.ttf", "fonts-dejavu-extra"),
    ("LiberationSans-Regular.ttf", "fonts-liberation"),
    ("LiberationSans-Italic.ttf", "fonts-liberation"),
    ("LiberationSerif-Regular.ttf", "fonts-liberation"),
    ("LiberationSansNarrow-Bold.ttf", "fonts-liberation"),
    ("LiberationMono-Regular.ttf", "fonts-liberation"),
    ("FreeSans.ttf", "fonts-freefont-ttf"),
    ("FreeSerifItalic.ttf", "fonts-freefont-ttf"),
    ("FreeMonoBold.ttf", "fonts-freefont-ttf"),
    ("dkg.ttf", "fonts-dkg-handwriting"),
    ("dkgBd.ttf", "fonts-dkg-handwriting"),
    ("dkgIt.ttf", "fonts-dkg-handwriting"),
    ("dkgBI.ttf", "fonts-dkg-handwriting"),
    ("Breip.ttf", "fonts-breip"),
    ("SteveHand.ttf", "fonts-sjfonts"),
    ("Delphine.ttf", "fonts-sjfonts"),
    ("Rufscript010.ttf", "fonts-rufscript"),
    ("Kristi.ttf", "fonts-kristi"),
    ("DancingScript-Regular.otf", "fonts-dancingscript"),
    ("DancingScript-Bold.otf", "fonts-dancingscript"),
    ("lobster.otf", "fonts-lobster"),
    ("LeckerliOne-Regular.ttf", "fonts-leckerli-one"),
    ("OpenDyslexic-Regular.otf", "fonts-opendyslexic"),
    ("OpenDyslexicAlta-BoldItalic.otf", "fonts-opendyslexic"),
    ("AveriaSansGWF-Regular.ttf", "fonts-averia-sans-gwf"),
    ("AveriaSansGWF-BoldItalic.ttf", "fonts-averia-sans-gwf"),
    ("AveriaSansGWF-Light.ttf", "fonts-averia-sans-gwf"),
    ("eurof35.ttf", "fonts-eurofurence"),
    ("eurof56.ttf", "fonts-eurofurence"),
    ("eurof75.ttf", "fonts-eurofurence"),
    ("eurofc36.ttf", "fonts-eurofurence"),
)
# Hershey stroke fonts used for training (distinct digit designs; the rest repeat them).
TRAIN_HERSHEY = ("futural", "futuram", "rowmans", "rowmand", "timesr", "timesi", "scripts",
                 "gothiceng")

# Letters that pass for digits and are never negatives: O/o/Q/D for 0, I/i/l/J/j for 1,
# Z/z for 2, S/s for 5, b/G for 6, B for 8, g/q/y for 9, among others.
DIGIT_LOOKALIKES = frozenset("OoQDIilJjZzSsbGBgqy")
LETTERS = "".join(
    c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    if c not in DIGIT_LOOKALIKES
)
# Symbols people try on a digit pad; none looks like a digit (no | / ( ) [ ] ! . , : ;).
SYMBOLS = "#*@&%$?+=<>~^{}€£¥§¶©®™∞♥★☺♪✓✗→←↑÷×±√πΣΩ"


# ---------------------------------------------------------------- the training families


def normalise(strokes) -> list[np.ndarray]:
    """Strokes scaled to unit height (or width, if wider), from the origin."""
    strokes = [np.asarray(s, dtype=np.float64) for s in strokes if len(s)]
    lo, hi = bounds(strokes)
    scale = 1.0 / max(float((hi - lo).max()), 1e-6)
    return [(s - lo) * scale for s in strokes]


def pen_strokes(pieces_list, rng: np.random.Generator, jitter=0.035) -> list[np.ndarray]:
    """Template strokes (lists of pieces) made into jittered, slanted, wobbly pen paths."""
    lo, hi = bounds([np.asarray(p, dtype=np.float64) for s in pieces_list for p in s])
    scale = 1.0 / max(float((hi - lo).max()), 1e-6)
    scaled = [[np.asarray(p, dtype=np.float64) * scale for p in s] for s in pieces_list]
    strokes = [smooth_stroke(s, rng, jitter) for s in scaled]
    strokes = transform(strokes, random_affine(rng))
    return wobble(strokes, rng, rng.uniform(0.0, 0.03))


def skeleton_digit(d: int, rng: np.random.Generator) -> np.ndarray:
    from trainer import templates

    return draw_strokes(pen_strokes(templates.digit(d, rng), rng), rng)


def hershey_digit(d: int, rng: np.random.Generator, fonts=TRAIN_HERSHEY) -> np.ndarray:
    font = fonts[int(rng.integers(len(fonts)))]
    return draw_strokes(hershey_pen(hershey_strokes(font, str(d)), rng), rng)


def hershey_pen(strokes, rng: np.random.Generator) -> list[np.ndarray]:
    strokes = transform(normalise(strokes), random_affine(rng, slant=0.3, rotate_deg=10))
    return wobble(strokes, rng, rng.uniform(0.0, 0.025))


_PATHS: dict[tuple, list[Path]] = {}


def fonts_for(fonts=TRAIN_FONTS) -> list[Path]:
    key = tuple(fonts)
    if key not in _PATHS:
        _PATHS[key] = font_paths(fonts)
    return _PATHS[key]


def font_digit(d: int, rng: np.random.Generator, fonts=TRAIN_FONTS) -> np.ndarray:
    paths = fonts_for(fonts)
    return to_input(font_glyph(paths[int(rng.integers(len(paths)))], str(d), rng))


def mnist_digit(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An MNIST digit thinned to its centre line and drawn again with a round pen."""
    return draw_strokes(mnist_strokes(image, rng), rng)


def mnist_strokes(image: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """The centre line of an MNIST digit as pen strokes, slightly slanted and turned."""
    from trainer.skeleton import skeleton_points

    points = skeleton_points(image)  # (row, col)
    strokes = [points[path][:, ::-1] for path in chains(len(points), skeleton_edges(points))]
    strokes = strokes or [points[:1, ::-1]]
    return transform(strokes, random_affine(rng, slant=0.15, rotate_deg=6, aspect=0.15))


def skeleton_edges(points: np.ndarray) -> list[tuple[int, int]]:
    """Edges between 8-neighbouring pixels of a one-pixel skeleton, without the diagonal
    short cuts of an L-shaped step (which would make triangles, not lines)."""
    index = {(int(r), int(c)): i for i, (r, c) in enumerate(points)}
    edges = []
    for (r, c), i in index.items():
        for dr, dc in ((0, 1), (1, 0)):
            j = index.get((r + dr, c + dc))
            if j is not None:
                edges.append((i, j))
        for dr, dc in ((1, -1), (1, 1)):
            j = index.get((r + dr, c + dc))
            if j is not None and (r + dr, c) not in index and (r, c + dc) not in index:
                edges.append((i, j))
    return edges


def chains(n: int, edges) -> list[list[int]]:
    """A graph's edges walked into few paths: each path starts at a free end (or anywhere,
    for loops) and follows unused edges as far as it can."""
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for i, j in edges:
        neighbours[i].append(j)
        neighbours[j].append(i)
    used: set[tuple[int, int]] = set()
    paths = []
    order = sorted(range(n), key=lambda v: (len(neighbours[v]) != 1, v))  # ends first
    for start in order:
        while any((min(start, j), max(start, j)) not in used for j in neighbours[start]):
            path, at = [start], start
            while True:
                nxt = [j for j in neighbours[at] if (min(at, j), max(at, j)) not in used]
                if not nxt:
                    break
                j = nxt[0]
                used.add((min(at, j), max(at, j)))
                path.append(j)
                at = j
            paths.append(path)
    return paths


def _char_sources(chars: str, fonts, hershey) -> list[tuple[str, object, str]]:
    """(kind, font, char) for every char a font really draws."""
    found = [("ttf", path, c) for path in fonts_for(fonts) for c in chars if has_glyph(path, c)]
    found += [("hershey", h, c) for h in hershey for c in chars if hershey_has(h, c)]
    return found


_SOURCES: dict[tuple, list] = {}


def char_sources(chars: str, fonts=TRAIN_FONTS, hershey=TRAIN_HERSHEY) -> list:
    key = (chars, tuple(fonts), tuple(hershey))
    if key not in _SOURCES:
        _SOURCES[key] = _char_sources(chars, fonts, hershey)
    return _SOURCES[key]


def char_drawing(sources, rng: np.random.Generator) -> np.ndarray:
    """A character from a font that has it: drawn with the pen (Hershey) half of the
    time when one can, since people draw rather than type; else a filled glyph."""
    stroked = [s for s in sources if s[0] == "hershey"]
    if stroked and rng.random() < 0.5:
        sources = stroked
    kind, font, char = sources[int(rng.integers(len(sources)))]
    if kind == "ttf":
        return to_input(font_glyph(font, char, rng))
    return draw_strokes(hershey_pen(hershey_strokes(font, char), rng), rng)


def letter(rng: np.random.Generator) -> np.ndarray:
    return char_drawing(char_sources(LETTERS), rng)


def symbol(rng: np.random.Generator) -> np.ndarray:
    return char_drawing(char_sources(SYMBOLS), rng)


def shape(rng: np.random.Generator) -> np.ndarray:
    from trainer import templates

    return draw_strokes(pen_strokes(templates.shape(rng), rng, jitter=0.025), rng)


def scribble(rng: np.random.Generator) -> np.ndarray:
    from trainer import templates

    return draw_strokes(pen_strokes(templates.scribble(rng), rng, jitter=0.01), rng)


def several_digits(rng: np.random.Generator) -> np.ndarray:
    """Two to four digits side by side in one box."""
    from trainer import templates

    n = int(rng.choice([2, 2, 2, 3, 3, 4]))
    digits = rng.integers(0, 10, n)
    if rng.random() < 0.3:  # typed: one font
        paths = fonts_for(TRAIN_FONTS)
        text = "".join(str(d) for d in digits)
        return to_input(font_glyph(paths[int(rng.integers(len(paths)))], text, rng))
    strokes, x = [], 0.0
    for d in digits:
        one = normalise(pen_strokes(templates.digit(int(d), rng), rng))
        lo, hi = bounds(one)
        # Side by side, never stacked (two stacked 0s are an 8) nor overlapping.
        shift = np.array([x, rng.uniform(-0.15, 0.15)])
        strokes += [s - lo + shift for s in one]
        x += (hi - lo)[0] + rng.uniform(0.15, 0.5)
    return draw_strokes(strokes, rng)


# name -> (draw(rng, index, item) -> 28x28, label(index, item) -> int). item is the
# family's own input for that index (an MNIST image and label), else None.
def _digit_family(fn):
    return (lambda rng, i, item: fn(i % 10, rng)), (lambda i, item: i % 10)


def _negative_family(fn):
    return (lambda rng, i, item: fn(rng)), (lambda i, item: NOT_A_DIGIT)


FAMILIES = {
    "skeleton": _digit_family(skeleton_digit),
    "hershey": _digit_family(hershey_digit),
    "font": _digit_family(font_digit),
    "mnist": ((lambda rng, i, item: mnist_digit(item[0], rng)), (lambda i, item: int(item[1]))),
    "letter": _negative_family(letter),
    "symbol": _negative_family(symbol),
    "shape": _negative_family(shape),
    "scribble": _negative_family(scribble),
    "several": _negative_family(several_digits),
}
# Families drawn a chunk at a time (one drawing gives several samples): name ->
# draw(rng, count, items) -> (images, labels). Their items are MNIST training digits.
CHUNK_FAMILIES = {"part": numbers.part_crops}
PART_POOL = 3000  # MNIST training digits each chunk of the part family redraws from
DIGIT_FAMILIES = ("skeleton", "hershey", "font", "mnist")
NEGATIVE_FAMILIES = ("letter", "symbol", "shape", "scribble", "several")


def render_chunk(task) -> tuple[np.ndarray, np.ndarray]:
    """Samples [start, stop) of one family: (images (n, 28, 28) uint8, labels (n,)).

    items, when given, holds the family's inputs for exactly those indices.
    """
    family, seed, start, stop, items = task
    if family in CHUNK_FAMILIES:
        return CHUNK_FAMILIES[family](family_rng(seed, family, start), stop - start, items)
    draw, label = FAMILIES[family]
    images = np.zeros((stop - start, 28, 28), np.uint8)
    labels = np.zeros(stop - start, np.int64)
    for k, i in enumerate(range(start, stop)):
        item = None if items is None else (items[0][k], items[1][k])
        images[k] = draw_retrying(draw, seed, family, i, item)
        labels[k] = label(i, item)
    return images, labels


def draw_retrying(draw, seed: int, family: str, index: int, item, attempts: int = 8):
    """One sample; a drawing the API would refuse (a speck, say) is drawn again with
    the next generator of the same (seed, family, index): still deterministic."""
    for attempt in range(attempts):
        rng = family_rng(seed, family, index, attempt)
        try:
            return draw(rng, index, item)
        except ApiError as exc:
            last = exc
    raise RuntimeError(f"{family} #{index}: refused {attempts} times: {last.message}")


@dataclass
class Rendered:
    images: np.ndarray  # (n, 28, 28) uint8, white ink on black, as the API makes them
    labels: np.ndarray  # (n,) int64: 0..9, or NOT_A_DIGIT
    families: np.ndarray  # (n,) int64 index into names
    names: list[str]
    seconds: float

    def counts(self) -> dict[str, int]:
        return {name: int((self.families == i).sum()) for i, name in enumerate(self.names)}


def tasks_for(counts: dict[str, int], seed: int, mnist=None, chunk: int = 250) -> list:
    """render_chunk tasks; the mnist family redraws mnist = (images, labels) in order."""
    tasks = []
    for family, n in counts.items():
        if family not in FAMILIES and family not in CHUNK_FAMILIES:
            known = ", ".join([*FAMILIES, *CHUNK_FAMILIES])
            raise ValueError(f"unknown family {family!r}; known: {known}")
        if family in ("mnist", *CHUNK_FAMILIES) and n and (mnist is None or len(mnist[0]) == 0):
            raise ValueError(f"the {family} family needs MNIST training images")
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            items = None
            if family == "mnist":
                pick = np.arange(start, stop) % len(mnist[0])
                items = (mnist[0][pick], mnist[1][pick])
            elif family in CHUNK_FAMILIES:
                pick = (np.arange(PART_POOL) + start * 7) % len(mnist[0])
                items = (mnist[0][pick], mnist[1][pick])
            tasks.append((family, seed, start, stop, items))
    return tasks


def render_set(counts: dict[str, int], seed: int, processes: int | None = None,
               mnist=None) -> Rendered:
    """All the families' samples; the same arrays for any number of processes.

    processes > 1 uses spawned workers, so it is safe whatever the caller has imported;
    still, call it before TensorFlow starts its thread pools, which would compete.
    """
    started = time.perf_counter()
    tasks = tasks_for(counts, seed, mnist)
    processes = worker_count() if processes is None else processes
    if processes > 1 and len(tasks) > 1:
        with spawn_pool(min(processes, len(tasks))) as pool:
            results = pool.map(render_chunk, tasks, chunksize=1)
    else:
        results = [render_chunk(t) for t in tasks]
    names = [f for f, n in counts.items() if n]
    families = np.concatenate(
        [np.full(len(r[1]), names.index(t[0]), np.int64) for t, r in zip(tasks, results,
                                                                         strict=True)]
        or [np.zeros(0, np.int64)])
    images = np.concatenate([r[0] for r in results] or [np.zeros((0, 28, 28), np.uint8)])
    labels = np.concatenate([r[1] for r in results] or [np.zeros(0, np.int64)])
    return Rendered(images, labels, families, names, time.perf_counter() - started)


def sheet(rendered: Rendered, per_family: int = 40, zoom: int = 2) -> Image.Image:
    """A contact sheet: one row of samples per family, for looking at."""
    rows = []
    for i, _ in enumerate(rendered.names):
        picked = rendered.images[rendered.families == i][:per_family]
        picked = np.pad(picked, ((0, per_family - len(picked)), (1, 1), (1, 1)),
                        constant_values=80)
        rows.append(np.hstack(list(picked)))
    grid = np.vstack(rows)
    return Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom),
                                        Image.Resampling.NEAREST)

