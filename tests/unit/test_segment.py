"""api.segment: splitting a drawn number into digits, read with the shipped model.

The model runs in this process (tools/local_model.py, the worker's own loader); the
API never imports TensorFlow, the tests may.
"""

from __future__ import annotations

import io
import math
from collections import deque

import numpy as np
import pytest
from PIL import Image

from api.errors import ApiError
from api.preprocess import load_image
from api.seams import label
from api.segment import plan_number
from tests.drawing import digit_strokes, number_strokes, png

# A 4 whose bar stops short of its stem: two pieces of ink, one digit.
OPEN_FOUR = (0.75, [[(0.12, 0.0), (0.02, 0.62), (0.55, 0.62)], [(0.8, 0.0), (0.8, 1.0)]])
# A 5 whose bar is lifted off its body.
LIFTED_FIVE = (0.65, [
    [(0.15, 0.12), (0.12, 0.45)]
    + [(0.5 + 0.45 * math.cos(t), 0.7 + 0.3 * math.sin(t)) for t in np.linspace(-2.3, 2.2, 22)],
    [(0.32, 0.0), (0.95, 0.0)],
])


@pytest.fixture(scope="module")
def forward():
    from tools.local_model import load_forward

    return load_forward()


def plan_of(drawing: bytes, max_digits: int = 12):
    return plan_number(load_image(drawing), max_digits)


def read(forward, drawing: bytes, max_digits: int = 12) -> dict:
    plan = plan_of(drawing, max_digits)
    return plan.decode(forward(plan.crops))


