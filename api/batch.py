"""``POST /predict/batch``: many drawings in one request, each answered on its own.

Body ``{"images": ["<base64 or data URL>", ...]}``, at most BATCH_MAX_IMAGES of
them. The answer is ``{"results": [...]}`` in the same order: each item is what
/predict answers for that image, or ``{"error": {"code", "message", "request_id"}}``
when that image alone is bad (not base64, not an image, blank, too large...). The
request as a whole is refused only when its body is (not JSON, too large, no list,
too many images), or when nothing could answer (503, 504: as /predict).

The good images go to the workers together (``Dispatcher.predict_many``): one task
when they fit COALESCE_MAX, so a batch costs one broker round trip and one forward
pass instead of one per image.
"""

from __future__ import annotations

import time

import numpy as np
from flask import Blueprint, current_app, jsonify

from api import metrics
from api.errors import ApiError, error_object
from api.preprocess import preprocess
from api.routes import _json_body, prediction

bp = Blueprint("batch", __name__)


def _images(body: dict, limit: int) -> list:
    images = body.get("images")
    if images is None:
        raise ApiError(400, "missing_images",
                       'the JSON body needs an "images" field: an array of base64 images')
    if not isinstance(images, list):
        raise ApiError(400, "invalid_images",
                       f'"images" must be an array, not {type(images).__name__}')
    if len(images) > limit:
        raise ApiError(413, "too_many_images",
                       f"{len(images)} images in one batch; the limit is {limit}")
    return images


def _item_error(exc: ApiError) -> dict:
    metrics.ERRORS.labels(exc.code).inc()
    return {"error": error_object(exc.code, exc.message)}


@bp.post("/predict/batch")
def predict_batch():
    started = time.perf_counter()
    dispatcher = current_app.extensions["digits_dispatcher"]
    max_pixels = current_app.config["MAX_IMAGE_PIXELS"]
    with dispatcher.arriving():
        images = _images(_json_body(), current_app.config["BATCH_MAX_IMAGES"])
        results: list = [None] * len(images)
        good, arrays = [], []
        for i, item in enumerate(images):
            try:
                if item is None:  # preprocess would ask for an "image" field
                    raise ApiError(400, "missing_image", f"images[{i}] is null, not an image")
                arrays.append(preprocess(item, max_pixels=max_pixels))
                good.append(i)
            except ApiError as exc:
                results[i] = _item_error(exc)
    if arrays:
        answers = dispatcher.predict_many(np.stack(arrays))
        for i, answer in zip(good, answers, strict=True):
            results[i] = prediction(answer)
    return jsonify(results=results, latency_ms=round((time.perf_counter() - started) * 1000, 2))
