"""Every malformed request gets a fast 4xx JSON error naming the problem, on the real stack.

Never a 5xx, an HTML page, a stack trace or a hang; and a valid drawing still works
after each of them. Raw sockets send what urllib would not (bad UTF-8, no
Content-Type, chunked bodies, broken HTTP).
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import struct
import time
import zlib

import pytest
from PIL import Image

from tests.conftest import SEVEN, draw_png, start_stack
from tests.hardening.helpers import (
    VALID_BODY,
    Reply,
    assert_json_error,
    b64,
    http_get,
    http_post,
    raw_request,
)

BOUND = 2.0  # seconds: generous on a shared two-core box; these answers take milliseconds
MAX_CONTENT_LENGTH = 2 * 1024 * 1024  # the default


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("bad-input"), workers=1)
    yield s.url
    s.stop()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 30000, height: int = 30000, rows: int = 64) -> bytes:
    """A few KB claiming width x height 1-bit pixels (only the first rows are present)."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    data = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data)
            + _png_chunk(b"IEND", b""))


def image_bytes(mode: str, size: tuple[int, int], colour, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, fmt)
    return buf.getvalue()


GOOD_PNG = draw_png(SEVEN)
SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
       b'<path d="M4 4 H24 L12 26" stroke="black" stroke-width="3"/></svg>')


def image_field(value) -> bytes:
    return json.dumps({"image": value}).encode()


