"""``POST /predict/number``: a whole number drawn on one canvas, read left to right.

The body is /predict's: ``{"image": "<base64 or data URL>"}``, any size (the page's
number canvas is 840x280). api/segment.py finds every candidate digit of the drawing
(pieces of ink, the strokes of one digit together, candidate cuts between touching
neighbours); all of them go to the workers as one task (``Dispatcher.predict_many``:
one forward pass, through the coalescing, batching and hedging /predict uses), and
the model's answers choose the reading. The answer::

    {"number": "2026",
     "digits": [{"digit": 2, "confidence": 0.99, "probabilities": {"0": ...},
                 "box": [x, y, w, h]}, ...],
     "confidence": 0.97, "model_version": 1, "latency_ms": 9.1}

``box`` is in the image's pixels; ``confidence`` is the probability that the whole
string is right (api.segment.decode). A blank canvas gets 422 ``blank_image``; more
digits than MAX_DIGITS, 422 ``too_many_digits``.
"""

from __future__ import annotations

import time

import numpy as np
from flask import Blueprint, current_app, jsonify

from api.preprocess import decode_payload, load_image
from api.routes import _json_body
from api.segment import plan_number

bp = Blueprint("numbers", __name__)


@bp.post("/predict/number")
def predict_number():
    started = time.perf_counter()
    dispatcher = current_app.extensions["digits_dispatcher"]
    with dispatcher.arriving():
        body = _json_body()
        img = load_image(decode_payload(body.get("image")),
                         current_app.config["MAX_IMAGE_PIXELS"])
        plan = plan_number(img, current_app.config["MAX_DIGITS"])
    answers = dispatcher.predict_many(plan.crops)
    reading = plan.decode(np.array([a["probabilities"] for a in answers], dtype=np.float64))
    return jsonify(
        number=reading["number"],
        digits=[{
            "digit": d["digit"],
            "confidence": round(d["confidence"], 6),
            "probabilities": {k: round(v, 6) for k, v in d["probabilities"].items()},
            "box": d["box"],
        } for d in reading["digits"]],
        confidence=round(reading["confidence"], 6),
        # One task, so one version; a drawing cut into more parts than COALESCE_MAX
        # images could straddle a hot reload: the newest then names the answer.
        model_version=max(a["model_version"] for a in answers),
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )
