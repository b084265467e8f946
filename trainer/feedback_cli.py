"""``python -m trainer finetune | feedback stats | feedback export | watch``.

* ``finetune``: train the current version further on the stored feedback (see
  trainer/finetune.py), publish it, and make it current if the gate passes; exit 3
  when the gate refuses (the version is kept, unpromoted), as ``train`` does.
* ``feedback stats``: what is stored: rows, labels, clients, corrections, rounds.
* ``feedback export --format csv|npz --out PATH``: the rows, with their 28x28 inputs.
* ``watch``: fine-tune (in a child process) each time FINETUNE_AFTER new labels have
  arrived since the last round, checking every WATCH_POLL_SECONDS; one log line a round.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from digits import feedback_db
from digits.settings import load_or_exit

EXIT_REFUSED = 3


def _store(settings) -> feedback_db.FeedbackStore:
    return feedback_db.FeedbackStore.from_url(settings.DATABASE_URL)


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}", flush=True)


# ---------------------------------------------------------------- finetune

def _finetune_options(p) -> None:
    from trainer.finetune import FinetuneHyper, GateRules

    hp, rules = FinetuneHyper(), GateRules()
    p.add_argument("--data", help="MNIST folder or .npz (default: the MNIST_DIR setting)")
    p.add_argument("--limit", type=int, help="use only the first N MNIST train and test images")
    p.add_argument("--epochs", type=int, default=hp.epochs)
    p.add_argument("--batch-size", type=int, default=hp.batch_size)
    p.add_argument("--learning-rate", type=float, default=hp.learning_rate)
    p.add_argument("--repeat", type=int, default=hp.repeat,
                   help="times each feedback image is seen an epoch")
    p.add_argument("--replay", type=float, default=hp.replay,
                   help="MNIST images per feedback image, each epoch")
    p.add_argument("--min-replay", type=int, default=hp.min_replay)
    p.add_argument("--blend", type=float, default=hp.blend,
                   help="share of the trained weights, 0..1 (default: chosen on MNIST "
                        "validation digits)")
    p.add_argument("--seed", type=int, default=hp.seed)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--min-accuracy", type=float, default=rules.min_accuracy,
                   help="gate's MNIST floor")
    p.add_argument("--tolerance", type=float, default=rules.tolerance,
                   help="largest MNIST drop from the current version (0..1)")


def cmd_finetune(args, store_of) -> int:
    from trainer.data import load
    from trainer.finetune import FinetuneHyper, GateRules, finetune
    from trainer.train import configure_threads

    settings = load_or_exit()
    configure_threads(settings.TRAINER_THREADS)
    mnist = load(args.data or settings.MNIST_DIR).limit(args.limit)
    hp = FinetuneHyper(epochs=args.epochs, batch_size=args.batch_size,
                       learning_rate=args.learning_rate, repeat=args.repeat,
                       replay=args.replay, blend=args.blend,
                       min_replay=min(args.min_replay, len(mnist.x_train)), seed=args.seed,
                       augment=not args.no_augment)
    rules = GateRules(min_accuracy=args.min_accuracy, tolerance=args.tolerance)
    store, feedback = store_of(args), _store(settings)
    started = time.monotonic()
    try:
        version, refusal, figures = finetune(
            store, feedback, mnist, hp, rules, settings.FEEDBACK_HOLDOUT_PERCENT,
            settings.FEEDBACK_CLIENT_SHARE)
    except feedback_db.UNAVAILABLE as err:
        print(f"error: feedback database unavailable: {err.orig or err}", file=sys.stderr)
        return 2
    print(f"published version {version.number} at {version.location} "
          f"({figures['training_seconds']} s training, {time.monotonic() - started:.0f} s "
          "in all)", flush=True)
    if refusal and not args.force:
        print(f"not made current: {refusal} (kept as version {version.number}; "
              f"--force or 'promote {version.number}' overrides)")
        return EXIT_REFUSED
    store.set_current(version.number)
    feedback.mark_promoted(version.number)
    print(f"version {version.number} is now current")
    return 0


# ---------------------------------------------------------------- feedback stats / export

def cmd_stats(args, _store_of) -> int:
    settings = load_or_exit()
    feedback = _store(settings)
    rows = feedback.rows()
    last = feedback.last_finetune()
    since = int((rows.ids > (last["max_feedback_id"] if last else 0)).sum())
    held = feedback_db.held_out(rows.ids, settings.FEEDBACK_HOLDOUT_PERCENT)
    clients = Counter(rows.clients.tolist())
    usable = feedback_db.client_quota(clients, settings.FEEDBACK_CLIENT_SHARE)
    told = rows.predicted >= 0
    print(f"rows: {len(rows)} (ids {rows.ids.min() if len(rows) else '-'}.."
          f"{rows.ids.max() if len(rows) else '-'}), {since} since the last fine-tune")
    print("by label: " + "  ".join(f"{d}: {int((rows.labels == d).sum())}" for d in range(10)))
    print(f"corrections (label differs from the answer): "
          f"{int((rows.labels[told] != rows.predicted[told]).sum())} of {int(told.sum())} "
          "with an answer")
    versions = Counter(int(v) for v in rows.model_versions if v >= 0)
    print("answered by version: " + ("  ".join(f"{v}: {n}" for v, n in sorted(versions.items()))
                                     or "-"))
    top = clients.most_common(1)[0][1] if clients else 0
    print(f"clients: {len(clients)}; the largest gave {top}; at most {usable} a client count "
          f"(FEEDBACK_CLIENT_SHARE={settings.FEEDBACK_CLIENT_SHARE})")
    print(f"held out for the gate: {int(held.sum())} "
          f"(FEEDBACK_HOLDOUT_PERCENT={settings.FEEDBACK_HOLDOUT_PERCENT})")
    if last:
        print(f"last fine-tune: version {last['version']} from {last['base_version']}, "
              f"{last['trained']} trained + {last['held_out']} held out, up to id "
              f"{last['max_feedback_id']}, {'promoted' if last['promoted'] else 'not promoted'}")
    return 0


def cmd_export(args, _store_of) -> int:
    settings = load_or_exit()
    rows = _store(settings).rows()
    held = feedback_db.held_out(rows.ids, settings.FEEDBACK_HOLDOUT_PERCENT)
    if args.format == "npz":
        np.savez_compressed(args.out, ids=rows.ids, labels=rows.labels,
                            predicted=rows.predicted, model_versions=rows.model_versions,
                            clients=rows.clients, images=rows.images, held_out=held)
    else:
        with open(args.out, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["id", "created_at", "label", "predicted", "model_version", "client",
                          "held_out", *(f"pixel{i}" for i in range(feedback_db.PIXELS))])
            for i in range(len(rows)):
                out.writerow([int(rows.ids[i]), rows.created[i].isoformat(), int(rows.labels[i]),
                              "" if rows.predicted[i] < 0 else int(rows.predicted[i]),
                              "" if rows.model_versions[i] < 0 else int(rows.model_versions[i]),
                              rows.clients[i], int(held[i]), *rows.images[i].reshape(-1).tolist()])
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


# ---------------------------------------------------------------- watch

def _child_argv(args) -> list[str]:
    argv = [sys.executable, "-m", "trainer"]
    if args.model_dir:
        argv += ["--model-dir", args.model_dir]
    argv.append("finetune")
    for name in ("data", "limit", "epochs", "batch_size", "learning_rate", "repeat", "replay",
                 "min_replay", "blend", "seed", "min_accuracy", "tolerance"):
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    if args.no_augment:
        argv.append("--no-augment")
    return argv


ALIVE_FILE = Path(tempfile.gettempdir()) / "digits-watch.alive"
ALIVE_EVERY = 10.0  # seconds between touches of ALIVE_FILE
ALIVE_STALE = 60.0  # the probe's limit


def _keep_alive() -> None:
    """Touch ALIVE_FILE while this process lives, even while a round runs in a child."""
    while True:
        ALIVE_FILE.write_text(f"{time.time():.0f}\n")
        time.sleep(ALIVE_EVERY)


def watch_probe() -> int:
    """compose's healthcheck: 0 when a watch process touched ALIVE_FILE lately."""
    try:
        age = time.time() - ALIVE_FILE.stat().st_mtime
    except OSError:
        print(f"no {ALIVE_FILE}: watch is not running")
        return 1
    print(f"watch alive {age:.0f} s ago")
    return 0 if age < ALIVE_STALE else 1


