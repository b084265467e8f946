"""Worker entry: ``python -m worker`` (extra arguments go to ``celery worker``)."""

import sys

from digits.settings import load_or_exit, quiet_tensorflow

quiet_tensorflow()
SETTINGS = load_or_exit()

from worker.app import app  # noqa: E402 - after quiet_tensorflow()

if __name__ == "__main__":
    app.worker_main([
        "worker",
        "--pool=threads",
        f"--concurrency={SETTINGS.WORKER_THREADS}",
        f"--prefetch-multiplier={SETTINGS.WORKER_PREFETCH}",
        f"--loglevel={SETTINGS.LOG_LEVEL}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        *sys.argv[1:],
    ])
