"""Command line: ``python -m trainer {train,list,promote,rollback,evaluate}``, and
``finetune``, ``feedback stats|export`` and ``watch`` (trainer/feedback_cli.py).

The store is ``--store`` (or ``--model-dir``), else the MODEL_STORE setting, else
MODEL_DIR (default ``var/models``): a folder or ``s3://bucket/prefix``. An empty store is
seeded with the shipped default model. After moving the pointer the trainer tells the
workers on Redis (trainer/notice.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from digits.settings import load_or_exit, quiet_tensorflow
from models.store import StoreError, open_store
from trainer import feedback_cli
from trainer.notice import announce

quiet_tensorflow()


def _store(args):
    settings = load_or_exit()
    store = open_store(args.model_dir, settings=settings)
    store.on_pointer_moved = announce(store, settings.REDIS_URL)
    return store


def cmd_train(args) -> int:
    from trainer.data import load
    from trainer.drawing import FontMissing
    from trainer.mix import prepare
    from trainer.render import fonts_for
    from trainer.train import Hyper, configure_threads, gate, train_and_publish

    try:  # before any work: the font family needs the Debian fonts installed
        fonts_for()
    except FontMissing as exc:
        print(f"error: {exc} (or run `make train`, which installs them)", file=sys.stderr)
        return 2
    data = load(args.data).limit(args.limit)
    hp = Hyper(epochs=args.epochs or Hyper.epochs, batch_size=args.batch_size, seed=args.seed,
               augment=not args.no_augment, render_scale=args.render_scale)
    if args.learning_rate:
        hp.learning_rate = args.learning_rate
    # Rendering first, in spawned processes, before TensorFlow takes the cores.
    mix = prepare(data, hp.validation, hp.seed, hp.render_scale)
    print(f"rendered {sum(mix.rendered['counts'].values())} drawings in "
          f"{mix.rendered['seconds']} s; training on {len(mix.y_fit)} images "
          f"({len(data.y_train)} from {data.source}): {hp}", flush=True)
    configure_threads(load_or_exit().TRAINER_THREADS)
    store = _store(args)
    version = train_and_publish(store, data, hp, mix, verbose=0 if args.quiet else 2)
    m = version.manifest
    print(f"published version {version.number} at {version.location} "
          f"({m['model_bytes'] / 1e6:.2f} MB, {m['training_seconds']} s)")
    refusal = gate(store, version, args.min_accuracy)
    if refusal and not args.force:
        print(f"not made current: {refusal} (kept as version {version.number}; "
              f"--force or 'promote {version.number}' overrides)")
        return 3
    store.set_current(version.number)
    print(f"version {version.number} is now current")
    return 0


def cmd_list(args) -> int:
    store = _store(args)
    current = store.current()
    rows = []
    for number in store.versions():
        m = store.get(number).manifest
        rows.append({
            "version": number,
            "current": number == current,
            "test_accuracy": m.get("test_accuracy"),
            "created": m.get("created"),
            "training_seconds": m.get("training_seconds"),
            "model_bytes": m.get("model_bytes"),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'':2}{'version':>7}  {'accuracy':>9}  {'created':20}  {'train s':>7}  {'MB':>5}")
    for r in rows:
        acc = f"{r['test_accuracy']:.2%}" if r["test_accuracy"] is not None else "?"
        mb = f"{r['model_bytes'] / 1e6:.2f}" if r["model_bytes"] else "?"
        print(f"{'*' if r['current'] else ' ':2}{r['version']:>7}  {acc:>9}  "
              f"{r['created'] or '?':20}  {r['training_seconds'] or '?':>7}  {mb:>5}")
    return 0


def cmd_promote(args) -> int:
    pointer = _store(args).set_current(args.version)
    print(f"version {pointer['version']} is now current")
    return 0


def cmd_rollback(args) -> int:
    pointer = _store(args).rollback()
    print(f"rolled back: version {pointer['version']} is now current")
    return 0


def cmd_evaluate(args) -> int:
    from trainer.data import load
    from trainer.train import accuracy, configure_threads

    configure_threads(load_or_exit().TRAINER_THREADS)
    import keras

    store = _store(args)
    version = store.verify(args.version if args.version is not None else store.current())
    model = keras.saving.load_model(version.model_path, safe_mode=True, compile=False)
    data = load(args.data).limit(args.limit)
    acc = accuracy(model, data.x_test, data.y_test)
    claimed = version.manifest.get("test_accuracy")
    print(json.dumps({"version": version.number, "test_accuracy": round(acc, 6),
                      "manifest_test_accuracy": claimed, "test_samples": len(data.y_test)}))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    p.add_argument("--store", "--model-dir", dest="model_dir",
                   help="model store: a folder or s3://bucket/prefix (default: the "
                        "MODEL_STORE setting, else MODEL_DIR)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train, publish a version, make it current if it passes")
    t.add_argument("--data", help="MNIST folder (IDX, raw or .gz) or .npz; default: download")
    t.add_argument("--epochs", type=int, help="default: trainer.train.Hyper's (16)")
    t.add_argument("--limit", type=int, help="use only the first N train and test images")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--learning-rate", type=float)
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--render-scale", type=float, default=1.0,
                   help="rendered drawings (trainer/mix.py) as a multiple of the default mix")
    t.add_argument("--min-accuracy", type=float, default=0.99, help="gate's floor (0..1)")
    t.add_argument("--force", action="store_true", help="make current even if the gate refuses")
    t.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    t.set_defaults(func=cmd_train)

    ls = sub.add_parser("list", help="versions, accuracy, date; * marks the current one")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    pr = sub.add_parser("promote", help="make VERSION current")
    pr.add_argument("version", type=int)
    pr.set_defaults(func=cmd_promote)

    sub.add_parser("rollback", help="go back to the previously current version").set_defaults(
        func=cmd_rollback)

    ev = sub.add_parser("evaluate", help="measure VERSION (default current) on MNIST test")
    ev.add_argument("version", type=int, nargs="?")
    ev.add_argument("--data", help="as for train")
    ev.add_argument("--limit", type=int)
    ev.set_defaults(func=cmd_evaluate)

    feedback_cli.add_commands(sub, _store)  # finetune, feedback stats|export, watch
    return p


def main(argv=None) -> int:
    load_or_exit()  # a bad setting is reported before any work starts
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (StoreError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