def cmd_watch(args, _store_of) -> int:
    if args.probe:
        return watch_probe()
    settings = load_or_exit()
    feedback = _store(settings)
    every, after = settings.WATCH_POLL_SECONDS, settings.FINETUNE_AFTER
    child: list[subprocess.Popen] = []

    def _stop(signum, _frame):
        for proc in child:
            if proc.poll() is None:
                proc.terminate()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _stop)
    threading.Thread(target=_keep_alive, name="watch-alive", daemon=True).start()
    _log(f"watch: fine-tuning after {after} new labels, checking every {every:g} s")
    rounds, failed_at = 0, 0  # a failed round (no record in the database) waits too
    while True:
        try:
            last = feedback.last_finetune()
            since = max(last["max_feedback_id"] if last else 0, failed_at)
            new = feedback.count(after_id=since)
            top = feedback.max_id()
        except feedback_db.UNAVAILABLE as err:
            _log(f"watch: feedback database unavailable ({err.orig or err}); retrying")
            new = None
        if new is not None and new >= after:
            rounds += 1
            _log(f"round {rounds}: {new} new labels after id {since}: fine-tuning")
            started = time.monotonic()
            child[:] = [subprocess.Popen(_child_argv(args))]
            code = child[0].wait()
            outcome = {0: "promoted", EXIT_REFUSED: "refused by the gate"}.get(
                code, f"failed (exit {code})")
            if code not in (0, EXIT_REFUSED):
                failed_at = top
            _log(f"round {rounds}: {outcome} after {time.monotonic() - started:.0f} s")
            if args.once:
                return code
        elif args.once:
            _log(f"watch: {new} new labels, fewer than {after}: nothing to do")
            return 0
        time.sleep(every)


