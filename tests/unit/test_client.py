"""digits/client.py on its own: finding files, planning batches, Retry-After, and the
retry loop against a real local HTTP server that answers 503/429 before 200."""

from __future__ import annotations

import email.utils
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from digits.client import Client, RequestFailed, find_images, plan_batches, retry_after


def test_find_images_files_folders_and_globs(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.png", "a/b/2.JPG", "a/b/3.webp", "a/notes.txt", "c.png", "d.gif"):
        (tmp_path / name).write_bytes(b"x")
    found, missing = find_images([tmp_path / "a", f"{tmp_path}/*.png", tmp_path / "d.gif",
                                  tmp_path / "a" / "1.png", tmp_path / "nope.png",
                                  f"{tmp_path}/*.bmp"])
    names = [p.removeprefix(str(tmp_path) + "/") for p in found]
    assert names == ["a/1.png", "a/b/2.JPG", "a/b/3.webp", "c.png", "d.gif"]  # each once
    assert missing == [str(tmp_path / "nope.png"), f"{tmp_path}/*.bmp"]


def test_a_named_file_is_taken_whatever_its_suffix(tmp_path):
    (tmp_path / "scan.dat").write_bytes(b"x")
    assert find_images([tmp_path / "scan.dat"])[0] == [str(tmp_path / "scan.dat")]


def test_plan_batches_by_count_and_by_body_size(tmp_path):
    files = []
    for i, size in enumerate([300, 300, 300, 300, 3000, 300]):
        path = tmp_path / f"{i}.png"
        path.write_bytes(b"x" * size)
        files.append(str(path))
    by_count = plan_batches(files, size=2, max_body=10**6)
    assert [len(b) for b in by_count] == [2, 2, 2]
    by_bytes = plan_batches(files, size=10, max_body=1000)  # 300 B -> 404 B of base64
    assert [len(b) for b in by_bytes] == [2, 2, 1, 1]  # the 3000 B file goes alone
    assert [p for b in by_bytes for p in b] == files


@pytest.mark.parametrize(("value", "seconds"), [
    ("3", 3.0), (" 0 ", 0.0), ("", None), (None, None), ("soon", None), ("-1", None)])
def test_retry_after_seconds(value, seconds):
    assert retry_after(value) == seconds


def test_retry_after_http_date():
    when = email.utils.formatdate(1_000_100, usegmt=True)
    assert retry_after(when, now=1_000_000) == pytest.approx(100)
    assert retry_after(email.utils.formatdate(0, usegmt=True), now=1_000_000) == 0


class Scripted(BaseHTTPRequestHandler):
    """Answers from the server's script: [(status, headers, body)], then 200s."""

    def do_POST(self):  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length", 0))
        images = json.loads(self.rfile.read(length))["images"]
        self.server.seen.append(self.headers.get("X-Request-ID"))
        if self.server.script:
            status, headers, body = self.server.script.pop(0)
        else:
            status, headers = 200, {}
            body = {"results": [{"digit": 3, "confidence": 0.9, "model_version": 2}
                                for _ in images]}
        raw = json.dumps(body).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    httpd.script, httpd.seen = [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def busy(status: int, code: str, headers: dict | None = None):
    return status, headers or {}, {"error": {"code": code, "message": "busy"}}


def test_503_and_429_are_retried_honouring_retry_after(server):
    server.script = [busy(503, "no_workers", {"Retry-After": "7"}),
                     busy(429, "rate_limited", {"Retry-After": "2"}),
                     busy(503, "no_workers")]  # no Retry-After: back-off
    waits = []
    client = Client(f"http://127.0.0.1:{server.server_port}", sleep=waits.append)
    results = client.predict_batch(["aaaa", "bbbb"], request_id="rid-1")
    assert [r["digit"] for r in results] == [3, 3]
    assert [r["request_id"] for r in results] == ["rid-1", "rid-1"]
    assert waits == [7.0, 2.0, 2.0]  # the third: back-off 0.5 * 2**2
    assert client.retried == 3
    assert server.seen == ["rid-1"] * 4  # the same ID on every attempt


def test_a_long_retry_after_is_capped(server):
    server.script = [busy(503, "no_workers", {"Retry-After": "3600"})]
    waits = []
    Client(f"http://127.0.0.1:{server.server_port}", sleep=waits.append,
           max_wait=5).predict_batch(["aaaa"])
    assert waits == [5]


def test_retries_run_out(server):
    server.script = [busy(503, "no_workers")] * 3
    client = Client(f"http://127.0.0.1:{server.server_port}", retries=2,
                    sleep=lambda s: None)
    with pytest.raises(RequestFailed) as caught:
        client.predict_batch(["aaaa"])
    assert (caught.value.status, caught.value.code) == (503, "no_workers")


def test_other_errors_are_not_retried(server):
    server.script = [busy(400, "invalid_body")]
    waits = []
    client = Client(f"http://127.0.0.1:{server.server_port}", sleep=waits.append)
    with pytest.raises(RequestFailed) as caught:
        client.predict_batch(["aaaa"])
    assert caught.value.code == "invalid_body" and waits == []


def test_a_refused_connection_is_a_connection_error():
    client = Client("http://127.0.0.1:9", retries=1, sleep=lambda s: None, timeout=2)
    with pytest.raises(RequestFailed) as caught:
        client.predict_batch(["aaaa"])
    assert caught.value.code == "connection_error" and client.retried == 1


def test_not_an_http_url():
    with pytest.raises(ValueError):
        Client("ftp://example.com")


def test_the_command_imports_no_heavy_modules():
    code = ("import sys, digits.cli, digits.client; "
            "print(sorted(m for m in ('flask', 'numpy', 'tensorflow', 'celery', 'redis', "
            "'PIL', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
