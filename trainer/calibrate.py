"""Calibration: the temperature that makes ``confidence`` mean what it says, and how
well it does (expected calibration error). numpy only.

The temperature is fitted on held-out drawings of real digits (never trained on) by
minimising the negative log-likelihood of the served digit probabilities
(models/outputs.py ``serve``): those are what ``confidence`` reports.
"""

from __future__ import annotations

import math

import numpy as np

from models.outputs import Outputs, serve

ECE_BINS = 15


def digit_nll(raw: np.ndarray, labels: np.ndarray, count: int, temperature: float) -> float:
    digits, _ = serve(raw, Outputs(count, temperature))
    picked = digits[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(picked.astype(np.float64), 1e-12)).mean())


def fit_temperature(raw: np.ndarray, labels: np.ndarray, count: int,
                    low: float = 0.25, high: float = 8.0) -> float:
    """The temperature minimising the digit NLL: a golden-section search on log T (the
    NLL is unimodal in T for a fixed set of logits)."""
    if not len(labels):
        return 1.0
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = (digit_nll(raw, labels, count, math.exp(v)) for v in (c, d))
    for _ in range(40):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = digit_nll(raw, labels, count, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = digit_nll(raw, labels, count, math.exp(d))
    return round(math.exp((a + b) / 2), 4)


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the mean |accuracy - confidence| over equal-width
    confidence bins, weighted by how many answers fall in each."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if not len(confidence):
        return 0.0
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(correct[mask].mean() - confidence[mask].mean())
    return total / len(confidence)


def threshold_for(not_a_digit_on_digits: np.ndarray, refused: float) -> float:
    """The lowest threshold refusing at most ``refused`` (a share) of these real digits."""
    scores = np.sort(np.asarray(not_a_digit_on_digits, dtype=np.float64))
    if not len(scores):
        return 0.5
    allowed = int(math.floor(refused * len(scores)))  # this many may reach the threshold
    if allowed >= len(scores):
        return 0.0
    # Refused: score >= t. Put t just above the (allowed+1)-th highest score.
    kth = scores[len(scores) - allowed - 1]
    return float(np.nextafter(kth, np.inf))
