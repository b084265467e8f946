"""The wire contract between the API (client) and the workers: names, payloads, config.

No TensorFlow here: the API imports this module.
"""

from __future__ import annotations

import base64
import json
import uuid

import numpy as np

TASK_PREDICT = "digits.predict"
QUEUE = "digits"
HEARTBEAT_PREFIX = "digits:worker:"
IMAGE_SHAPE = (28, 28)
IMAGE_BYTES = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
# Celery's Redis result backend stores each result under this prefix + task id and
# publishes it on the channel of the same name.
RESULT_PREFIX = "celery-task-meta-"
# Task header: the IDs of the requests a task serves (digits/request_ids.py), each once.
REQUEST_IDS_HEADER = "request_ids"
# A task's result is {"probabilities": rows, "model_version": v}. Each row holds the ten
# digit probabilities (summing to 1), then, from a version with a not-a-digit output,
# its not_a_digit score as an 11th value (models/outputs.py served_rows).
NOT_A_DIGIT_INDEX = 10


def not_a_digit(row) -> float | None:
    """The not_a_digit score of one result row, or None from a 10-output version."""
    return float(row[NOT_A_DIGIT_INDEX]) if len(row) > NOT_A_DIGIT_INDEX else None


def encode_batch(images: np.ndarray) -> str:
    """(n, 28, 28) uint8 -> base64 text: 784 bytes an image, JSON-safe, no pickle."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"expected (n, 28, 28) images, got {images.shape}")
    return base64.b64encode(images.tobytes()).decode("ascii")


def decode_batch(payload: str) -> np.ndarray:
    raw = base64.b64decode(payload, validate=True)
    if not raw or len(raw) % IMAGE_BYTES:
        raise ValueError(f"payload of {len(raw)} bytes is not a whole number of 28x28 images")
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, *IMAGE_SHAPE)


def task_message(celery, task_id: str, payload: str, images: int, expires: float,
                 request_ids: list[str] | None = None) -> str:
    """A predict task as kombu's Redis transport stores it: LPUSH it onto QUEUE.

    ``request_ids`` (of the requests whose images it carries) go in the
    ``request_ids`` header; the worker reads them as ``task.request.request_ids``.

    Celery builds the message itself (protocol 2 headers and body); only kombu's
    envelope is written here. The API pushes it with one LPUSH, because kombu's
    producer costs about 1.5 ms a message on this box and this about 0.1 ms. The
    envelope is kombu 5.7's Redis format: tests/integration/test_protocol.py checks it
    against what ``send_task`` puts in the queue, and tests/unit/test_workarounds.py
    fails when celery or kombu moves on from 5.7.
    """
    message = celery.amqp.as_task_v2(
        task_id, TASK_PREDICT, args=[payload], expires=expires,
        argsrepr=f"({images} images)",  # not a kilobyte of base64 in every message
    )
    if request_ids:
        message.headers[REQUEST_IDS_HEADER] = list(dict.fromkeys(request_ids))
    body = base64.b64encode(json.dumps(message.body).encode()).decode("ascii")
    return json.dumps({
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": message.headers,
        "properties": {
            **message.properties,
            "expiration": str(int(expires * 1000)),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": QUEUE},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    })


def parse_result(raw: bytes | str) -> tuple[str, object]:
    """Celery's stored result -> (state, value): SUCCESS with the task's return value,
    FAILURE with the exception's type and message, REVOKED when it expired queued."""
    meta = json.loads(raw)
    return meta.get("status", "UNKNOWN"), meta.get("result")


def celery_config(url: str, result_expires: int) -> dict:
    """Celery settings both sides share. Chosen by measurement: see docs/performance.md."""
    return {
        "broker_url": url,
        "result_backend": url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": QUEUE,
        "task_routes": {TASK_PREDICT: {"queue": QUEUE}},
        # Results are read once and deleted by the API; the expiry catches the rest
        # (a hedged duplicate, a client that went away).
        "result_expires": result_expires,
        # No ack emulation: kombu's Redis transport otherwise books every message into
        # an "unacked" hash on delivery and out again on ack (two more Redis round
        # trips and client set-ups per task) so that a dead worker's messages come
        # back after a visibility timeout. Here they would come back long after their
        # request expired; the API's hedged resend recovers them within HEDGE_AFTER
        # instead. Measured: a no-op task's result wait is 1.51 ms without it, 2.65 ms
        # with it.
        "broker_transport_options": {"ack_emulation": False},
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "redis_socket_timeout": 5.0,
        "redis_socket_connect_timeout": 2.0,
        "redis_retry_on_timeout": True,
        "redis_backend_health_check_interval": 10,
        "result_backend_always_retry": True,
        "result_backend_max_retries": 3,
        "task_send_sent_event": False,
        "worker_send_task_events": False,
        "worker_hijack_root_logger": False,
    }


def heartbeat_key(hostname: str) -> str:
    return HEARTBEAT_PREFIX + hostname


def parse_heartbeat(raw: bytes | str | None) -> dict | None:
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# The trainer publishes a notice here after it moves a store's pointer (promote, rollback,
# a new current version); each worker subscribes and checks its store at once. Polling the
# pointer stays as the fallback for a notice missed while Redis was away.
MODEL_CHANNEL = "digits:model-current"


def model_notice(store: str, name: str, version: int) -> str:
    return json.dumps({"store": store, "name": name, "version": int(version)})


def parse_model_notice(raw: bytes | str) -> dict | None:
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        return None
    return data
