"""Turn the JSON "image" field into the 28x28 picture the model was trained on.

numpy, Pillow and pyspng only: this runs in the API process, which must not import
TensorFlow.

    preprocess(value)  =  to_mnist(load_image(decode_payload(value)))

``to_mnist`` follows the MNIST recipe: find the ink (whatever the colours and the
transparency), crop to it, scale the longer side to 20 px keeping the aspect ratio,
and paste into 28x28 with the centre of mass of the ink at the centre. Every bad
input raises ``ApiError``; nothing else escapes for any bytes a client can send.

Stroke width is left alone. Thinning thick strokes (or thickening thin ones)
toward MNIST's ~2 px was measured on 4,000 canvas redrawings of MNIST test digits
(tools/canvas_set.py) and moved accuracy by 0.1%, within noise, for twice the
time; the model is trained with thickness augmentation instead. Neither did the
resampling filter (Lanczos, box, bilinear...) or a gamma on the result matter.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import math
import re

import numpy as np
import pyspng
from PIL import Image, ImageOps, UnidentifiedImageError

from api.errors import ApiError

DEFAULT_MAX_PIXELS = 4_000_000
# Pillow decoders we let near client bytes. Anything else (TIFF, SVG, ICO, PSD...)
# is refused before a decoder sees it.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
# PNG modes that libspng (pyspng) decodes to the very pixels Pillow gives, at 8 bits a
# channel. Not LA: pyspng 0.1.4 asks libspng for an output format it refuses.
SPNG_MODES = ("L", "RGB", "RGBA")

SIZE = 28  # output side
BOX = 20  # the digit's longer side, as in MNIST
REDUCING_GAP = 3.0  # Pillow's resize first reduces by whole factors past twice this
CENTRE = 14.0  # MNIST's mean centre of mass, in pixel-index coordinates
BLANK_LEVEL = 32  # strongest ink (0..255 contrast with the background) below this: blank
NOISE_FLOOR = 0.2  # ink fainter than this fraction of the strongest: noise, not in the box
FAINT = 0.1  # ink fainter than this fraction of the strongest is set to 0
MIN_INK_PIXELS = 3  # fewer ink pixels than this: a speck, not a digit

_URLSAFE = str.maketrans("-_", "+/")
_JSON_TYPES = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    list: "an array",
    dict: "an object",
}
_LEVELS = np.arange(256, dtype=np.float32)
_NUMPY_PIXELS = 1 << 20
_INDEX = np.arange(SIZE, dtype=np.float64)  # row and column numbers of a fitted digit


def _blank() -> ApiError:
    return ApiError(422, "blank_image", "the image has no ink: draw a digit first")


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_image", message)


# ---------------------------------------------------------------- decoding


def decode_payload(value) -> bytes:
    """The bytes of a base64 string, optionally a ``data:image/...;base64,`` URL."""
    if value is None:
        raise ApiError(
            400,
            "missing_image",
            'the JSON body needs an "image" field: a base64-encoded PNG or JPEG',
        )
    if not isinstance(value, str):
        kind = _JSON_TYPES.get(type(value), type(value).__name__)
        raise ApiError(400, "invalid_image_field", f'"image" must be a base64 string, not {kind}')
    text = value.strip()
    if not text:
        raise ApiError(400, "empty_image", '"image" is an empty string')
    if text[:5].lower() == "data:":
        comma = text.find(",")
        if comma < 0:
            raise ApiError(400, "invalid_base64", "malformed data URL: no ',' before the data")
        media_type = text[5:comma].split(";", 1)[0].strip().lower()
        if not media_type.startswith("image/"):
            shown = media_type or "text/plain (the default)"
            raise ApiError(
                415,
                "unsupported_media_type",
                f"the data URL holds {shown[:80]}, not an image/* type",
            )
        text = text[comma + 1 :].strip()
        if not text:
            raise ApiError(400, "empty_image", "the data URL holds no data")
    text = "".join(text.split())  # drop whitespace (much quicker than a regex)
    if "-" in text or "_" in text:  # URL-safe alphabet
        text = text.translate(_URLSAFE)
    text = text.rstrip("=")
    if not text.isascii() or len(text) % 4 == 1 or not text:
        raise ApiError(400, "invalid_base64", '"image" is not valid base64')
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_base64", '"image" is not valid base64') from None


def load_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode PNG/JPEG (also GIF, BMP, WebP) bytes, refusing anything over max_pixels.

    The size is checked from the header, before any pixel is decompressed.
    """
    if not isinstance(data, bytes | bytearray | memoryview) or not len(data):
        raise _invalid("no image bytes")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = img.size
        if width <= 0 or height <= 0:
            raise _invalid(f"the image is {width}x{height} pixels: empty")
        if width * height > max_pixels:
            raise _too_large(
                f"the image is {width}x{height} = {width * height:,} pixels", max_pixels
            )
        img = _decoded(img, data)  # now, so truncated or corrupt data fails here
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fired inside Image.open (over ~89 megapixels).
        raise _too_large(f"the image is {_claimed_size(data, exc)}", max_pixels) from None
    except UnidentifiedImageError:
        raise _invalid("not an image: send a PNG or JPEG (GIF, BMP and WebP also work)") from None
    except Exception as exc:  # Pillow raises many types for corrupt data, pyspng RuntimeError
        detail = str(exc)[:200] or type(exc).__name__
        raise _invalid(f"the image data is corrupt or truncated: {detail}") from None
    if img.format == "JPEG":  # phone photos: honour the EXIF orientation
        try:
            if img.getexif().get(0x0112, 1) != 1:
                img = ImageOps.exif_transpose(img)
        except Exception:  # a broken EXIF block does not spoil the pixels
            pass
    return img


