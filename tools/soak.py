"""Soak test: the whole stack under mixed load for minutes while faults are injected.

    python -m tools.soak --data ../shared/data/mnist [--duration 300] [--workers 2]
                           [--clients 8] [--out artifacts/soak]          (make soak)

Not part of CI. What it does:

1. A private model store (a copy of the shipped default as version 1, plus version 2,
   a copy of version 1's model file published through ``ModelStore.publish``, so a
   promote or rollback has something to flip between) and a ``digits.stack.Stack``:
   its own redis-server, ``--workers`` Celery workers, gunicorn; RATE_LIMIT off.
2. ``--clients`` threads, each with a keep-alive ``requests.Session``, for ``--duration``
   seconds: ~85% valid canvas drawings of MNIST test digits (tools/canvas_set, with
   their labels: wrong answers are counted), ~10% bad inputs (invalid base64, a body
   that is not JSON, a blank canvas, non-image bytes, JSON over MAX_CONTENT_LENGTH,
   GET /predict), ~5% GET /ready, /health, /metrics. Every request is recorded as
   (time, kind, status, latency, error code).
3. Faults, one at a time, every ``--fault-every`` seconds, cycling: kill -9 a worker and
   restart it; kill -9 Redis, 2 s down, start it again; a model flip (set_current /
   rollback between versions 1 and 2); SIGTERM a worker and restart it; a corrupt
   version published and made current (the workers must reject it and keep serving
   the old one), then rolled back. Each fault's window lasts from its start until the
   stack is verifiably whole again (all workers heartbeating with the right model).
4. RSS of every process (API master and workers via the process group, each Celery
   worker, Redis) from /proc every ``--sample-every`` seconds; growth per pid, from the
   first sample after warm-up (a restarted process: after its own warm-up) to the last.
5. Every outcome is classified:
     valid drawing   ok (200) | expected_fault (a 503 or 504 inside the window of a fault
                     that explains it) | unexplained_503_504 (outside every fault) |
                     unexpected (any other status, 5xx other than 503/504, a connection
                     error, an answer slower than PREDICT_TIMEOUT + 2 s, an error body
                     not in the API's JSON shape, a rejected model version serving)
     bad input       ok (the expected 4xx and error code) | unexpected (anything else;
                     a 5xx here is a bug)
     probe           ok (200) | expected_fault (/ready 503 during a fault) |
                     unexplained_503_504 | unexpected
   Unplanned process deaths (also a gunicorn worker replaced), faults the stack does not
   recover from and an unhealthy stack at the end are unexpected events.

Prints a report, writes ``--out``/soak.json (and copies the stack's logs to
``--out``/logs); the LAST stdout line is a one-line JSON summary. Exit code 0, or 1 if
anything unexpected happened (``--strict``: 503/504 outside fault windows too);
130 when interrupted. Ctrl-C (or SIGTERM) stops the stack and every process it started.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import requests  # noqa: E402

from digits.stack import Stack  # noqa: E402
from tools.bench import parse_env  # noqa: E402

DEFAULT_PREDICT_TIMEOUT = 5.0  # api/config.py's default; --env PREDICT_TIMEOUT=... changes it
MAX_CONTENT_LENGTH = 2 * 1024 * 1024  # api/config.py's default
HANG_MARGIN = 2.0  # an answer slower than PREDICT_TIMEOUT + this is a hang
CLIENT_TIMEOUT = 30.0  # the clients give up here (also a hang)
FAULT_GRACE = 2.0  # after a fault's recovery is confirmed, its errors may still arrive
RECOVERY_TIMEOUT = 120.0  # a fault the stack has not recovered from by then: a finding
HEARTBEAT_PREFIX = "digits:worker:"  # worker/protocol.py
FAULTS = ("kill9_worker", "redis_restart", "model_flip", "sigterm_worker", "corrupt_model")
# Which (status, error code) answers to a valid drawing each fault explains.
EXPECTED = {
    "kill9_worker": {(503, "no_workers"), (504, "timeout")},
    "sigterm_worker": {(503, "no_workers"), (504, "timeout")},
    "redis_restart": {(503, "broker_unavailable"), (503, "no_workers"), (504, "timeout")},
    "model_flip": {(504, "timeout")},
    "corrupt_model": {(504, "timeout")},
}
READY_503_FAULTS = {"kill9_worker", "sigterm_worker", "redis_restart"}
CLASSES = ("ok", "expected_fault", "unexplained_503_504", "unexpected")
PROBES = ("/ready", "/health", "/metrics")
LOG_PATTERNS = {
    "traceback": "Traceback",
    "error": " ERROR",
    "critical": "CRITICAL",
    "warning": " WARNING",
    "unhandled": "unhandled error",
    "worker_timeout": "WORKER TIMEOUT",
    "hedged": "sending it again",
    "model_rejected": "rejected model version",
    "cannot_start": "cannot start",
}


def log(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------ request bodies
def _png(mode: str, size: tuple[int, int], colour) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, "PNG")
    return buf.getvalue()


def _image_body(value: str) -> bytes:
    return json.dumps({"image": value}).encode()


def bad_inputs() -> dict[str, tuple[str, bytes | None, int, str]]:
    """name -> (method, body, expected status, expected error code); all to /predict."""
    b64 = base64.b64encode
    blank = "data:image/png;base64," + b64(_png("RGBA", (280, 280), (0, 0, 0, 0))).decode()
    return {
        "invalid_base64": ("POST", _image_body("this is *not* base64!"), 400, "invalid_base64"),
        "not_json": ("POST", b'{"image": this is not JSON', 400, "invalid_json"),
        "blank_canvas": ("POST", _image_body(blank), 422, "blank_image"),
        "non_image": (
            "POST",
            _image_body(b64(b"hello, I am not an image at all").decode()),
            400,
            "invalid_image",
        ),
        "oversized_json": (
            "POST",
            b'{"image": "' + b"A" * (MAX_CONTENT_LENGTH + 100) + b'"}',
            413,
            "request_entity_too_large",
        ),
        "get_predict": ("GET", None, 405, "method_not_allowed"),
    }


def make_valid_bodies(data_dir: str, n: int, seed: int) -> list[tuple[bytes, int]]:
    from tools.canvas_set import make_drawings
    from trainer.data import load

    mnist = load(data_dir)
    drawings = make_drawings(mnist.x_test, mnist.y_test, n, seed)
    return [
        (_image_body("data:image/png;base64," + base64.b64encode(png).decode()), label)
        for png, label in drawings
    ]


# ------------------------------------------------------------------ the stack
class SoakStack(Stack):
    """A Stack that remembers every process it started and starts none once closing,
    so a fault thread caught mid-restart cannot leave a stray behind."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spawned: list[tuple[str, subprocess.Popen]] = []
        self._spawn_lock = threading.Lock()
        self._closed = False

    def _spawn(self, name: str, cmd: list[str], **env) -> subprocess.Popen:
        with self._spawn_lock:
            if self._closed:
                raise RuntimeError(f"not starting {name}: the soak is stopping")
            proc = super()._spawn(name, cmd, **env)
            self.spawned.append((name, proc))
            return proc

    def close(self) -> list[str]:
        """Stop everything; return what had to be killed after Stack.stop()."""
        with self._spawn_lock:
            self._closed = True
        with contextlib.suppress(Exception):
            self.stop()
        strays = []
        for name, proc in self.spawned:
            if proc.poll() is None:
                strays.append(f"{name} pid {proc.pid}")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # also whatever is left in its group
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        return strays

    def snapshot(self) -> dict[str, subprocess.Popen]:
        """name -> process, safe to call from another thread while faults run."""
        procs = {}
        if self.redis is not None:
            procs["redis"] = self.redis
        for index, proc in dict(self.workers).items():
            procs[f"worker{index}"] = proc
        if self.api is not None:
            procs["api"] = self.api
        return procs


