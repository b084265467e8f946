"""tools/eval_numbers.py's bounds against its own readings, on a small drawn set."""

from __future__ import annotations

import pytest

from tools.eval_numbers import read_alone, read_local, read_oracle, summarise
from tools.numbers_set import make_numbers


@pytest.fixture(scope="module")
def numbers():
    # Without MNIST: the mouse and font styles only. Crowded numbers are half of them.
    return make_numbers(24, seed=21)


def test_the_oracle_holds_every_number_the_segmentation_reads(numbers):
    read = [answer.get("number") == n.label
            for n, (answer, _) in zip(numbers, read_local(numbers, 12), strict=True)]
    oracle = [answer["number"] == n.label
              for n, (answer, _) in zip(numbers, read_oracle(numbers), strict=True)]
    assert all(o for r, o in zip(read, oracle, strict=True) if r)
    assert sum(oracle) >= sum(read) > 0


def test_the_ceiling_reads_each_digit_alone(numbers):
    result = summarise(numbers, read_alone(numbers))
    assert result["all"]["n"] == len(numbers)
    # Each digit's own ink, centred as /predict centres it: nearly every string reads.
    assert result["all"]["accuracy"] >= 0.75