def _decoded(img: Image.Image, data: bytes) -> Image.Image:
    """The pixels of an opened image.

    A plain 8-bit PNG (a canvas' RGBA) goes to libspng, whose inflate and unfiltering
    take about 60% of Pillow's time; Pillow has already read and checked the chunks
    before the pixels. The rest is Pillow's: 16-bit, palette, low bit depths, tRNS
    transparency (which libspng would ignore), an APNG whose first frame is smaller
    than the image, and the other formats.
    """
    tile = img.tile
    if (
        img.format == "PNG"
        and img.mode in SPNG_MODES
        and "transparency" not in img.info
        and len(tile) == 1
        and tile[0].args == img.mode  # the raw mode: 8 bits a channel
        and tile[0].extents == (0, 0, *img.size)
    ):
        pixels = pyspng.load(bytes(data))  # RuntimeError on corrupt data
        return Image.frombuffer(img.mode, img.size, pixels, "raw", img.mode, 0, 1)
    img.load()
    return img


def _claimed_size(data: bytes, exc: Exception) -> str:
    if bytes(data[:8]) == b"\x89PNG\r\n\x1a\n" and bytes(data[12:16]) == b"IHDR":
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return f"{width}x{height} = {width * height:,} pixels"
    found = re.search(r"(\d+) pixels", str(exc))
    return f"{int(found.group(1)):,} pixels" if found else "too large (a decompression bomb?)"


def _too_large(what: str, max_pixels: int) -> ApiError:
    return ApiError(413, "image_too_large", f"{what}; the limit is {max_pixels:,} pixels")


# ---------------------------------------------------------------- MNIST style


def _grey(img: Image.Image) -> tuple[Image.Image, int | None, tuple[int, int]]:
    """One "L" channel, its background level when known (else None), and where its
    top-left pixel is in img.

    Transparency is composited over whichever colour shows the ink: a canvas'
    black strokes on a transparent background go over white. Fully transparent
    margins are cropped away first, which makes the rest cheap.
    """
    mode = img.mode
    try:
        if mode in ("P", "PA", "RGBa", "La") or (
            "transparency" in img.info and mode in ("1", "L", "RGB")
        ):
            img = img.convert("RGBA")
            mode = "RGBA"
        if mode in ("RGBA", "LA"):
            box = img.getbbox()  # of the non-transparent pixels
            if box is None:
                raise _blank()  # fully transparent
            if box == (0, 0, *img.size) and img.getchannel("A").getextrema()[0] == 255:
                return img.convert("L"), None, (0, 0)  # opaque all over: colours decide
            img = img.crop(box)
            alpha = img.getchannel("A")
            lum = img.convert("L")
            backdrop = _backdrop(lum, alpha)
            grey = Image.composite(lum, Image.new("L", lum.size, backdrop), alpha)
            return grey, backdrop, box[:2]
        if mode.startswith("I;16") or mode in ("I", "F"):
            pixels = np.asarray(img, dtype=np.float32)
            top = float(pixels.max()) if pixels.size else 0.0
            scale = 255 / 65535 if top > 255 else (255.0 if mode == "F" and top <= 1 else 1.0)
            grey = Image.fromarray(np.clip(pixels * scale, 0, 255).astype(np.uint8))
            return grey, None, (0, 0)
        return img.convert("L"), None, (0, 0)  # 1, L, RGB, CMYK, YCbCr...
    except ApiError:
        raise
    except Exception:
        raise _invalid(f"unsupported colour mode {mode!r}") from None


