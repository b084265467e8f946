"""tools/canvas_set.py: the MNIST test digits as canvas PNGs, in both styles."""

import io

import numpy as np
import pytest
from PIL import Image

from api.preprocess import load_image, to_mnist
from tools import canvas_set
from trainer.data import load


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    data = load(mnist_dir)
    return data.x_test[:40], data.y_test[:40]


@pytest.mark.parametrize("style", canvas_set.STYLES)
def test_same_seed_same_pngs(mnist, style):
    first = canvas_set.make_drawings(*mnist, 12, seed=3, style=style)
    again = canvas_set.make_drawings(*mnist, 12, seed=3, style=style)
    other = canvas_set.make_drawings(*mnist, 12, seed=4, style=style)
    assert first == again
    assert [label for _, label in first] == [int(y) for y in mnist[1][:12]]
    assert first != other


@pytest.mark.parametrize("style", canvas_set.STYLES)
def test_pngs_are_what_the_page_exports(mnist, style):
    for png, _ in canvas_set.make_drawings(*mnist, 20, seed=0, style=style):
        img = Image.open(io.BytesIO(png))
        assert (img.format, img.mode, img.size) == ("PNG", "RGBA", (280, 280))
        rgba = np.asarray(img)
        opaque = rgba[..., 3].min() == 255
        if opaque:  # on white: grey levels, no colour
            assert (rgba[..., 0] == rgba[..., 1]).all() and (rgba[..., 1] == rgba[..., 2]).all()
        else:  # black ink, the alpha carries it
            assert rgba[..., :3].max() == 0


def test_pixels_style_gives_back_the_digit(mnist):
    """Scaled onto the canvas and preprocessed again, a digit is the MNIST digit it was
    (MNIST's own recipe: 20 px box, centre of mass at the centre) up to resampling and a
    pixel's shift where MNIST's own box or centring differs a little."""
    images, _ = mnist
    drawings = canvas_set.make_drawings(*mnist, 40, seed=0, style="pixels")
    corr = []
    for (png, _), digit in zip(drawings, images, strict=True):
        back = to_mnist(load_image(png)).astype(np.float64).ravel()
        corr.append(np.corrcoef(back, digit.astype(np.float64).ravel())[0, 1])
    assert np.median(corr) > 0.95
    assert min(corr) > 0.5


def test_cache_is_remade_for_another_style(tmp_path, mnist_dir):
    folder = tmp_path / "set"
    redrawn = canvas_set.load_or_make(mnist_dir, 5, 0, cache_dir=folder, style="redrawn")
    assert canvas_set.load_or_make(mnist_dir, 5, 0, cache_dir=folder) == redrawn
    pixels = canvas_set.load_or_make(mnist_dir, 5, 0, cache_dir=folder, style="pixels")
    assert pixels != redrawn
    assert canvas_set.read(folder) == pixels
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{i:04d}_{label}.png" for i, (_, label) in enumerate(pixels)] + ["labels.json"])


def test_unknown_style_is_refused(mnist):
    with pytest.raises(ValueError, match="style"):
        canvas_set.make_drawings(*mnist, 1, style="sketch")
