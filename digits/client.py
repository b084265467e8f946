"""An HTTP client of the API for the ``digits`` command: standard library only.

``Client`` sends requests over one kept-alive connection per thread and retries
429 and 503 answers (honouring ``Retry-After``) and refused connections, with
back-off. ``label`` sends files through ``POST /predict/batch`` in batches (by count
and by body size), several at once, and yields one row per file, in order.
"""

from __future__ import annotations

import base64
import email.utils
import glob
import http.client
import json
import os
import threading
import time
import urllib.parse
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from digits import request_ids

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
RETRY_STATUSES = (429, 503)
COLUMNS = ("path", "digit", "confidence", "model_version", "error", "error_message",
           "request_id")
# Bytes of JSON around each base64 image in a batch body: quotes and a comma.
ITEM_OVERHEAD = 4
BODY_OVERHEAD = 16


class RequestFailed(Exception):
    """A request the API refused as a whole, or that never got an answer."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None):
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message, self.request_id = status, code, message, request_id


@dataclass
class Response:
    status: int
    headers: dict
    body: object  # parsed JSON, else the text

    def error(self) -> tuple[str, str]:
        err = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(err, dict):
            return str(err.get("code") or f"http_{self.status}"), str(err.get("message") or "")
        return f"http_{self.status}", str(self.body)[:200]


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class Client:
    url: str
    timeout: float = 30.0
    retries: int = 8  # attempts after the first, for 429, 503 and refused connections
    max_wait: float = 30.0  # longest single wait, whatever Retry-After says
    sleep: object = time.sleep
    retried: int = 0  # waits so far, over all threads (for the summary)
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        parts = urllib.parse.urlsplit(self.url if "://" in self.url else "http://" + self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {self.url!r}")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._base = parts.path.rstrip("/")

    # -- one request -----------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = (http.client.HTTPSConnection if self._scheme == "https"
                   else http.client.HTTPConnection)
            conn = self._local.conn = cls(self._host, self._port, timeout=self.timeout)
        return conn

    def _close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _once(self, method: str, path: str, body: bytes | None, headers: dict) -> Response:
        # A kept-alive connection the server has closed fails on first use: one fresh try.
        for fresh in (False, True):
            conn = self._connection()
            try:
                conn.request(method, self._base + path, body=body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError, http.client.BadStatusLine):
                self._close()
                if fresh:
                    raise
                continue
            except (OSError, http.client.HTTPException):
                self._close()
                raise
            if resp.getheader("Connection", "").lower() == "close":
                self._close()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode("utf-8", "replace")
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed)
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, payload=None, request_id: str | None = None,
                retries: int | None = None) -> Response:
        """The answer, after retrying 429/503 and refused connections; raises
        RequestFailed(0, "connection_error") when the server never answered."""
        headers = {"Accept": "application/json"}
        body = None
        if payload is not None:
            body = json.dumps(payload, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if request_id:
            headers[request_ids.HEADER] = request_id
        budget = self.retries if retries is None else retries
        for attempt in range(budget + 1):
            try:
                response = self._once(method, path, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                if attempt >= budget:
                    raise RequestFailed(0, "connection_error",
                                        f"{self._host}: {exc}", request_id) from None
                self._wait(min(0.25 * 2 ** attempt, 2.0))
                continue
            if response.status not in RETRY_STATUSES or attempt >= budget:
                return response
            asked = retry_after(response.headers.get("retry-after"))
            self._wait(asked if asked is not None else min(0.5 * 2 ** attempt, 8.0))
        raise AssertionError("unreachable")

    def _wait(self, seconds: float) -> None:
        with self._lock:
            self.retried += 1
        self.sleep(min(max(seconds, 0.0), self.max_wait))

    # -- the API ---------------------------------------------------------------------
    def ready(self) -> Response:
        return self.request("GET", "/ready", retries=0)

    def predict_batch(self, images: list[str], request_id: str | None = None) -> list[dict]:
        """Base64 images -> one result per image (a prediction or {"error": ...})."""
        response = self.request("POST", "/predict/batch", {"images": images}, request_id)
        rid = response.headers.get(request_ids.HEADER.lower(), request_id)
        results = response.body.get("results") if isinstance(response.body, dict) else None
        if response.status != 200 or not isinstance(results, list) or len(results) != len(
                images):
            code, message = response.error()
            raise RequestFailed(response.status, code, message, rid)
        for item in results:
            if isinstance(item, dict):
                item.setdefault("request_id", rid)
        return results


# -- files -------------------------------------------------------------------------------
def find_images(args) -> tuple[list[str], list[str]]:
    """Files named, images under folders (recursively) and glob matches, each once,
    in order; and the arguments that matched nothing."""
    found, missing = {}, []
    for arg in args:
        arg = str(arg)
        path = Path(arg)
        if path.is_dir():
            matches = sorted(str(p) for p in path.rglob("*")
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            matches = [arg]
        elif glob.has_magic(arg):
            matches = []
            for hit in sorted(glob.glob(arg, recursive=True)):
                if Path(hit).is_dir():
                    matches += find_images([hit])[0]
                elif Path(hit).is_file():
                    matches.append(hit)
        else:
            matches = []
        if not matches:
            missing.append(arg)
        found.update(dict.fromkeys(matches))
    return list(found), missing


def plan_batches(files: list[str], size: int, max_body: int) -> list[list[str]]:
    """Consecutive files in batches of at most ``size`` files whose JSON body (base64,
    4/3 of the file) stays under ``max_body`` bytes; a file too big alone goes alone."""
    batches, batch, body = [], [], BODY_OVERHEAD
    for path in files:
        try:
            item = (os.path.getsize(path) + 2) // 3 * 4 + ITEM_OVERHEAD
        except OSError:
            item = ITEM_OVERHEAD  # unreadable: found out when it is read
        if batch and (len(batch) >= size or body + item > max_body):
            batches.append(batch)
            batch, body = [], BODY_OVERHEAD
        batch.append(path)
        body += item
    if batch:
        batches.append(batch)
    return batches


def make_row(path: str, result: dict | None = None, **error) -> dict:
    row = dict.fromkeys(COLUMNS)
    row["path"] = path
    if result is not None and isinstance(result.get("digit"), int):
        row.update(digit=result["digit"], confidence=result.get("confidence"),
                   model_version=result.get("model_version"))
    elif result is not None:
        err = result.get("error") if isinstance(result.get("error"), dict) else {}
        row.update(error=err.get("code", "bad_answer"), error_message=err.get("message"))
    row.update(error)
    row["request_id"] = (result or {}).get("request_id") or error.get("request_id")
    return row


def _send(client: Client, paths: list[str], request_id: str) -> list[dict]:
    """One batch -> its rows. A batch the server finds too large is halved and sent again."""
    images, readable, rows = [], [], {}
    for path in paths:
        try:
            images.append(base64.b64encode(Path(path).read_bytes()).decode("ascii"))
            readable.append(path)
        except OSError as exc:
            rows[path] = make_row(path, error="unreadable_file", error_message=str(exc))
    if readable:
        try:
            for path, result in zip(readable, client.predict_batch(images, request_id),
                                    strict=True):
                rows[path] = make_row(path, result if isinstance(result, dict) else {})
        except RequestFailed as exc:
            if exc.status == 413 and len(readable) > 1:
                half = len(readable) // 2
                for part, suffix in ((readable[:half], "a"), (readable[half:], "b")):
                    rows.update((r["path"], r) for r in _send(client, part, request_id + suffix))
            else:
                for path in readable:
                    rows[path] = make_row(path, error=exc.code, error_message=exc.message,
                                          request_id=exc.request_id)
    return [rows[path] for path in paths]


def label(client: Client, files: list[str], batch: int = 64, max_body: int = 1_500_000,
          concurrency: int = 4):
    """Yield one row per file, in order, with at most ``concurrency`` batches in flight."""
    run = request_ids.new()[:12]
    batches = plan_batches(files, batch, max_body)
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="digits-send") as pool:
        pending: deque = deque()
        for number, paths in enumerate(batches):
            pending.append(pool.submit(_send, client, paths, f"digits-{run}-{number}"))
            while len(pending) >= max(1, concurrency) * 2:  # read ahead, but not everything
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
