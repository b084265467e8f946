"""The fine-tune gate's rules (trainer/finetune.py ``judge``) on given scores."""

from __future__ import annotations

from trainer.finetune import GateRules, Scores, judge

RULES = GateRules(min_accuracy=0.994, tolerance=0.001)


def scores(mnist=0.995, held=0.9, **per_digit):
    per = {d: (9, 10) for d in range(10)}
    per.update({int(k[1:]): v for k, v in per_digit.items()})
    return Scores(mnist, held, per)


def test_a_better_candidate_passes():
    assert judge(scores(), scores(held=0.95), RULES) == ""


def test_mnist_floor_and_tolerance():
    assert "below the floor" in judge(scores(), scores(mnist=0.9935, held=0.95), RULES)
    assert "below the current" in judge(scores(mnist=0.998), scores(mnist=0.9965), RULES)
    assert judge(scores(mnist=0.998), scores(mnist=0.9971, held=0.95), RULES) == ""


def test_held_out_feedback_must_not_fall():
    assert "held-out feedback accuracy" in judge(scores(held=0.9), scores(held=0.89), RULES)


def test_a_digit_that_loses_its_honest_rows_is_refused_even_if_the_total_rises():
    """The flipped rows (7s labelled 1) count under 1, where the candidate gains; the
    honest 7s are where it loses."""
    before = scores(held=0.90, d1=(10, 20), d7=(9, 10))
    after = scores(held=0.93, d1=(20, 20), d7=(6, 10))
    assert "labelled 7" in judge(before, after, RULES)
    # One row either way is noise, not a flip.
    assert judge(before, scores(held=0.93, d1=(20, 20), d7=(8, 10)), RULES) == ""


def test_digits_with_few_held_out_rows_are_not_judged_alone():
    before = scores(d3=(4, 4))
    assert judge(before, scores(held=0.95, d3=(1, 4)), RULES) == ""