def _backdrop(lum: Image.Image, alpha: Image.Image) -> int:
    """What to put behind the visible pixels of an image cropped to them.

    All of one shade (a canvas' black strokes, or white ones): they are the ink, so
    the opposite shade shows them. Dark and light (each at least a twentieth of
    the visible pixels) with an opaque edge: paper with ink on it, so the paper's
    own shade. Dark and light strokes on transparency (a white "eraser"): white,
    as on a web page.
    """
    lowest, highest = lum.getextrema()
    if highest < 128 or lowest >= 128:  # one shade even where transparent: no need to count
        return 255 if highest < 128 else 0
    counts = lum.histogram(mask=alpha)
    dark, light = sum(counts[:128]), sum(counts[128:])
    if min(dark, light) * 20 < dark + light:
        return 255 if dark >= light else 0
    alphas, shades = np.asarray(alpha), np.asarray(lum)
    edge = np.concatenate((alphas[0], alphas[-1], alphas[:, 0], alphas[:, -1])) >= 128
    if edge.mean() < 0.5:
        return 255
    edge_shades = np.concatenate((shades[0], shades[-1], shades[:, 0], shades[:, -1]))[edge]
    return int(np.median(edge_shades))


def _ink(grey: Image.Image, background: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """Ink strength 0..255 on 0, cropped to the ink, faint noise removed, and the crop's
    top-left pixel in grey; 422 if blank."""
    lowest, highest = grey.getextrema()
    width, height = grey.size
    # numpy on a copy is quickest for canvas-sized images; Pillow ops for big ones.
    pixels = np.asarray(grey) if width * height <= _NUMPY_PIXELS else None
    if background is None:  # the median of the border pixels
        if pixels is not None:
            edge = np.concatenate((pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]))
            counts = np.bincount(edge, minlength=256)
        else:
            edges = ((0, 0, width, 1), (0, height - 1, width, height), (0, 0, 1, height),
                     (width - 1, 0, width, height))  # fmt: skip
            counts = sum(np.asarray(grey.crop(edge).histogram()) for edge in edges)
        cumulative = counts.cumsum()
        background = int(np.searchsorted(cumulative, cumulative[-1] / 2))
        dark = background - lowest >= highest - background
    else:
        dark = background >= 128
        lowest, highest = min(lowest, background), max(highest, background)
    if dark:  # dark ink on a light background
        ink, strongest = background - _LEVELS, background - lowest
    else:  # light ink on a dark background
        ink, strongest = _LEVELS - background, highest - background
    if strongest < BLANK_LEVEL:
        raise _blank()
    # The box holds the ink above the noise floor; inside it, fainter ink still counts.
    noise = NOISE_FLOOR * strongest
    if pixels is not None:  # integer thresholds: no float copy of the pixels
        strong = (
            pixels <= math.floor(background - noise)
            if dark
            else pixels >= math.ceil(background + noise)
        )
        rows, cols = np.flatnonzero(strong.any(axis=1)), np.flatnonzero(strong.any(axis=0))
        box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    else:
        box = grey.point(np.where(ink >= noise, 255, 0).tolist()).getbbox()
    floor = max(BLANK_LEVEL / 2, FAINT * strongest)
    lut = np.rint(np.clip((ink - floor) * (255 / (strongest - floor)), 0, 255)).astype(np.uint8)
    if pixels is not None:
        values = lut.take(pixels[box[1] : box[3], box[0] : box[2]])
        if np.count_nonzero(values) < MIN_INK_PIXELS:
            raise _blank()  # a speck
        return Image.fromarray(values), box[:2]
    ink_image = grey.crop(box).point(lut.tolist())
    if ink_image.width * ink_image.height - ink_image.histogram()[0] < MIN_INK_PIXELS:
        raise _blank()  # a speck
    return ink_image, box[:2]


def ink(img: Image.Image) -> tuple[Image.Image, tuple[int, int]]:
    """The ink of a drawing (strength 0..255 on 0, the strongest 255) cropped to it,
    and where the crop's top-left pixel is in img; 422 blank_image if there is none."""
    if img.width <= 0 or img.height <= 0:
        raise _invalid("the image is empty")
    grey, background, (gx, gy) = _grey(img)
    image, (x, y) = _ink(grey, background)
    return image, (gx + x, gy + y)


