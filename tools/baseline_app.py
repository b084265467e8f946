"""The single-process baseline ``make bench`` compares against: the original app's design.

Like the original Number-Visualizer: every gunicorn worker process loads the Keras
model itself and answers each POST /predict with its own ``model.predict(x)`` call
(Keras' per-call overhead included, ~50 ms), after a naive conversion of the PNG to
28x28 grayscale (flatten onto white, resize the whole canvas, invert). No batching,
no queue, no centring.

    gunicorn -w 4 -b 127.0.0.1:8001 tools.baseline_app:app

The model loads lazily on the first request in each worker, i.e. after gunicorn has
forked (TensorFlow must not be imported in a parent that forks). ``MODEL_DIR`` picks
the store (default var/models, seeded from the shipped model), as for the workers.
"""

from __future__ import annotations

import base64
import io
import os
import threading

import numpy as np
from flask import Flask, jsonify, request
from PIL import Image

app = Flask(__name__)

_model = None
_model_pid = None
_lock = threading.Lock()


def get_model():
    """The Keras model of this process, loaded on first use (after the fork)."""
    global _model, _model_pid
    if _model is None or _model_pid != os.getpid():
        with _lock:
            if _model is None or _model_pid != os.getpid():
                os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
                import keras

                from models.store import open_store

                version = open_store().current_version()
                _model = keras.saving.load_model(version.model_path, compile=False)
                _model_pid = os.getpid()
    return _model


def to_input(png: bytes) -> np.ndarray:
    """Naive 28x28: flatten transparency onto white, grayscale, resize, invert."""
    img = Image.open(io.BytesIO(png))
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    img = img.convert("L").resize((28, 28))
    x = 255.0 - np.asarray(img, dtype=np.float32)  # white ink on black, 0..255 like MNIST
    return x.reshape(1, 28, 28, 1)


@app.post("/predict")
def predict():
    body = request.get_json(force=True, silent=True) or {}
    data = body.get("image")
    if not isinstance(data, str) or not data:
        return jsonify(error="missing image"), 400
    if "," in data:
        data = data.split(",", 1)[1]
    try:
        x = to_input(base64.b64decode(data))
    except Exception as exc:  # noqa: BLE001 - the original answered 400 on any bad image
        return jsonify(error=f"bad image: {exc}"), 400
    probs = get_model().predict(x, verbose=0)[0]
    digit = int(np.argmax(probs))
    return jsonify(
        digit=digit,
        confidence=round(float(probs[digit]), 6),
        probabilities={str(d): round(float(p), 6) for d, p in enumerate(probs)},
    )


@app.get("/health")
def health():
    return jsonify(status="ok", model_loaded=_model is not None and _model_pid == os.getpid())
