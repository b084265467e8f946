"""The training and evaluation renderers: deterministic, API-preprocessed, and disjoint."""

from __future__ import annotations

import ast
import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from api.preprocess import preprocess, to_mnist
from tools import canvas_families, eval_shapes, feedback_population
from trainer import drawing, render, templates

ROOT = Path(__file__).resolve().parents[2]
FEW = dict.fromkeys(("skeleton", "hershey", "font", "letter", "symbol", "shape", "scribble",
                     "several"), 4)


def synthetic_mnist(n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-like 28x28 digits: a bar (a "1") and a ring (a "0"), white on black."""
    images = np.zeros((n, 28, 28), np.uint8)
    rows, cols = np.mgrid[:28, :28]
    ring = np.abs(np.hypot(rows - 14, (cols - 14) * 1.4) - 8) < 2
    for i in range(n):
        if i % 2:
            images[i, 5:23, 13:16] = 255
        else:
            images[i][ring] = 255
    return images, np.array([1 if i % 2 else 0 for i in range(n)], np.uint8)


def test_same_seed_same_samples_and_another_seed_others():
    a = render.render_set(FEW, seed=3, processes=1)
    b = render.render_set(FEW, seed=3, processes=1)
    c = render.render_set(FEW, seed=4, processes=1)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.families, b.families)
    for i, name in enumerate(a.names):  # every family depends on the seed
        assert not np.array_equal(a.images[a.families == i], c.images[c.families == i]), name


def test_a_sample_does_not_depend_on_how_the_work_is_split():
    whole = render.render_chunk(("skeleton", 5, 0, 6, None))[0]
    tail = render.render_chunk(("skeleton", 5, 3, 6, None))[0]
    assert np.array_equal(whole[3:], tail)


def test_spawned_workers_give_the_same_arrays_as_one_process():
    counts = {"skeleton": 3, "letter": 3}
    mnist = synthetic_mnist()
    one = render.render_set({**counts, "mnist": 4}, seed=1, processes=1, mnist=mnist)
    two = render.render_set({**counts, "mnist": 4}, seed=1, processes=2, mnist=mnist)
    assert np.array_equal(one.images, two.images) and np.array_equal(one.labels, two.labels)


def test_shapes_dtypes_and_labels():
    mnist = synthetic_mnist()
    out = render.render_set({**FEW, "mnist": 4}, seed=0, processes=1, mnist=mnist)
    n = sum(FEW.values()) + 4
    assert out.images.shape == (n, 28, 28) and out.images.dtype == np.uint8
    assert out.labels.shape == (n,) and out.families.shape == (n,)
    assert out.counts() == {**FEW, "mnist": 4}
    for i, name in enumerate(out.names):
        labels = out.labels[out.families == i]
        if name in render.NEGATIVE_FAMILIES:
            assert set(labels) == {render.NOT_A_DIGIT}, name
        elif name == "mnist":
            assert list(labels) == list(mnist[1]), name
        else:
            assert list(labels) == [k % 10 for k in range(len(labels))], name
    assert (out.images.reshape(n, -1).max(axis=1) == 255).all()  # ink everywhere
    assert render.CLASSES[render.NOT_A_DIGIT] == "not_a_digit" and len(render.CLASSES) == 11


def test_samples_are_what_the_api_makes_of_the_canvas_png():
    rng = np.random.default_rng(0)
    pen = drawing.Pen(height=150, width=22, white=False)
    strokes = drawing.place(render.pen_strokes(templates.digit(7, rng), rng), pen, rng)
    canvas = drawing.paint(strokes, pen)
    assert canvas.size == (280, 280) and canvas.mode == "RGBA"
    alpha = np.asarray(canvas)[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255  # black ink on transparency
    png = canvas_families.png(canvas)
    through_api = preprocess("data:image/png;base64," + base64.b64encode(png).decode())
    assert np.array_equal(through_api, drawing.to_input(canvas))
    rows, cols = np.nonzero(through_api)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 == 20  # MNIST's box


def test_white_canvases_preprocess_like_transparent_ones():
    rng = np.random.default_rng(1)
    strokes = drawing.place(render.pen_strokes(templates.digit(4, rng), rng),
                            drawing.Pen(200, 16, False), rng)
    clear = to_mnist(drawing.paint(strokes, drawing.Pen(200, 16, False)))
    white = to_mnist(drawing.paint(strokes, drawing.Pen(200, 16, True)))
    assert np.abs(clear.astype(int) - white).max() <= 2


def test_negatives_never_use_letters_that_pass_for_digits():
    assert set("OISZBgql") <= render.DIGIT_LOOKALIKES  # the examples
    assert not set(render.LETTERS) & render.DIGIT_LOOKALIKES
    assert not set(render.SYMBOLS) & set("0123456789|/\\()[]!.,:;'`")
    drawn = {c for _, _, c in render.char_sources(render.LETTERS)}
    assert drawn and not drawn & render.DIGIT_LOOKALIKES
    assert not set(eval_shapes.MOUSE_LETTERS) & render.DIGIT_LOOKALIKES
    assert not set(eval_shapes.MOUSE_SYMBOLS) & set("0123456789")


def test_scribbles_are_busier_than_any_digit_template():
    rng = np.random.default_rng(2)
    busiest_digit = max(templates.busyness(templates.digit(d, rng)) for d in range(10)
                        for _ in range(5))
    assert busiest_digit < templates.BUSY
    assert all(templates.busyness(templates.scribble(rng)) >= templates.BUSY
               for _ in range(20))


def test_training_and_evaluation_sources_are_disjoint():
    train = {name for name, _ in render.TRAIN_FONTS}
    evaluation = {name for name, _ in canvas_families.EVAL_FONTS}
    assert not train & evaluation
    resolved_train = {p.resolve() for p in render.fonts_for(render.TRAIN_FONTS)}
    assert not resolved_train & {p.resolve() for p in canvas_families.eval_fonts()}
    # The evaluation renderers import no Hershey font, no trainer template, no training
    # family: only the canvas (trainer.drawing) and the definitions of a negative.
    imported = set()
    for name in ("canvas_families.py", "eval_shapes.py"):
        tree = ast.parse((ROOT / "tools" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                imported |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
    from_trainer = {n for n in imported if n.startswith("trainer.")}
    assert {n.rsplit(".", 1)[0] for n in from_trainer} <= {
        "trainer.drawing", "trainer.render", "trainer.data"}
    assert {n for n in from_trainer if n.startswith("trainer.render.")} <= {
        "trainer.render.LETTERS", "trainer.render.SYMBOLS", "trainer.render.NOT_A_DIGIT"}
    assert not {n for n in from_trainer if "hershey" in n.lower()}
    assert not any("hershey" in n.lower() or "templates" in n for n in imported)


def test_the_evaluation_mouse_paints_with_the_pages_pen():
    app = (ROOT / "web" / "app.js").read_text()
    assert float(re.search(r"LINE_WIDTH = ([\d.]+)", app).group(1)) == canvas_families.LINE_WIDTH
    assert float(re.search(r"MIN_STEP = ([\d.]+)", app).group(1)) == canvas_families.MIN_STEP


def test_evaluation_set_is_deterministic_and_labelled():
    counts = dict.fromkeys(canvas_families.FAMILIES, 2)
    counts["mnist"] = 0
    a = canvas_families.make_set(counts, seed=5, processes=1)
    b = canvas_families.make_set(counts, seed=5, processes=1)
    assert [d.png for d in a] == [d.png for d in b]
    for d in a:
        img = Image.open(io.BytesIO(d.png))
        assert img.size == (280, 280) and img.mode == "RGBA"
        expected = render.NOT_A_DIGIT if d.family.startswith("neg_") else None
        assert d.label == expected if expected is not None else 0 <= d.label <= 9
        assert preprocess(base64.b64encode(d.png).decode()).shape == (28, 28)


def test_the_debian_font_list_is_what_the_renderers_use():
    listed = {line.strip() for line in (ROOT / "requirements" / "debian-fonts.txt").read_text()
              .splitlines() if line.strip() and not line.startswith("#")}
    fonts = render.TRAIN_FONTS + canvas_families.EVAL_FONTS + feedback_population.FONTS
    used = {package for _, package in fonts if package.startswith("fonts-")}
    assert listed == used


def test_a_missing_font_names_the_package_to_install(tmp_path):
    with pytest.raises(drawing.FontMissing, match="apt-get install fonts-nothing"):
        drawing.font_paths((("NoSuchFont.ttf", "fonts-nothing"),), dirs=(tmp_path,))
