"""Images per second through ``POST /predict/batch`` against ``POST /predict``, in one run.

    python -m tools.bench_batch --data ../shared/data/mnist          (make bench-batch)

One stack (a private digits.stack.Stack with RATE_LIMIT off, or ``--url`` for a running
one). The same canvas drawings of MNIST test digits (tools/canvas_set) go both ways:
one a request to /predict, ``--batch`` a request to /predict/batch. wrk drives each
endpoint at ``-c`` connections (default 8) for ``--duration`` seconds, alternating,
``--rounds`` times; images/s is requests/s for /predict and requests/s x ``--batch``
for /predict/batch, and the ratio is of the two medians. Before the runs, every batch
body is sent once and each item checked (answered, and right or wrong against its
label), so a run cannot count refused images as moved. CPU seconds of the API, the
workers and Redis give CPU ms per image (private stack only).

Prints a table; writes ``--out`` (artifacts/bench_batch.json); the LAST stdout line is
a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from digits.settings import ROOT
from tools.load import drawing_bodies, http, run_wrk, warm_up, write_wrk_inputs, wrk_binary
from tools.procs import cpu_seconds, interrupt_on_sigterm, measured_stack, parse_env


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def batch_bodies(bodies: list[bytes], size: int) -> list[bytes]:
    """The /predict bodies' images, ``size`` to a /predict/batch body, in order (each
    image in exactly one batch body; a short last batch wraps round to the first)."""
    images = [json.loads(b)["image"] for b in bodies]
    n = max(1, -(-len(images) // size))
    return [json.dumps({"images": [images[(i * size + k) % len(images)] for k in range(size)]})
            .encode() for i in range(n)]


def check_batches(url: str, batches: list[bytes], labels: list[int], size: int) -> dict:
    """Each batch body once: every item must be answered; how many are right."""
    answered = right = 0
    for i, body in enumerate(batches):
        status, answer = http("POST", url + "/predict/batch", body, timeout=60)
        if status != 200 or not answer:
            raise RuntimeError(f"batch body {i}: HTTP {status}: {answer}")
        for k, item in enumerate(answer["results"]):
            if isinstance(item.get("digit"), int):
                answered += 1
                right += item["digit"] == labels[(i * size + k) % len(labels)]
    total = len(batches) * size
    return {"images": total, "answered": answered, "right": right,
            "accuracy": round(right / total, 4) if total else None}


def drive(url: str, path: str, folder: Path, n: int, args, pgids) -> dict:
    script = folder.parent / "bodies.lua"
    cpu_before = cpu_seconds(pgids) if pgids else None
    result = run_wrk(f"{folder.name}", url, args.c, args.duration, script, folder, n,
                     args.log_dir, path=path)
    if pgids:
        result["cpu_s"] = round(cpu_seconds(pgids) - cpu_before, 2)
    return result


def measure(url: str, args, pgids, drawings) -> dict:
    bodies = [b for b, _ in drawings]
    labels = [y for _, y in drawings]
    batches = batch_bodies(bodies, args.batch)
    single_dir, batch_dir = args.work / "single" / "bodies", args.work / "batch" / "bodies"
    write_wrk_inputs(bodies, single_dir)
    write_wrk_inputs(batches, batch_dir)
    log(f"warm-up: {warm_up(url, bodies, 200)}")
    check = check_batches(url, batches, labels, args.batch)
    log(f"batch bodies checked: {check}")
    if check["answered"] != check["images"]:
        raise RuntimeError(f"some batch items were not answered: {check}")
    runs = {"predict": [], "batch": []}
    for r in range(args.rounds):
        for name, folder, n, path, per_request in (
                ("predict", single_dir, len(bodies), "/predict", 1),
                ("batch", batch_dir, len(batches), "/predict/batch", args.batch)):
            result = drive(url, path, folder, n, args, pgids)
            ok = result["requests"] - result["error_kinds"].get("status", 0)
            result["images_per_s"] = round(ok * per_request / result["duration_s"], 1)
            if "cpu_s" in result and ok:
                result["cpu_ms_per_image"] = round(result["cpu_s"] * 1000 / (ok * per_request),
                                                   3)
            log(f"round {r + 1} {name:7s}: {result['rps']:8.1f} req/s  "
                f"{result['images_per_s']:8.1f} images/s  p50 {result['p50_ms']} ms  "
                f"p99 {result['p99_ms']} ms  errors {result['errors']}"
                + (f"  cpu {result['cpu_ms_per_image']} ms/image"
                   if "cpu_ms_per_image" in result else ""))
            runs[name].append(result)
    med = {k: statistics.median(r["images_per_s"] for r in v) for k, v in runs.items()}
    return {
        "check": check,
        "runs": runs,
        "images_per_s": med,
        "ratio": round(med["batch"] / med["predict"], 2) if med["predict"] else None,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench_batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="MNIST folder (IDX .gz files)")
    p.add_argument("--url", help="a running stack (default: start a private one)")
    p.add_argument("--workers", type=int, default=2, help="workers of the private stack")
    p.add_argument("--n", type=int, default=256, help="drawings (default 256)")
    p.add_argument("--batch", type=int, default=64, help="images per batch request")
    p.add_argument("-c", type=int, default=8, help="wrk connections (default 8)")
    p.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each endpoint (default 3)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE",
                   help="environment for the private stack (repeatable)")
    p.add_argument("--out", default="artifacts/bench_batch.json")
    args = p.parse_args(argv)
    if not wrk_binary():
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    if min(args.n, args.batch, args.c, args.duration, args.rounds) < 1:
        raise SystemExit("--n, --batch, -c, --duration and --rounds must be at least 1")
    interrupt_on_sigterm()
    args.work = Path(tempfile.mkdtemp(prefix="digits-bench-batch-"))
    args.log_dir = args.work

    started = time.perf_counter()
    drawings = drawing_bodies(args.data, args.n)
    log(f"{len(drawings)} canvas drawings in {time.perf_counter() - started:.1f} s")
    env = {"RATE_LIMIT": "", "BATCH_MAX_IMAGES": str(max(args.batch, 64)),
           **parse_env(args.env)}
    try:
        with measured_stack(args.url, args.workers, env, args.work / "stack", say=log) as (
                url, stack):
            pgids = [proc.pid for _, proc in stack.processes()] if stack else None
            result = measure(url, args, pgids, drawings)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    result.update(url=args.url or "private stack", workers=None if args.url else args.workers,
                  env=None if args.url else env, batch=args.batch, concurrency=args.c,
                  duration_s=args.duration, rounds=args.rounds, n_drawings=len(drawings),
                  created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    out = Path(args.out)
    out = out if out.is_absolute() else ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    med = result["images_per_s"]
    print(f"c={args.c}: /predict {med['predict']:.1f} images/s, /predict/batch (x{args.batch}) "
          f"{med['batch']:.1f} images/s: {result['ratio']}x (median of {args.rounds} runs "
          f"each; batch accuracy {result['check']['accuracy']}); wrote {out}")
    print(json.dumps({"predict_images_per_s": med["predict"], "batch_images_per_s": med["batch"],
                      "ratio": result["ratio"], "concurrency": args.c, "batch": args.batch}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