def seed_store(folder: Path):
    """Version 1 (the shipped model, current) and version 2 (a copy of its model file)."""
    from models.store import MODEL_FILE, ModelStore, shipped_store

    store = ModelStore(folder)
    store.seed_from(shipped_store())
    first = store.current_version()
    keep = {
        k: v for k, v in first.manifest.items() if k not in ("name", "version", "created", "sha256")
    }

    def write(target: Path) -> dict:
        shutil.copyfile(first.model_path, target / MODEL_FILE)
        return {**keep, "note": f"soak: a copy of version {first.number}"}

    second = store.publish(write)
    return store, first.number, second.number


# ------------------------------------------------------------------ /proc
def scan_groups() -> dict[int, list[tuple[int, str, float]]]:
    """pgid -> [(pid, name, VmRSS MB)] for every process we can read, from /proc."""
    groups: dict[int, list[tuple[int, str, float]]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                stat = fh.read()
            pgid = int(stat[stat.rindex(")") + 2 :].split()[2])  # state, ppid, pgrp
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            with open(f"/proc/{entry.name}/status") as fh:
                status = fh.read()
        except (OSError, ValueError):
            continue
        rss = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.M)
        if rss:
            groups.setdefault(pgid, []).append((int(entry.name), name, int(rss.group(1)) / 1024))
    return groups


