"""gunicorn settings: ``gunicorn -c api/gunicorn_conf.py 'api:create_app()'``.

gthread workers: each request thread blocks on its answer while the dispatcher's
listener thread collects results and sends the next group. Chosen by measurement
(README, Performance).
"""

import json
import os
import shutil
import time

from gunicorn import util as gunicorn_util

from digits import request_ids
from digits.settings import load_or_exit, prometheus_dir

SETTINGS = load_or_exit()
bind = f"{SETTINGS.HOST}:{SETTINGS.PORT}"
workers = SETTINGS.WEB_CONCURRENCY
worker_class = "gthread"
threads = SETTINGS.GUNICORN_THREADS
backlog = 2048
keepalive = 5
timeout = 30
# SIGTERM: finish in-flight requests (at most PREDICT_TIMEOUT), then exit well inside 10 s.
graceful_timeout = SETTINGS.GRACEFUL_TIMEOUT
accesslog = SETTINGS.ACCESS_LOG or None
# gunicorn's default access line, then the request's ID (api/request_id.py).
access_log_format = ('%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" '
                     "%({x-request-id}o)s")
errorlog = "-"
loglevel = SETTINGS.LOG_LEVEL.lower()
# gunicorn 27's control socket defaults to one path per user (~/.gunicorn): several
# servers on one host (tests, bench) would fight over it, and nothing here uses it.
control_socket_disable = True
# Never let a request line or header block grow without bound.
limit_request_line = 8190
limit_request_fields = 100

# prometheus-client multiprocess mode: one folder of mmap files per server run. It must be
# set before prometheus_client is first imported (it picks its value class at import).
PROM_DIR, _OWN_PROM_DIR = prometheus_dir(SETTINGS)


def _json_error(sock, status_int, reason, mesg):
    """gunicorn's own answers to malformed HTTP (bad request line, headers, chunking...),
    which Flask never sees, in the API's JSON error shape instead of an HTML page. The
    request could not be parsed, so its ID is always a new one."""
    rid = request_ids.new()
    body = json.dumps({"error": {"code": reason.lower().replace(" ", "_"),
                                 "message": mesg or reason, "request_id": rid}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
            f"{request_ids.HEADER}: {rid}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


gunicorn_util.write_error = _json_error  # workers call util.write_error(...) by name


def on_starting(server):
    for name in os.listdir(PROM_DIR):
        if name.endswith(".db"):
            os.unlink(os.path.join(PROM_DIR, name))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _OWN_PROM_DIR:
        shutil.rmtree(PROM_DIR, ignore_errors=True)


# A refused body (413) is read and dropped, within these bounds, before the close.
DRAIN_MAX_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 3.0  # in all
DRAIN_IDLE = 1.0  # the client sent nothing for this long: it has stopped


def pre_request(worker, req):
    """Close the connection after a body the app will refuse unread (413).

    gunicorn drains at most 64 KiB of an unread body before reusing a kept-alive
    connection; past that it closes it after sending a response that promised
    keep-alive, and the client's next request on it gets no answer. gunicorn drops
    a Connection header set by the app, so the decision is made here.
    """
    limit = SETTINGS.MAX_CONTENT_LENGTH
    for name, value in req.headers:
        if name == "CONTENT-LENGTH" and value.isdigit() and int(value) > limit:
            req.must_close = True
            req.refused_length = int(value)


def post_request(worker, req, environ, resp):
    """Read and drop the rest of a refused body before the connection closes.

    Closing a socket with unread bytes makes the kernel send a reset: a client still
    sending its body then got "broken pipe" or "connection reset" instead of the 413
    it was sent (as nginx's lingering close avoids). The drain is bounded in bytes and
    time, runs in the request's own thread, and a declared length past
    DRAIN_MAX_BYTES is not waited for at all.
    """
    if not 0 < getattr(req, "refused_length", 0) <= DRAIN_MAX_BYTES:
        return
    sock = getattr(req.unreader, "sock", None)
    if sock is None:
        return
    deadline = time.monotonic() + DRAIN_SECONDS
    try:
        sock.settimeout(DRAIN_IDLE)
        while time.monotonic() < deadline and req.body.read(65536):
            pass
    except (OSError, ValueError):  # timed out, reset, or a body that breaks its framing
        pass