def add_commands(sub, store_of) -> None:
    """The subcommands, on ``python -m trainer``'s subparsers. ``store_of(args)`` opens
    the model store the way the other commands do (``--model-dir``)."""
    def bind(fn):
        return lambda args: fn(args, store_of)

    ft = sub.add_parser("finetune", help="train the current version on feedback; gate; promote")
    _finetune_options(ft)
    ft.add_argument("--force", action="store_true", help="make current even if the gate refuses")
    ft.set_defaults(func=bind(cmd_finetune))

    fb = sub.add_parser("feedback", help="stored feedback: stats, export")
    fsub = fb.add_subparsers(dest="feedback_command", required=True)
    fsub.add_parser("stats", help="rows, labels, clients, rounds").set_defaults(
        func=bind(cmd_stats))
    ex = fsub.add_parser("export", help="the rows and their 28x28 inputs as CSV or NPZ")
    ex.add_argument("--format", choices=("csv", "npz"), default="csv")
    ex.add_argument("--out", required=True)
    ex.set_defaults(func=bind(cmd_export))

    w = sub.add_parser("watch", help="fine-tune whenever FINETUNE_AFTER new labels arrived")
    _finetune_options(w)
    w.add_argument("--once", action="store_true", help="check once, fine-tune if due, exit")
    w.add_argument("--probe", action="store_true",
                   help="exit 0 if a watch process is alive (compose's healthcheck)")
    w.set_defaults(func=bind(cmd_watch))
