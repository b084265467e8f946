"""The S3 model registry's two targets, measured on this machine.

    python -m tools.registry_bench [--rounds 5] [--workers 2] [--clients 8]

1. cold start: a worker process started from nothing (Python, TensorFlow, the model) to
   its first heartbeat with the model loaded, with the folder store and with the S3 store
   (a real SeaweedFS server, tests/s3server.py, and an empty MODEL_CACHE each time),
   alternating, ``--rounds`` times each. Target: S3 no more than 2 s slower.
2. reload under load: ``--workers`` workers on the S3 store, polling the pointer only
   every 60 s (so the trainer's Redis notice is what moves them), ``--clients`` threads
   posting /predict throughout. Each round publishes a version (a copy of version 1,
   ``tools.faults.publish_copy``), runs ``python -m trainer promote N`` and times from
   the trainer's exit, and from its notice on Redis (heard by a subscriber here), until
   every worker's heartbeat reports N. Heartbeats are written every 0.5 s, so each figure
   is an upper bound. Target: within 2 s of the exit, with zero failed requests.

Prints one line per measurement and a JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from digits.protocol import MODEL_CHANNEL, parse_model_notice
from digits.settings import ROOT, load
from digits.stack import Stack
from models.store import open_store
from tests.conftest import SEVEN, data_url, draw_png, seeded_store
from tests.s3server import S3Server
from tools.faults import heartbeats, publish_copy, redis_client
from tools.load import predict_clients

BODY = {"image": data_url(draw_png(SEVEN))}


def _wait(check, timeout: float, what: str, step: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(step)
    raise TimeoutError(f"not within {timeout} s: {what}")


def _loaded(stack: Stack, name: str, version: int | None = None) -> bool:
    for beat in heartbeats(redis_client(stack.redis_url)):
        if str(beat.get("hostname", "")).startswith(name) and beat.get("model_loaded") \
                and (version is None or beat.get("model_version") == version):
            return True
    return False


def cold_starts(tmp: Path, server: S3Server, rounds: int) -> dict:
    folder = tmp / "folder-store"
    seeded_store(folder)
    url = server.url("cold")
    s3_env = {**server.env(), "MODEL_STORE": url}
    open_store(url, settings=load({"MODEL_CACHE": str(tmp / "seed-cache"), **server.env()}))
    stack = Stack(workers=0, model_dir=folder, log_dir=tmp / "logs-cold",
                  env={"WORKER_DRAIN_SECONDS": "0"})
    seconds = {"folder": [], "s3": []}
    try:
        stack.start_redis()
        for i in range(rounds):
            for kind in ("folder", "s3"):
                index = 100 + 2 * i + (kind == "s3")
                env = {"MODEL_STORE": str(folder)} if kind == "folder" else {
                    **s3_env, "MODEL_CACHE": str(tmp / f"cache-{index}")}
                started = time.monotonic()
                stack.start_worker(index, **env)
                _wait(lambda n=index: _loaded(stack, f"worker{n}@"), 180, f"worker {index}")
                seconds[kind].append(time.monotonic() - started)
                print(f"cold start, {kind:6} store: {seconds[kind][-1]:.2f} s", flush=True)
                stack.stop_worker(index)
    finally:
        stack.stop()
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    return {"seconds": seconds, "median": medians,
            "s3_minus_folder_s": round(medians["s3"] - medians["folder"], 2)}


def _listen(redis_url: str, heard: dict) -> None:
    """When each notice of a new current version arrives (as a worker hears it)."""
    import redis

    pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(MODEL_CHANNEL)
        for message in pubsub.listen():
            notice = parse_model_notice(message["data"])
            if notice:
                heard[notice["version"]] = time.monotonic()
    except redis.RedisError:
        return  # the stack stopped


def reloads(tmp: Path, server: S3Server, rounds: int, workers: int, clients: int) -> dict:
    url = server.url("reload")
    env = {**server.env(), "MODEL_CACHE": str(tmp / "workers-cache"),
           "MODEL_POLL_SECONDS": "60", "WORKER_DRAIN_SECONDS": "0", "RATE_LIMIT": ""}
    stack = Stack(workers=workers, model_dir=url, log_dir=tmp / "logs-reload", env=env)
    store = open_store(url, settings=load({"MODEL_CACHE": str(tmp / "bench-cache"),
                                           **server.env()}))
    trainer_env = {**os.environ, **server.env(), "PYTHONPATH": str(ROOT),
                   "REDIS_URL": stack.redis_url, "MODEL_CACHE": str(tmp / "trainer-cache")}
    after_exit, after_start, after_notice = [], [], []
    heard: dict[int, float] = {}
    load_ = None
    try:
        stack.start(wait=300)
        threading.Thread(target=_listen, args=(stack.redis_url, heard), daemon=True).start()
        load_ = predict_clients(stack.url, BODY, clients).start()
        time.sleep(2)
        for _ in range(rounds):
            number = publish_copy(store, "registry bench", source=1).number
            started = time.monotonic()
            run = subprocess.run([sys.executable, "-m", "trainer", "--store", url, "promote",
                                  str(number)], env=trainer_env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
            exited = time.monotonic()
            if run.returncode:
                raise RuntimeError(f"trainer promote failed: {run.stderr[-2000:]}")
            _wait(lambda n=number: all(
                _loaded(stack, f"worker{i}@", n) for i in range(1, workers + 1)), 60,
                f"every worker on version {number}")
            done = time.monotonic()
            after_exit.append(max(0.0, done - exited))
            after_start.append(done - started)
            after_notice.append(done - heard[number])
            print(f"version {number}: every worker serving it {after_exit[-1]:.2f} s after "
                  f"the trainer exited, {after_notice[-1]:.2f} s after its notice (the "
                  f"command took {exited - started:.2f} s)", flush=True)
            time.sleep(1)
    finally:
        if load_:
            load_.stop()
        stack.stop()
    failed = [a for a in load_.records if a.status != 200]
    return {"after_trainer_exit_s": [round(s, 2) for s in after_exit],
            "max_after_trainer_exit_s": round(max(after_exit), 2),
            "after_notice_s": [round(s, 2) for s in after_notice],
            "max_after_notice_s": round(max(after_notice), 2),
            "after_trainer_start_s": [round(s, 2) for s in after_start],
            "requests_ok": sum(a.status == 200 for a in load_.records),
            "requests_failed": len(failed),
            "failures": [(a.status, str(a.body)[:200]) for a in failed[:5]]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.registry_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--only", choices=("cold", "reload"))
    args = p.parse_args(argv)
    result = {}
    with tempfile.TemporaryDirectory(prefix="digits-registry-bench-") as tmp, \
            S3Server(Path(tmp) / "s3") as server:
        if args.only in (None, "cold"):
            result["cold_start"] = cold_starts(Path(tmp), server, args.rounds)
        if args.only in (None, "reload"):
            result["reload"] = reloads(Path(tmp), server, args.rounds, args.workers,
                                       args.clients)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
