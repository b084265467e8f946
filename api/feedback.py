"""``POST /feedback``: a drawing with its right digit, kept for fine-tuning; and
``GET /feedback/<id>``: which serving model version has learned from it.

Body ``{"image": "<base64 or data URL>", "label": 0..9, "predicted"?: int,
"model_version"?: int, "request_id"?: str}``. The answer, ``201 {"id", "label"}``, is
sent only once the row is committed, so a client that got it may forget the
correction. A ``request_id`` names the correction: sending it again (a retry whose
answer was lost) returns the same id with 200 instead of adding a row.

Each row keeps the original image bytes (at most FEEDBACK_MAX_IMAGE_BYTES, so that a
future preprocessing can re-derive the 28x28 input) beside the 28x28 array of today's
preprocessing, and a salted hash of the client's address (never the address).

The database is reached only here, lazily, one engine per process: /predict never
waits on it. While it is unreachable the answer is 503 with Retry-After.
"""

from __future__ import annotations

import os
import threading

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import ProgrammingError

from api.errors import ApiError
from api.feedback_spec import MAX_ID, MAX_PREDICTED
from api.preprocess import decode_payload, load_image, to_mnist
from api.routes import _json_body
from digits import feedback_db
from digits.request_ids import clean as clean_request_id

bp = Blueprint("feedback", __name__)
RETRY_AFTER = "5"
_lock = threading.Lock()


def store() -> feedback_db.FeedbackStore:
    """This process's store (engines must not cross a fork: gunicorn forks after import)."""
    ext = current_app.extensions
    held = ext.get("digits_feedback")
    if held is None or held[0] != os.getpid():
        with _lock:
            held = ext.get("digits_feedback")
            if held is None or held[0] != os.getpid():
                cfg = current_app.config
                held = (os.getpid(), feedback_db.FeedbackStore.from_url(
                    cfg["DATABASE_URL"], cfg["FEEDBACK_SALT"]))
                ext["digits_feedback"] = held
    return held[1]


def _unavailable(err: Exception) -> ApiError:
    current_app.logger.warning("feedback database unavailable: %s", err)
    if isinstance(err, ProgrammingError) or "no such table" in str(err):
        message = ("the feedback database has no schema yet: run "
                   "'python -m digits.feedback_db upgrade'")
    else:
        message = "the feedback database is unreachable; try again shortly"
    return ApiError(503, "feedback_unavailable", message, {"Retry-After": RETRY_AFTER})


def _integer(body: dict, name: str, low: int, high: int | None, code: str) -> int | None:
    value = body.get(name)
    if value is None and name != "label":
        return None
    if value is None:
        raise ApiError(400, code, 'the JSON body needs a "label": the right digit, 0 to 9')
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bounds = f"{low} to {high}" if high is not None else f"at least {low}"
        raise ApiError(400, code, f'"{name}" must be an integer from {bounds} '
                                  f"(got {str(value)[:40]!r})")
    return value


_MAGIC = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpeg"), (b"GIF8", "gif"), (b"BM", "bmp"),
          (b"RIFF", "webp"))


def _format(raw: bytes) -> str:
    """The original's format, from its first bytes (load_image has accepted them)."""
    return next((name for magic, name in _MAGIC if raw.startswith(magic)), "other")


def _request_id(body: dict) -> str | None:
    value = body.get("request_id")
    if value is None:
        return None
    if not isinstance(value, str) or clean_request_id(value) is None:
        raise ApiError(400, "invalid_request_id",
                       '"request_id" must be 1 to 128 letters, digits or ._:+/=@-')
    return value


@bp.post("/feedback")
def post_feedback():
    body = _json_body()
    label = _integer(body, "label", 0, 9, "invalid_label")
    predicted = _integer(body, "predicted", 0, MAX_PREDICTED, "invalid_predicted")
    model_version = _integer(body, "model_version", 0, MAX_ID, "invalid_model_version")
    request_id = _request_id(body)
    raw = decode_payload(body.get("image"))
    limit = current_app.config["FEEDBACK_MAX_IMAGE_BYTES"]
    if len(raw) > limit:
        raise ApiError(413, "image_too_large",
                       f"the image is {len(raw):,} bytes; feedback keeps at most {limit:,}")
    image = load_image(raw, current_app.config["MAX_IMAGE_PIXELS"])
    pixels = to_mnist(image)  # 422 blank_image for a blank canvas
    try:
        new_id, created = store().add(
            label=label, image=raw, image_format=_format(raw),
            pixels=pixels, client_address=request.remote_addr or "",
            predicted=predicted, model_version=model_version, request_id=request_id)
    except feedback_db.Conflict as err:
        raise ApiError(409, "request_id_conflict", str(err)) from None
    except feedback_db.UNAVAILABLE as err:
        raise _unavailable(err) from None
    response = jsonify(id=new_id, label=label)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/feedback/{new_id}"
    return response


@bp.get("/feedback/<int:feedback_id>")
def get_feedback(feedback_id: int):
    try:
        row = store().get(feedback_id) if feedback_id <= MAX_ID else None
    except feedback_db.UNAVAILABLE as err:
        raise _unavailable(err) from None
    if row is None:
        raise ApiError(404, "not_found", f"no feedback with id {feedback_id}")
    serving = {w.get("model_version")
               for w in current_app.extensions["digits_workers"].serving()}
    live = [v for v in row["learned_by"] if v in serving]
    return jsonify(id=row["id"], label=row["label"], learned_by=row["learned_by"],
                   learned_in=min(live) if live else None)
