"""Fit the digit score of api/segment.py (``WEIGHTS``) on a drawn set of numbers.

    python -m tools.fit_segment --data ../shared/data/mnist [--n 6000] [--seed 3]

Numbers come from tools/numbers_set.py (a seed apart from the evaluation's), are
planned by api.segment and read by the shipped model (or --model-dir's) in this
process. Every candidate is labelled from the drawing's own layers: it is one whole
digit when at least PURITY of its ink belongs to one digit and it holds at least
COVERAGE of that digit's ink. A logistic regression of that label over the
candidates' features (Newton's method, a small L2 penalty) is the start; then the
averaged structured perceptron on whole readings (api/lattice.py: edges and pairs)
gives the weights, printed as Python to paste into api/segment.py, with the exact
match on a held-out fifth and the temperature of the whole-string confidence.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PURITY = 0.9
COVERAGE = 0.85


def _canvas_size(number) -> tuple[int, int]:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(number.png)).size


def labels_of(plan, number) -> np.ndarray:
    """Per candidate, 1.0 if it is exactly one whole digit, else 0.0."""
    from trainer.numbers import candidate_ink, owners, whole_digit

    owner = owners(number.alphas, number.meta["origins"], _canvas_size(number))
    _, purity, coverage, _ = whole_digit(*candidate_ink(plan, owner, len(number.label)))
    return ((purity >= PURITY) & (coverage >= COVERAGE)).astype(np.float64)


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 50) -> np.ndarray:
    """Logistic regression by Newton's method."""
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def log_loss(x, y, w) -> float:
    z = x @ w
    return float(np.mean(np.logaddexp(0, -z) * y + np.logaddexp(0, z) * (1 - y)))


def collect(numbers, max_digits: int = 12, model_dir: str | None = None) -> list[dict]:
    """Per number: its lattice, every edge's features, reading and whole-digit label,
    every pair's features, read by model_dir's current version (default: the shipped
    store's)."""
    from api.errors import ApiError
    from api.preprocess import load_image
    from api.segment import edge_features, plan_number
    from tools.local_model import load_forward

    forward = load_forward(model_dir)
    out = []
    for number in numbers:
        try:
            plan = plan_number(load_image(number.png), max_digits)
        except ApiError:
            continue
        probs = forward(plan.crops)
        edges = plan.lattice.edges
        k = edges[:, 2]  # each edge's candidate
        out.append({
            "lattice": plan.lattice,
            "x": edge_features(plan, probs),
            "px": plan.pair_x,
            # One edge per candidate, for the per-candidate regression.
            "plain": (edges[:, 3] < 0) & (edges[:, 0] % 2 == 0),
            "blank": np.array([c.blank for c in plan.candidates])[k],
            "reads": probs[k, :10].argmax(axis=1),
            "top": probs[k, :10].max(axis=1),
            "label": number.label,
            "whole": labels_of(plan, number)[k],
        })
    return out


def scores(item, w) -> tuple[np.ndarray, np.ndarray]:
    """The edges' and the pairs' scores under weights w (EDGE_FEATURES, PAIR_FEATURES)."""
    edge = item["x"] @ w[: item["x"].shape[1]]
    edge[item["blank"]] = -np.inf
    return edge, item["px"] @ w[item["x"].shape[1] :]


def phi(item, path: list[int]) -> np.ndarray:
    """A reading's features: its edges' and its pairs' sums, as w is laid out."""
    return np.concatenate((item["x"][path].sum(axis=0),
                           item["px"][item["lattice"].path_pairs(path)].sum(axis=0)))


def reading(item, w) -> list[int]:
    from api.lattice import best_path

    return best_path(item["lattice"], *scores(item, w))


def right_path(item, w) -> list[int] | None:
    """The best-scoring reading of the label, if the candidates allow one."""
    from api.lattice import finals, levels

    lattice = item["lattice"]
    label = np.array([int(ch) for ch in item["label"]])
    s, ps = scores(item, w)
    length = len(label)
    # value[e, t]: the best reading of the label's first t + 1 digits ending with edge e.
    fits = item["reads"][:, None] == label[None, :]
    value = np.full((len(s), length), -np.inf)
    value[:, 0] = np.where((lattice.edges[:, 0] == 0) & fits[:, 0], s, -np.inf)
    back = np.full((len(s), length), -1)
    for level in levels(lattice):
        a, b = lattice.pairs[level, 0], lattice.pairs[level, 1]
        total = np.full((len(level), length), -np.inf)
        total[:, 1:] = value[a, :-1] + (ps[level] + s[b])[:, None]
        total[~fits[b]] = -np.inf
        key = (b[:, None] * length + np.arange(length)).ravel()
        order = np.lexsort((total.ravel(), key))
        last = order[np.r_[key[order][1:] != key[order][:-1], True]]
        rows, ts = np.divmod(last, length)
        better = total.ravel()[last] > value[b[rows], ts]
        value[b[rows][better], ts[better]] = total.ravel()[last][better]
        back[b[rows][better], ts[better]] = a[rows][better]
    ends = finals(lattice)
    if not len(ends) or not np.isfinite(value[ends, -1]).any():
        return None
    e, t = int(ends[np.argmax(value[ends, -1])]), length - 1
    path = [e]
    while t > 0:
        e, t = int(back[e, t]), t - 1
        path.append(e)
    return path[::-1]


