"""What a version's outputs mean (models/outputs.py), calibration (trainer/calibrate.py)
and the NOT_A_DIGIT_THRESHOLD setting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from digits.protocol import not_a_digit
from digits.settings import SettingsError, load
from models.outputs import (
    CLASSES_11,
    Outputs,
    OutputsError,
    from_manifest,
    manifest_fields,
    serve,
    served_rows,
    temper,
)
from trainer.calibrate import ece, fit_temperature, threshold_for


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_old_manifests_mean_ten_outputs_untempered():
    assert from_manifest({"sha256": "x"}) == Outputs(10, 1.0)
    fields = manifest_fields(Outputs(11, 1.37))
    assert fields == {"outputs": 11, "classes": CLASSES_11, "temperature": 1.37}
    assert from_manifest(fields) == Outputs(11, 1.37)


@pytest.mark.parametrize("bad", [{"outputs": 12}, {"outputs": True}, {"temperature": 0},
                                 {"temperature": -1.0}, {"temperature": "2"},
                                 {"temperature": float("nan")},
                                 {"outputs": 10, "classes": CLASSES_11}])
def test_manifests_with_impossible_outputs_are_refused(bad):
    with pytest.raises(OutputsError):
        from_manifest(bad)


def test_tempering_probabilities_is_dividing_the_logits():
    z = np.random.default_rng(0).normal(0, 3, (5, 11))
    assert np.allclose(temper(softmax(z), 2.5), softmax(z / 2.5), atol=1e-9)
    assert np.allclose(temper(softmax(z), 1.0), softmax(z))


def test_served_digits_sum_to_one_and_not_a_digit_is_the_eleventh():
    z = np.random.default_rng(1).normal(0, 2, (4, 11))
    raw = softmax(z).astype(np.float32)
    digits, nad = serve(raw, Outputs(11, 1.0))
    assert np.allclose(digits.sum(axis=1), 1, atol=1e-6)
    assert np.allclose(nad, raw[:, 10], atol=1e-6)
    assert (digits.argmax(1) == raw[:, :10].argmax(1)).all()  # the digit never changes
    rows = served_rows(raw, Outputs(11, 1.0))
    assert rows.shape == (4, 11) and not_a_digit(rows[0].tolist()) == pytest.approx(nad[0])


def test_a_ten_output_version_has_no_not_a_digit():
    raw = softmax(np.random.default_rng(2).normal(0, 2, (3, 10)))
    digits, nad = serve(raw, Outputs(10, 1.0))
    assert np.isnan(nad).all() and np.allclose(digits, raw, atol=1e-6)
    rows = served_rows(raw, Outputs(10, 1.0))
    assert rows.shape == (3, 10) and not_a_digit(rows[0].tolist()) is None
    with pytest.raises(OutputsError):
        serve(raw, Outputs(11, 1.0))


def test_the_fitted_temperature_undoes_overconfidence():
    rng = np.random.default_rng(3)
    n, true_t = 4000, 2.0
    z = rng.normal(0, 1, (n, 11)) * 3
    labels = np.array([rng.choice(11, p=p) for p in softmax(z)])  # calibrated at T=1
    keep = labels < 10
    overconfident = softmax(z * true_t)  # as if the logits were scaled up by 2
    t = fit_temperature(overconfident[keep], labels[keep], 11)
    assert t == pytest.approx(true_t, rel=0.12)


def test_ece():
    conf = np.array([0.9] * 10 + [0.6] * 10)
    right = np.array([1] * 9 + [0] + [1] * 6 + [0] * 4)
    assert ece(conf, right) == pytest.approx(0.0)
    assert ece(np.array([0.99] * 4), np.array([1, 1, 0, 0])) == pytest.approx(0.49)
    assert ece(np.array([]), np.array([])) == 0.0


def test_threshold_refuses_at_most_the_share_asked():
    scores = np.linspace(0, 1, 1000)
    t = threshold_for(scores, 0.01)
    assert (scores >= t).sum() == 10 and (scores >= np.nextafter(t, 0) - 1e-9).sum() >= 10
    assert (scores >= threshold_for(scores, 0.0)).sum() == 0


def test_not_a_digit_threshold_setting():
    assert load(environ={}).NOT_A_DIGIT_THRESHOLD == 0.5
    assert load(environ={"NOT_A_DIGIT_THRESHOLD": "0.8"}).NOT_A_DIGIT_THRESHOLD == 0.8
    assert load(environ={"NOT_A_DIGIT_THRESHOLD": "2"}).NOT_A_DIGIT_THRESHOLD == 2.0
    for bad in ("-0.1", "high"):
        with pytest.raises(SettingsError, match="NOT_A_DIGIT_THRESHOLD"):
            load(environ={"NOT_A_DIGIT_THRESHOLD": bad})
    assert math.isclose(load({"NOT_A_DIGIT_THRESHOLD": 1}, environ={}).NOT_A_DIGIT_THRESHOLD, 1)
