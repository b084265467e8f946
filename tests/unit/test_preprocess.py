"""api.preprocess on real images: decoding, refusals, and the MNIST recipe."""

from __future__ import annotations

import base64
import contextlib
import io
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from api.errors import ApiError
from api.preprocess import decode_payload, load_image, preprocess, to_mnist

ROOT = Path(__file__).resolve().parents[2]

# A "4" in unit coordinates (x, y): two strokes.
FOUR = [[(0.62, 0.0), (0.0, 0.68), (1.0, 0.68)], [(0.7, 0.3), (0.7, 1.0)]]
# A "7": wider than tall, so the width is the longer side.
WIDE_SEVEN = [[(0.0, 0.0), (1.0, 0.0), (0.45, 0.8)]]


def canvas(
    strokes=FOUR,
    box=(60, 40, 160, 200),
    width=16,
    size=(280, 280),
    background="transparent",
    ink=None,
) -> Image.Image:
    """Round-brush strokes fitted into box=(left, top, box_width, box_height).

    background: "transparent" (a canvas' toDataURL: black ink, alpha 0 elsewhere),
    "white" (opaque white, black ink) or "black" (opaque black, white ink).
    """
    left, top, bw, bh = box
    if background == "transparent":
        img, ink = Image.new("RGBA", size, (0, 0, 0, 0)), ink or (0, 0, 0, 255)
    elif background == "white":
        img, ink = Image.new("RGB", size, "white"), ink or (0, 0, 0)
    else:
        img, ink = Image.new("RGB", size, "black"), ink or (255, 255, 255)
    # Draw at 4x and reduce, for anti-aliased edges as a browser draws them.
    k = 4 if max(size) <= 1000 else 1
    big = img.resize((size[0] * k, size[1] * k))
    pen = ImageDraw.Draw(big)
    r = width * k / 2
    for stroke in strokes:
        points = [((left + x * bw) * k, (top + y * bh) * k) for x, y in stroke]
        pen.line(points, fill=ink, width=round(2 * r), joint="curve")
        for x, y in points:
            pen.ellipse((x - r, y - r, x + r, y + r), fill=ink)
    return big.reduce(k)


