"""Fine-tuning on feedback: the job behind ``python -m trainer finetune``.

It starts from the current version's weights (whatever its number of outputs: 10
digits, or 11 with a not-a-digit class) and trains a few epochs on the feedback rows,
each epoch mixed with a fresh random sample of MNIST training digits ("replay"), so
that what the model knew is not forgotten.

The trained weights are then blended with the base's (``choose_blend``, after
WiSE-FT): the largest share of them that keeps MNIST validation accuracy within
BLEND_MARGIN of the best blend's. On this project's measurements that keeps most of the
gain on the new styles and gives back what replay alone lost on MNIST and on
canvas redrawings of it (docs/feedback.md).

The rows are first capped per client (``feedback_db.cap_clients``): no client's rows
are more than FEEDBACK_CLIENT_SHARE of those used, so one client can steer neither the
training nor the measurement of it. They are then split by a fixed hash of their id
(``feedback_db.held_out``): a share FEEDBACK_HOLDOUT_PERCENT never trains and is what
the gate measures on.

The gate (``judge``) promotes the candidate only if
  * MNIST test accuracy is at least ``min_accuracy`` and at most ``tolerance`` below
    the current version's;
  * held-out feedback accuracy is at least the current version's;
  * no digit's held-out accuracy falls by more than ``class_drop`` rows-worth
    (max(1 row, 5%)): a label flip from one client (7s labelled 1) raises the
    accuracy on its own flipped rows but costs the honest rows of the flipped digit.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from digits.feedback_db import FeedbackStore, Rows, cap_clients, held_out
from models.store import MODEL_FILE, ModelStore, Version
from trainer.data import Mnist


@dataclass
class FinetuneHyper:
    epochs: int = 6
    batch_size: int = 64
    learning_rate: float = 5e-4
    repeat: int = 5  # each feedback image this many times an epoch (differently augmented)
    replay: float = 9.0  # MNIST replay images per feedback image, each epoch
    min_replay: int = 3000  # at least this many, however little feedback there is
    # Rendered replay per epoch for an 11-output model (0: auto): not-a-digit drawings,
    # and as many candidate digits of drawn numbers (the part family), which the number
    # endpoint's scores rely on.
    negatives: int = 0
    blend: float = 0.0  # weight of the trained weights against the base's (0: chosen)
    validation: int = 5000  # last MNIST training images: never replayed, they pick the blend
    augment: bool = True
    seed: int = 1


BLENDS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)
BLEND_MARGIN = 0.0005  # of MNIST validation accuracy: half the gate's tolerance


@dataclass
class GateRules:
    min_accuracy: float = 0.994
    tolerance: float = 0.001
    class_drop: float = 0.05  # of a digit's held-out rows (at least one row)
    min_class_rows: int = 5  # digits with fewer held-out rows are not judged alone


@dataclass
class Split:
    train: Rows
    held: Rows
    dropped_train: int
    dropped_held: int
    max_id: int
    clients: int


@dataclass
class Scores:
    mnist: float
    held_out: float
    held_out_correct: dict = field(default_factory=dict)  # digit -> (correct, rows)


def split(rows: Rows, holdout_percent: int, client_share: float) -> Split:
    if not len(rows):
        raise ValueError("there is no feedback to learn from yet")
    keep = cap_clients(rows.ids, rows.clients, client_share)
    used = rows.select(keep)
    held = held_out(used.ids, holdout_percent)
    dropped = rows.select(~keep)
    dropped_held = held_out(dropped.ids, holdout_percent)
    result = Split(used.select(~held), used.select(held), int((~dropped_held).sum()),
                   int(dropped_held.sum()), int(rows.ids.max()),
                   len(set(rows.clients.tolist())))
    if not len(result.train):
        raise ValueError(
            f"no usable feedback: {len(rows)} rows from {result.clients} client(s), and no "
            f"client may give more than {client_share:.0%} of a fine-tune "
            "(FEEDBACK_CLIENT_SHARE)")
    return result


def predictions(model, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """The digit each image is read as: the largest of the ten digit outputs, as served
    (an eleventh, not-a-digit output does not change which digit is answered)."""
    out = []
    x = images[..., None].astype("float32")
    for i in range(0, len(x), batch):
        out.append(np.asarray(model(x[i : i + batch], training=False))[:, :10].argmax(1))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def score(model, mnist: Mnist, held: Rows) -> Scores:
    mnist_acc = float((predictions(model, mnist.x_test) == mnist.y_test).mean())
    right = predictions(model, held.images) == held.labels
    per = {int(d): (int(right[held.labels == d].sum()), int((held.labels == d).sum()))
           for d in range(10) if (held.labels == d).any()}
    return Scores(mnist_acc, float(right.mean()) if len(right) else 1.0, per)


def judge(before: Scores, after: Scores, rules: GateRules) -> str:
    """Why the candidate must not become current, or '' when it may."""
    if after.mnist < rules.min_accuracy:
        return f"MNIST test accuracy {after.mnist:.4%} is below the floor {rules.min_accuracy:.2%}"
    if after.mnist < before.mnist - rules.tolerance:
        return (f"MNIST test accuracy {after.mnist:.4%} is more than "
                f"{rules.tolerance:.1%} below the current version's {before.mnist:.4%}")
    if after.held_out < before.held_out:
        return (f"held-out feedback accuracy {after.held_out:.2%} is below the current "
                f"version's {before.held_out:.2%}")
    for digit, (right, rows) in after.held_out_correct.items():
        was = before.held_out_correct[digit][0]
        allowed = max(1, int(rules.class_drop * rows))
        if rows >= rules.min_class_rows and right < was - allowed:
            return (f"held-out feedback labelled {digit}: {right}/{rows} right, against "
                    f"{was}/{rows} for the current version (a label flip?)")
    return ""


def _negatives(n: int, seed: int, mnist: tuple[np.ndarray, np.ndarray]):
    """Rendered drawings for an 11-output model (trainer/render.py): half not-a-digit
    drawings, half candidate digits of drawn numbers (redrawing ``mnist`` digits)."""
    from trainer import render

    parts = n // 2
    per = -(-(n - parts) // len(render.NEGATIVE_FAMILIES))
    # The first families give ``per`` each, the last what is left (each sample depends
    # on its family and index only).
    counts = {f: min(per, max(0, n - parts - i * per))
              for i, f in enumerate(render.NEGATIVE_FAMILIES)} | {"part": parts}
    drawn = render.render_set(counts, seed, mnist=mnist)
    return drawn.images, drawn.labels


def train(base, split_: Split, mnist: Mnist, hp: FinetuneHyper, classes: int, verbose: int):
    """The base model's weights trained further; returns (inference model, history, s)."""
    import keras
    import tensorflow as tf

    from trainer.model import augment

    keras.utils.set_random_seed(hp.seed)
    rng = np.random.default_rng(hp.seed)
    model = keras.models.clone_model(base)
    model.set_weights(base.get_weights())
    feedback_x = np.tile(split_.train.images, (hp.repeat, 1, 1))
    feedback_y = np.tile(split_.train.labels.astype("int32"), hp.repeat)
    replay = max(hp.min_replay, int(hp.replay * len(split_.train)))
    negatives = (hp.negatives or max(1, replay // 10)) if classes > 10 else 0
    pool = len(mnist.x_train) - _validation_size(mnist, hp)
    neg = _negatives(negatives, hp.seed, (mnist.x_train[:pool], mnist.y_train[:pool])) \
        if negatives else None
    per_epoch = len(feedback_x) + min(replay, pool) + negatives
    steps = hp.epochs * -(-per_epoch // hp.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(hp.learning_rate, steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history: dict[str, list] = {"loss": [], "accuracy": []}
    started = time.monotonic()
    for epoch in range(hp.epochs):
        pick = rng.choice(pool, min(replay, pool), replace=False)
        parts_x = [feedback_x, mnist.x_train[pick]]
        parts_y = [feedback_y, mnist.y_train[pick].astype("int32")]
        if neg is not None:
            parts_x.append(neg[0])
            parts_y.append(neg[1].astype("int32"))
        x = np.concatenate(parts_x)[..., None].astype("float32")
        y = np.concatenate(parts_y)
        data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=hp.seed + epoch)
        data = data.batch(hp.batch_size)
        if hp.augment:
            data = data.map(lambda a, b: (augment(a), b), num_parallel_calls=tf.data.AUTOTUNE)
        fitted = model.fit(data.prefetch(tf.data.AUTOTUNE), epochs=1, verbose=0)
        for key in history:
            history[key].append(round(float(fitted.history[key][-1]), 5))
        if verbose:
            print(f"epoch {epoch + 1}/{hp.epochs}: loss {history['loss'][-1]:.4f}, "
                  f"accuracy {history['accuracy'][-1]:.4f} "
                  f"({len(feedback_x)} feedback + {replay} MNIST"
                  f"{f' + {negatives} rendered' if negatives else ''})", flush=True)
    inference = keras.models.clone_model(base)  # uncompiled: no optimizer state in the file
    blend, path = (hp.blend, {}) if hp.blend else choose_blend(base, model, inference, mnist, hp)
    inference.set_weights(mixed(base, model, blend))
    history["blend"] = blend
    history["mnist_validation_by_blend"] = {f"{b:g}": round(a, 5) for b, a in path.items()}
    if verbose:
        print(f"blend: {blend:g} of the trained weights, {1 - blend:g} of the base's", flush=True)
    return inference, history, time.monotonic() - started


def _validation_size(mnist: Mnist, hp: FinetuneHyper) -> int:
    return min(hp.validation, len(mnist.x_train) // 10)


def mixed(base, trained, blend: float) -> list:
    return [(1 - blend) * b + blend * t for b, t in zip(base.get_weights(),
                                                        trained.get_weights(), strict=True)]


def choose_blend(base, trained, scratch, mnist: Mnist, hp: FinetuneHyper):
    """The share of the trained weights to keep (WiSE-FT: Wortsman et al., 2022, "Robust
    fine-tuning of zero-shot models"). Along the straight path from the base's weights to
    the trained ones, MNIST validation accuracy rises, then falls as the model moves
    toward the new styles; the blend is the furthest point still within BLEND_MARGIN of
    the best accuracy on that path. The validation digits are never replayed, and are
    not the gate's test set. Returns (blend, accuracy by blend)."""
    n = _validation_size(mnist, hp)
    x, y = mnist.x_train[-n:], mnist.y_train[-n:]
    path = {}
    for blend in (0.0, *BLENDS):
        scratch.set_weights(mixed(base, trained, blend))
        path[blend] = float((predictions(scratch, x) == y).mean())
    floor = max(path.values()) - BLEND_MARGIN  # the best is at least the base (blend 0)
    return max((b for b in BLENDS if path[b] >= floor), default=BLENDS[-1]), path


def table(before: Scores, after: Scores, base: int, split_: Split) -> str:
    rows = [("MNIST test", f"{before.mnist:.2%}", f"{after.mnist:.2%}"),
            (f"held-out feedback ({len(split_.held)})", f"{before.held_out:.2%}",
             f"{after.held_out:.2%}")]
    for digit, (right, n) in sorted(after.held_out_correct.items()):
        rows.append((f"  labelled {digit}", f"{before.held_out_correct[digit][0]}/{n}",
                     f"{right}/{n}"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {f'version {base}':>12}  {'candidate':>12}"]
    lines += [f"{name:{width}}  {b:>12}  {a:>12}" for name, b, a in rows]
    return "\n".join(lines)


def finetune(store: ModelStore, feedback: FeedbackStore, mnist: Mnist, hp: FinetuneHyper,
             rules: GateRules, holdout_percent: int, client_share: float,
             verbose: int = 1) -> tuple[Version, str, dict]:
    """Train, judge and publish a candidate; record in the database what it learned from.
    Returns (version, refusal or '', figures). Promotion is the caller's."""
    import keras

    wall = time.monotonic()
    base = store.verify(store.current())
    base_model = keras.saving.load_model(base.model_path, safe_mode=True, compile=False)
    classes = int(base_model.output_shape[-1])
    split_ = split(feedback.rows(), holdout_percent, client_share)
    if verbose:
        print(f"fine-tuning version {base.number} ({classes} outputs) on {len(split_.train)} "
              f"feedback rows from {split_.clients} client(s); {len(split_.held)} held out "
              f"for the gate; {split_.dropped_train + split_.dropped_held} over the "
              "per-client cap left out", flush=True)
    model, history, seconds = train(base_model, split_, mnist, hp, classes, verbose)
    before, after = score(base_model, mnist, split_.held), score(model, mnist, split_.held)
    refusal = judge(before, after, rules)
    figures = {
        "base_version": base.number,
        "feedback": {
            "max_feedback_id": split_.max_id, "trained": len(split_.train),
            "held_out": len(split_.held), "clients": split_.clients,
            "over_client_cap": split_.dropped_train + split_.dropped_held,
            "holdout_percent": holdout_percent, "client_share": client_share,
        },
        "gate": {
            "passed": not refusal, "reason": refusal, **asdict(rules),
            "mnist_before": round(before.mnist, 6), "mnist_after": round(after.mnist, 6),
            "held_out_before": round(before.held_out, 6),
            "held_out_after": round(after.held_out, 6),
            "held_out_by_label": {str(d): {"rows": n, "before": before.held_out_correct[d][0],
                                           "after": right}
                                  for d, (right, n) in after.held_out_correct.items()},
        },
        "hyperparameters": asdict(hp),
        "history": history,
        "training_seconds": round(seconds, 1),
    }

    def write(folder):
        model.save(folder / MODEL_FILE)
        manifest = dict(base.manifest)
        # The base's own fields (input contract, classes...) hold; its training record
        # does not: this version's is under "finetune".
        for key in ("name", "version", "created", "sha256", "finetune", "history",
                    "hyperparameters"):
            manifest.pop(key, None)
        manifest.update({
            "test_accuracy": round(after.mnist, 6), "test_samples": int(len(mnist.y_test)),
            "training_seconds": round(seconds, 1),
            "model_bytes": (folder / MODEL_FILE).stat().st_size,
            "finetune": figures,
        })
        return manifest

    version = store.publish(write)
    feedback.record_finetune(version=version.number, base_version=base.number,
                             max_feedback_id=split_.max_id, trained_ids=split_.train.ids,
                             held_out_count=len(split_.held), promoted=False)
    figures["seconds"] = round(time.monotonic() - wall, 1)
    if verbose:
        print(table(before, after, base.number, split_))
    return version, refusal, figures
