"""The bare Celery round trip ``make bench`` measures as a ceiling: no model, no images.

A Celery app with the same Redis settings as the real one (``digits.protocol``) but
its own queue, a ``noop`` task returning a small dict, and a Flask app whose
POST /predict reads the body, sends the task and waits for its result. Whatever our
stack adds on top (preprocessing, batching, the model) shows as the gap to this.

    celery -A tools.noop_celery:celery worker --pool=threads --concurrency=8 -Q bench-noop
    gunicorn -k gthread -w 2 --threads 32 -b 127.0.0.1:8002 tools.noop_celery:app
"""

from __future__ import annotations

import json

from celery import Celery
from flask import Flask, jsonify, request

from digits.protocol import celery_config
from digits.settings import load

QUEUE = "bench-noop"
TASK_NOOP = "bench.noop"

celery = Celery("bench-noop")
SETTINGS = load()
celery.conf.update(celery_config(SETTINGS.REDIS_URL, SETTINGS.RESULT_EXPIRES))
celery.conf.update(task_default_queue=QUEUE, task_routes={TASK_NOOP: {"queue": QUEUE}})


@celery.task(name=TASK_NOOP, ignore_result=False)
def noop(size: int) -> dict:
    return {"ok": True, "size": size}


app = Flask(__name__)


@app.post("/predict")
def predict():
    raw = request.get_data(cache=False)
    try:
        json.loads(raw)
    except ValueError:
        return jsonify(error="invalid json"), 400
    result = celery.send_task(TASK_NOOP, args=[len(raw)], queue=QUEUE)
    return jsonify(result.get(timeout=5))


@app.get("/health")
def health():
    return jsonify(status="ok")
