"""HTTP routes: the page, /predict, /health, /ready, /metrics, /openapi.json."""

from __future__ import annotations

import json
import time

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from api import metrics
from api.errors import ApiError, error_object
from api.openapi import SPEC
from api.preprocess import preprocess
from digits.protocol import not_a_digit

bp = Blueprint("api", __name__)


def _json_body() -> dict:
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ApiError(415, "unsupported_media_type",
                       f"send Content-Type: application/json (got {mimetype or 'none'})")
    try:
        raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
        limit = request.max_content_length
        # A chunked body (no Content-Length) is silently cut at the limit, not
        # refused: one more byte past it means the body was too large.
        if (limit is not None and request.content_length is None and len(raw) >= limit
                and request.environ["wsgi.input"].read(1)):
            raise RequestEntityTooLarge()
    except HTTPException:
        raise
    except Exception as exc:  # the server's body reader: bad chunked framing and the like
        raise ApiError(400, "unreadable_body",
                       f"the request body cannot be read: {str(exc)[:200]}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_utf8", f"the body is not UTF-8: {exc.reason} "
                                            f"at byte {exc.start}") from None
    try:
        body = json.loads(text)
    except RecursionError:
        raise ApiError(400, "invalid_json", "the JSON is nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body",
                       f'expected a JSON object like {{"image": "..."}}, '
                       f"got a JSON {type(body).__name__}")
    return body


@bp.post("/predict")
def predict():
    started = time.perf_counter()
    dispatcher = current_app.extensions["digits_dispatcher"]
    with dispatcher.arriving():
        body = _json_body()
        image = preprocess(body.get("image"), max_pixels=current_app.config["MAX_IMAGE_PIXELS"])
    answer = prediction(dispatcher.predict(image))
    answer["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return jsonify(answer)


def prediction(answer: dict) -> dict:
    """A worker's answer for one image, as /predict gives it (and each /predict/batch item).

    ``digit``, ``confidence`` and ``probabilities`` are about the ten digits (given that
    the drawing is one); ``not_a_digit`` is the model's score that it is none (null from
    a version without that output), and ``is_digit`` is false when that score reaches
    NOT_A_DIGIT_THRESHOLD.
    """
    row = answer["probabilities"]
    probs = row[:10]
    digit = max(range(10), key=probs.__getitem__)
    score = not_a_digit(row)
    is_digit = score is None or score < current_app.config["NOT_A_DIGIT_THRESHOLD"]
    metrics.PREDICTIONS.labels(str(digit)).inc()
    return {
        "digit": digit,
        "confidence": round(float(probs[digit]), 6),
        "probabilities": {str(d): round(float(p), 6) for d, p in enumerate(probs)},
        "not_a_digit": None if score is None else round(score, 6),
        "is_digit": is_digit,
        "model_version": answer["model_version"],
    }


@bp.get("/health")
def health():
    """Liveness: this process answers. Never waits on Redis (the view is cached)."""
    workers = current_app.extensions["digits_workers"]
    serving = [w for w in workers.cached() if w.get("model_loaded")]
    return jsonify(
        status="healthy",
        model_loaded=bool(serving),
        model_versions=sorted({w.get("model_version") for w in serving}),
        workers=len(serving),
    )


def _store_report(live: list[dict]) -> dict:
    """Each model store the workers read, with the worst status any of them reports. A
    store that is down leaves the workers serving what they have: it is reported here,
    and readiness does not depend on it."""
    report: dict[str, str] = {}
    for w in live:
        store = w.get("store") or {}
        location, status = store.get("location"), store.get("status", "unknown")
        if location and report.get(location, "ok") == "ok":
            report[location] = status
    return report


@bp.get("/ready")
def ready():
    """Readiness: Redis answers and at least one live worker has a model loaded."""
    workers = current_app.extensions["digits_workers"]
    workers.refresh()
    redis_ok, live, error = workers.redis_ok, workers.workers, workers.redis_error
    serving = [w for w in live if w.get("model_loaded")]
    body = {
        "redis": "ok" if redis_ok else f"unreachable: {error}",
        "workers": len(live),
        "workers_serving": len(serving),
        "model_versions": sorted({w.get("model_version") for w in serving}),
        "model_store": _store_report(live),
    }
    if not redis_ok:
        reason = "Redis is unreachable"
    elif not serving:
        reason = "no live worker has a model loaded"
    else:
        return jsonify(status="ready", **body)
    response = jsonify(status="not_ready", reason=reason,
                       error=error_object("not_ready", reason), **body)
    response.status_code = 503
    response.headers["Retry-After"] = "1"
    return response


@bp.get("/metrics")
def prometheus():
    body, content_type = metrics.render(current_app.extensions["digits_workers"])
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi():
    return jsonify(SPEC)


@bp.get("/")
def page():
    return send_from_directory(current_app.config["WEB_DIR"], "index.html")
