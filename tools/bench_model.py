"""The raw batched forward pass of the current model, as a worker runs it (the traced
graph, 2 TensorFlow threads): images/s at each batch size, median of repeats.

    python -m tools.bench_model OUT.json [--seconds 1] [--batches 1,64,256]

``tools.bench`` runs this in a subprocess (TensorFlow stays out of the benchmark's own
process); MODEL_DIR names the store.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

BATCHES = (1, 64, 256)
log = partial(print, flush=True)


def bench_model(args, ctx: dict) -> dict:
    """Step 1 of tools.bench: the probe in a subprocess, its result logged and returned."""
    log("model: raw batched forward pass (subprocess, TF_NUM_INTRAOP_THREADS=2)")
    env = dict(
        os.environ,
        TF_NUM_INTRAOP_THREADS="2",
        TF_NUM_INTEROP_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        MODEL_DIR=str(ctx["model_dir"]),
    )
    seconds = max(0.5, min(1.0, args.duration / 5))
    out = ctx["log_dir"] / "model-probe.json"
    cmd = [sys.executable, "-m", "tools.bench_model", str(out), "--seconds", str(seconds),
           "--batches", ",".join(map(str, BATCHES))]
    reaper = ctx["reaper"]
    proc = reaper.spawn(cmd, ctx["log_dir"] / "model-probe.log", env)
    try:
        proc.wait(600)
    except subprocess.TimeoutExpired:
        raise RuntimeError("the model probe hung") from None
    finally:
        reaper.end([proc])
    if proc.returncode != 0 or not out.exists():
        tail = (ctx["log_dir"] / "model-probe.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"model probe failed ({proc.returncode}):\n{tail}")
    result = json.loads(out.read_text())
    for b, r in result["batches"].items():
        log(f"  batch {b:>4s}: {r['images_per_s']:9.0f} images/s (median of {r['repeats']})")
    return result


def probe(out: str, seconds: float, batches: list[int], repeats: int = 5) -> dict:
    """Load the current model as a worker does and time forward() at each batch size."""
    import numpy as np

    from models.store import open_store
    from worker.predictor import configure_tensorflow, load_version

    configure_tensorflow()
    store = open_store()
    loaded = load_version(store, store.current())
    rng = np.random.default_rng(0)
    result = {"model_version": loaded.version, "tf_intra_op_threads": 2, "batches": {}}
    for b in batches:
        x = rng.integers(0, 256, (b, 28, 28, 1)).astype(np.float32)
        for _ in range(3):
            np.asarray(loaded.forward(x))  # trace and warm
        rates = []
        for _ in range(repeats):
            n, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                np.asarray(loaded.forward(x))
                n += b
            rates.append(n / (time.perf_counter() - started))
        result["batches"][str(b)] = {
            "images_per_s": round(statistics.median(rates), 1),
            "repeats": repeats,
            "all": [round(r, 1) for r in rates],
        }
    Path(out).write_text(json.dumps(result))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench_model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="where to write the result (JSON)")
    p.add_argument("--seconds", type=float, default=1.0, help="per repeat (default 1)")
    p.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma list")
    args = p.parse_args(argv)
    probe(args.out, args.seconds, [int(b) for b in args.batches.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