def _fit(ink: Image.Image | np.ndarray) -> np.ndarray:
    """The cropped ink scaled so that its longer side is 20 px (Lanczos, as Pillow)."""
    height, width = ink.shape if isinstance(ink, np.ndarray) else ink.size[::-1]
    scale = BOX / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return np.asarray(ink)
    if isinstance(ink, np.ndarray):
        if max(width / size[0], height / size[1]) < 2 * REDUCING_GAP:
            return _lanczos(ink, size)
        ink = Image.fromarray(ink)
    return np.asarray(ink.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP))


def _lanczos(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow's Lanczos resize of a uint8 image, pixel for pixel, as two matrix
    products (its integer coefficients, its rounding): for the small crops of a
    number (api/segment.py) Pillow's per-image overhead costs more than the sums.
    Only where Pillow would not first reduce by whole factors (reducing_gap)."""
    height, width = values.shape
    out = values.astype(np.float64)
    # Two passes, each rounded to 8 bits; Pillow (13) runs the vertical one first
    # when the height shrinks more than twice as much as the width. The sums are
    # integers under 2**53, so float64 holds them exactly.
    shrink = height - size[1]
    if shrink > 0 and shrink > 2 * (width - size[0]):
        out = _clip8(_coefficients(height, size[1]) @ out)
    if size[0] != width:
        out = _clip8(out @ _coefficients(width, size[0]).T)
    if out.shape[0] != size[1]:
        out = _clip8(_coefficients(height, size[1]) @ out)
    return out.astype(np.uint8)


_PRECISION_BITS = 22  # Pillow's fixed point for 8-bit resampling (32 - 8 - 2)


def _clip8(sums: np.ndarray) -> np.ndarray:
    """Pillow's rounding of a fixed-point sum to 8 bits (exact: the scale is 2**-22)."""
    out = np.floor(sums * (1.0 / (1 << _PRECISION_BITS)) + 0.5, out=sums)
    np.maximum(out, 0.0, out=out)
    return np.minimum(out, 255.0, out=out)


@functools.lru_cache(maxsize=4096)
def _coefficients(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) Lanczos weights as Pillow computes them (Resample.c,
    precompute_coeffs and normalize_coeffs_8bpc), in its fixed point."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    inverse = 1.0 / filterscale
    out = np.zeros((n_out, n_in))
    for xx in range(n_out):
        centre = (xx + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        weights = [_lanczos_kernel((x - centre + 0.5) * inverse) for x in range(lo, hi)]
        total = sum(weights)
        for x, w in zip(range(lo, hi), weights, strict=True):
            k = w / total if total != 0.0 else w
            out[xx, x] = int(k * (1 << _PRECISION_BITS) + (-0.5 if k < 0 else 0.5))
    out.setflags(write=False)
    return out


def _lanczos_kernel(x: float) -> float:
    if not -3.0 <= x < 3.0:
        return 0.0
    return _sinc(x) * _sinc(x / 3)


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x


def to_mnist(img: Image.Image) -> np.ndarray:
    """(28, 28) uint8, white ink on black, digit in a 20x20 box, centred by mass."""
    return centred(ink(img)[0])


def centred(ink_image: Image.Image | np.ndarray) -> np.ndarray:
    """Ink cropped to itself (as ``ink`` gives it) -> (28, 28) uint8: scaled into a
    20x20 box keeping its aspect, centred by mass. 422 blank_image if it has none."""
    digit = _fit(ink_image)
    rows, cols = digit.shape
    row_mass = np.add.reduce(digit, axis=1, dtype=np.float64)
    mass = np.add.reduce(row_mass)
    if mass <= 0:
        raise _blank()
    cy = row_mass @ _INDEX[:rows] / mass
    cx = np.add.reduce(digit, axis=0, dtype=np.float64) @ _INDEX[:cols] / mass
    top = min(max(round(CENTRE - cy), 0), SIZE - rows)
    left = min(max(round(CENTRE - cx), 0), SIZE - cols)
    out = np.zeros((SIZE, SIZE), dtype=np.uint8)
    out[top : top + rows, left : left + cols] = digit
    return out


def preprocess(value, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """JSON "image" field -> (28, 28) uint8 MNIST-style digit, or ApiError."""
    return to_mnist(load_image(decode_payload(value), max_pixels))
