"""What a version's outputs mean, from its manifest, and what is served from them.

A version's manifest says how many outputs its network has (``"outputs"``: 10 for the
digits alone; 11 when the last one is ``not_a_digit``; versions made before this field
have 10) and the calibration temperature fitted on held-out data (``"temperature"``,
default 1). Both the worker and the trainer's evaluation turn raw outputs into served
numbers with ``serve``, so that offline figures are the served ones:

* the network's softmax is re-tempered, ``p_T = softmax(log p / T)``;
* ``digits``: the ten digit probabilities renormalised to sum to 1 (what ``digit``,
  ``confidence`` and ``probabilities`` mean: given that it is a digit, which one);
* ``not_a_digit``: the tempered probability of the eleventh class, or NaN when the
  version has no such output.

numpy only: the API and the tools import this module without TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIGITS = 10
NOT_A_DIGIT = 10  # the index of the not-a-digit output, when there is one
CLASSES_10 = [str(d) for d in range(10)]
CLASSES_11 = CLASSES_10 + ["not_a_digit"]
_TINY = 1e-30


@dataclass(frozen=True)
class Outputs:
    count: int  # 10 or 11
    temperature: float  # > 0; 1 leaves the network's probabilities alone

    @property
    def has_not_a_digit(self) -> bool:
        return self.count > DIGITS

    @property
    def classes(self) -> list[str]:
        return CLASSES_11 if self.has_not_a_digit else CLASSES_10


class OutputsError(ValueError):
    pass


def from_manifest(manifest: dict) -> Outputs:
    """The outputs a manifest declares (10 and temperature 1 when it predates them)."""
    count = manifest.get("outputs", DIGITS)
    temperature = manifest.get("temperature", 1.0)
    if isinstance(count, bool) or count not in (DIGITS, DIGITS + 1):
        raise OutputsError(f"the manifest's outputs must be 10 or 11, not {count!r}")
    if (isinstance(temperature, bool) or not isinstance(temperature, int | float)
            or not np.isfinite(temperature) or temperature <= 0):
        raise OutputsError(f"the manifest's temperature must be a positive number, "
                           f"not {temperature!r}")
    classes = manifest.get("classes")
    if classes is not None and list(classes) != (CLASSES_11 if count > DIGITS else CLASSES_10):
        raise OutputsError(f"the manifest's classes {classes!r} do not match {count} outputs")
    return Outputs(int(count), float(temperature))


def manifest_fields(outputs: Outputs) -> dict:
    return {"outputs": outputs.count, "classes": outputs.classes,
            "temperature": round(outputs.temperature, 6)}


def temper(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) over the last axis: the same as dividing the logits by T."""
    p = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return p / p.sum(axis=-1, keepdims=True)
    z = np.log(np.maximum(p, _TINY)) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def serve(raw: np.ndarray, outputs: Outputs) -> tuple[np.ndarray, np.ndarray]:
    """Raw network outputs (n, count) -> (digits (n, 10) summing to 1, not_a_digit (n,)).

    not_a_digit is NaN for a version without that output.
    """
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[1] != outputs.count:
        raise OutputsError(f"expected (n, {outputs.count}) outputs, got {raw.shape}")
    p = temper(raw, outputs.temperature)
    digits = p[:, :DIGITS]
    digits = digits / np.maximum(digits.sum(axis=1, keepdims=True), _TINY)
    not_a_digit = p[:, NOT_A_DIGIT] if outputs.has_not_a_digit else np.full(len(p), np.nan)
    return digits.astype(np.float32), not_a_digit.astype(np.float32)


def served_rows(raw: np.ndarray, outputs: Outputs) -> np.ndarray:
    """serve() as one array: (n, 10) for a 10-output version, else (n, 11) with
    not_a_digit last. This is the rows' shape on the wire (digits/protocol.py)."""
    digits, not_a_digit = serve(raw, outputs)
    if not outputs.has_not_a_digit:
        return digits
    return np.column_stack([digits, not_a_digit]).astype(np.float32)
