"""Numbers drawn the way the page draws them, for the tests of POST /predict/number.

Strokes are polylines in canvas pixels, painted with the page's round brush (18 px)
at 4x and reduced, for anti-aliased edges. Digit shapes are the stroke templates
of tools/numbers_set.py, placed without jitter so that the tests are exact.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from tools.numbers_set import TEMPLATES

BRUSH = 18  # web/app.js LINE_WIDTH
CANVAS = (840, 280)  # the page's number canvas


def digit_strokes(digit, left: float, top: float, height: float,
                  variant: int = 0) -> list[list[tuple[float, float]]]:
    """A template digit whose ink box (brush included) starts at (left, top). ``digit``
    is 0-9 (tools/numbers_set.TEMPLATES) or a template of one's own: (aspect, strokes)."""
    aspect, strokes = TEMPLATES[digit][variant] if isinstance(digit, int) else digit
    inner = height - BRUSH
    xs = [x for stroke in strokes for x, _ in stroke]
    ys = [y for stroke in strokes for _, y in stroke]
    x0, y0 = min(xs), min(ys)
    scale = inner / (max(ys) - y0)
    return [[(left + BRUSH / 2 + (x - x0) * aspect * scale, top + BRUSH / 2 + (y - y0) * scale)
             for x, y in stroke] for stroke in strokes]


def width_of(digit: int, height: float, variant: int = 0) -> float:
    aspect, strokes = TEMPLATES[digit][variant]
    xs = [x for stroke in strokes for x, _ in stroke]
    ys = [y for stroke in strokes for _, y in stroke]
    return (max(xs) - min(xs)) * aspect * (height - BRUSH) / (max(ys) - min(ys)) + BRUSH


def number_strokes(digits: str, left: float = 40, top: float = 60, height: float = 160,
                   gap: float = 30, variants: dict | None = None) -> list:
    """The strokes of a number written left to right, ``gap`` px between ink boxes
    (negative: the boxes overlap)."""
    strokes, x = [], left
    for ch in digits:
        d = int(ch)
        variant = (variants or {}).get(d, 0)
        strokes += digit_strokes(d, x, top, height, variant)
        x += width_of(d, height, variant) + gap
    return strokes


def png(strokes, size=CANVAS, background: str = "transparent", brush: float = BRUSH) -> bytes:
    """The canvas as PNG: black ink on transparency (toDataURL) or on opaque white."""
    k = 4
    ink = Image.new("L", (size[0] * k, size[1] * k), 0)
    pen = ImageDraw.Draw(ink)
    r = brush * k / 2
    for stroke in strokes:
        points = [(x * k, y * k) for x, y in stroke]
        if len(points) > 1:
            pen.line(points, fill=255, width=round(2 * r))
        for x, y in points:  # round caps and joins
            pen.ellipse((x - r, y - r, x + r, y + r), fill=255)
    alpha = ink.reduce(k)
    if background == "white":
        img = Image.merge("RGB", [alpha.point(lambda v: 255 - v)] * 3)
    else:
        img = Image.new("RGBA", size, (0, 0, 0, 0))
        img.putalpha(alpha)
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()
