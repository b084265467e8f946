"""Latency and throughput of ``POST /predict/number`` with 4-digit numbers.

    python -m tools.bench_numbers [--data ../shared/data/mnist]     (make bench-numbers)

One stack (a private digits.stack.Stack with RATE_LIMIT off, or ``--url`` for a running
one). The bodies are 4-digit numbers drawn on the page's 840x280 canvas by
tools/numbers_set.py (seed 0; MNIST-style digits too when --data is given). Each body is
sent once first: all must be answered (200), and the exact-match rate is reported. wrk
then drives /predict/number at each concurrency (default 1 and 32) for ``--duration``
seconds: p50/p90/p99 latency, numbers/s, errors (connection errors and non-2xx). With
--data, /predict is driven the same way with one-digit canvas drawings right after, on
the same stack, as the reference for the machine's speed at the time.

Prints a table; writes ``--out`` (artifacts/bench_numbers.json); the LAST stdout line
is a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from digits.settings import ROOT
from tools.load import drawing_bodies, http, png_body, run_wrk, write_wrk_inputs, wrk_binary
from tools.procs import interrupt_on_sigterm, measured_stack, parse_env

TARGETS = {"p50_ms_c1": 15.0, "numbers_per_s_c32": 150.0}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def number_bodies(n: int, data: str | None, seed: int = 0) -> list[tuple[bytes, str]]:
    """(body, label) for ``n`` 4-digit numbers."""
    from tools.numbers_set import make_numbers, mnist_by_digit

    by_digit = mnist_by_digit(data) if data else None
    return [(png_body(num.png), num.label)
            for num in make_numbers(n, seed, lengths=(4,), by_digit=by_digit)]


def check(url: str, bodies: list[tuple[bytes, str]]) -> dict:
    """Each body once, one at a time: every one answered; how many read exactly."""
    answered = right = 0
    for i, (body, label) in enumerate(bodies):
        status, answer = http("POST", url + "/predict/number", body, timeout=30)
        if status != 200 or not answer:
            raise RuntimeError(f"body {i}: HTTP {status}: {answer}")
        answered += 1
        right += answer["number"] == label
    return {"numbers": len(bodies), "answered": answered, "right": right,
            "exact_match": round(right / len(bodies), 4) if bodies else None}


def candidates_per_number(bodies: list[tuple[bytes, str]]) -> float:
    """The mean number of crops one request sends to the workers (planned here)."""
    import base64

    from api.preprocess import load_image
    from api.segment import plan_number

    counts = []
    for body, _ in bodies:
        png = base64.b64decode(json.loads(body)["image"].split(",", 1)[1])
        counts.append(len(plan_number(load_image(png)).candidates))
    return round(sum(counts) / len(counts), 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench_numbers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="MNIST folder: MNIST-style digits among the numbers")
    p.add_argument("--url", help="a running stack (default: start a private one)")
    p.add_argument("--workers", type=int, default=2, help="workers of the private stack")
    p.add_argument("--n", type=int, default=64, help="different bodies (default 64)")
    p.add_argument("--concurrency", default="1,32", help="comma list of wrk -c levels")
    p.add_argument("--duration", type=int, default=10, help="seconds per level (default 10)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE",
                   help="environment for the private stack (repeatable)")
    p.add_argument("--out", default="artifacts/bench_numbers.json")
    args = p.parse_args(argv)
    if not wrk_binary():
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if min([args.n, args.duration, *levels]) < 1:
        raise SystemExit("--n, --duration and each concurrency must be at least 1")
    interrupt_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="digits-bench-numbers-"))

    bodies = number_bodies(args.n, args.data)
    log(f"{len(bodies)} 4-digit numbers; {candidates_per_number(bodies)} candidate digits "
        f"each on average")
    script = write_wrk_inputs([b for b, _ in bodies], work / "bodies")
    env = {"RATE_LIMIT": "", **parse_env(args.env)}
    try:
        with measured_stack(args.url, args.workers, env, work / "stack", say=log) as (url, _):
            checked = check(url, bodies)
            log(f"checked: {checked}")
            runs, reference = [], []
            for c in levels:
                result = run_wrk("numbers", url, c, args.duration, script, work / "bodies",
                                 len(bodies), work, path="/predict/number")
                runs.append(result)
                log(f"/predict/number c={c:3d}: {result['rps']:8.1f} numbers/s  p50 "
                    f"{result['p50_ms']} ms  p90 {result['p90_ms']} ms  p99 {result['p99_ms']} ms"
                    f"  errors {result['errors']}")
            if args.data:
                singles = [b for b, _ in drawing_bodies(args.data, args.n)]
                single_script = write_wrk_inputs(singles, work / "singles")
                for c in levels:
                    result = run_wrk("predict", url, c, args.duration, single_script,
                                     work / "singles", len(singles), work, path="/predict")
                    reference.append(result)
                    log(f"/predict        c={c:3d}: {result['rps']:8.1f} req/s      p50 "
                        f"{result['p50_ms']} ms  p90 {result['p90_ms']} ms  p99 "
                        f"{result['p99_ms']} ms  errors {result['errors']}")
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    by_c = {r["concurrency"]: r for r in runs}
    summary = {
        "p50_ms_c1": by_c[1]["p50_ms"] if 1 in by_c else None,
        "numbers_per_s_c32": by_c[32]["rps"] if 32 in by_c else None,
        "errors": sum(r["errors"] for r in runs),
        "exact_match": checked["exact_match"],
    }
    ref = {r["concurrency"]: r for r in reference}
    summary.update(predict_p50_ms_c1=ref[1]["p50_ms"] if 1 in ref else None,
                   predict_rps_c32=ref[32]["rps"] if 32 in ref else None)
    result = {"summary": summary, "targets": TARGETS, "check": checked, "runs": runs,
              "reference_predict": reference,
              "url": args.url or "private stack", "workers": None if args.url else args.workers,
              "env": None if args.url else env, "n_bodies": len(bodies),
              "duration_s": args.duration,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out = out if out.is_absolute() else ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"/predict/number, 4-digit numbers: p50 at c=1 {summary['p50_ms_c1']} ms "
          f"(target <= {TARGETS['p50_ms_c1']}), {summary['numbers_per_s_c32']} numbers/s at "
          f"c=32 (target >= {TARGETS['numbers_per_s_c32']}), {summary['errors']} errors; "
          f"wrote {out}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