# name -> (body bytes, Content-Type or None, expected status, acceptable error codes)
BODIES = {
    "not json": (b"this is not json", "application/json", 400, "invalid_json"),
    "truncated json": (b'{"image": "abc', "application/json", 400, "invalid_json"),
    "empty body": (b"", "application/json", 400, "invalid_json"),
    "text/plain": (json.dumps(VALID_BODY).encode(), "text/plain", 415, "unsupported_media_type"),
    "form": (b"image=abc", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    "multipart": (b"--x\r\n\r\nabc\r\n--x--\r\n", "multipart/form-data; boundary=x", 415,
                  "unsupported_media_type"),
    "no content type": (json.dumps(VALID_BODY).encode(), None, 415, "unsupported_media_type"),
    "json array": (b'[{"image": "abc"}]', "application/json", 400, "invalid_body"),
    "json string": (b'"iVBORw0KGgo="', "application/json", 400, "invalid_body"),
    "json number": (b"42", "application/json", 400, "invalid_body"),
    "json null": (b"null", "application/json", 400, "invalid_body"),
    "invalid utf-8": (b'{"image": "\xff\xfe\xc3("}', "application/json", 400, "invalid_utf8"),
    "utf-8 bom": (b'\xef\xbb\xbf{"image": "abc"}', "application/json", 400, "invalid_json"),
    "huge integer": (b'{"image": 1' + b"0" * 5000 + b"}", "application/json", 400,
                     "invalid_json"),
    "deeply nested arrays": (b"[" * 100_000, "application/json", 400, "invalid_json"),
    "deeply nested objects": (b'{"a":' * 100_000, "application/json", 400, "invalid_json"),
    "image missing": (b'{"picture": "abc"}', "application/json", 400, "missing_image"),
    "image null": (b'{"image": null}', "application/json", 400, "missing_image"),
    "image number": (b'{"image": 7}', "application/json", 400, "invalid_image_field"),
    "image NaN": (b'{"image": NaN}', "application/json", 400, "invalid_image_field"),
    "image boolean": (b'{"image": true}', "application/json", 400, "invalid_image_field"),
    "image list": (b'{"image": ["iVBORw0KGgo="]}', "application/json", 400,
                   "invalid_image_field"),
    "image object": (b'{"image": {"data": "x"}}', "application/json", 400,
                     "invalid_image_field"),
    "image empty string": (b'{"image": ""}', "application/json", 400, "empty_image"),
    "image whitespace": (b'{"image": "  \\n "}', "application/json", 400, "empty_image"),
    "invalid base64": (image_field("this is *not* base64!"), "application/json", 400,
                       "invalid_base64"),
    "base64 bad length": (image_field("abcde"), "application/json", 400, "invalid_base64"),
    "non-ascii base64": (image_field("iVBOR\u00e9w0KGgo="), "application/json", 400,
                         "invalid_base64"),
    "data url text/plain": (image_field("data:text/plain;base64," + b64(b"hello")),
                            "application/json", 415, "unsupported_media_type"),
    "data url no type": (image_field("data:;base64," + b64(GOOD_PNG)), "application/json",
                         415, "unsupported_media_type"),
    "data url no comma": (image_field("data:image/png;base64"), "application/json", 400,
                          "invalid_base64"),
    "data url empty": (image_field("data:image/png;base64,"), "application/json", 400,
                       "empty_image"),
    "text bytes": (image_field(b64(b"hello, I am not an image")), "application/json", 400,
                   "invalid_image"),
    "truncated png": (image_field(b64(GOOD_PNG[: len(GOOD_PNG) // 2])), "application/json",
                      400, "invalid_image"),
    "png signature only": (image_field(b64(GOOD_PNG[:8])), "application/json", 400,
                           "invalid_image"),
    "png header only": (image_field(b64(GOOD_PNG[:33])), "application/json", 400,
                        "invalid_image"),
    "svg": (image_field(b64(SVG)), "application/json", 400, "invalid_image"),
    "svg data url": (image_field("data:image/svg+xml;base64," + b64(SVG)), "application/json",
                     400, "invalid_image"),
    "tiff": (image_field(b64(image_bytes("L", (28, 28), 0, "TIFF"))), "application/json", 400,
             "invalid_image"),
    "decompression bomb": (image_field(b64(bomb_png())), "application/json", 413,
                           "image_too_large"),
    "bomb under pillow's own limit": (image_field(b64(bomb_png(3000, 3000))),
                                      "application/json", 413, "image_too_large"),
    "real image over the pixel cap": (
        image_field(b64(image_bytes("L", (2100, 2100), 255))), "application/json", 413,
        "image_too_large"),
    "blank transparent canvas": (
        image_field(b64(image_bytes("RGBA", (280, 280), (0, 0, 0, 0)))), "application/json",
        422, "blank_image"),
    "blank white canvas": (image_field(b64(image_bytes("RGB", (280, 280), (255, 255, 255)))),
                           "application/json", 422, "blank_image"),
    "one pixel": (image_field(b64(image_bytes("L", (1, 1), 0))), "application/json", 422,
                  "blank_image"),
    "one opaque pixel": (image_field(b64(image_bytes("RGBA", (1, 1), (0, 0, 0, 255)))),
                         "application/json", 422, "blank_image"),
    "body over MAX_CONTENT_LENGTH": (b'{"image": "' + b"A" * (MAX_CONTENT_LENGTH + 100) + b'"}',
                                     "application/json", 413, "request_entity_too_large"),
}


def test_bodies_are_within_limits():
    """The decompression bomb really is small; the over-cap image really is real and small."""
    assert len(bomb_png()) < 8 * 1024
    assert len(BODIES["real image over the pixel cap"][0]) < MAX_CONTENT_LENGTH


def check_valid_still_works(api: str) -> None:
    reply = http_post(api, "/predict", json.dumps(VALID_BODY).encode(), timeout=30)
    assert reply.status == 200, reply
    assert reply.json["digit"] == 7, reply


def check_fast(reply: Reply) -> None:
    assert reply.seconds < BOUND, reply


@pytest.mark.parametrize("name", list(BODIES))
def test_malformed_body(api, name):
    body, content_type, status, code = BODIES[name]
    reply = http_post(api, "/predict", body, content_type)
    assert_json_error(reply, status, code)
    check_fast(reply)
    check_valid_still_works(api)


def test_image_too_large_names_the_limit(api):
    body, content_type, _, _ = BODIES["real image over the pixel cap"]
    error = assert_json_error(http_post(api, "/predict", body, content_type), 413,
                              "image_too_large")
    assert "2100x2100" in error["message"] and "4,000,000" in error["message"]


def test_declared_huge_content_length_is_refused_before_reading(api):
    """A Content-Length of 10 GB with no body: 413 at once, not a wait for the bytes."""
    host = api.split("//", 1)[1]
    request = (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: 10000000000\r\nConnection: close\r\n\r\n").encode()
    reply = raw_request(api, request)
    assert_json_error(reply, 413, "request_entity_too_large")
    check_fast(reply)


def test_a_refused_large_body_closes_its_kept_alive_connection(api):
    """413 before reading the body: the answer must say the connection closes, so a
    keep-alive client opens a new one instead of losing its next request. The server
    reads the rest of the body first: a client still sending it must get the 413, not
    a broken pipe or a reset (which CI saw once in about five runs before the drain)."""
    host, port = api.split("//", 1)[1].split(":")
    body, content_type, _, _ = BODIES["body over MAX_CONTENT_LENGTH"]
    for _ in range(5):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("POST", "/predict", body, {"Content-Type": content_type})
            response = conn.getresponse()
            assert response.status == 413
            assert json.loads(response.read())["error"]["code"] == "request_entity_too_large"
            assert response.getheader("Connection", "").lower() == "close"
        finally:
            conn.close()
    check_valid_still_works(api)


def test_a_refused_body_sent_slowly_still_gets_its_413(api):
    """The client sends the headers, waits, then the body in pieces: the 413 is already
    on its way, and the drain must wait for the rest rather than reset the connection."""
    host, port = api.split("//", 1)[1].split(":")
    body, content_type, _, _ = BODIES["body over MAX_CONTENT_LENGTH"]
    head = (f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        time.sleep(0.2)  # the app has refused it by now
        for i in range(0, len(body), len(body) // 4 + 1):
            sock.sendall(body[i : i + len(body) // 4 + 1])
            time.sleep(0.1)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"request_entity_too_large" in reply


def _chunked(api: str, body: bytes, chunk: int = 65536) -> bytes:
    host = api.split("//", 1)[1]
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + chunk]), body[i:i + chunk])
             for i in range(0, len(body), chunk)]
    return (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode() + b"".join(
                parts) + b"0\r\n\r\n"


def test_chunked_valid_body_works(api):
    reply = raw_request(api, _chunked(api, json.dumps(VALID_BODY).encode()), timeout=30)
    assert reply.status == 200, reply


def test_chunked_body_over_the_limit_is_413(api):
    """No Content-Length: the body is cut at the limit; that must be a 413, not bad JSON."""
    body = b'{"image": "' + b"A" * (MAX_CONTENT_LENGTH + 100) + b'"}'
    reply = raw_request(api, _chunked(api, body))
    assert_json_error(reply, 413, "request_entity_too_large")
    check_fast(reply)
    check_valid_still_works(api)


def test_malformed_chunked_framing_is_400(api):
    host = api.split("//", 1)[1]
    request = (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
    reply = raw_request(api, request.encode())
    assert_json_error(reply, 400)
    check_fast(reply)
    check_valid_still_works(api)


def _raw(api: str, head: str, body: bytes = b"") -> Reply:
    return raw_request(api, head.encode("latin-1") + body)


@pytest.mark.parametrize("name, request_text, status", [
    ("garbage request line", "garbage\r\n\r\n", 400),
    ("HTTP/0.9", "GET /\r\n\r\n", 400),
    ("unknown HTTP version", "GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 400),
    ("request line too long", "GET /" + "a" * 9000 + " HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("header without colon", "POST /predict HTTP/1.1\r\nHost: x\r\nBogus\r\n"
                             "Content-Length: 2\r\n\r\n{}", 400),
    ("negative Content-Length", "POST /predict HTTP/1.1\r\nHost: x\r\n"
                                "Content-Type: application/json\r\nContent-Length: -5\r\n\r\n",
     400),
    ("two Content-Lengths", "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                            "Content-Length: 3\r\n\r\n{}", 400),
    ("too many headers", "POST /predict HTTP/1.1\r\nHost: x\r\n"
                         + "".join(f"X-H{i}: 1\r\n" for i in range(150)) + "\r\n", 431),
    ("header too large", "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + "a" * 9000
                         + "\r\n\r\n", 431),
])
def test_malformed_http(api, name, request_text, status):
    """Broken HTTP that gunicorn refuses before Flask sees it: still the JSON shape."""
    reply = _raw(api, request_text)
    assert_json_error(reply, status)
    check_fast(reply)


def test_get_predict_is_405_json(api):
    reply = http_get(api, "/predict")
    assert_json_error(reply, 405, "method_not_allowed")
    assert "POST" in reply.headers.get("Allow", ""), reply.headers
    check_fast(reply)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_on_predict_are_405_json(api, method):
    host = api.split("//", 1)[1]
    reply = _raw(api, f"{method} /predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n"
                      f"Connection: close\r\n\r\n")
    assert_json_error(reply, 405, "method_not_allowed")


@pytest.mark.parametrize("path", ["/nope", "/predict/extra", "/%zz", "/static/../../etc/passwd"])
def test_unknown_route_is_404_json(api, path):
    reply = http_get(api, path)
    assert_json_error(reply, 404, "not_found")
    check_fast(reply)


def test_valid_drawing_still_works_afterwards(api):
    check_valid_still_works(api)
    reply = http_get(api, "/ready")
    assert reply.status == 200, reply