# ------------------------------------------------------------------ records
@dataclass(slots=True)
class Rec:
    t: float  # seconds since the load started, when the request was sent
    kind: str  # "valid" | "bad:<name>" | "probe:<path>"
    status: int | None  # None: no HTTP answer
    latency: float  # seconds
    code: str = ""  # the error code, or the exception's name when there was no answer
    detail: str = ""
    label: int | None = None
    digit: int | None = None
    version: int | None = None
    shape_ok: bool = True  # an error body in the API's JSON shape
    after: str = ""  # the previous request on this client's keep-alive session
    cls: str = ""
    reason: str = ""
    fault: int | None = None  # index of the fault that explains it


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# ------------------------------------------------------------------ the soak
class Soak:
    def __init__(self, args):
        self.args = args
        self.env = {"RATE_LIMIT": "", **args.env}
        self.predict_timeout = float(
            self.env.get("PREDICT_TIMEOUT", os.environ.get("PREDICT_TIMEOUT", 0))
            or DEFAULT_PREDICT_TIMEOUT
        )
        self.hang_after = self.predict_timeout + HANG_MARGIN
        self.tmp = Path(tempfile.mkdtemp(prefix="digits-soak-"))
        self.stack: SoakStack | None = None
        self.store = None
        self.versions: tuple[int, int] = (1, 2)
        self.corrupt_versions: set[int] = set()
        self.t0 = 0.0  # monotonic time the load started
        self.stop = threading.Event()  # everything stops
        self.stop_load = threading.Event()  # the clients stop
        self.stop_faults = threading.Event()  # no new fault
        self.records: list[list[Rec]] = []
        self.faults: list[dict] = []
        self.events: list[dict] = []  # unplanned deaths and the like
        self.expect_down: set[str] = set()
        self.rss: dict[int, dict] = {}
        self.threads: list[threading.Thread] = []
        self.fault_thread: threading.Thread | None = None
        self.sampler: threading.Thread | None = None
        self._redis = None
        self._cleaned = False
        self._cursor = 0  # which worker the next worker fault hits
        self._api_children: dict[int, float] = {}  # gunicorn worker pid -> first seen
        self.strays: list[str] = []
        self.seen_dead: set[int] = set()
        self._death_lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- helpers --------------------------------------------------------------------
    def wait_for(self, check, timeout: float, interval: float = 0.25) -> bool:
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            try:
                if check():
                    return True
            except Exception:  # noqa: BLE001 - a check that fails is not yet true
                pass
            if time.monotonic() > deadline:
                return False
            self.stop.wait(interval)
        return False

    def heartbeats(self) -> list[dict]:
        import redis

        if self._redis is None:
            self._redis = redis.Redis.from_url(
                self.stack.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
            )
        try:
            keys = list(self._redis.scan_iter(match=HEARTBEAT_PREFIX + "*", count=1000))
            values = self._redis.mget(keys) if keys else []
        except (redis.RedisError, OSError):
            return []
        beats = []
        for raw in values:
            with contextlib.suppress(ValueError, TypeError):
                beat = json.loads(raw) if raw else None
                if isinstance(beat, dict):
                    beats.append(beat)
        return beats

    def serving(self, since_wall: float | None = None) -> dict[str, dict]:
        """worker index -> heartbeat, for workers with a model loaded (started after since)."""
        found = {}
        for beat in self.heartbeats():
            match = re.match(r"worker(\d+)@", str(beat.get("hostname", "")))
            if not match or not beat.get("model_loaded"):
                continue
            if since_wall is not None and beat.get("started", 0) < since_wall:
                continue
            found[match.group(1)] = beat
        return found

    def ready(self) -> tuple[int, dict]:
        try:
            r = requests.get(self.stack.url + "/ready", timeout=5)
            return r.status_code, r.json()
        except (requests.RequestException, ValueError) as exc:
            return 0, {"error": repr(exc)}

    def progress_mark(self) -> dict[str, tuple]:
        """worker index -> (process start, batches done so far), from the heartbeats."""
        return {
            i: (b.get("started"), (b.get("stats") or {}).get("batches", 0))
            for i, b in self.serving().items()
        }

    def whole(self, since: dict | None = None) -> bool:
        """Every worker serving the current version, and /ready says so too. With
        ``since`` (a progress_mark), every worker must also have done a batch since then:
        a heartbeat says the process lives, not that its Celery consumer takes tasks."""
        current = self.store.current()
        beats = self.serving()
        live = {str(i) for i, p in dict(self.stack.workers).items() if p.poll() is None}
        if set(beats) != live or len(live) != self.args.workers:
            return False
        if any(b.get("model_version") != current for b in beats.values()):
            return False
        if since is not None:
            for i, beat in beats.items():
                started, batches = since.get(i, (None, 0))
                if beat.get("started") != started:
                    batches = 0  # a new process since the mark
                if (beat.get("stats") or {}).get("batches", 0) <= batches:
                    return False
        status, body = self.ready()
        return status == 200 and body.get("workers_serving", 0) >= self.args.workers

    # -- setup ----------------------------------------------------------------------
    def setup(self) -> None:
        args = self.args
        t = time.perf_counter()
        self.valid = make_valid_bodies(args.data, args.bodies, args.seed)
        self.bad = bad_inputs()
        log(
            f"{len(self.valid)} canvas drawings and {len(self.bad)} kinds of bad input "
            f"in {time.perf_counter() - t:.1f} s"
        )
        self.store, v1, v2 = seed_store(self.tmp / "models")
        self.versions = (v1, v2)
        self.stack = SoakStack(
            workers=args.workers,
            model_dir=self.tmp / "models",
            log_dir=self.tmp / "logs",
            env=self.env,
        )
        log(
            f"starting the stack ({args.workers} workers, model versions {v1} and {v2}, "
            f"logs in {self.stack.log_dir})"
        )
        t = time.perf_counter()
        self.stack.start(wait=300)
        log(f"ready in {time.perf_counter() - t:.1f} s at {self.stack.url}")
        self.warm_up()

    def warm_up(self) -> None:
        """Both API processes' senders and both workers' first batches, uncounted."""

        def one(i: int) -> int:
            body = self.valid[i % len(self.valid)][0]
            try:
                return requests.post(
                    self.stack.url + "/predict",
                    data=body,
                    timeout=60,
                    headers={"Content-Type": "application/json"},
                ).status_code
            except requests.RequestException:
                return 0

        t = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(one, range(max(16, 2 * self.args.clients))))
        if not statuses.count(200):
            raise RuntimeError(
                f"no 200 while warming up: {Counter(statuses)}\n{self.stack.tail('api')}"
            )
        log(f"warmed up: {Counter(statuses)} in {time.perf_counter() - t:.1f} s")

    # -- clients ----------------------------------------------------------------------
    def client(self, index: int, out: list[Rec]) -> None:
        rng = random.Random(self.args.seed * 1000 + index)
        url = self.stack.url
        json_headers = {"Content-Type": "application/json"}
        bad_names = sorted(self.bad)
        previous = ""
        with requests.Session() as session:
            while not self.stop_load.is_set():
                roll = rng.random()
                if roll < 0.85:
                    body, label = self.valid[rng.randrange(len(self.valid))]
                    rec = self.send(session, "valid", "POST", url + "/predict", body, json_headers)
                    rec.label = label
                elif roll < 0.95:
                    name = rng.choice(bad_names)
                    method, body, _, _ = self.bad[name]
                    rec = self.send(
                        session,
                        f"bad:{name}",
                        method,
                        url + "/predict",
                        body,
                        json_headers if body is not None else {},
                    )
                else:
                    path = rng.choice(PROBES)
                    rec = self.send(session, f"probe:{path}", "GET", url + path, None, {})
                rec.after = previous
                previous = f"{rec.kind} {rec.status}"
                out.append(rec)
                if self.args.think:
                    self.stop_load.wait(self.args.think)

    def send(self, session, kind, method, url, body, headers) -> Rec:
        started = time.monotonic()
        t = started - self.t0
        try:
            r = session.request(method, url, data=body, headers=headers, timeout=CLIENT_TIMEOUT)
            content = r.content
        except requests.Timeout as exc:
            return Rec(t, kind, None, time.monotonic() - started, "client_timeout", repr(exc)[:300])
        except requests.RequestException as exc:
            return Rec(
                t, kind, None, time.monotonic() - started, type(exc).__name__, repr(exc)[:300]
            )
        rec = Rec(t, kind, r.status_code, time.monotonic() - started)
        if kind.startswith("probe:") and r.status_code == 200:
            return rec
        try:
            data = json.loads(content)
        except ValueError:
            data = None
        if r.status_code == 200:
            if kind == "valid":
                if isinstance(data, dict) and isinstance(data.get("digit"), int):
                    rec.digit, rec.version = data["digit"], data.get("model_version")
                else:
                    rec.shape_ok, rec.detail = False, content[:300].decode(errors="replace")
            return rec
        error = data.get("error") if isinstance(data, dict) else None
        content_type = (r.headers.get("Content-Type") or "").split(";")[0].strip()
        if (
            content_type == "application/json"
            and isinstance(error, dict)
            and isinstance(error.get("code"), str)
            and isinstance(error.get("message"), str)
        ):
            rec.code, rec.detail = error["code"], error["message"][:300]
        else:
            rec.shape_ok = False
            rec.detail = f"{content_type}: {content[:300].decode(errors='replace')}"
        return rec

    # -- faults -----------------------------------------------------------------------
    def run_faults(self) -> None:
        args = self.args
        next_at = args.first_fault
        n = 0
        while not self.stop_faults.wait(max(0.0, next_at - self.now())):
            if args.duration - self.now() < args.quiet:
                break  # no fault so near the end that its recovery cannot be watched
            self.heal()
            cycle = args.faults or FAULTS
            kind = cycle[n % len(cycle)]
            n += 1
            entry = {"n": len(self.faults) + 1, "kind": kind, "start_s": round(self.now(), 2)}
            log(f"[{entry['start_s']:6.1f}s] fault {entry['n']} {kind}: starting")
            try:
                getattr(self, "fault_" + kind)(entry)
            except Exception as exc:  # noqa: BLE001 - reported as a fault gone wrong
                entry["error"] = f"{type(exc).__name__}: {exc}"[:2000]
                entry["recovered"] = False
            if self.stop.is_set() and not entry.get("recovered"):
                entry["interrupted"] = True  # cut short by the shutdown: no verdict
            entry["end_s"] = round(self.now(), 2)
            entry["window_s"] = round(entry["end_s"] - entry["start_s"], 2)
            self.faults.append(entry)
            log(
                f"[{entry['end_s']:6.1f}s] fault {entry['n']} {kind} over "
                f"({entry['window_s']} s): {entry.get('detail', '')}{_outcome(entry)}"
            )
            next_at = max(entry["start_s"] + args.fault_every, self.now() + args.min_gap)

    def _next_worker(self) -> int:
        indices = sorted(self.stack.workers) or list(range(1, self.args.workers + 1))
        index = indices[self._cursor % len(indices)]
        self._cursor += 1
        return index

    def _restart_worker(self, entry: dict, kill: bool) -> None:
        index = self._next_worker()
        name = f"worker{index}"
        old = self.stack.workers.get(index)
        self.expect_down.add(name)
        try:
            began = time.monotonic()
            self.stack.stop_worker(index, kill=kill)
            exit_s = time.monotonic() - began
            code = old.returncode if old else None
            if not kill:
                entry["exit_s"] = round(exit_s, 2)
                entry["exit_code"] = code
                if exit_s > 10:  # the stack's contract: out within 10 s of SIGTERM
                    self.event(
                        "slow_sigterm_exit",
                        name,
                        f"{name} pid {old.pid} took "
                        f"{exit_s:.1f} s to exit after SIGTERM (code {code})",
                    )
            self.stop.wait(1.0)  # the load meets one worker fewer for a moment
            if self.stop.is_set():
                return
            restarted = time.time()
            mark = self.progress_mark()
            proc = self.stack.start_worker(index)
        finally:
            self.expect_down.discard(name)
        how = "kill -9" if kill else "SIGTERM"
        entry["target"] = name
        entry["detail"] = (
            f"{name} pid {old.pid if old else '?'} {how}"
            f"{'' if kill else f' (exited in {exit_s:.1f} s, code {code})'}, "
            f"restarted as pid {proc.pid}"
        )
        ok = self.wait_for(
            lambda: str(index) in self.serving(restarted) and self.whole(mark), RECOVERY_TIMEOUT
        )
        entry["recovered"] = ok
        entry["recovery_s"] = round(time.monotonic() - began, 2)
        entry["detail"] += f"; whole again after {entry['recovery_s']} s"
        if not ok:
            entry["log"] = self.stack.tail(name, 40) + "\n" + self.stack.tail("api", 20)

    def fault_kill9_worker(self, entry: dict) -> None:
        self._restart_worker(entry, kill=True)

    def fault_sigterm_worker(self, entry: dict) -> None:
        self._restart_worker(entry, kill=False)

    def fault_redis_restart(self, entry: dict) -> None:
        old = self.stack.redis
        self.expect_down.add("redis")
        try:
            began = time.monotonic()
            self.stack.stop_redis(kill=True)
            entry["down_s"] = round(self.now(), 2)
            self.stop.wait(2.0)
            if self.stop.is_set():
                return
            self.stack.start_redis()
            entry["up_s"] = round(self.now(), 2)
        finally:
            self.expect_down.discard("redis")
        # Heartbeats (their own Redis client) and Celery's consumers reconnect separately.
        beating = self.wait_for(lambda: len(self.serving()) == self.args.workers, 60)
        entry["heartbeats_back_s"] = round(self.now() - entry["up_s"], 2)
        mark = self.progress_mark()
        ok = beating and self.wait_for(lambda: self.whole(mark), RECOVERY_TIMEOUT)
        entry["consuming_again_s"] = round(self.now() - entry["up_s"], 2)
        entry["recovered"] = ok
        entry["recovery_s"] = round(time.monotonic() - began, 2)
        entry["detail"] = (
            f"redis pid {old.pid if old else '?'} kill -9, down "
            f"{entry['up_s'] - entry['down_s']:.1f} s, now pid {self.stack.redis.pid}; after "
            f"the restart every worker heartbeating in {entry['heartbeats_back_s']} s, "
            f"every worker doing batches in {entry['consuming_again_s']} s"
        )
        if not ok:
            entry["log"] = "\n".join(self.stack.tail(n, 30) for n in self._names())

    def _names(self) -> list[str]:
        return ["api", *(f"worker{i}" for i in range(1, self.args.workers + 1))]

    def fault_model_flip(self, entry: dict) -> None:
        began = time.monotonic()
        current = self.store.current()
        target = self.versions[1] if current != self.versions[1] else self.versions[0]
        history = self.store.pointer().get("history", [])
        if history and history[-1] == target:
            self.store.rollback()
            how = "rollback"
        else:
            self.store.set_current(target)
            how = "set_current"
        ok = self.wait_for(
            lambda: (
                len(self.serving()) == self.args.workers
                and all(b.get("model_version") == target for b in self.serving().values())
            ),
            RECOVERY_TIMEOUT,
        )
        entry.update(
            target=f"v{current} -> v{target}",
            recovered=ok,
            recovery_s=round(time.monotonic() - began, 2),
        )
        entry["detail"] = (
            f"{how} v{current} -> v{target}; every worker serving v{target} "
            f"after {entry['recovery_s']} s"
        )
        if not ok:
            entry["log"] = "\n".join(self.stack.tail(n, 30) for n in self._names()[1:])

    def fault_corrupt_model(self, entry: dict) -> None:
        from models.store import MODEL_FILE

        began = time.monotonic()
        serving = self.store.current()
        good = (self.store.get(serving).model_path).read_bytes()
        variant = ("garbage", "truncated")[
            sum(f["kind"] == "corrupt_model" for f in self.faults) % 2
        ]
        data = b"not a keras file " * 100 if variant == "garbage" else good[: len(good) // 3]
        before = {i: b.get("rejections", 0) for i, b in self.serving().items()}

        def write(folder: Path) -> dict:
            (folder / MODEL_FILE).write_bytes(data)
            return {"note": f"soak: a corrupt model ({variant})"}

        bad = self.store.publish(write)
        self.corrupt_versions.add(bad.number)
        try:
            self.store.set_current(bad.number)  # the sha256 matches: only loading it fails
            rejected = self.wait_for(
                lambda: (
                    len(self.serving()) == self.args.workers
                    and all(
                        b.get("rejections", 0) > before.get(i, 0)
                        and b.get("model_version") == serving
                        for i, b in self.serving().items()
                    )
                ),
                RECOVERY_TIMEOUT,
            )
            rejected_s = round(time.monotonic() - began, 2)
        finally:
            if self.store.current() == bad.number:
                self.store.rollback()
        back = self.store.current() == serving
        intact = self.wait_for(self.whole, RECOVERY_TIMEOUT)
        entry.update(
            target=f"v{bad.number}",
            variant=variant,
            rejected=rejected,
            recovered=rejected and back and intact,
            recovery_s=round(time.monotonic() - began, 2),
        )
        entry["detail"] = (
            f"published v{bad.number} ({variant} model file) and made it current; "
            + (
                f"every worker rejected it within {rejected_s} s, still serving v{serving}"
                if rejected
                else f"NOT rejected by every worker within {rejected_s} s"
            )
            + f"; rolled back to v{self.store.current()}"
        )
        if not entry["recovered"]:
            entry["log"] = "\n".join(self.stack.tail(n, 30) for n in self._names()[1:])

    def heal(self) -> None:
        """Restart whatever died on its own (already reported as an event)."""
        for name, proc in self.stack.snapshot().items():
            if proc.poll() is None:
                continue
            self.record_death(name, proc)  # unless the sampler already did
            self.event(
                "restarted_by_soak",
                name,
                f"{name} pid {proc.pid} was dead "
                f"(code {proc.returncode}): restarted before the next fault",
                unexpected=False,
            )
            if name == "redis":
                self.stack.redis = None
                self.stack.start_redis()
            elif name == "api":
                self.stack.api = None
                self.stack.start_api()
            else:
                index = int(name[len("worker") :])
                self.stack.workers.pop(index, None)
                self.stack.start_worker(index)
            self.wait_for(self.whole, RECOVERY_TIMEOUT)

    def record_death(self, name: str, proc: subprocess.Popen) -> None:
        with self._death_lock:
            if proc.pid in self.seen_dead:
                return
            self.seen_dead.add(proc.pid)
        self.event(
            "process_died",
            name,
            f"{name} pid {proc.pid} exited with code {proc.returncode}",
            log=self.stack.tail(name, 40),
        )

    def event(self, kind: str, name: str, message: str, unexpected: bool = True, **more) -> None:
        entry = {
            "t_s": round(self.now(), 2),
            "kind": kind,
            "process": name,
            "message": message,
            "unexpected": unexpected,
            **more,
        }
        self.events.append(entry)
        log(f"[{entry['t_s']:6.1f}s] {'UNEXPECTED ' if unexpected else ''}{kind}: {message}")

    # -- memory and deaths ------------------------------------------------------------
    def run_sampler(self) -> None:
        while not self.stop.is_set():
            t = self.now()
            procs = self.stack.snapshot()
            groups = scan_groups()
            for name, proc in procs.items():
                if proc.poll() is not None:
                    if self.stop.is_set():
                        break  # the shutdown, not a death
                    if name not in self.expect_down:
                        self.record_death(name, proc)
                    continue
                members = groups.get(proc.pid, [])
                for pid, comm, rss in members:
                    if name == "api":
                        role = "api-master" if pid == proc.pid else "api-worker"
                    else:
                        role = name if pid == proc.pid else f"{name}-child"
                    info = self.rss.setdefault(
                        pid, {"role": role, "name": comm, "first_seen_s": t, "samples": []}
                    )
                    info["samples"].append((round(t, 2), round(rss, 1)))
                if name == "api" and not self.stop.is_set():
                    self._watch_api_children(proc.pid, {p for p, _, _ in members}, t)
            self.stop.wait(self.args.sample_every)

    def _watch_api_children(self, master: int, pids: set[int], t: float) -> None:
        children = pids - {master}
        for pid in children:
            self._api_children.setdefault(pid, t)
        for pid in list(self._api_children):
            if pid not in children:
                del self._api_children[pid]
                self.event(
                    "api_worker_replaced",
                    "api",
                    f"gunicorn worker pid {pid} went away (the master replaces it)",
                    log=self.stack.tail("api", 40),
                )

    # -- the run ----------------------------------------------------------------------
    def run(self) -> int:
        args = self.args
        load_before = os.getloadavg()
        interrupted = False
        try:
            self.setup()
            self.t0 = time.monotonic()
            started_wall = time.time()
            self.sampler = threading.Thread(target=self.run_sampler, name="rss", daemon=True)
            self.sampler.start()
            for i in range(args.clients):
                out: list[Rec] = []
                self.records.append(out)
                thread = threading.Thread(
                    target=self.client, args=(i, out), name=f"client-{i}", daemon=True
                )
                self.threads.append(thread)
                thread.start()
            self.fault_thread = threading.Thread(target=self.run_faults, name="faults", daemon=True)
            self.fault_thread.start()
            log(
                f"load: {args.clients} clients for {args.duration} s; first fault at "
                f"{args.first_fault:.0f} s, then every {args.fault_every:.0f} s"
            )
            next_progress = args.progress_every
            while self.now() < args.duration:
                self.stop.wait(min(0.5, args.duration - self.now()))
                if self.now() >= next_progress:
                    self.progress()
                    next_progress += args.progress_every
            self.stop_load.set()
            self.stop_faults.set()
            for thread in self.threads:
                thread.join(CLIENT_TIMEOUT + 5)
            load_s = self.now()
            log(f"load stopped after {load_s:.1f} s; waiting for the last fault's recovery")
            self.fault_thread.join(2 * RECOVERY_TIMEOUT + 30)
            final = self.final_check()
        except KeyboardInterrupt:
            interrupted = True
            log("\ninterrupted: stopping everything")
            load_s = self.now() if self.t0 else 0.0
            started_wall = time.time() - load_s
            final = {"healthy": False, "note": "interrupted"}
        finally:
            self.cleanup()
        if not self.t0:
            return 130 if interrupted else 1
        doc, summary = self.analyse(load_s, final, load_before, started_wall, interrupted)
        out = Path(args.out)
        if not out.is_absolute():
            out = ROOT / out
        out.mkdir(parents=True, exist_ok=True)
        logs = out / "logs"
        shutil.rmtree(logs, ignore_errors=True)
        with contextlib.suppress(OSError):
            shutil.copytree(self.stack.log_dir, logs, ignore=shutil.ignore_patterns("*.rdb"))
        (out / "soak.json").write_text(json.dumps(doc, indent=1) + "\n")
        log("")
        log(self.report(doc))
        log(f"\nwrote {out / 'soak.json'}; the stack's logs are in {logs}")
        print(json.dumps(summary), flush=True)
        if interrupted:
            return 130
        return 1 if summary["unexpected"] else 0

    def progress(self) -> None:
        recs = [r for out in self.records for r in list(out)]
        valid = [r for r in recs if r.kind == "valid"]
        statuses = Counter(str(r.status) if r.status else "no answer" for r in valid)
        log(
            f"[{self.now():6.1f}s] {len(recs)} requests ({len(recs) / max(self.now(), 1e-9):.1f}"
            f"/s); valid: {dict(sorted(statuses.items()))}; faults so far {len(self.faults)}"
        )

    def final_check(self) -> dict:
        """After the load: is the stack whole, and does it answer?"""
        ok = self.wait_for(self.whole, 30)
        status, body = self.ready()
        answers = []
        for body_bytes, _ in self.valid[:5]:
            try:
                answers.append(
                    requests.post(
                        self.stack.url + "/predict",
                        data=body_bytes,
                        headers={"Content-Type": "application/json"},
                        timeout=CLIENT_TIMEOUT,
                    ).status_code
                )
            except requests.RequestException as exc:
                answers.append(type(exc).__name__)
        alive = {name: proc.poll() is None for name, proc in self.stack.snapshot().items()}
        healthy = ok and status == 200 and all(a == 200 for a in answers) and all(alive.values())
        final = {
            "healthy": healthy,
            "ready_status": status,
            "ready": body,
            "predict_statuses": answers,
            "alive": alive,
        }
        try:
            info = self._redis.info("memory") if self._redis else {}
            final["redis_used_memory"] = info.get("used_memory")
            final["redis_keys"] = self._redis.dbsize() if self._redis else None
        except Exception:  # noqa: BLE001 - informational only
            pass
        if not healthy:
            self.event(
                "unhealthy_at_end",
                "stack",
                f"after the load: {final}",
                log="\n".join(self.stack.tail(n, 30) for n in ["redis", *self._names()]),
            )
        return final

    def cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        with contextlib.suppress(ValueError):  # not in the main thread
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this
        self.stop.set()
        self.stop_load.set()
        self.stop_faults.set()
        if self.stack is not None:
            self.strays = self.stack.close()
        for thread in [*self.threads, self.fault_thread, self.sampler]:
            if thread is not None:
                thread.join(CLIENT_TIMEOUT + 5)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()
        if self.stack is not None:  # a restart racing the shutdown: refused, but check
            self.strays += [s for s in self.stack.close() if s not in self.strays]
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, signal.default_int_handler)

    # -- analysis ---------------------------------------------------------------------
    def classify(self, rec: Rec, windows: list[tuple[float, float, int, str]]) -> None:
        end = rec.t + rec.latency
        overlapping = [
            (i, kind) for start, stop, i, kind in windows if rec.t <= stop and end >= start
        ]

        def unexpected(reason: str) -> None:
            rec.cls, rec.reason = "unexpected", reason

        if rec.status is None:
            if rec.code == "client_timeout":
                return unexpected(f"hang: no answer within {CLIENT_TIMEOUT:.0f} s")
            if "RemoteDisconnected" in rec.detail and rec.after.endswith(" 413"):
                return unexpected(
                    "connection closed without a response, right after a 413 on the same "
                    "keep-alive connection"
                )
            return unexpected(f"connection error: {rec.detail[:200]}")
        if rec.latency > self.hang_after:
            return unexpected(
                f"hang: {rec.status} after {rec.latency:.1f} s "
                f"(> PREDICT_TIMEOUT + {HANG_MARGIN:.0f} s)"
            )
        if not rec.shape_ok:
            return unexpected(f"{rec.status} without the API's JSON shape: {rec.detail[:200]}")
        group, _, name = rec.kind.partition(":")
        if group == "bad":
            _, _, status, code = self.bad[name]
            if (rec.status, rec.code) == (status, code):
                rec.cls = "ok"
            else:
                unexpected(f"bad input {name}: {rec.status} {rec.code}, expected {status} {code}")
            return None
        if group == "probe":
            if rec.status == 200:
                rec.cls = "ok"
            elif name == "/ready" and rec.status == 503 and rec.code == "not_ready":
                explained = [i for i, kind in overlapping if kind in READY_503_FAULTS]
                if explained:
                    rec.cls, rec.fault = "expected_fault", explained[0]
                else:
                    rec.cls, rec.reason = "unexplained_503_504", "/ready 503 outside a fault"
            else:
                unexpected(f"{name}: {rec.status} {rec.code}")
            return None
        # a valid drawing
        if rec.status == 200:
            if rec.version in self.corrupt_versions:
                return unexpected(f"answered by the rejected model version {rec.version}")
            rec.cls = "ok"
            return None
        if rec.status in (503, 504):
            explained = [i for i, kind in overlapping if (rec.status, rec.code) in EXPECTED[kind]]
            if explained:
                rec.cls, rec.fault = "expected_fault", explained[0]
            else:
                rec.cls = "unexplained_503_504"
                rec.reason = f"{rec.status} {rec.code} outside any fault that explains it"
            return None
        return unexpected(f"{rec.status} {rec.code}: {rec.detail[:200]}")

    def analyse(self, load_s, final, load_before, started_wall, interrupted):
        args = self.args
        recs = sorted((r for out in self.records for r in out), key=lambda r: r.t)
        windows = [
            (f["start_s"], f["end_s"] + FAULT_GRACE, i, f["kind"])
            for i, f in enumerate(self.faults)
        ]
        for rec in recs:
            self.classify(rec, windows)

        def groups(rec):
            return rec.kind.partition(":")[0]

        by_class = {
            g: Counter(r.cls for r in recs if groups(r) == g) for g in ("valid", "bad", "probe")
        }
        by_kind = {}
        for rec in recs:
            row = by_kind.setdefault(rec.kind, Counter())
            row[rec.cls] += 1
        by_status = Counter(
            f"{groups(r)} {r.status if r.status is not None else 'no-answer'}"
            + (f" {r.code}" if r.code else "")
            for r in recs
        )
        valid = [r for r in recs if r.kind == "valid"]
        answered = [r for r in valid if r.status is not None]
        in_window = [
            r
            for r in answered
            if any(r.t <= stop and r.t + r.latency >= start for start, stop, _, _ in windows)
        ]
        in_ids = {id(r) for r in in_window}
        outside = [r for r in answered if id(r) not in in_ids]
        ok = [r for r in valid if r.cls == "ok"]
        correct = sum(r.digit == r.label for r in ok)

        def lat(rs):
            values = [r.latency for r in rs]
            return {
                "n": len(values),
                "p50_ms": ms(pct(values, 50)),
                "p90_ms": ms(pct(values, 90)),
                "p99_ms": ms(pct(values, 99)),
                "max_ms": ms(max(values, default=None)),
            }

        latency = {
            "valid_all": lat(answered),
            "valid_outside_faults": lat(outside),
            "valid_in_faults": lat(in_window),
            "valid_ok": lat(ok),
        }
        for fault_index, fault in enumerate(self.faults):
            during = [
                r
                for r in valid
                if any(
                    i == fault_index for s, e, i, _ in windows if r.t <= e and r.t + r.latency >= s
                )
            ]
            fault["valid_during"] = dict(
                Counter(
                    f"{r.status if r.status is not None else 'no-answer'}"
                    + (f" {r.code}" if r.code else "")
                    for r in during
                )
            )
            fault["unexpected_during"] = sum(r.cls == "unexpected" for r in during)
            fault["non_200_examples"] = [
                {
                    "t": round(r.t, 2),
                    "status": r.status,
                    "code": r.code,
                    "latency_ms": ms(r.latency),
                    "class": r.cls,
                }
                for r in during
                if r.status != 200
            ][:12]
        versions = Counter(str(r.version) for r in ok)
        errors_by_class = Counter()
        for g in by_class.values():
            for cls, n in g.items():
                if cls != "ok":
                    errors_by_class[cls] += n
        unexpected_recs = [r for r in recs if r.cls == "unexpected"]
        unexpected_events = [e for e in self.events if e.get("unexpected")]
        not_recovered = [
            f for f in self.faults if not f.get("recovered") and not f.get("interrupted")
        ]
        unexplained = errors_by_class.get("unexplained_503_504", 0)
        unexpected_total = (
            len(unexpected_recs)
            + len(unexpected_events)
            + len(not_recovered)
            + len(self.strays)
            + (unexplained if args.strict else 0)
        )
        rss = self.rss_report()
        growth: dict[str, float] = {}
        for info in rss.values():
            if info["growth_mb"] is None:
                continue
            role = info["role"]
            growth[role] = max(growth.get(role, float("-inf")), info["growth_mb"])
        reasons = Counter(
            r.reason if r.reason.startswith("connection closed") else r.reason[:120]
            for r in unexpected_recs
        )
        timeline = {}
        for rec in valid:
            bucket = str(int(rec.t // 5) * 5)
            timeline.setdefault(bucket, Counter())[rec.cls] += 1
        summary = {
            "requests": len(recs),
            "duration_s": round(load_s, 1),
            "ok": len(ok),
            "valid": len(valid),
            "errors_by_class": {c: errors_by_class.get(c, 0) for c in CLASSES[1:]},
            "p99_ms": latency["valid_all"]["p99_ms"],
            "p99_outside_faults_ms": latency["valid_outside_faults"]["p99_ms"],
            "rps": round(len(recs) / load_s, 1) if load_s else None,
            "accuracy": round(correct / len(ok), 4) if ok else None,
            "unexpected": unexpected_total,
            "rss_growth_mb": {k: round(v, 1) for k, v in sorted(growth.items())},
            "faults": len(self.faults),
        }
        doc = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_wall)),
            "interrupted": interrupted,
            "machine": {
                "cpus": os.cpu_count(),
                "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()],
            },
            "config": {
                "duration_s": args.duration,
                "workers": args.workers,
                "clients": args.clients,
                "fault_every_s": args.fault_every,
                "first_fault_s": args.first_fault,
                "warmup_s": args.warmup,
                "sample_every_s": args.sample_every,
                "think_s": args.think,
                "env": self.env,
                "bodies": len(self.valid),
                "predict_timeout_s": self.predict_timeout,
                "hang_after_s": self.hang_after,
                "fault_grace_s": FAULT_GRACE,
                "strict": args.strict,
                "model_versions": list(self.versions),
            },
            "definitions": {
                "classes": "see the module docstring of tools/soak.py",
                "fault window": (
                    f"from a fault's start until the stack was verified whole "
                    f"again, plus {FAULT_GRACE} s; a request is in it if they "
                    f"overlap"
                ),
                "latency": "valid drawings that got an HTTP answer, whatever the status",
                "accuracy": "right digits / valid drawings answered 200",
                "rss growth": (
                    "per pid: last sample minus the first sample taken at least "
                    "warmup_s after the load started and after the pid appeared; "
                    "rss_growth_mb is the largest per role"
                ),
                "unexpected": (
                    "unexpected requests + unexpected events + faults not "
                    "recovered + stray processes at exit (+ unexplained 503/504 "
                    "with --strict)"
                ),
            },
            "summary": summary,
            "requests": {
                "total": len(recs),
                "by_group": {g: sum(c.values()) for g, c in by_class.items()},
            },
            "classes": {g: dict(c) for g, c in by_class.items()},
            "by_kind": {k: dict(c) for k, c in sorted(by_kind.items())},
            "by_status": dict(sorted(by_status.items())),
            "latency": latency,
            "accuracy": {
                "answered": len(ok),
                "correct": correct,
                "accuracy": summary["accuracy"],
                "model_versions_answering": dict(versions),
            },
            "faults": self.faults,
            "events": self.events,
            "not_recovered": [f["n"] for f in not_recovered],
            "unexpected_reasons": dict(reasons.most_common()),
            "unexpected_examples": [asdict(r) for r in unexpected_recs[:30]],
            "unexplained_examples": [asdict(r) for r in recs if r.cls == "unexplained_503_504"][
                :30
            ],
            "rss": rss,
            "final": final,
            "strays_at_exit": self.strays,
            "logs": self.log_findings(),
            "timeline_valid_5s": {k: dict(v) for k, v in timeline.items()},
        }
        return doc, summary

    def rss_report(self) -> dict:
        out = {}
        for pid, info in sorted(self.rss.items()):
            samples = info["samples"]
            start = max(self.args.warmup, info["first_seen_s"] + self.args.warmup)
            base = next((s for s in samples if s[0] >= start), None)
            last = samples[-1]
            growth = round(last[1] - base[1], 1) if base and last[0] > base[0] else None
            out[str(pid)] = {
                "role": info["role"],
                "name": info["name"],
                "first_seen_s": round(info["first_seen_s"], 1),
                "last_seen_s": last[0],
                "first_mb": samples[0][1],
                "base_mb": base[1] if base else None,
                "base_s": base[0] if base else None,
                "last_mb": last[1],
                "max_mb": max(s[1] for s in samples),
                "growth_mb": growth,
                "samples": samples,
            }
        return out

    def log_findings(self) -> dict:
        found = {}
        if self.stack is None:
            return found
        for path in sorted(self.stack.log_dir.glob("*.log")):
            text = path.read_text(errors="replace")
            counts = {k: text.count(p) for k, p in LOG_PATTERNS.items() if p in text}
            excerpts = []
            lines = text.splitlines()
            i = 0
            while i < len(lines) and len(excerpts) < 8:
                line = lines[i]
                if any(
                    p in line
                    for p in (
                        "Traceback",
                        "CRITICAL",
                        "WORKER TIMEOUT",
                        "unhandled error",
                        " ERROR",
                    )
                ):
                    if "rejected model version" in line:  # expected from corrupt_model
                        i += 1
                        continue
                    block = [line]
                    j = i + 1
                    while (
                        j < len(lines)
                        and len(block) < 25
                        and (
                            lines[j].startswith((" ", "\t", "Traceback"))
                            or not lines[j][:1]
                            or re.match(r"^\w+(\.\w+)*(Error|Exception)\b", lines[j])
                        )
                    ):
                        block.append(lines[j])
                        j += 1
                    excerpts.append("\n".join(block))
                    i = j
                    continue
                i += 1
            if counts or excerpts:
                found[path.stem] = {"counts": counts, "excerpts": excerpts}
        return found

    # -- report -----------------------------------------------------------------------
    def report(self, doc: dict) -> str:
        s, cfg, lat = doc["summary"], doc["config"], doc["latency"]
        lines = [
            f"soak: {s['duration_s']} s, {cfg['workers']} workers, {cfg['clients']} clients, "
            f"{s['faults']} faults; {doc['machine']['cpus']} CPUs, load average "
            f"{doc['machine']['load_before'][0]} -> {doc['machine']['load_after'][0]}"
            + ("  (INTERRUPTED)" if doc["interrupted"] else ""),
            f"requests: {s['requests']} ({s['rps']}/s): "
            + ", ".join(f"{g} {n}" for g, n in doc["requests"]["by_group"].items()),
            "",
            "valid drawings",
        ]
        cv = doc["classes"]["valid"]
        lines += [f"  {cls:22s} {cv.get(cls, 0):7d}" for cls in CLASSES]
        a = doc["accuracy"]
        lines.append(
            f"  {'accuracy':22s} {a['accuracy']} ({a['correct']}/{a['answered']}); "
            f"versions answering {a['model_versions_answering']}"
        )
        for key, label in (
            ("valid_all", "latency, all"),
            ("valid_outside_faults", "latency, outside faults"),
            ("valid_in_faults", "latency, in fault windows"),
        ):
            r = lat[key]
            lines.append(
                f"  {label:22s} p50 {r['p50_ms']} ms, p90 {r['p90_ms']} ms, p99 "
                f"{r['p99_ms']} ms, max {r['max_ms']} ms (n={r['n']})"
            )
        lines += ["", "bad inputs and probes (ok = the expected answer)"]
        for kind, counts in doc["by_kind"].items():
            if kind != "valid":
                shown = ", ".join(f"{c} {n}" for c, n in sorted(counts.items()))
                lines.append(f"  {kind:22s} {shown}")
        lines += ["", "by status and error code"]
        lines += [f"  {k:45s} {n:7d}" for k, n in doc["by_status"].items()]
        lines += ["", f"faults ({len(doc['faults'])})"]
        for f in doc["faults"]:
            lines.append(
                f"  [{f['start_s']:6.1f}s-{f['end_s']:6.1f}s] {f['n']:2d} {f['kind']:15s} "
                f"{f.get('detail', '')}"
            )
            lines.append(
                f"      valid requests overlapping: {f.get('valid_during', {})}{_outcome(f)}"
            )
        if doc["events"]:
            lines += ["", "events"]
            lines += [
                f"  [{e['t_s']:6.1f}s] {'UNEXPECTED ' if e['unexpected'] else ''}"
                f"{e['kind']}: {e['message']}"
                for e in doc["events"]
            ]
        lines += ["", "memory: RSS per process (MB): first, after warm-up -> last (growth), max"]
        for pid, r in doc["rss"].items():
            growth = "-" if r["growth_mb"] is None else f"{r['growth_mb']:+.1f}"
            lines.append(
                f"  {r['role']:12s} pid {pid:>7s} [{r['first_seen_s']:6.1f}s-"
                f"{r['last_seen_s']:6.1f}s] {r['first_mb']:7.1f}, {r['base_mb'] or '-'}"
                f" -> {r['last_mb']:.1f} ({growth}), max {r['max_mb']:.1f}"
            )
        fin = doc["final"]
        lines += [
            "",
            f"at the end: {'healthy' if fin.get('healthy') else 'NOT HEALTHY'}; "
            f"/ready {fin.get('ready_status')}, predict {fin.get('predict_statuses')},"
            f" Redis keys {fin.get('redis_keys')}, used_memory "
            f"{fin.get('redis_used_memory')}",
        ]
        if doc["strays_at_exit"]:
            lines.append(f"STRAY processes killed at exit: {doc['strays_at_exit']}")
        if doc["logs"]:
            lines += ["", "log lines (counts per log)"]
            for name, found in doc["logs"].items():
                lines.append(f"  {name}: {found['counts']}")
                serious = ("traceback", "unhandled", "worker_timeout", "critical", "cannot_start")
                if any(found["counts"].get(k) for k in serious):
                    for excerpt in found["excerpts"][:3]:
                        lines += ["    | " + ln for ln in excerpt.splitlines()[:25]]
        if doc["unexpected_reasons"]:
            lines += ["", "UNEXPECTED requests by reason"]
            lines += [f"  {n:6d}  {r}" for r, n in doc["unexpected_reasons"].items()]
            lines += ["  first ones:"]
            lines += [
                f"    t={r['t']:.2f}s {r['kind']} {r['status']} {r['code']} "
                f"{r['latency'] * 1000:.0f} ms (after {r['after'] or '-'}): {r['reason'][:160]}"
                for r in doc["unexpected_examples"][:10]
            ]
        if doc["unexplained_examples"]:
            lines += ["", "503/504 outside fault windows (first ones)"]
            lines += [
                f"    t={r['t']:.2f}s {r['kind']} {r['status']} {r['code']} "
                f"{r['latency'] * 1000:.0f} ms"
                for r in doc["unexplained_examples"][:10]
            ]
        lines += ["", f"unexpected: {s['unexpected']}; errors by class: {s['errors_by_class']}"]
        return "\n".join(lines)