def encode(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **options)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def error(fn, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        fn(*args, **kwargs)
    return caught.value


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    a = a.astype(np.float64)
    rows, cols = np.indices(a.shape)
    return (a * rows).sum() / a.sum(), (a * cols).sum() / a.sum()


def ink_box(a: np.ndarray, level: int = 0) -> tuple[int, int]:
    rows, cols = np.nonzero(a > level)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation after a 3x3 box blur: the same shape, give or take half a pixel."""

    def blur(x: np.ndarray) -> np.ndarray:
        padded = np.pad(x.astype(np.float64), 1)
        return sum(padded[i : i + 28, j : j + 28] for i in range(3) for j in range(3))

    return correlation(blur(a), blur(b))


def png_with_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR is patched to claim width x height (CRC fixed)."""
    data = bytearray(encode(Image.new("L", (1, 1), 255)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


REFERENCE = to_mnist(canvas())


# ---------------------------------------------------------------- decode_payload


def test_missing_image():
    e = error(decode_payload, None)
    assert (e.status, e.code) == (400, "missing_image")


@pytest.mark.parametrize("value", [7, 1.5, True, False, [], ["aGk="], {}, {"image": "x"}, b"x"])
def test_image_field_must_be_a_string(value):
    e = error(decode_payload, value)
    assert (e.status, e.code) == (400, "invalid_image_field")


@pytest.mark.parametrize(
    "value", ["", "   ", "\n\t", "data:image/png;base64,", "data:image/png,  "]
)
def test_empty_image(value):
    e = error(decode_payload, value)
    assert (e.status, e.code) == (400, "empty_image")


@pytest.mark.parametrize(
    "value",
    [
        "data:text/plain;base64,aGVsbG8=",
        "data:application/octet-stream;base64,aGVsbG8=",
        "data:;base64,aGVsbG8=",
        "DATA:Text/HTML;base64,aGVsbG8=",
    ],
)
def test_data_url_must_hold_an_image_type(value):
    e = error(decode_payload, value)
    assert (e.status, e.code) == (415, "unsupported_media_type")


@pytest.mark.parametrize(
    "value", ["!!!!", "aGVsbG8@", "abcde", "a", "====", "aGVs=bG8=", "héllo", "data:image/png"]
)
def test_invalid_base64(value):
    e = error(decode_payload, value)
    assert (e.status, e.code) == (400, "invalid_base64")


def test_decode_plain_and_data_url_forms():
    png = encode(canvas())
    text = b64(png)
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    for value in [
        text,
        "  " + text + "\n",
        wrapped,
        text.rstrip("="),
        base64.urlsafe_b64encode(png).decode(),
        "data:image/png;base64," + text,
        "data:image/jpeg;base64," + wrapped,  # the declared subtype is not trusted
        "Data:Image/PNG;Base64," + text,
        "data:image/png;charset=utf-8;base64," + text,
    ]:
        assert decode_payload(value) == png


# ---------------------------------------------------------------- load_image


def test_loads_png_and_jpeg():
    img = canvas(background="white")
    assert load_image(encode(img)).size == (280, 280)
    assert load_image(encode(img, "JPEG", quality=85)).format == "JPEG"


def test_header_claiming_30000x30000_is_refused_before_decoding():
    bomb = png_with_size(30000, 30000)
    assert len(bomb) < 100
    started = time.perf_counter()
    e = error(load_image, bomb)
    assert time.perf_counter() - started < 0.5
    assert (e.status, e.code) == (413, "image_too_large")
    assert "30000x30000" in e.message and "4,000,000" in e.message


def test_real_decompression_bomb_is_refused():
    # 4.4 megapixels of zeros compress to a few KB.
    bomb = encode(Image.new("1", (2100, 2100)), optimize=True)
    assert len(bomb) < 20_000
    e = error(load_image, bomb)
    assert (e.status, e.code) == (413, "image_too_large")


def test_pillow_bomb_guard_maps_to_413():
    # A cap above Pillow's own limit: Pillow's DecompressionBombError still becomes 413.
    e = error(load_image, png_with_size(30000, 30000), max_pixels=10**12)
    assert (e.status, e.code) == (413, "image_too_large")


def test_max_pixels_is_configurable():
    data = encode(canvas(size=(100, 100), box=(20, 10, 50, 80), width=6))
    assert load_image(data, max_pixels=10_000).size == (100, 100)
    e = error(load_image, data, max_pixels=9_999)
    assert (e.status, e.code) == (413, "image_too_large")
    assert "100x100" in e.message and "9,999" in e.message


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos : pos + 12 + length]))
        pos += 12 + length
    return chunks


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"hello, I am not an image", id="text"),
        pytest.param(
            b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
            b'<path d="M4 4L24 24" stroke="black"/></svg>',
            id="svg",
        ),
        pytest.param(encode(canvas())[:300], id="truncated-png"),
        pytest.param(encode(canvas(background="white"), "JPEG")[:400], id="truncated-jpeg"),
        pytest.param(b"\x89PNG\r\n\x1a\n", id="png-signature-only"),
        pytest.param(bytes(range(256)) * 4, id="garbage"),
        pytest.param(b"\x00", id="one-byte"),
        pytest.param(png_with_size(0, 0), id="zero-size"),
        pytest.param(png_with_size(0, 5), id="zero-width"),
        pytest.param(encode(canvas(), "TIFF"), id="tiff-not-allowed"),
        pytest.param(b"", id="no-bytes"),
    ],
)
def test_not_an_image(data):
    e = error(load_image, data)
    assert (e.status, e.code) == (400, "invalid_image")
    assert e.message


def test_header_only_png_is_invalid():
    png = encode(canvas())
    chunks = _png_chunks(png)
    header_only = png[:8] + b"".join(raw for kind, raw in chunks if kind != b"IDAT")
    e = error(load_image, header_only)
    assert (e.status, e.code) == (400, "invalid_image")


def test_corrupt_idat_is_invalid():
    png = bytearray(encode(canvas()))
    start = png.index(b"IDAT") + 4
    png[start + 10 : start + 60] = bytes(50)  # zlib stream garbage (CRC now wrong too)
    e = error(load_image, bytes(png))
    assert (e.status, e.code) == (400, "invalid_image")


# ---------------------------------------------------------------- to_mnist


def test_output_shape_and_dtype():
    assert REFERENCE.shape == (28, 28)
    assert REFERENCE.dtype == np.uint8
    assert REFERENCE.max() == 255  # white ink...
    assert REFERENCE[0].max() == 0 and REFERENCE[:, 0].max() == 0  # ...on black


