"""One error shape for every failure: ``{"error": {"code": ..., "message": ...,
"request_id": ...}}``."""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from digits import request_ids


class ApiError(Exception):
    """A request we refuse, with the HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_object(code: str, message: str) -> dict:
    """The ``error`` member of an error body, naming the request it answers."""
    error = {"code": code, "message": message}
    rid = request_ids.current()
    if rid:
        error["request_id"] = rid
    return error


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    response = jsonify(error=error_object(code, message))
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        # Keep the exception's own headers but its HTML content type: Allow on a 405.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return error_response(exc.code or 500, code, exc.description or exc.name, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; see the server log")
