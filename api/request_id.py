"""Every request gets an ID: the client's ``X-Request-ID`` when sane, else a new one.

It is bound for the whole request (``digits.request_ids.CURRENT``), so the API's log
lines, the error body (api/errors.py) and the Celery task the request travels in
(api/dispatch.py) all carry it, and it is echoed in the response's ``X-Request-ID``,
errors included (404, 405 and 413 too: routing and body errors pass the same hooks).
"""

from __future__ import annotations

import logging
import sys

from flask import Flask, g, request

from digits import request_ids

LOG_FORMAT = "[%(asctime)s] %(levelname)s %(name)s [%(request_id)s] %(message)s"
log = logging.getLogger("api.requests")


def install(app: Flask) -> None:
    """Register the hooks. Call it before anything else adds a before_request hook,
    so the ID is bound before any of them can fail the request."""
    _log_handler()

    @app.before_request
    def _bind():
        rid = request_ids.clean(request.headers.get(request_ids.HEADER)) or request_ids.new()
        g.request_id = rid
        g.request_id_token = request_ids.CURRENT.set(rid)

    @app.after_request
    def _echo(response):
        rid = g.get("request_id")
        if rid:
            response.headers[request_ids.HEADER] = rid
        if response.status_code >= 500 and request.endpoint != "api.ready":
            # The server's failures are worth a line; the client's (4xx) are in the
            # access log and the metrics, and /ready's 503 is its answer, not a failure.
            code = ((response.get_json(silent=True) or {}).get("error") or {}).get("code")
            log.warning("%s %s answered %d %s", request.method, request.path,
                        response.status_code, code or "")
        return response

    @app.teardown_request
    def _unbind(_exc):
        token = g.pop("request_id_token", None)
        if token is not None:
            try:
                request_ids.CURRENT.reset(token)
            except ValueError:  # set in another context: clear it instead
                request_ids.CURRENT.set(request_ids.NONE)


def _log_handler() -> None:
    """One stderr handler for the ``api`` loggers (gunicorn's error log), naming the
    request of each line."""
    logger = logging.getLogger("api")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        logger.addHandler(handler)
    request_ids.add_to_handlers(logger, LOG_FORMAT)
