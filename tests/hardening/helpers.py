"""Helpers shared by the hardening tests: raw HTTP, the error-shape check, a valid body."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import time
from urllib.parse import urlsplit

from tests.conftest import SEVEN, data_url, draw_png

VALID_BODY = {"image": data_url(draw_png(SEVEN))}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Reply:
    """A parsed HTTP response, with how long it took."""

    def __init__(self, status: int, headers, raw: bytes, seconds: float):
        self.status = status
        self.headers = headers
        self.raw = raw
        self.seconds = seconds
        try:
            self.json = json.loads(raw)
        except ValueError:
            self.json = None

    def __repr__(self) -> str:
        return f"<Reply {self.status} in {self.seconds:.3f} s: {self.raw[:300]!r}>"


def raw_request(url: str, request: bytes, timeout: float = 10.0) -> Reply:
    """Send exact bytes (request line, headers, body) and parse whatever comes back.

    The server may answer (say 413) before reading the whole body and close the
    connection; a broken pipe while sending is fine as long as a response arrives.
    """
    parts = urlsplit(url)
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        raw = response.read()
        return Reply(response.status, response.headers, raw, time.monotonic() - started)


def http_post(url: str, path: str, body: bytes, content_type: str | None = "application/json",
              extra_headers: str = "", timeout: float = 10.0) -> Reply:
    """POST raw bytes with an exact Content-Length and Content-Type (or none)."""
    host = urlsplit(url).netloc
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    head += f"Content-Length: {len(body)}\r\n{extra_headers}\r\n"
    return raw_request(url, head.encode("latin-1") + body, timeout)


def http_get(url: str, path: str, timeout: float = 10.0) -> Reply:
    host = urlsplit(url).netloc
    return raw_request(
        url, f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(), timeout)


def assert_json_error(reply: Reply, status: int | tuple[int, ...], codes=None) -> dict:
    """A JSON error body {"error": {"code", "message"}} with the expected status and code."""
    statuses = (status,) if isinstance(status, int) else status
    assert reply.status in statuses, reply
    assert_error_shape(reply.status, reply.headers.get("Content-Type"), reply.json, reply.raw)
    error = reply.json["error"]
    if codes is not None:
        wanted = (codes,) if isinstance(codes, str) else tuple(codes)
        assert error["code"] in wanted, reply
    return error


def assert_error_shape(status: int, content_type: str | None, body, raw=b"") -> None:
    """What every error must look like: JSON, {"error": {"code": str, "message": str}}."""
    assert (content_type or "").split(";")[0].strip() == "application/json", (
        status, content_type, raw[:300])
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), (status, raw[:300])
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], (status, body)
    assert isinstance(error.get("message"), str) and error["message"], (status, body)
    text = json.dumps(body)
    assert "Traceback" not in text and "<html" not in text.lower(), (status, body)