def _outcome(fault: dict) -> str:
    """How a fault ended, for the log and the report: nothing when it recovered."""
    text = ""
    if not fault.get("recovered"):
        text = "  (interrupted)" if fault.get("interrupted") else "  NOT RECOVERED"
    if fault.get("error"):
        text += f"  (error: {fault['error']})"
    return text


# ------------------------------------------------------------------ main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tools.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="MNIST folder (IDX .gz files), for the drawings")
    p.add_argument("--duration", type=float, default=300, help="seconds of load (default 300)")
    p.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WORKERS", 2)),
        help="Celery workers (default $WORKERS or 2)",
    )
    p.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    p.add_argument("--out", default="artifacts/soak", help="folder for soak.json and logs/")
    p.add_argument(
        "--fault-every", type=float, default=25, help="seconds between fault starts (default 25)"
    )
    p.add_argument("--first-fault", type=float, default=10, help="first fault at (default 10 s)")
    p.add_argument(
        "--min-gap",
        type=float,
        default=5,
        help="at least this long after a fault's recovery before the next (5 s)",
    )
    p.add_argument(
        "--quiet",
        type=float,
        default=10,
        help="no fault starts in the last QUIET seconds (default 10)",
    )
    p.add_argument(
        "--faults",
        type=lambda v: [f for f in v.split(",") if f],
        help=f"comma list to cycle instead of all: {','.join(FAULTS)}",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="RSS growth is measured from this long after the start (and after a "
        "process appears); default min(30, duration/4)",
    )
    p.add_argument("--sample-every", type=float, default=3, help="RSS sampling period (3 s)")
    p.add_argument("--think", type=float, default=0, help="pause per client between requests")
    p.add_argument("--bodies", type=int, default=200, help="distinct canvas drawings (200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress-every", type=float, default=15, help=argparse.SUPPRESS)
    p.add_argument(
        "--strict", action="store_true", help="count 503/504 outside fault windows as unexpected"
    )
    p.add_argument(
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="environment for the stack (repeatable), e.g. PREDICT_TIMEOUT=5",
    )
    args = p.parse_args(argv)
    args.env = parse_env(args.env)
    if args.warmup is None:
        args.warmup = min(30.0, args.duration / 4)
    if args.duration < 10 or args.clients < 1 or args.workers < 1:
        raise SystemExit("--duration at least 10 s; --clients and --workers at least 1")
    unknown = set(args.faults or []) - set(FAULTS)
    if unknown:
        raise SystemExit(f"--faults: unknown {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    if (
        not (Path(args.data) / "t10k-images-idx3-ubyte.gz").exists()
        and not (Path(args.data) / "t10k-images-idx3-ubyte").exists()
    ):
        raise SystemExit(f"--data: no MNIST test set in {args.data}")

    def _on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    soak = Soak(args)
    atexit.register(soak.cleanup)
    log(
        f"soak: {args.duration:.0f} s, {args.workers} workers, {args.clients} clients; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; scratch {soak.tmp}"
    )
    try:
        return soak.run()
    except (RuntimeError, TimeoutError, OSError) as exc:
        log(f"soak failed: {type(exc).__name__}: {exc}")
        return 1
    except KeyboardInterrupt:
        log("\ninterrupted")
        return 130
    finally:
        soak.cleanup()
        shutil.rmtree(soak.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