def exact(items, w) -> float:
    right = 0
    for item in items:
        path = reading(item, w)
        right += "".join(str(item["reads"][k]) for k in path) == item["label"]
    return right / max(len(items), 1)


def perceptron(items, w0: np.ndarray, epochs: int = 30, rate: float = 0.05,
               seed: int = 0) -> np.ndarray:
    """Averaged structured perceptron on whole readings, from w0: when the best path
    misreads a number that some path reads right, move the weights from the
    features of the wrong path towards those of the right one."""
    rng = np.random.default_rng(seed)
    w, total, count = w0.copy(), np.zeros_like(w0), 0
    for _ in range(epochs):
        for i in rng.permutation(len(items)):
            item = items[i]
            got = reading(item, w)
            if "".join(str(item["reads"][k]) for k in got) != item["label"]:
                want = right_path(item, w)
                if want is not None:
                    w += rate * (phi(item, want) - phi(item, got))
            total += w
            count += 1
    return total / count


def best_temperature(items, w, grid=(0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 10, 12, 16)):
    """The temperature whose whole-string confidence (api.segment.decode) has the
    lowest log loss against whether the reading is right."""
    from api.lattice import probability

    rows = []
    for item in items:
        s, ps = scores(item, w)
        path = reading(item, w)
        right = "".join(str(item["reads"][k]) for k in path) == item["label"]
        rows.append((item, (s, ps), path, float(np.prod(item["top"][path])), right))
    best = None
    for t in grid:
        loss = 0.0
        for item, s, path, digits, right in rows:
            p = probability(item["lattice"], path, *s, t) * digits
            p = min(max(p, 1e-6), 1 - 1e-6)
            loss -= np.log(p if right else 1 - p)
        loss /= len(rows)
        if best is None or loss < best[1]:
            best = (t, loss)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.fit_segment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="MNIST folder (IDX .gz files)")
    p.add_argument("--n", type=int, default=6000)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--model-dir", help="model store (default: the shipped one)")
    args = p.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from api.segment import EDGE_FEATURES, PAIR_FEATURES, WEIGHTS
    from tools.numbers_set import make_numbers, mnist_by_digit

    began = time.perf_counter()
    by_digit = mnist_by_digit(args.data) if args.data else None
    items = collect(make_numbers(args.n, args.seed, by_digit=by_digit),
                    model_dir=args.model_dir)
    print(f"{sum(int(i['plain'].sum()) for i in items)} candidates of {len(items)} numbers "
          f"in {time.perf_counter() - began:.0f} s")
    held = [i for k, i in enumerate(items) if k % 5 == 4]  # a fifth, for honest figures
    train = [i for k, i in enumerate(items) if k % 5 != 4]

    def stack(part):
        keep = [i["plain"] & ~i["blank"] for i in part]
        return (np.concatenate([i["x"][m] for i, m in zip(part, keep, strict=True)]),
                np.concatenate([i["whole"][m] for i, m in zip(part, keep, strict=True)]))

    def start(part):
        """The logistic regression's weights for the edges; 0 for the pairs."""
        return np.concatenate((fit(*stack(part)), np.zeros(len(PAIR_FEATURES))))

    hx, hy = stack(held)
    w0 = start(train)
    we = w0[: len(EDGE_FEATURES)]
    print(f"logistic: held-out log loss {log_loss(hx, hy, we):.4f}, "
          f"candidate accuracy {np.mean((hx @ we > 0) == (hy > 0.5)):.2%}")
    names = EDGE_FEATURES + PAIR_FEATURES
    current = np.array([WEIGHTS[name] for name in names])
    w = perceptron(train, w0, args.epochs)
    for name, weights in (("current", current), ("logistic", w0), ("perceptron", w)):
        print(f"{name:>10}: exact match {exact(train, weights):.2%} (fit), "
              f"{exact(held, weights):.2%} (held out)")
    # The temperature is chosen on the held-out fifth, read with the weights fitted
    # without it: on the numbers it was fitted on, the score is surer than on others.
    temperature, loss = best_temperature(held, w)
    print(f"whole-string confidence: log loss {loss:.4f} at SEGMENT_TEMPERATURE "
          f"{temperature} (held out)")
    w = perceptron(items, start(items), args.epochs)
    print(f"SEGMENT_TEMPERATURE = {temperature}")
    print("WEIGHTS = {")
    for name, value in zip(names, w, strict=True):
        print(f'    "{name}": {value:.4f},')
    print("}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