@pytest.mark.parametrize(
    "strokes, box",
    [
        (FOUR, (60, 40, 160, 200)),
        (WIDE_SEVEN, (20, 90, 240, 100)),
        (FOUR, (200, 190, 40, 60)),  # small, in a corner
        ([[(0.0, 0.0), (0.0, 1.0)]], (140, 30, 0, 220)),  # a vertical "1"
    ],
)
def test_centre_of_mass_and_20px_box(strokes, box):
    out = to_mnist(canvas(strokes, box))
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    assert max(ink_box(out)) in (19, 20)
    assert max(ink_box(out)) <= 20


def test_thin_one_stays_thin():
    out = to_mnist(canvas([[(0.0, 0.0), (0.0, 1.0)]], (140, 30, 0, 220), width=10))
    height, width = ink_box(out, level=20)
    assert height in (19, 20)
    assert width <= 3


@pytest.mark.parametrize("background", ["transparent", "white", "black"])
def test_backgrounds_give_the_same_digit(background):
    out = to_mnist(canvas(background=background))
    assert correlation(out, REFERENCE) > 0.97


def test_light_ink_on_transparent_background():
    img = canvas(ink=(255, 255, 255, 255))  # dark-mode UI: white strokes, alpha elsewhere
    assert correlation(to_mnist(img), REFERENCE) > 0.97


@pytest.mark.parametrize("paper", ["white", "black"])
def test_opaque_paper_on_a_transparent_margin(paper):
    # An exported drawing: the paper is opaque but the margin around it transparent.
    framed = Image.new("RGBA", (320, 320), (0, 0, 0, 0))
    framed.paste(canvas(background=paper).convert("RGBA"), (20, 20))
    out = to_mnist(framed)
    assert correlation(out, REFERENCE) > 0.97


def test_white_eraser_strokes_on_a_transparent_canvas():
    img = canvas(width=30)
    ImageDraw.Draw(img).line([(40, 150), (240, 150)], fill=(255, 255, 255, 255), width=30)
    visible = Image.new("RGBA", img.size, "white")
    visible.alpha_composite(img)  # what the user saw on a white page
    out = to_mnist(img)
    assert out.max() == 255
    assert correlation(out, to_mnist(visible.convert("L"))) > 0.97


