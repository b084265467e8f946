"""The ``digits`` command: ``digits --help``.

    digits up [--workers N] [--port P]          serve the whole stack locally (make up)
    digits predict PATH... --url URL --out FILE.csv|FILE.jsonl
    digits health --url URL

``predict`` labels image files (named, folders recursively, globs) through
``POST /predict/batch`` and writes one row per file; it exits 1 when any file failed
and says how many. ``health`` prints ``/ready``. The client commands import only the
standard library (and rich, for the progress bar on a terminal): no Flask, no
TensorFlow, no numpy.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
import time

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


def _up(args) -> int:
    from digits import stack

    return stack.main(args.rest)


# -- predict ------------------------------------------------------------------------------
class _Rows:
    """Rows to a CSV (UTF-8, a header) or JSON Lines file, or to stdout."""

    def __init__(self, out: str, fmt: str | None):
        self.fmt = fmt or ("jsonl" if out.lower().endswith((".jsonl", ".ndjson")) else "csv")
        self.file = (sys.stdout if out == "-" else
                     open(out, "w", newline="", encoding="utf-8"))  # noqa: SIM115
        if self.fmt == "csv":
            from digits.client import COLUMNS

            self.writer = csv.DictWriter(self.file, fieldnames=COLUMNS)
            self.writer.writeheader()

    def write(self, row: dict) -> None:
        if self.fmt == "csv":
            self.writer.writerow({k: "" if v is None else v for k, v in row.items()})
        else:
            self.file.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self.file is sys.stdout:
            self.file.flush()
        else:
            self.file.close()


@contextlib.contextmanager
def _progress(total: int, show: bool):
    """A progress bar on stderr when it is a terminal; otherwise nothing."""
    if not show:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("labelling"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True,
                  console=_stderr_console()) as bar:
        task = bar.add_task("files", total=total)
        yield lambda n: bar.advance(task, n)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _predict(args) -> int:
    from digits.client import Client, find_images, label, make_row

    files, missing = find_images(args.paths)
    for arg in missing:
        print(f"digits: nothing found at {arg}", file=sys.stderr)
    if not files and not missing:
        print("digits: no image files given", file=sys.stderr)
        return EXIT_USAGE
    client = _client(Client, args.url, timeout=args.timeout, retries=args.retries)
    if client is None:
        return EXIT_USAGE
    rows = _Rows(args.out, args.format)
    started, failed, done = time.perf_counter(), 0, 0
    show = sys.stderr.isatty() and not args.quiet
    try:
        for arg in missing:
            rows.write(make_row(arg, error="not_found",
                                error_message="no such file, folder or glob match"))
            failed += 1
        with _progress(len(files), show) as advance:
            for row in label(client, files, batch=args.batch, max_body=args.max_body,
                             concurrency=args.concurrency):
                rows.write(row)
                done += 1
                failed += bool(row["error"])
                advance(1)
    except KeyboardInterrupt:
        print(f"\ndigits: interrupted after {done} of {len(files)} files", file=sys.stderr)
        return 130
    finally:
        rows.close()
    seconds = time.perf_counter() - started
    total = len(files) + len(missing)
    if not args.quiet or failed:
        retried = f"; {client.retried} retries" if client.retried else ""
        rate = f" ({done / seconds:.0f} files/s)" if seconds > 0 and done else ""
        print(f"labelled {done} files in {seconds:.1f} s{rate}{retried}: "
              f"{total - failed} ok, {failed} failed", file=sys.stderr)
    if failed:
        print(f"digits: {failed} of {total} files failed (see the error column)",
              file=sys.stderr)
        return EXIT_FAILED
    return 0


# -- health -------------------------------------------------------------------------------
def _health(args) -> int:
    from digits.client import Client, RequestFailed

    client = _client(Client, args.url, timeout=args.timeout)
    if client is None:
        return EXIT_USAGE
    try:
        response = client.ready()
    except RequestFailed as exc:
        print(f"unreachable: {exc.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    body = response.body if isinstance(response.body, dict) else {}
    if args.json:
        print(json.dumps(response.body, indent=2))
    else:
        print(_describe_ready(response.status, body))
    return 0 if response.status == 200 and body.get("status") == "ready" else EXIT_FAILED


def _describe_ready(status: int, body: dict) -> str:
    versions = ", ".join(str(v) for v in body.get("model_versions") or []) or "none"
    lines = [
        "ready" if status == 200 and body.get("status") == "ready"
        else f"NOT ready (HTTP {status}): {body.get('reason') or body or 'no reason given'}",
        f"  redis:          {body.get('redis', '?')}",
        f"  workers:        {body.get('workers', '?')} live, "
        f"{body.get('workers_serving', '?')} serving",
        f"  model versions: {versions}",
    ]
    return "\n".join(lines)


# -- the command --------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="digits", description="Handwritten-digit recogniser: serve it, or talk to it.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    up = sub.add_parser("up", help="serve the whole stack locally (Redis, workers, API)",
                        add_help=False)
    up.add_argument("rest", nargs=argparse.REMAINDER)
    up.set_defaults(run=_up)

    pr = sub.add_parser(
        "predict", help="label image files through a running API",
        description="Label image files through POST /predict/batch: one row per file "
                    "(path, digit, confidence, model_version, error, error_message, "
                    "request_id). Exits 1 if any file failed.")
    pr.add_argument("paths", nargs="+", metavar="PATH",
                    help="image files, folders (searched recursively) or globs ('*.png')")
    pr.add_argument("--url", default=DEFAULT_URL, help=f"the API (default {DEFAULT_URL})")
    pr.add_argument("--out", default="-",
                    help="FILE.csv or FILE.jsonl (default: CSV on stdout)")
    pr.add_argument("--format", choices=("csv", "jsonl"),
                    help="override the format the --out extension gives")
    pr.add_argument("--batch", type=_positive, default=64,
                    help="images per request (default 64; the server's BATCH_MAX_IMAGES "
                         "caps it)")
    pr.add_argument("--max-body", type=_positive, default=1_500_000,
                    help="bytes per request body (default 1500000: under the server's "
                         "default MAX_CONTENT_LENGTH)")
    pr.add_argument("--concurrency", type=_positive, default=4,
                    help="requests in flight at once (default 4)")
    pr.add_argument("--retries", type=int, default=8,
                    help="retries of a request answered 429 or 503, or refused (default 8)")
    pr.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for one answer (default 60)")
    pr.add_argument("-q", "--quiet", action="store_true",
                    help="no progress bar or summary (failures are still reported)")
    pr.set_defaults(run=_predict)

    he = sub.add_parser("health", help="print the API's /ready",
                        description="Print /ready. Exit 0 when ready, 1 when not, 3 when "
                                    "unreachable.")
    he.add_argument("--url", default=DEFAULT_URL, help=f"the API (default {DEFAULT_URL})")
    he.add_argument("--json", action="store_true", help="print the JSON as it came")
    he.add_argument("--timeout", type=float, default=10.0)
    he.set_defaults(run=_health)
    return p


def _client(cls, url: str, **options):
    try:
        return cls(url, **options)
    except ValueError as exc:
        print(f"digits: {exc}", file=sys.stderr)
        return None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv=None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
