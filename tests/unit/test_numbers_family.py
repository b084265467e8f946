"""trainer/numbers.py: the layout the numbers share, and the part family's labels."""

from __future__ import annotations

import numpy as np
import pytest

from api.segment import plan_number
from tests.unit.test_render import synthetic_mnist
from trainer import numbers, render
from trainer.drawing import canvas_from_alpha


def bar(height: int = 120, width: int = 14) -> np.ndarray:
    return np.full((height, width), 255, np.uint8)


@pytest.mark.parametrize(("gap", "fraction", "pair"), [
    (numbers.GAPS[0], 0.5, "separated"),  # wide: half a digit height apart
    (numbers.GAPS[3], -0.3, "touching"),  # the inks meet, a third of a brush deep
])
def test_the_clearance_is_measured_between_the_inks(gap, fraction, pair):
    rng = np.random.default_rng(0)
    row = numbers.lay_out([bar(), bar()], [gap], [fraction], 120.0, 14.0, rng, 840, 280)
    assert row.pairs == [pair] and row.category == pair
    (x0, _, w0, _), (x1, _, _, _) = row.boxes
    clearance = x1 - (x0 + w0)
    assert clearance == (60 if pair == "separated" else -4)


def ink_table(*rows):
    """candidate_ink's shape: column 0 for pixels of no digit, then one per digit."""
    return np.array([[0, *r] for r in rows], dtype=float)


def test_part_labels():
    per_digit = np.array([100.0, 100.0])
    ink = ink_table(
        [95, 10],  # one digit and a neighbour's sliver: that digit
        [90, 80],  # most of both: two digits in one crop
        [30, 0],  # a third of one digit: a fragment
        [60, 0],  # more than a fragment, less than a digit: left out
    )
    assert numbers.part_labels(ink, per_digit, "71", [False] * 4).tolist() == [7, 10, 10, -1]
    # A candidate too light for the MNIST recipe is never a sample.
    assert numbers.part_labels(ink[:1], per_digit, "71", [True]).tolist() == [-1]


def test_candidate_ink_counts_each_digits_pixels():
    # Two bars far apart: two pieces, two candidates, each all of one digit's ink.
    alphas = [bar(), bar()]
    origins = [[100, 80], [400, 80]]
    canvas = np.zeros((280, 840), np.uint8)
    for alpha, (x, y) in zip(alphas, origins, strict=True):
        canvas[y : y + alpha.shape[0], x : x + alpha.shape[1]] = alpha
    plan = plan_number(canvas_from_alpha(canvas, white=False))
    owner = numbers.owners(alphas, origins, (840, 280))
    ink, per_digit = numbers.candidate_ink(plan, owner, 2)
    main, purity, coverage, other = numbers.whole_digit(ink, per_digit)
    assert len(plan.candidates) == 2
    assert main.tolist() == [0, 1]
    # Only the faint edge the work scale leaves is no digit's.
    assert purity.min() > 0.8 and coverage.min() > 0.95 and other.max() == 0


def test_the_part_family_is_the_segmenters_own_crops_labelled():
    images, _ = synthetic_mnist(40)
    mnist = (images, np.arange(40) % 10)  # every digit has some to redraw
    one = render.render_set({"part": 120}, seed=2, processes=1, mnist=mnist)
    two = render.render_set({"part": 120}, seed=2, processes=2, mnist=mnist)
    assert np.array_equal(one.images, two.images) and np.array_equal(one.labels, two.labels)
    assert one.images.shape == (120, 28, 28) and one.counts() == {"part": 120}
    labels = set(one.labels.tolist())
    assert render.NOT_A_DIGIT in labels and labels & set(range(10))
    # Crops are what the endpoint sends the workers: MNIST-style, ink everywhere.
    assert (one.images.reshape(120, -1).max(axis=1) > 0).all()


def test_a_drawn_number_reads_through_the_segmenter():
    rng = np.random.default_rng(5)
    label, row, alphas = numbers.draw_number(rng, {d: synthetic_mnist(2)[0] for d in range(10)})
    assert 2 <= len(label) <= 6 and len(alphas) == len(label) == len(row.origins)
    plan = plan_number(canvas_from_alpha(row.canvas, white=True))
    assert len(plan.candidates) >= 1


def test_the_finetune_replays_negatives_and_parts():
    from trainer.finetune import _negatives

    images, _ = synthetic_mnist(40)
    x, y = _negatives(30, seed=1, mnist=(images, np.arange(40) % 10))
    assert x.shape == (30, 28, 28) and y.shape == (30,)
    assert (y[:15] == render.NOT_A_DIGIT).all()  # the negative families
    assert set(y[15:].tolist()) <= set(range(11))  # the part family: digits and not