def test_colour_modes_give_the_same_digit():
    rgba = canvas()
    white = canvas(background="white")
    grey = white.convert("L")
    sixteen = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # 16-bit grey
    variants = {
        "LA": rgba.convert("LA"),
        "P": white.convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
        "P+transparency": Image.open(io.BytesIO(encode(rgba.convert("P")))),
        "1": grey.point(lambda v: 255 if v > 128 else 0).convert("1"),
        "CMYK": white.convert("CMYK"),
        "I;16": sixteen,
        "I": grey.convert("I"),
        "F": grey.convert("F"),
        "grey-on-grey": grey.point(lambda v: 100 + v * 80 // 255),  # low contrast photo
        "blue-ink": canvas(background="white", ink=(20, 40, 200)),
    }
    for name, img in variants.items():
        out = to_mnist(img)
        assert out.shape == (28, 28) and out.dtype == np.uint8, name
        assert correlation(out, REFERENCE) > 0.9, name


def test_jpeg_noise_is_ignored():
    data = encode(canvas(background="white"), "JPEG", quality=60)
    out = preprocess(b64(data))
    assert correlation(out, REFERENCE) > 0.95
    assert max(ink_box(out)) in (19, 20)


def test_jpeg_exif_orientation_is_honoured():
    sideways = canvas(background="white").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img = load_image(encode(sideways, "JPEG", quality=90, exif=exif.tobytes()))
    assert correlation(to_mnist(img), REFERENCE) > 0.95


def test_position_and_size_do_not_matter():
    # The same shape (2:3 box, brush an eighth of the height) anywhere, at any size.
    centred = to_mnist(canvas(box=(80, 50, 120, 180), width=22))
    small = to_mnist(canvas(box=(10, 190, 40, 60), width=7))  # small, bottom-left
    large = to_mnist(canvas(box=(40, 10, 174, 261), width=32))
    offset = to_mnist(canvas(box=(170, 20, 90, 135), width=17))  # top-right
    for other in (small, large, offset):
        assert similarity(centred, other) > 0.95
        assert correlation(centred, other) > 0.85


def test_mnist_style_input_passes_through():
    again = to_mnist(Image.fromarray(REFERENCE))
    assert correlation(again, REFERENCE) > 0.95


@pytest.mark.parametrize(
    "img",
    [
        pytest.param(Image.new("RGB", (280, 280), "white"), id="white"),
        pytest.param(Image.new("L", (280, 280), 0), id="black"),
        pytest.param(Image.new("RGBA", (280, 280), (0, 0, 0, 0)), id="transparent"),
        pytest.param(Image.new("RGBA", (280, 280), (255, 0, 0, 0)), id="transparent-red"),
        pytest.param(Image.new("L", (280, 280), 128), id="grey"),
        pytest.param(Image.new("L", (1, 1), 0), id="1x1-black"),
        pytest.param(Image.new("L", (1, 1), 255), id="1x1-white"),
    ],
)
def test_blank_images(img):
    e = error(to_mnist, img)
    assert (e.status, e.code) == (422, "blank_image")
    assert e.message == "the image has no ink: draw a digit first"


def test_a_faint_pixel_or_a_speck_is_blank():
    faint = Image.new("L", (280, 280), 255)
    faint.putpixel((100, 100), 240)  # barely visible
    speck = Image.new("L", (280, 280), 255)
    speck.putpixel((50, 60), 0)
    speck.putpixel((200, 220), 0)
    ghost = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ghost.putpixel((10, 10), (0, 0, 0, 12))  # almost transparent
    for img in (faint, speck, ghost):
        e = error(to_mnist, img)
        assert (e.status, e.code) == (422, "blank_image")


def test_blank_through_preprocess():
    e = error(preprocess, b64(encode(Image.new("RGBA", (280, 280)))))
    assert (e.status, e.code) == (422, "blank_image")


@pytest.mark.parametrize(
    "size, box, width",
    [
        ((3, 3), (1, 0, 0, 2), 1),  # tiny: upscaled
        ((12, 10), (2, 1, 6, 7), 1),
        ((4000, 40), (1500, 5, 20, 28), 3),  # long strip, small digit
        ((40, 3000), (5, 2000, 28, 600), 6),
        ((1999, 2000), (300, 200, 1200, 1600), 90),  # at the pixel cap
    ],
)
def test_any_size(size, box, width):
    out = preprocess(b64(encode(canvas(FOUR, box, width, size=size, background="white"))))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert 0 < max(ink_box(out)) <= 20
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1.5 and abs(cx - 14) <= 1.5


def test_preprocess_end_to_end_from_data_url():
    png = encode(canvas(box=(150, 150, 60, 90), width=7))
    out = preprocess("data:image/png;base64," + b64(png))
    assert similarity(out, REFERENCE) > 0.9


# ---------------------------------------------------------------- robustness


SAMPLE_PNG = encode(canvas(size=(40, 40), box=(10, 5, 20, 30), width=3))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_raise_api_errors(data):
    for call in (lambda: load_image(data), lambda: preprocess(b64(data))):
        with contextlib.suppress(ApiError):
            call()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(SAMPLE_PNG) - 1), st.integers(0, 255)), max_size=6),
       st.integers(8, len(SAMPLE_PNG)))  # fmt: skip
def test_mutated_png_only_raises_api_errors(edits, cut):
    data = bytearray(SAMPLE_PNG)
    for pos, value in edits:
        data[pos] = value
    try:
        out = preprocess(b64(bytes(data[:cut])))
    except ApiError:
        return
    assert out.shape == (28, 28) and out.dtype == np.uint8


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=200), st.lists(st.text())))
def test_arbitrary_fields_only_raise_api_errors(value):
    with contextlib.suppress(ApiError):
        preprocess(value)


def test_does_not_import_tensorflow():
    code = "import api.preprocess, sys; assert 'tensorflow' not in sys.modules, 'tf imported'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_small_crops_are_resized_as_pillow_resizes_them():
    """api/segment.py's crops skip Pillow's per-image overhead: the numpy Lanczos gives
    Pillow's pixels exactly, for every shape it is used for (either pass first)."""
    from api.preprocess import BOX, REDUCING_GAP, _fit

    rng = np.random.default_rng(0)
    shapes = [(int(h), int(w)) for h, w in rng.integers(1, 90, (300, 2))] + [
        (70, 9), (76, 21), (34, 17), (20, 20), (21, 1), (1, 40)]
    tried = 0
    for h, w in shapes:
        ink = ((rng.random((h, w)) < 0.5) * rng.integers(0, 256, (h, w))).astype(np.uint8)
        want = _fit(Image.fromarray(ink))  # an image goes through Pillow
        assert np.array_equal(_fit(ink), want), (h, w)
        scale = BOX / max(h, w)
        tried += max(w / max(1, round(w * scale)), h / max(1, round(h * scale))) < 2 * REDUCING_GAP
    assert tried > 200  # most took the numpy path
