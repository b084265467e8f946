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

The parts: tools/soak_traffic.py (the clients), tools/soak_faults.py (the faults),
tools/soak_analysis.py (classes, latency, RSS growth, soak.json), tools/soak_report.py.

Prints a report, writes ``--out``/soak.json (and copies the stack's logs to
``--out``/logs); the LAST stdout line is a one-line JSON summary. Exit code 0, or 1 if
anything unexpected happened (``--strict``: 503/504 outside fault windows too);
130 when interrupted. Ctrl-C (or SIGTERM) stops the stack and every process it started.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path

import requests

from digits.settings import ROOT
from models.store import ModelStore, shipped_store
from tools import faults
from tools.load import drawing_bodies, post_many
from tools.procs import (
    TrackedStack,
    by_group,
    interrupt_on_sigterm,
    parse_env,
    scan,
    sigint_ignored,
    stack_settings,
    wait_for,
)
from tools.soak_analysis import HANG_MARGIN, analyse
from tools.soak_faults import FAULTS, RECOVERY_TIMEOUT, run_faults
from tools.soak_report import report
from tools.soak_traffic import CLIENT_TIMEOUT, Traffic, bad_inputs

log = partial(print, flush=True)


def seed_store(folder: Path):
    """Version 1 (the shipped model, current) and version 2 (a copy of its model file)."""
    store = ModelStore(folder)
    store.seed_from(shipped_store())
    first = store.current()
    second = faults.publish_copy(store, f"soak: a copy of version {first}")
    return store, first, second.number


class Soak:
    def __init__(self, args):
        self.args = args
        self.env = {"RATE_LIMIT": "", **args.env}
        self.settings = stack_settings(self.env)  # what the stack runs with
        self.predict_timeout = self.settings.PREDICT_TIMEOUT
        self.hang_after = self.predict_timeout + HANG_MARGIN
        self.tmp = Path(tempfile.mkdtemp(prefix="digits-soak-"))
        self.stack: TrackedStack | None = None
        self.store = None
        self.versions: tuple[int, int] = (1, 2)
        self.corrupt_versions: set[int] = set()
        self.valid: list = []
        self.bad: dict = {}
        self.traffic: Traffic | None = None
        self.t0 = 0.0  # monotonic time the load started
        self.stop = threading.Event()  # everything stops
        self.stop_faults = threading.Event()  # no new fault
        self.faults: list[dict] = []
        self.events: list[dict] = []  # unplanned deaths and the like
        self.expect_down: set[str] = set()
        self.rss: dict[int, dict] = {}
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

    @property
    def records(self) -> list:
        """Every request recorded so far (tools.soak_traffic.Rec), in the order answered."""
        return self.traffic.records if self.traffic else []

    # -- the stack's state ------------------------------------------------------------
    def wait_for(self, check, timeout: float, interval: float = 0.25) -> bool:
        """Whether ``check`` came true within ``timeout`` (False once the soak stops)."""
        return bool(wait_for(check, timeout, interval, stop=self.stop, errors=(Exception,)))

    def heartbeats(self) -> list[dict]:
        if self._redis is None:
            self._redis = faults.redis_client(self.stack.redis_url)
        return faults.heartbeats(self._redis)

    def serving(self, since_wall: float | None = None) -> dict[str, dict]:
        """worker index -> heartbeat, for workers with a model loaded (started after since)."""
        return faults.serving(self.heartbeats(), since_wall)

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

    def next_worker(self) -> int:
        """The worker the next worker fault hits, in turn."""
        indices = sorted(self.stack.workers) or list(range(1, self.args.workers + 1))
        index = indices[self._cursor % len(indices)]
        self._cursor += 1
        return index

    def names(self) -> list[str]:
        return ["api", *(f"worker{i}" for i in range(1, self.args.workers + 1))]

    # -- setup ----------------------------------------------------------------------
    def setup(self) -> None:
        args = self.args
        t = time.perf_counter()
        self.valid = drawing_bodies(args.data, args.bodies, args.seed)
        self.bad = bad_inputs(self.settings.MAX_CONTENT_LENGTH)
        log(
            f"{len(self.valid)} canvas drawings and {len(self.bad)} kinds of bad input "
            f"in {time.perf_counter() - t:.1f} s"
        )
        self.store, v1, v2 = seed_store(self.tmp / "models")
        self.versions = (v1, v2)
        self.stack = TrackedStack(
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
        t = time.perf_counter()
        n = max(16, 2 * self.args.clients)
        bodies = [self.valid[i % len(self.valid)][0] for i in range(n)]
        statuses = [status for status, _ in post_many(self.stack.url, bodies, 4, timeout=60)]
        if not statuses.count(200):
            raise RuntimeError(
                f"no 200 while warming up: {Counter(statuses)}\n{self.stack.tail('api')}"
            )
        log(f"warmed up: {Counter(statuses)} in {time.perf_counter() - t:.1f} s")

    # -- deaths -----------------------------------------------------------------------
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
        """RSS of every process of the stack, and deaths nobody planned."""
        while not self.stop.is_set():
            t = self.now()
            procs = self.stack.snapshot()
            groups = by_group(scan())
            for name, proc in procs.items():
                if proc.poll() is not None:
                    if self.stop.is_set():
                        break  # the shutdown, not a death
                    if name not in self.expect_down:
                        self.record_death(name, proc)
                    continue
                members = groups.get(proc.pid, [])
                for member in members:
                    if name == "api":
                        role = "api-master" if member.pid == proc.pid else "api-worker"
                    else:
                        role = name if member.pid == proc.pid else f"{name}-child"
                    info = self.rss.setdefault(member.pid, {
                        "role": role, "name": member.name, "first_seen_s": t, "samples": []})
                    info["samples"].append((round(t, 2), round(member.rss_mb, 1)))
                if name == "api" and not self.stop.is_set():
                    self._watch_api_children(proc.pid, {m.pid for m in members}, t)
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
            self.traffic = Traffic(self.stack.url, self.valid, self.bad, args.clients, self.t0,
                                   args.seed, args.think)
            self.traffic.clients.start()
            self.fault_thread = threading.Thread(target=run_faults, args=(self,), name="faults",
                                                 daemon=True)
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
            self.stop_faults.set()
            self.traffic.clients.stop(CLIENT_TIMEOUT + 5)
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
        doc, summary = analyse(self, load_s, final, load_before, started_wall, interrupted)
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
        log(report(doc))
        log(f"\nwrote {out / 'soak.json'}; the stack's logs are in {logs}")
        print(json.dumps(summary), flush=True)
        if interrupted:
            return 130
        return 1 if summary["unexpected"] else 0

    def progress(self) -> None:
        recs = list(self.records)
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
                log="\n".join(self.stack.tail(n, 30) for n in ["redis", *self.names()]),
            )
        return final

    def cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        with sigint_ignored():
            self.stop.set()
            self.stop_faults.set()
            if self.traffic is not None:
                self.traffic.clients.stopped.set()
            if self.stack is not None:
                self.strays = self.stack.close()
            if self.traffic is not None:
                self.traffic.clients.stop(CLIENT_TIMEOUT + 5)
            for thread in (self.fault_thread, self.sampler):
                if thread is not None:
                    thread.join(CLIENT_TIMEOUT + 5)
            if self._redis is not None:
                with contextlib.suppress(Exception):
                    self._redis.close()
            if self.stack is not None:  # a restart racing the shutdown: refused, but check
                self.strays += [s for s in self.stack.close() if s not in self.strays]

    # -- analysis ---------------------------------------------------------------------


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
        default=stack_settings({}).WORKERS,
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

    interrupt_on_sigterm()
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