def flood_fill(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labelling the slow, obvious way."""
    out, count = np.zeros(mask.shape, int), 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if out[y, x]:
            continue
        count += 1
        out[y, x] = count
        queue = deque([(y, x)])
        while queue:
            cy, cx = queue.popleft()
            for ny in range(max(cy - 1, 0), min(cy + 2, mask.shape[0])):
                for nx in range(max(cx - 1, 0), min(cx + 2, mask.shape[1])):
                    if mask[ny, nx] and not out[ny, nx]:
                        out[ny, nx] = count
                        queue.append((ny, nx))
    return out, count


def test_label_finds_the_same_pieces_as_a_flood_fill():
    rng = np.random.default_rng(0)
    for _ in range(60):
        mask = rng.random(tuple(rng.integers(1, 25, 2))) < rng.uniform(0.1, 0.6)
        got, n = label(mask)
        want, m = flood_fill(mask)
        assert n == m
        # The same partition: each of our labels is exactly one of theirs.
        assert len(set(zip(got[mask].tolist(), want[mask].tolist(), strict=True))) == n
        assert (got[~mask] == 0).all()


def test_one_digit(forward):
    result = read(forward, png(digit_strokes(7, 300, 60, 160)))
    assert result["number"] == "7"
    (digit,) = result["digits"]
    assert digit["digit"] == 7 and digit["confidence"] > 0.9
    assert set(digit["probabilities"]) == {str(d) for d in range(10)}
    assert sum(digit["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    x, y, w, h = digit["box"]
    assert abs(x - 300) <= 3 and abs(y - 60) <= 3 and abs(h - 160) <= 4


@pytest.mark.parametrize("shape, digit", [(OPEN_FOUR, 4), (LIFTED_FIVE, 5)])
def test_the_strokes_of_one_digit_are_merged(forward, shape, digit):
    drawing = png(digit_strokes(shape, 200, 60, 160))
    assert len(plan_of(drawing).pieces) == 2  # two pieces of ink...
    result = read(forward, drawing)
    assert result["number"] == str(digit)  # ... one digit
    assert len(result["digits"]) == 1


def test_a_seven_with_a_crossbar_is_one_digit(forward):
    result = read(forward, png(number_strokes("27", variants={7: 1})))
    assert result["number"] == "27"


@pytest.mark.parametrize("digits, gap", [("17", -4), ("23", -6), ("35", -5), ("86", -6)])
def test_touching_pairs_are_parted(forward, digits, gap):
    drawing = png(number_strokes(digits, gap=gap))
    assert len(plan_of(drawing).pieces) == 1  # the two digits are one piece of ink
    result = read(forward, drawing)
    assert result["number"] == digits
    left, right = (d["box"] for d in result["digits"])
    assert left[0] < right[0]


def test_overlapping_neighbours_that_do_not_touch(forward):
    drawing = png(number_strokes("74", gap=-30))
    plan = plan_of(drawing)
    assert len(plan.pieces) == 2
    result = read(forward, drawing)
    assert result["number"] == "74"
    seven, four = (d["box"] for d in result["digits"])
    assert seven[0] + seven[2] > four[0]  # their columns overlap


def test_specks_and_stray_dots_are_not_digits(forward):
    dots = [[(600, 100)], [(650, 240)], [(20, 20)], [(420, 250), (423, 251)]]
    result = read(forward, png(number_strokes("42") + dots, brush=18))
    assert result["number"] == "42"


def test_ten_digits_left_to_right(forward):
    result = read(forward, png(number_strokes("0123456789", height=80, gap=12)))
    assert result["number"] == "0123456789"
    xs = [d["box"][0] for d in result["digits"]]
    assert xs == sorted(xs)
    # The whole string is right only if every digit is: at most the product of theirs.
    product = float(np.prod([d["confidence"] for d in result["digits"]]))
    assert 0.5 < result["confidence"] <= product + 1e-9


def test_transparent_and_white_backgrounds_read_alike(forward):
    strokes = number_strokes("2026")
    clear, white = (read(forward, png(strokes, background=b)) for b in ("transparent", "white"))
    assert clear["number"] == white["number"] == "2026"
    assert [d["box"] for d in clear["digits"]] == [d["box"] for d in white["digits"]]


def test_boxes_are_in_the_image_pixels(forward):
    """A drawing on a larger canvas, away from the corner: boxes follow the ink."""
    strokes = number_strokes("409", left=500, top=300, height=200, gap=50)
    result = read(forward, png(strokes, size=(1400, 700)))
    assert result["number"] == "409"
    for d in result["digits"]:
        x, y, w, h = d["box"]
        assert x >= 495 and 295 <= y <= 305 and abs(h - 200) <= 5
        assert x + w <= 1400 and y + h <= 700


@pytest.mark.parametrize("background", ["transparent", "white"])
def test_a_blank_canvas_is_refused(background):
    with pytest.raises(ApiError) as err:
        plan_of(png([], background=background))
    assert (err.value.status, err.value.code) == (422, "blank_image")


def test_only_specks_is_blank():
    with pytest.raises(ApiError) as err:
        plan_of(png([[(100, 100)], [(300, 200)]], brush=6))
    assert (err.value.status, err.value.code) == (422, "blank_image")


def test_more_digits_than_the_limit(forward):
    with pytest.raises(ApiError) as err:
        read(forward, png(number_strokes("2026")), max_digits=3)
    assert (err.value.status, err.value.code) == (422, "too_many_digits")
    with pytest.raises(ApiError) as err:
        read(forward, png(number_strokes("1234567890123", height=60, gap=10)))
    assert (err.value.status, err.value.code) == (422, "too_many_digits")


def test_every_candidate_is_one_batch_and_decode_checks_the_answers():
    plan = plan_of(png(number_strokes("17", gap=-4)))
    assert plan.crops.dtype == np.uint8 and plan.crops.shape == (len(plan.candidates), 28, 28)
    assert len(plan.candidates) > 2  # the whole piece and its parts
    with pytest.raises(ValueError):
        plan.decode(np.full((len(plan.candidates) + 1, 10), 0.1))


def test_with_and_without_a_not_a_digit_output(forward):
    """Answers are (k, 11) from a model whose last output is not_a_digit, (k, 10) from
    one without: both decode, to the same digits here."""
    plan = plan_of(png(number_strokes("58")))
    probs = forward(plan.crops)
    with_score = probs if probs.shape[1] == 11 else np.concatenate(
        [probs, np.zeros((len(probs), 1))], axis=1)
    assert plan.decode(with_score)["number"] == plan.decode(with_score[:, :10])["number"] == "58"


def test_the_canvas_png_is_what_the_page_sends():
    """The helper's drawings decode as a canvas' toDataURL: RGBA, ink in alpha only."""
    img = Image.open(io.BytesIO(png(number_strokes("1"))))
    assert img.mode == "RGBA" and img.size == (840, 280)
    assert img.getchannel("A").getextrema() == (0, 255)


def _readings(edges: np.ndarray, n: int) -> list[list[int]]:
    """Every path of the lattice from state 0 to boundary n, by brute force."""
    out, stack = [], [(0, [])]
    while stack:
        state, path = stack.pop()
        if state // 2 == n:
            out.append(path)
        for e in np.flatnonzero(edges[:, 0] == state):
            stack.append((int(edges[e, 1]), [*path, int(e)]))
    return out


def test_the_lattice_shares_an_atom_only_between_two_digits_that_keep_one_of_their_own():
    """Readings of a touching pair's plan: every digit holds an atom no other digit
    holds, the digits cover the atoms in order, and a shared atom is one between two
    cuts of one piece. The best path is the best of them all, edges and pairs
    scored, and the whole-string probabilities of all readings sum to one."""
    from api.lattice import best_path, path_score, probability
    from api.segment import SHARE_WIDTH

    plan = plan_of(png(number_strokes("40", gap=-8)))
    lattice, n = plan.lattice, len(plan.atoms)
    readings = _readings(lattice.edges, n)
    assert len(readings) > 1
    shared_any = False
    for path in readings:
        spans = [(plan.candidates[lattice.edges[e, 2]].first,
                  plan.candidates[lattice.edges[e, 2]].last) for e in path]
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert len(lattice.path_pairs(path)) == len(path) - 1  # every step is a pair
        for (_, l0), (f1, _), e in zip(spans, spans[1:], path[1:], strict=False):
            shared = int(lattice.edges[e, 3])
            if shared < 0:
                assert f1 == l0
                continue
            shared_any = True
            atom = plan.atoms[shared]
            assert f1 == shared == l0 - 1  # the last atom of one, the first of the next
            assert atom.cut_before is not None and atom.order + 1 < plan.piece_atoms[atom.piece]
            assert atom.x1 - atom.x0 <= SHARE_WIDTH * plan.height
        for i, (f, last) in enumerate(spans):  # an atom of its own
            held = set(range(f, last))
            for j, (f2, l2) in enumerate(spans):
                if j != i:
                    held -= set(range(f2, l2))
            assert held
    assert shared_any, "the pair's plan offers no shared atom"
    rng = np.random.default_rng(0)
    scores, pair_scores = rng.normal(size=len(lattice.edges)), rng.normal(size=len(lattice.pairs))
    totals = [path_score(lattice, p, scores, pair_scores) for p in readings]
    best = best_path(lattice, scores, pair_scores)
    assert math.isclose(path_score(lattice, best, scores, pair_scores), max(totals))
    assert math.isclose(sum(probability(lattice, p, scores, pair_scores, 1.5) for p in readings),
                        1.0, rel_tol=1e-9)
