"""The Flask API: validates and preprocesses drawings, then asks the workers.

``create_app()`` is the application factory; gunicorn serves ``api:create_app()``.
This package never imports TensorFlow.
"""

from __future__ import annotations

import logging
import time

import redis
from celery import Celery
from flask import Flask, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from api import batch, errors, feedback, metrics, numbers, request_id
from api.dispatch import Dispatcher
from api.workers import WorkerRegistry
from digits import settings as settings_module
from digits.protocol import celery_config

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def celery_client(config: dict) -> Celery:
    """A Celery app that only builds task messages (after Flask's example); the
    dispatcher publishes them and reads the results itself (api/dispatch.py)."""
    app = Celery("digits-api")
    app.conf.update(celery_config(config["REDIS_URL"], config["RESULT_EXPIRES"]))
    return app


def create_app(overrides: dict | None = None) -> Flask:
    """The app from the environment's settings (digits/settings.py), then ``overrides``."""
    cfg = settings_module.load(overrides).as_dict()
    app = Flask(__name__, static_folder=cfg["WEB_DIR"], static_url_path="/static")
    app.config.update(cfg)
    app.config["DEBUG"] = False
    app.json.sort_keys = False
    if cfg["TRUSTED_PROXIES"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=cfg["TRUSTED_PROXIES"])

    client = redis.Redis.from_url(cfg["REDIS_URL"], socket_timeout=1.0,
                                  socket_connect_timeout=1.0)
    workers = WorkerRegistry(client)
    app.extensions["digits_workers"] = workers
    app.extensions["digits_dispatcher"] = Dispatcher(
        celery_client(cfg), client, workers,
        timeout=cfg["PREDICT_TIMEOUT"],
        hedge_after=cfg["HEDGE_AFTER"],
        max_group=cfg["COALESCE_MAX"], coalesce=cfg["COALESCE"],
        window=cfg["DISPATCH_WINDOW"],
        linger=cfg["COALESCE_WAIT_MS"] / 1000,
        on_group=metrics.observe_group,
    )

    errors.register(app)
    request_id.install(app)  # first before_request hook: every answer names its request
    from api.routes import bp

    app.register_blueprint(bp)
    app.register_blueprint(batch.bp)
    app.register_blueprint(numbers.bp)
    app.register_blueprint(feedback.bp)
    _limits(app, cfg)
    _cors(app, cfg)
    _observe(app)
    logging.getLogger("api").setLevel(logging.INFO)
    return app


def _limits(app: Flask, cfg: dict) -> None:
    if not (cfg["RATE_LIMIT"] or cfg["FEEDBACK_RATE_LIMIT"]):
        return
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    limiter = Limiter(
        get_remote_address, app=app, storage_uri=cfg["REDIS_URL"],
        storage_options={"socket_timeout": 1.0, "socket_connect_timeout": 1.0},
        swallow_errors=True, headers_enabled=True, retry_after="delta-seconds",
        key_prefix="digits-limiter",
    )
    # The decorator returns a wrapper that does the checking: it must replace the view
    # (decorated limits are not enforced by the before-request hook).
    # No error_message: the exception's description is then the limit, e.g. "5 per 1 second".
    limits = {"api.predict": cfg["RATE_LIMIT"],
              "batch.predict_batch": cfg["RATE_LIMIT"],  # a batch counts as one request
              "numbers.predict_number": cfg["RATE_LIMIT"],
              "feedback.post_feedback": cfg["FEEDBACK_RATE_LIMIT"]}
    for view, limit in limits.items():
        if limit:
            app.view_functions[view] = limiter.limit(limit)(app.view_functions[view])

    @app.errorhandler(429)
    def _too_many(exc):
        response = errors.error_response(
            429, "rate_limited", f"too many requests: the limit is {exc.description}")
        retry = getattr(exc, "response", None)
        if retry is not None and retry.headers.get("Retry-After"):
            response.headers["Retry-After"] = retry.headers["Retry-After"]
        else:
            response.headers.setdefault("Retry-After", "1")
        return response


def _cors(app: Flask, cfg: dict) -> None:
    origins = [o.strip() for o in cfg["CORS_ORIGINS"].split(",") if o.strip()]
    if origins:
        from flask_cors import CORS

        CORS(app, resources={r"/predict": {"origins": origins}}, methods=["POST"])


def _observe(app: Flask) -> None:
    @app.before_request
    def _start():
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response):
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        rule = request.url_rule.rule if request.url_rule else "unmatched"
        status = str(response.status_code)
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.REQUESTS.labels(rule, request.method, status).inc()
        metrics.LATENCY.labels(rule, request.method, status).observe(elapsed)
        if response.status_code >= 400 and response.is_json:
            code = (response.get_json(silent=True) or {}).get("error", {}).get("code", status)
            metrics.ERRORS.labels(code).inc()
        return response
