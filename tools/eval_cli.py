"""The ``digits predict`` command on the MNIST test set redrawn as canvas PNGs: how long
it takes and how many it gets right.

    python -m tools.eval_cli --data ../shared/data/mnist [--url URL]     (make eval-cli)

The drawings (tools/canvas_set: the 10,000 test digits by default) are written once as
NNNN_<label>.png files into ``--cache`` (var/canvas-set-<n>) and reused. Then the real
command runs against the stack (``--url``, e.g. ``make up``; else a private one is
started and stopped): ``digits predict FOLDER --url URL --out FILE.csv``, timed from
start to exit. Each row's digit is scored against the label in its file name. Extra
arguments after ``--`` go to ``digits predict`` (``-- --batch 32 --concurrency 8``).
Writes artifacts/eval_cli.json; the last stdout line is a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from digits.settings import ROOT
from tools.procs import interrupt_on_sigterm

LABEL = re.compile(r"_(\d)\.png$")


def drawings(data: str, n: int, seed: int, cache: Path) -> Path:
    from tools.canvas_set import load_or_make

    started = time.perf_counter()
    load_or_make(data, n, seed, cache_dir=cache)  # reuses the folder when it matches
    print(f"{n} canvas drawings in {cache} ({time.perf_counter() - started:.1f} s)",
          file=sys.stderr, flush=True)
    return cache


def command() -> list[str]:
    script = Path(sys.executable).parent / "digits"
    return [str(script)] if script.exists() else [sys.executable, "-m", "digits.cli"]


def score(out: Path) -> dict:
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    right = failed = 0
    errors: dict[str, int] = {}
    for row in rows:
        want = LABEL.search(row["path"])
        if row["error"]:
            failed += 1
            errors[row["error"]] = errors.get(row["error"], 0) + 1
        elif want and row["digit"] == want.group(1):
            right += 1
    return {"rows": len(rows), "right": right, "failed": failed, "errors": errors,
            "accuracy": round(right / len(rows), 4) if rows else None}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python -m tools.eval_cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="MNIST folder (IDX .gz files)")
    p.add_argument("--url", help="a running stack (default: start a private one)")
    p.add_argument("--workers", type=int, default=2, help="workers of the private stack")
    p.add_argument("--n", type=int, default=10_000, help="drawings (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", help="folder of the drawings (default var/canvas-set-<n>)")
    p.add_argument("--out", default="artifacts/eval_cli.json")
    args = p.parse_args(argv)
    interrupt_on_sigterm()
    folder = drawings(args.data, args.n, args.seed,
                      Path(args.cache) if args.cache else ROOT / "var" / f"canvas-set-{args.n}")
    work = Path(tempfile.mkdtemp(prefix="digits-eval-cli-"))
    stack = None
    try:
        url = (args.url or "").rstrip("/")
        if not url:
            from digits.stack import Stack

            stack = Stack(workers=args.workers, env={"RATE_LIMIT": ""}, log_dir=work / "logs",
                          model_dir=tempfile.mkdtemp(prefix="digits-eval-cli-models-"))
            print(f"starting a private stack ({args.workers} workers)...", file=sys.stderr,
                  flush=True)
            stack.start(wait=300)
            url = stack.url
        out = work / "labels.csv"
        cmd = [*command(), "predict", str(folder), "--url", url, "--out", str(out), *extra]
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
        started = time.perf_counter()
        run = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
        print(run.stderr.strip(), file=sys.stderr, flush=True)
        result = {"seconds": round(seconds, 2), "exit_code": run.returncode, **score(out),
                  "files_per_s": round(args.n / seconds, 1), "command": cmd[1:],
                  "url": args.url or "private stack", "n": args.n, "seed": args.seed,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if stack:
            stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    path = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"digits predict: {result['rows']} files in {result['seconds']} s "
          f"({result['files_per_s']} files/s), {result['accuracy']:.2%} right, "
          f"{result['failed']} failed (exit {result['exit_code']}); wrote {path}")
    print(json.dumps({k: result[k] for k in ("seconds", "accuracy", "failed", "exit_code")}))
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
