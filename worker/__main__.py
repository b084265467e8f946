"""Worker entry: ``python -m worker`` (extra arguments go to ``celery worker``)."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from worker.app import app  # noqa: E402

if __name__ == "__main__":
    app.worker_main([
        "worker",
        "--pool=threads",
        f"--concurrency={os.environ.get('WORKER_THREADS', 8)}",
        f"--prefetch-multiplier={os.environ.get('WORKER_PREFETCH', 2)}",
        f"--loglevel={os.environ.get('LOG_LEVEL', 'INFO')}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        *sys.argv[1:],
    ])
