"""Canvas-style accuracy through the real HTTP /predict (the project's headline accuracy).

    python -m tools.eval_canvas --data ../shared/data/mnist [--url URL] [--n 1000]

MNIST test digits are redrawn as browser-canvas PNGs (tools/canvas_set.py) and
POSTed to /predict exactly as the page sends them, so preprocessing, transport and
the model are measured together. Without --url a private stack is started (and
stopped). Prints accuracy, the most frequent confusions and the latency; writes
artifacts/canvas_eval.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from digits.settings import ROOT, is_set
from tools.load import png_body
from tools.procs import interrupt_on_sigterm, measured_stack, stack_settings

RETRY_STATUSES = (429, 503)


def post(url: str, png: bytes, timeout: float = 30, attempts: int = 5) -> dict:
    """One drawing through /predict: status, answer, client-side milliseconds."""
    body = png_body(png)
    for attempt in range(attempts):
        req = urllib.request.Request(
            url + "/predict",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw, status = r.read(), r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        except (urllib.error.URLError, OSError) as e:
            raw, status = str(e).encode(), 0
        ms = (time.perf_counter() - started) * 1000
        if status in RETRY_STATUSES and attempt + 1 < attempts:
            time.sleep(0.2 * (attempt + 1))  # rate limited or no worker yet: try again
            continue
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"raw": raw[:200].decode(errors="replace")}
        return {"status": status, "answer": answer, "ms": ms}
    raise AssertionError("unreachable")


def evaluate(url: str, drawings: list[tuple[bytes, int]], threads: int = 8) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda d: post(url, d[0]), drawings))
    seconds = time.perf_counter() - started

    statuses = Counter(r["status"] for r in results)
    answered = [
        (r, label)
        for r, (_, label) in zip(results, drawings, strict=True)
        if r["status"] == 200 and isinstance(r["answer"].get("digit"), int)
    ]
    correct = sum(1 for r, label in answered if r["answer"]["digit"] == label)
    confusions = Counter(
        (label, r["answer"]["digit"]) for r, label in answered if r["answer"]["digit"] != label
    )
    per_digit = {}
    for d in range(10):
        mine = [r["answer"]["digit"] == label for r, label in answered if label == d]
        per_digit[str(d)] = round(sum(mine) / len(mine), 4) if mine else None
    client_ms = sorted(r["ms"] for r, _ in answered)
    server_ms = sorted(
        r["answer"]["latency_ms"]
        for r, _ in answered
        if isinstance(r["answer"].get("latency_ms"), int | float)
    )
    errors = Counter(
        str((r["answer"].get("error") or {}).get("code", r["status"]))
        for r in results
        if r["status"] != 200
    )

    def pct(values, q):
        if not values:
            return None
        return round(values[min(len(values) - 1, int(q / 100 * len(values)))], 2)

    return {
        "n": len(drawings),
        "answered": len(answered),
        "correct": correct,
        # Unanswered drawings count as wrong: this is the accuracy a user would see.
        "accuracy": round(correct / len(drawings), 4) if drawings else None,
        "accuracy_of_answered": round(correct / len(answered), 4) if answered else None,
        "per_digit_accuracy": per_digit,
        "top_confusions": [
            {"label": t, "predicted": p, "count": c} for (t, p), c in confusions.most_common(10)
        ],
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "error_codes": dict(errors),
        "model_versions": sorted({r["answer"].get("model_version") for r, _ in answered}, key=str),
        "latency_ms": {
            "p50": pct(client_ms, 50),
            "p90": pct(client_ms, 90),
            "p99": pct(client_ms, 99),
            "server_p50": round(statistics.median(server_ms), 2) if server_ms else None,
        },
        "threads": threads,
        "seconds": round(seconds, 2),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tools.eval_canvas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="MNIST folder (IDX .gz files)")
    p.add_argument(
        "--url", help="a running stack, e.g. http://127.0.0.1:8000 (default: start a private one)"
    )
    p.add_argument("--n", type=int, default=1000, help="drawings to send (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="drawing randomness (default 0)")
    p.add_argument("--threads", type=int, default=8, help="concurrent requests (default 8)")
    p.add_argument(
        "--workers",
        type=int,
        default=stack_settings({}).WORKERS,
        help="workers of the private stack (default $WORKERS or 2)",
    )
    p.add_argument("--out", default="artifacts/canvas_eval.json")
    args = p.parse_args(argv)
    if args.n < 1:
        raise SystemExit("--n must be at least 1")

    from tools.canvas_set import make_drawings
    from trainer.data import load

    started = time.perf_counter()
    mnist = load(args.data)
    drawings = make_drawings(mnist.x_test, mnist.y_test, args.n, args.seed)
    print(
        f"{len(drawings)} canvas drawings of MNIST test digits "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )

    interrupt_on_sigterm()
    # A fresh copy of the shipped model unless MODEL_DIR says otherwise: a long-lived
    # var/models may still hold an older default.
    models = stack_settings({}).MODEL_DIR if is_set("MODEL_DIR") else None
    try:
        with measured_stack(args.url, args.workers, {"RATE_LIMIT": ""},
                            model_dir=models) as (url, _):
            result = evaluate(url, drawings, args.threads)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

    result.update(
        url=args.url or "private stack",
        seed=args.seed,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")

    lat = result["latency_ms"]
    print(
        f"canvas accuracy through /predict: {result['accuracy']:.2%} "
        f"({result['correct']}/{result['n']}; {result['answered']} answered; "
        f"statuses {result['statuses']})"
    )
    if result["error_codes"]:
        print(f"errors: {result['error_codes']}")
    print(
        "per digit: "
        + "  ".join(
            f"{d}: {a:.0%}" if a is not None else f"{d}: -"
            for d, a in result["per_digit_accuracy"].items()
        )
    )
    if result["top_confusions"]:
        print(
            "most frequent confusions (drawn -> answered): "
            + ", ".join(
                f"{c['label']}->{c['predicted']} x{c['count']}" for c in result["top_confusions"]
            )
        )
    print(
        f"latency (client, {args.threads} concurrent): p50 {lat['p50']} ms, p90 {lat['p90']} ms, "
        f"p99 {lat['p99']} ms; server p50 {lat['server_p50']} ms; model versions "
        f"{result['model_versions']}"
    )
    print(f"wrote {out}")
    return 0 if result["answered"] else 1


if __name__ == "__main__":
    sys.exit(main())
