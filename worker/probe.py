"""Liveness probe for an orchestrator: ``python -m worker.probe [--max-age S]``.

Exit 0 when this host's worker touched its alive file recently and serves a
model, 1 otherwise. Needs neither Redis nor TensorFlow, so it is cheap.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from digits.settings import load_or_exit
from worker.heartbeat import alive_file


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m worker.probe")
    p.add_argument("--name", default=f"celery@{socket.gethostname()}",
                   help="worker node name (default celery@$HOSTNAME)")
    p.add_argument("--max-age", type=float, default=10.0)
    args = p.parse_args(argv)
    path = alive_file(load_or_exit().WORKER_ALIVE_DIR, args.name)
    try:
        age = time.time() - path.stat().st_mtime
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"not alive: {exc}")
        return 1
    if age > args.max_age:
        print(f"not alive: last beat {age:.1f} s ago")
        return 1
    if not data.get("model_loaded"):
        print("not alive: no model loaded")
        return 1
    print(f"alive: model version {data.get('model_version')}, last beat {age:.1f} s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
