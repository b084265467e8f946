"""Train, evaluate and publish: the job behind ``python -m trainer train``.

After keras-io's ``mnist_convnet``, with augmentation for canvas drawings, a
cosine learning-rate schedule and a gate before a new version becomes current.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from models.outputs import Outputs, manifest_fields, serve
from models.store import HISTORY_PLOT, MODEL_FILE, Store, StoreError, Version
from trainer.data import Mnist
from trainer.mix import Mix


@dataclass
class Hyper:
    epochs: int = 16
    batch_size: int = 128
    learning_rate: float = 2e-3
    dropout: float = 0.4
    seed: int = 1
    validation: int = 5000  # MNIST training images held out (with a tenth of the rendered)
    augment: bool = True
    render_scale: float = 1.0  # rendered drawings, as a multiple of trainer/mix.py SHARES


def configure_threads(threads: int = 0) -> None:
    """TensorFlow's pools for training: ``threads`` intra-op (0: one per core), 2 inter-op."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads or os.cpu_count() or 1)
    tf.config.threading.set_inter_op_parallelism_threads(2)


def fit(mix: Mix, hp: Hyper, verbose: int = 2):
    """Train a fresh model on the mix; returns (inference model, history dict, seconds)."""
    import keras
    import tensorflow as tf

    from trainer.model import augment, build

    keras.utils.set_random_seed(hp.seed)
    x_fit, y_fit = mix.x_fit[..., None].astype("float32"), mix.y_fit.astype("int32")
    x_val, y_val = mix.x_held[..., None].astype("float32"), mix.y_held.astype("int32")

    train = tf.data.Dataset.from_tensor_slices((x_fit, y_fit))
    train = train.shuffle(len(x_fit), seed=hp.seed, reshuffle_each_iteration=True)
    train = train.batch(hp.batch_size)
    if hp.augment:
        train = train.map(lambda a, b: (augment(a), b), num_parallel_calls=tf.data.AUTOTUNE)
    train = train.prefetch(tf.data.AUTOTUNE)

    steps = max(1, hp.epochs * -(-len(x_fit) // hp.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        hp.learning_rate, decay_steps=steps, alpha=0.02
    )
    model = build(hp.dropout, mix.classes)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    started = time.monotonic()
    history = model.fit(
        train,
        epochs=hp.epochs,
        validation_data=(x_val, y_val) if len(x_val) else None,
        verbose=verbose,
    )
    seconds = time.monotonic() - started
    # Serve an uncompiled twin: no optimizer state in the file, a third of the size.
    inference = build(hp.dropout, mix.classes)
    inference.set_weights(model.get_weights())
    return inference, history.history, seconds


def outputs_of(model, images, batch: int = 1000):
    """The network's raw outputs (n, classes) for (n, 28, 28) uint8 images."""
    import numpy as np

    x = images[..., None].astype("float32")
    parts = [np.asarray(model(x[i : i + batch], training=False)) for i in range(0, len(x), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, int(model.output_shape[-1])))


def accuracy(model, images, labels, batch: int = 1000) -> float:
    """Digit accuracy: the most likely of the ten digit outputs (a not-a-digit output,
    when there is one, does not take part: ``digit`` never names it)."""
    raw = outputs_of(model, images, batch)
    return float((raw[:, :10].argmax(1) == labels).sum()) / max(1, len(labels))


def plot_history(history: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = range(1, len(history["loss"]) + 1)
    for key, label in (("accuracy", "train"), ("val_accuracy", "validation")):
        if key in history:
            ax1.plot(epochs, history[key], marker="o", label=label)
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        if key in history:
            ax2.plot(epochs, history[key], marker="o", label=label)
    ax1.set(title="accuracy", xlabel="epoch")
    ax2.set(title="loss", xlabel="epoch")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def train_and_publish(store: Store, data: Mnist, hp: Hyper, mix: Mix,
                      verbose: int = 2) -> Version:
    import keras
    import tensorflow as tf

    from trainer.model import INPUT_SPEC

    model, history, seconds = fit(mix, hp, verbose)
    test_accuracy = accuracy(model, data.x_test, data.y_test)
    print(f"test accuracy {test_accuracy:.4%} after {seconds:.0f} s of training", flush=True)
    held = calibration_report(outputs_of(model, mix.x_held), mix)
    print(f"temperature {held['temperature']}; held-out: {held['summary']}", flush=True)

    def write(folder: Path) -> dict:
        model.save(folder / MODEL_FILE)
        plot_history(history, folder / HISTORY_PLOT, f"{test_accuracy:.2%} on MNIST test")
        return {
            "test_accuracy": round(test_accuracy, 6),
            "test_samples": int(len(data.y_test)),
            "training_seconds": round(seconds, 1),
            "model_bytes": (folder / MODEL_FILE).stat().st_size,
            "parameters": int(model.count_params()),
            **manifest_fields(Outputs(mix.classes, held["temperature"])),
            "calibration": {k: v for k, v in held.items() if k != "summary"},
            "rendered": mix.rendered,
            "data_fingerprint": data.fingerprint,
            "data_source": data.source,
            "train_samples": int(len(data.y_train)),
            "fit_samples": int(len(mix.y_fit)),
            "hyperparameters": asdict(hp),
            "history": {k: [round(float(v), 5) for v in vs] for k, vs in history.items()},
            "input": INPUT_SPEC,
            "keras_version": keras.__version__,
            "tensorflow_version": tf.__version__,
            "python_version": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        }

    return store.publish(write)


def calibration_report(raw, mix: Mix) -> dict:
    """Temperature fitted on the held-out real digits, and what the held-out set says
    about it: ECE, and how many digits and not-digits a not-a-digit threshold flags."""
    from trainer.calibrate import ece, fit_temperature, threshold_for

    # Real digits: the part family's crops (a digit with a neighbour's sliver) are for
    # the number endpoint, whose own score weighs the model's answers (api/segment.py).
    drawings = mix.held_family != "part"
    digits, negatives = drawings & (mix.y_held < 10), drawings & (mix.y_held >= 10)
    temperature = fit_temperature(raw[digits], mix.y_held[digits], mix.classes)
    served, not_a_digit = serve(raw, Outputs(mix.classes, temperature))
    right = served.argmax(1) == mix.y_held
    report = {
        "temperature": temperature,
        "fitted_on": int(digits.sum()),
        "held_out_digit_accuracy": round(float(right[digits].mean()), 6) if digits.any() else None,
        "held_out_ece_15": round(ece(served.max(1)[digits], right[digits]), 5),
        "thresholds": {},
    }
    if mix.classes > 10 and digits.any() and negatives.any():
        for share in (0.005, 0.01):
            t = threshold_for(not_a_digit[digits], share)
            report["thresholds"][f"refusing {share:.1%} of held-out digits"] = {
                "threshold": round(t, 6),
                "negatives_flagged": round(float((not_a_digit[negatives] >= t).mean()), 6),
            }
        report["at_0.5"] = {
            "digits_flagged": round(float((not_a_digit[digits] >= 0.5).mean()), 6),
            "negatives_flagged": round(float((not_a_digit[negatives] >= 0.5).mean()), 6),
        }
    report["summary"] = (f"digit accuracy {report['held_out_digit_accuracy']}, "
                         f"ECE {report['held_out_ece_15']}, at 0.5: {report.get('at_0.5')}")
    return report


def gate(store: Store, candidate: Version, floor: float, tolerance: float = 0.001) -> str:
    """Why ``candidate`` must not become current, or '' when it may."""
    acc = candidate.manifest["test_accuracy"]
    if acc < floor:
        return f"test accuracy {acc:.4%} is below the floor {floor:.2%}"
    try:
        current = store.current_version()
    except StoreError:
        return ""
    best = current.manifest.get("test_accuracy", 0.0)
    if acc < best - tolerance:
        return (
            f"test accuracy {acc:.4%} is more than {tolerance:.1%} below the current "
            f"version {current.number} ({best:.4%})"
        )
    return ""
