"""One table: model versions on MNIST test and on the canvas set, side by side.

    python -m tools.evaluate --data ../shared/data/mnist [--versions 1 2] [--n 1000]

For each version (loaded as a worker loads it: worker.predictor.load_version, so
the temperature and the outputs are served as in production) it gives:

* accuracy on MNIST test, and on each digit family of the canvas set
  (tools/canvas_families.py: ``mnist`` MNIST test redrawn, ``mouse``, ``fonts``);
* the share of drawings flagged not-a-digit (``not_a_digit >= threshold``) among
  the real digits (MNIST test and the canvas digits) and among each negative family;
* the expected calibration error (15 bins) of ``confidence`` on the canvas digits;
* the forward pass at batch 64 (median of interleaved repeats, both versions in
  the same run).

Every drawing goes through ``api.preprocess.preprocess`` from its PNG, as /predict
takes it. The preprocessed set is cached in var/canvas-families/ (delete to remake).
Writes artifacts/evaluate.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from digits.settings import load_or_exit, quiet_tensorflow  # noqa: E402
from tools import canvas_families as cf  # noqa: E402

SET_VERSION = 3  # bump when tools/canvas_families.py changes its drawings
CACHE = ROOT / "var" / "canvas-families"


def canvas_set(data_dir: str, n: int, seed: int, processes: int | None = None,
               mnist_n: int = 10_000) -> dict:
    """{"images", "labels", "families"} of the canvas set, preprocessed as /predict does."""
    from api.preprocess import preprocess
    from trainer.data import load

    path = CACHE / f"set{SET_VERSION}-n{n}-mnist{mnist_n}-seed{seed}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in ("images", "labels", "families")}
    mnist = load(data_dir)
    counts = ({f: n for f in cf.DIGIT_FAMILIES} | {"mnist": mnist_n}
              | {f: max(1, n // 2) for f in cf.NEGATIVE_FAMILIES})
    drawings = cf.make_set(counts, seed, (mnist.x_test, mnist.y_test), processes)
    images = np.stack([preprocess(base64.b64encode(d.png).decode()) for d in drawings])
    out = {"images": images, "labels": np.array([d.label for d in drawings]),
           "families": np.array([d.family for d in drawings])}
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    return out


def forward_rows(loaded, images: np.ndarray, batch: int = 500) -> np.ndarray:
    x = images.reshape(-1, 28, 28, 1).astype(np.float32)
    return np.concatenate([np.asarray(loaded.forward(x[i : i + batch]))
                           for i in range(0, len(x), batch)])


def time_forward(loaded_all: dict, batch: int = 64, repeats: int = 7, calls: int = 50) -> dict:
    """Median ms per batch-64 call of each version, the versions interleaved."""
    x = np.random.default_rng(0).integers(0, 256, (batch, 28, 28, 1)).astype(np.float32)
    times: dict[int, list[float]] = {v: [] for v in loaded_all}
    for loaded in loaded_all.values():
        loaded.forward(x)  # warm
    for _ in range(repeats):
        for v, loaded in loaded_all.items():
            started = time.perf_counter()
            for _ in range(calls):
                loaded.forward(x)
            times[v].append((time.perf_counter() - started) / calls * 1000)
    return {v: round(statistics.median(t), 3) for v, t in times.items()}


def measure(rows: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    digits = rows[:, :10]
    not_a_digit = rows[:, 10] if rows.shape[1] > 10 else np.full(len(rows), np.nan)
    flagged = not_a_digit >= threshold  # NaN (no such output) is never flagged
    right = digits.argmax(1) == labels
    return {"right": right, "flagged": flagged, "confidence": digits.max(1),
            "not_a_digit": not_a_digit}


def evaluate(versions: list[int], store, data_dir: str, n: int, seed: int,
             threshold: float, mnist_n: int = 10_000) -> dict:
    from trainer.calibrate import ece
    from trainer.data import load
    from worker.predictor import configure_tensorflow, load_version

    configure_tensorflow(2, 1)
    canvas = canvas_set(data_dir, n, seed, mnist_n=mnist_n)
    mnist = load(data_dir)
    loaded = {v: load_version(store, v) for v in versions}
    result: dict = {"threshold": threshold, "n": n, "mnist_n": mnist_n, "seed": seed,
                    "versions": {}}
    for v, model in loaded.items():
        m = measure(forward_rows(model, mnist.x_test), mnist.y_test, threshold)
        c = measure(forward_rows(model, canvas["images"]), canvas["labels"], threshold)
        fam = canvas["families"]
        is_digit = canvas["labels"] < 10
        row = {"MNIST test": float(m["right"].mean())}
        for f in cf.DIGIT_FAMILIES:
            row[f"canvas {f}"] = float(c["right"][fam == f].mean())
        row["canvas digits, all"] = float(c["right"][is_digit].mean())
        row["ECE (15 bins), canvas digits"] = ece(c["confidence"][is_digit], c["right"][is_digit])
        row["flagged: MNIST test"] = float(m["flagged"].mean())
        for f in cf.DIGIT_FAMILIES:
            row[f"flagged: canvas {f}"] = float(c["flagged"][fam == f].mean())
        real = np.concatenate([m["flagged"], c["flagged"][is_digit]])
        row["flagged: all real digits"] = float(real.mean())
        for f in cf.NEGATIVE_FAMILIES:
            row[f"flagged: {f}"] = float(c["flagged"][fam == f].mean())
        row["flagged: all negatives"] = float(c["flagged"][~is_digit].mean())
        result["versions"][v] = row
    ms = time_forward(loaded)
    for v in versions:
        result["versions"][v]["forward ms, batch 64"] = ms[v]
    result["counts"] = {f: int((canvas["families"] == f).sum()) for f in cf.FAMILIES}
    result["counts"]["MNIST test"] = int(len(mnist.y_test))
    return result


def table(result: dict) -> str:
    versions = list(result["versions"])
    names = list(result["versions"][versions[0]])
    width = max(len(s) for s in names) + 2
    lines = [f"{'':{width}}" + "".join(f"{f'version {v}':>12}" for v in versions)]
    for name in names:
        cells = []
        for v in versions:
            value = result["versions"][v][name]
            cells.append(f"{value:>12.3f}" if name.startswith("forward") else f"{value:>12.2%}")
        lines.append(f"{name:{width}}" + "".join(cells))
    counts = ", ".join(f"{k} {c}" for k, c in result["counts"].items())
    lines.append(f"(not_a_digit threshold {result['threshold']}; samples: {counts})")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="MNIST folder (IDX files)")
    p.add_argument("--store", help="model store (default: the shipped one, models/digits)")
    p.add_argument("--versions", type=int, nargs="+", help="default: every version")
    p.add_argument("--n", type=int, default=1000,
                   help="drawings per digit family (half as many per negative family)")
    p.add_argument("--mnist-n", type=int, default=10_000,
                   help="MNIST test digits redrawn for the mnist family (default: all 10,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float,
                   help="not_a_digit threshold (default: the NOT_A_DIGIT_THRESHOLD setting)")
    p.add_argument("--out", default=str(ROOT / "artifacts" / "evaluate.json"))
    args = p.parse_args(argv)
    quiet_tensorflow()
    from models.store import open_store, shipped_store

    store = open_store(args.store, seed=False) if args.store else shipped_store()
    versions = args.versions or store.versions()
    threshold = args.threshold
    if threshold is None:
        threshold = load_or_exit().NOT_A_DIGIT_THRESHOLD
    result = evaluate(versions, store, args.data, args.n, args.seed, threshold, args.mnist_n)
    print(table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
