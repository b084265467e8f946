"""The ``digits predict`` command on the MNIST test set as canvas PNGs: how long it
takes and how many it gets right.

    python -m tools.eval_cli --data ../shared/data/mnist [--url URL]     (make eval-cli)

The 10,000 test digits (by default) are made into canvas PNGs (tools/canvas_set) in
each ``--style``: ``pixels``, the digit itself scaled onto the canvas, and ``redrawn``,
its centre line re-stroked with a round brush of random width, size and place (the
harder set: the thinning sometimes opens a loop or merges strokes). Each set is written
once as NNNN_<label>.png files into var/canvas-<style>-<n> and reused. Then the real
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
from functools import partial
from pathlib import Path

from digits.settings import ROOT
from tools.canvas_set import STYLES
from tools.procs import interrupt_on_sigterm, measured_stack

LABEL = re.compile(r"_(\d)\.png$")


def drawings(data: str, n: int, seed: int, style: str) -> Path:
    from tools.canvas_set import load_or_make

    cache = ROOT / "var" / f"canvas-{style}-{n}"
    started = time.perf_counter()
    load_or_make(data, n, seed, cache_dir=cache, style=style)  # reused when it matches
    print(f"{n} canvas PNGs ({style}) in {cache} ({time.perf_counter() - started:.1f} s)",
          file=sys.stderr, flush=True)
    return cache


def label_folder(folder: Path, url: str, work: Path, extra: list[str]) -> dict:
    """``digits predict FOLDER`` timed from start to exit, and its rows scored."""
    out = work / f"{folder.name}.csv"
    cmd = [*command(), "predict", str(folder), "--url", url, "--out", str(out), *extra]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    started = time.perf_counter()
    run = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    print(run.stderr.strip(), file=sys.stderr, flush=True)
    scored = score(out)
    return {"seconds": round(seconds, 2), "exit_code": run.returncode, **scored,
            "files_per_s": round(scored["rows"] / seconds, 1), "command": cmd[1:]}


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
    p.add_argument("--style", action="append", choices=STYLES,
                   help="pixels and/or redrawn (repeatable; default both)")
    p.add_argument("--out", default="artifacts/eval_cli.json")
    args = p.parse_args(argv)
    styles = args.style or list(STYLES)
    interrupt_on_sigterm()
    folders = {style: drawings(args.data, args.n, args.seed, style) for style in styles}
    work = Path(tempfile.mkdtemp(prefix="digits-eval-cli-"))
    result = {"url": args.url or "private stack", "n": args.n, "seed": args.seed,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "styles": {}}
    say = partial(print, file=sys.stderr, flush=True)
    try:
        with measured_stack(args.url, args.workers, {"RATE_LIMIT": ""}, work / "logs",
                            say=say) as (url, _):
            for style, folder in folders.items():
                result["styles"][style] = label_folder(folder, url, work, extra)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    for style, r in result["styles"].items():
        print(f"digits predict ({style}): {r['rows']} files in {r['seconds']} s "
              f"({r['files_per_s']} files/s), {r['accuracy']:.2%} right, "
              f"{r['failed']} failed (exit {r['exit_code']})")
    print(f"wrote {path}")
    print(json.dumps({style: {k: r[k] for k in ("seconds", "accuracy", "failed", "exit_code")}
                      for style, r in result["styles"].items()}))
    return 0 if all(r["exit_code"] == 0 for r in result["styles"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
