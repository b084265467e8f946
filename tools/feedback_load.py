"""Concurrent ``POST /feedback`` against a real stack, with a gunicorn process killed
mid-load, then an audit of the database (docs/feedback.md, "Durability under load").

    python -m tools.feedback_load --db sqlite --n 10000 --clients 8
    python -m tools.feedback_load --db postgresql --n 10000 --clients 8

A private stack (Redis, gunicorn; no model worker: feedback needs none) is started on
the chosen database: a fresh SQLite file, or a private PostgreSQL cluster on a free
port. ``clients`` threads each send their share over a keep-alive connection; each
request carries its own request_id, and one that gets no answer (its process was
killed) is sent again with the same request_id, as the page does. When a third of
the requests are done, one gunicorn worker process is sent SIGKILL, and at two thirds
the other one (the master starts new ones).

The audit reads every row back and fails unless: each request_id is exactly one
row; each 201/200 names the row of its request_id; nothing else was written; every
row is whole (its label, original image bytes and 28x28 pixels are the ones sent).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from digits import feedback_db
from digits.stack import Stack

ATTEMPTS = 5


@dataclass
class Report:
    db: str
    requests: int
    clients: int
    seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    resent: int = 0
    killed: list = field(default_factory=list)
    rows: int = 0
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.rows == self.requests

    def summary(self) -> str:
        rate = self.requests / self.seconds if self.seconds else 0.0
        verdict = "OK" if self.ok else "PROBLEMS: " + "; ".join(self.problems[:5])
        return (f"{self.db}: {self.requests} POST /feedback from {self.clients} clients in "
                f"{self.seconds:.1f} s ({rate:.0f}/s); answers {dict(self.statuses)}; "
                f"{self.resent} resent after no answer; killed {self.killed}; "
                f"{self.rows} rows; {verdict}")


def payloads(n_drawings: int = 20) -> list[tuple[str, int, bytes, np.ndarray]]:
    """A few distinct canvas drawings: (data URL, label, PNG bytes, expected pixels)."""
    from api.preprocess import load_image, to_mnist
    from tools.feedback_population import population

    out = []
    for d in population(n_drawings, seed=7):
        url = "data:image/png;base64," + base64.b64encode(d.png).decode()
        out.append((url, d.label, d.png, to_mnist(load_image(d.png))))
    return out


def gunicorn_workers(master: int) -> list[int]:
    try:
        text = Path(f"/proc/{master}/task/{master}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _client(base: str, jobs: list, drawings, results: dict, report: Report, lock) -> None:
    parts = urlsplit(base)
    conn = None
    for i in jobs:
        url, label, _, _ = drawings[i % len(drawings)]
        body = json.dumps({"image": url, "label": label, "predicted": (label + 1) % 10,
                           "model_version": 1, "request_id": f"load-{i}"})
        for attempt in range(ATTEMPTS):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                conn.request("POST", "/feedback", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = json.loads(response.read() or b"{}")
                status = response.status
            except (OSError, http.client.HTTPException, ValueError):
                if conn is not None:
                    conn.close()
                conn = None
                with lock:
                    report.resent += 1
                time.sleep(0.05 * (attempt + 1))
                continue
            if status in (200, 201):
                results[i] = (status, answer.get("id"))
                break
            if status in (429, 503):
                time.sleep(0.2)
                continue
            results[i] = (status, None)
            break
        else:
            results[i] = (0, None)
    if conn is not None:
        conn.close()


def audit(url: str, n: int, drawings, results: dict, report: Report) -> None:
    engine = feedback_db.make_engine(url)
    fb = feedback_db.feedback
    with engine.connect() as conn:
        rows = conn.execute(feedback_db.sa.select(fb.c.id, fb.c.request_id, fb.c.label,
                                                  fb.c.image, fb.c.pixels)).all()
    engine.dispose()
    report.rows = len(rows)
    by_request = Counter(r.request_id for r in rows)
    twice = [k for k, c in by_request.items() if c > 1]
    if twice:
        report.problems.append(f"{len(twice)} request_ids have several rows, e.g. {twice[0]}")
    expected = {f"load-{i}" for i in range(n)}
    if set(by_request) - expected:
        report.problems.append(f"{len(set(by_request) - expected)} rows nobody sent")
    missing = expected - set(by_request)
    if missing:
        report.problems.append(f"{len(missing)} requests have no row, e.g. {min(missing)}")
    row_of = {r.request_id: r for r in rows}
    for i, (status, answered_id) in results.items():
        row = row_of.get(f"load-{i}")
        if status not in (200, 201):
            report.problems.append(f"load-{i} ended with HTTP {status}")
            continue
        if row is None or row.id != answered_id:
            report.problems.append(f"load-{i}: answered id {answered_id}, row "
                                   f"{row.id if row else None}")
    for row in rows:
        i = int(row.request_id.split("-")[1])
        _, label, png, pixels = drawings[i % len(drawings)]
        if (row.label != label or bytes(row.image) != png
                or bytes(row.pixels) != pixels.tobytes()):
            report.problems.append(f"row {row.id} ({row.request_id}) is not what was sent")
    report.statuses = Counter(s for s, _ in results.values())


def run(db: str, n: int, clients: int, kill: bool = True, workers: int = 2,
        db_url: str | None = None, log_dir: Path | None = None) -> Report:
    """One load run on a fresh database; returns the audited report."""
    from tools.pgcluster import PgCluster

    folder = Path(tempfile.mkdtemp(prefix="digits-feedback-load-"))
    cluster = None
    if db_url is None:
        if db == "sqlite":
            db_url = f"sqlite:///{folder / 'feedback.db'}"
        else:
            cluster = PgCluster().start()
            db_url = cluster.url
    models = folder / "models"
    from models.store import ModelStore, shipped_store

    ModelStore(models).seed_from(shipped_store())
    stack = Stack(workers=0, model_dir=models, log_dir=log_dir or folder / "logs", env={
        "DATABASE_URL": db_url, "FEEDBACK_RATE_LIMIT": "", "RATE_LIMIT": "",
        "WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": "16"})
    report = Report(db, n, clients)
    drawings = payloads()
    try:
        stack.start(wait=0)
        _wait_up(stack)
        results: dict = {}
        lock = threading.Lock()
        jobs = [list(range(c, n, clients)) for c in range(clients)]
        threads = [threading.Thread(target=_client, args=(stack.url, j, drawings, results,
                                                          report, lock)) for j in jobs]
        started = time.perf_counter()
        for t in threads:
            t.start()
        # Each of the first processes dies in turn (a third, then two thirds in): the
        # clients' keep-alive connections may all sit on one of them.
        for k, victim in enumerate(gunicorn_workers(stack.api.pid)[:2] if kill else []):
            while len(results) < n * (k + 1) // 3 and any(t.is_alive() for t in threads):
                time.sleep(0.01)
            try:
                os.kill(victim, signal.SIGKILL)
                report.killed.append(victim)
            except ProcessLookupError:
                pass
        for t in threads:
            t.join()
        report.seconds = time.perf_counter() - started
        audit(db_url, n, drawings, results, report)
    finally:
        stack.stop()
        if cluster:
            cluster.remove()
    return report


def _wait_up(stack: Stack, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(stack.url + "/health", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the API did not answer:\n{stack.tail('api')}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.feedback_load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--no-kill", action="store_true")
    p.add_argument("--out", default="artifacts/feedback_load.json")
    args = p.parse_args(argv)
    dbs = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    reports = []
    for db in dbs:
        load_before = os.getloadavg()[0]
        report = run(db, args.n, args.clients, kill=not args.no_kill)
        print(report.summary() + f" (load average {load_before:.1f} before)", flush=True)
        reports.append(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([{**r.__dict__, "statuses": dict(r.statuses), "ok": r.ok,
                                "problems": r.problems[:50]} for r in reports], indent=1) + "\n")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
