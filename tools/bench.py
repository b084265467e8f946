"""Throughput and latency of /predict, against the original design, in one run.

    python -m tools.bench --data ../shared/data/mnist          (make bench)

On the same machine, one system after another (never two at once):

1. model     the raw batched forward pass of the current model (the worker's traced
             graph, 2 TF threads) in a subprocess: images/s at batch 1, 64, 256, median
             of repeats (tools/bench_model.py).
2. baseline  tools/baseline_app.py under ``gunicorn -w 4`` (sync): what the original
             Number-Visualizer did, one Keras ``model.predict`` per request per process.
3. noop      tools/noop_celery.py: Flask (gthread, our API's workers and threads)
             sending a no-op Celery task over Redis and waiting: the round-trip ceiling.
4. ours      digits.stack.Stack (RATE_LIMIT off), warmed up first.
5. ours_s3   the same stack with MODEL_STORE in a bucket of a real S3 server (SeaweedFS,
             tests/s3server.py): the request path never touches the store, so its
             figures should match ``ours`` within noise.

Each HTTP system (tools/bench_systems.py) is driven by wrk at each concurrency (default
1, 8, 32, 64) with real canvas-drawing PNG bodies (tools/canvas_set), after a
50-drawing accuracy check. Prints a table, ratios, raw model images/s and RSS
(tools/bench_report.py); writes bench.json and bench.png into --out; the LAST stdout
line is a one-line JSON summary.

Try configurations of our stack with ``--env KEY=VALUE`` (COALESCE=0,
GUNICORN_THREADS=16, WEB_CONCURRENCY=1, WORKER_THREADS=4, ...) and a subset with
``--only ours,noop``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from digits.settings import ROOT, is_set
from tools.bench_model import bench_model
from tools.bench_report import HTTP_SYSTEMS, plot, report, summary
from tools.bench_systems import RUNNERS, log
from tools.load import WRK_TIMEOUT, drawing_bodies, write_wrk_inputs, wrk_binary
from tools.procs import Reaper, interrupt_on_sigterm, parse_env, stack_settings

SYSTEMS = ("model", "baseline", "noop", "ours", "ours_s3")
N_BODIES = 200
DEFINITIONS = {
    "rps": "wrk requests completed / duration (non-2xx answers included; see errors)",
    "errors": "wrk connect+read+write+timeout errors plus non-2xx statuses",
    "ratio_vs_baseline": (
        "our req/s at c=32 (our best if c=32 was not run) / "
        "the baseline's best req/s at any level"
    ),
    "noop_ceiling_rps": "the no-op Celery round trip's best req/s at any level",
    "model_images_per_s": "best median images/s of the raw forward pass over batches",
    "rss": "VmRSS per process after the load; *_rss_mb is the largest process",
}


def parse_only(values: list[str] | None) -> list[str]:
    if not values:
        return list(SYSTEMS)
    chosen = {v.strip() for value in values for v in value.split(",") if v.strip()}
    unknown = chosen - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"--only: unknown {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    return [s for s in SYSTEMS if s in chosen]


def parse_concurrency(text: str) -> list[int]:
    try:
        levels = sorted({int(c) for c in text.split(",") if c.strip()})
    except ValueError:
        raise SystemExit(f"--concurrency wants a comma list of integers: {text}") from None
    if not levels or min(levels) < 1:
        raise SystemExit("--concurrency: every level must be at least 1")
    return levels


def arguments(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", help="MNIST folder (IDX .gz files), for the drawings")
    p.add_argument("--workers", type=int, default=stack_settings({}).WORKERS,
                   help="Celery workers of our stack (default $WORKERS or 2)")
    p.add_argument("--duration", type=int, default=10, help="seconds per load level (wrk -d)")
    p.add_argument("--concurrency", default="1,8,32,64", help="comma list of wrk -c levels")
    p.add_argument("--only", action="append",
                   help="subset: ours|ours_s3|baseline|noop|model (repeatable or comma list)")
    p.add_argument("--out", default="artifacts/bench", help="folder for bench.json, bench.png")
    p.add_argument("--env", action="append", metavar="KEY=VALUE",
                   help="environment for our stack (repeatable), e.g. COALESCE=0")
    p.add_argument(
        "--model-dir",
        default=stack_settings({}).MODEL_DIR if is_set("MODEL_DIR") else None,
        help="model store every system loads (default $MODEL_DIR, else a fresh copy of the "
        "shipped default model: a long-lived var/models may hold an older one)",
    )
    p.add_argument("--baseline-workers", type=int, default=4, help="gunicorn -w of the baseline")
    p.add_argument("--noop-workers", type=int, default=0,
                   help="Celery worker processes for the no-op (default: as --workers)")
    args = p.parse_args(argv)
    args.only = parse_only(args.only)
    args.env = parse_env(args.env)
    args.concurrency = parse_concurrency(args.concurrency)
    if args.duration < 1:
        raise SystemExit("--duration: at least 1 second")
    args.needs_http = any(s in args.only for s in HTTP_SYSTEMS)
    if args.needs_http and not args.data:
        raise SystemExit("--data (the MNIST folder) is needed for the request bodies")
    if args.needs_http and not wrk_binary():
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    return args


def run(args, ctx: dict) -> tuple[dict, dict]:
    """Every chosen system, one after another: (results, failures)."""
    if args.needs_http:
        t0 = time.perf_counter()
        drawings = drawing_bodies(args.data, N_BODIES)
        bodies = [body for body, _ in drawings]
        ctx.update(bodies=bodies, labels=[label for _, label in drawings],
                   n_bodies=len(bodies), script=write_wrk_inputs(bodies, ctx["body_dir"]))
        size = statistics.median(len(b) for b in bodies)
        log(
            f"{len(bodies)} canvas-drawing bodies (median {size / 1024:.1f} KiB) in "
            f"{time.perf_counter() - t0:.1f} s"
        )
    # Make sure the store exists (seeded from the shipped model) before anyone loads it.
    from models.store import open_store

    if open_store(ctx["model_dir"]).current() is None:
        raise SystemExit(f"no model in {ctx['model_dir']}")
    runners = {"model": bench_model, **RUNNERS}
    results, failures = {}, {}
    for system in args.only:
        try:
            results[system] = runners[system](args, ctx)
        except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
            failures[system] = f"{type(exc).__name__}: {exc}"
            log(f"{system}: FAILED, going on without it: {exc}")
    return results, failures


def main(argv=None) -> int:
    args = arguments(argv)
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    interrupt_on_sigterm()
    reaper = Reaper()
    atexit.register(reaper.close)
    tmp = Path(tempfile.mkdtemp(prefix="digits-bench-"))
    log_dir = tmp / "logs"
    log_dir.mkdir()
    started = time.time()
    ctx = {
        "concurrency": args.concurrency,
        "duration": args.duration,
        "body_dir": tmp / "bodies",
        "log_dir": log_dir,
        "env": args.env,
        "model_dir": Path(args.model_dir or tmp / "models").resolve(),
        "reaper": reaper,
    }
    load_before = os.getloadavg()
    log(
        f"bench: {', '.join(args.only)}; concurrency {args.concurrency}, {args.duration} s "
        f"each; {os.cpu_count()} CPUs, load average {load_before[0]:.2f}; logs in {log_dir}"
    )
    try:
        results, failures = run(args, ctx)
    except KeyboardInterrupt:
        log("\ninterrupted: stopping everything")
        reaper.close()
        return 130
    finally:
        reaper.close()

    table, ratios = report(results, args.concurrency)
    line = summary(results, args.concurrency)
    load_after = os.getloadavg()
    doc = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after],
        },
        "config": {
            "systems": args.only,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "workers": args.workers,
            "env": args.env,
            "wrk_timeout": WRK_TIMEOUT,
            "bodies": ctx.get("n_bodies"),
            "model_dir": str(ctx["model_dir"]),
        },
        "definitions": DEFINITIONS,
        "results": results,
        "ratios": ratios,
        "failures": failures,
        "summary": line,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(doc, indent=1) + "\n")
    plotted = plot(results, args.concurrency, out / "bench.png")
    shutil.rmtree(ctx["body_dir"], ignore_errors=True)
    log("")
    log(table)
    log("")
    log(
        f"wrote {out / 'bench.json'}"
        + (f" and {out / 'bench.png'}" if plotted else "")
        + f"; logs in {log_dir}"
    )
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
