"""Exact-match accuracy of whole numbers (tools/numbers_set.py), by length and by how
close the neighbours are.

    python -m tools.eval_numbers --data ../shared/data/mnist [--n 1600] [--seed 7]
    python -m tools.eval_numbers --data ../shared/data/mnist --url http://127.0.0.1:8000
    python -m tools.eval_numbers --data ../shared/data/mnist --ceiling --oracle

Without --url the segmentation (api/segment.py) and the shipped model run in this
process (tools/local_model.py: the worker's loader, one forward pass per number).
With --url every drawing is POSTed to /predict/number of a running stack, as the
page sends it. Prints the table and writes artifacts/numbers_eval.json.

Two bounds say where the misreadings come from: ``--ceiling`` reads each digit's
own ink alone (a perfect segmentation, the model as it is); ``--oracle`` counts the
numbers whose candidates hold some reading the model gets right (a perfect choice
among the cuts the segmentation offers).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = ("separated", "overlapping", "touching")


def read_local(numbers, max_digits: int, model_dir: str | None = None, chunk: int = 32):
    """(answer or error code, seconds of segmentation) per number, in this process."""
    from api.errors import ApiError
    from api.preprocess import load_image
    from api.segment import plan_number
    from tools.local_model import load_forward

    forward = load_forward(model_dir)
    out = []
    for start in range(0, len(numbers), chunk):
        plans, errors, times = [], {}, []
        for i, number in enumerate(numbers[start : start + chunk]):
            began = time.perf_counter()
            try:
                img = load_image(number.png)
                plans.append(plan_number(img, max_digits))
            except ApiError as exc:
                plans.append(None)
                errors[i] = exc.code
            times.append(time.perf_counter() - began)
        crops = [p.crops for p in plans if p is not None]
        probs = forward(np.concatenate(crops)) if crops else np.zeros((0, 10))
        at = 0
        for i, plan in enumerate(plans):
            if plan is None:
                out.append(({"error": errors[i]}, times[i]))
                continue
            k = len(plan.crops)
            try:
                answer = plan.decode(probs[at : at + k])
            except ApiError as exc:
                answer = {"error": exc.code}
            answer["candidates"] = k
            at += k
            out.append((answer, times[i]))
    return out


def read_alone(numbers, model_dir: str | None = None):
    """Each digit's own ink (numbers_set keeps it) through the MNIST recipe alone: the
    readings a perfect segmentation would give."""
    from PIL import Image

    from api.preprocess import centred
    from tools.local_model import load_forward

    forward = load_forward(model_dir)
    out = []
    for number in numbers:
        crops = np.stack([centred(Image.fromarray(a)) for a in number.alphas])
        digits = forward(crops)[:, :10].argmax(axis=1)
        out.append(({"number": "".join(str(int(d)) for d in digits)}, 0.0))
    return out


def read_oracle(numbers, model_dir: str | None = None):
    """Per number, whether the candidates hold a reading of the right digits: some
    partition of the atoms into candidates that the model reads as the label (whatever
    their scores). What a perfect scoring of these candidates would give."""
    from tools.fit_segment import collect, right_path

    out = []
    for number in numbers:
        items = collect([number], model_dir=model_dir)  # [] when the plan is refused
        readable = bool(items) and right_path(items[0], np.zeros(
            items[0]["x"].shape[1] + items[0]["px"].shape[1])) is not None
        out.append(({"number": number.label if readable else ""}, 0.0))
    return out


def read_http(numbers, url: str, threads: int = 8):
    import urllib.error
    import urllib.request

    def one(number):
        body = json.dumps({"image": "data:image/png;base64,"
                           + base64.b64encode(number.png).decode()}).encode()
        for attempt in range(5):
            req = urllib.request.Request(url.rstrip("/") + "/predict/number", data=body,
                                         method="POST",
                                         headers={"Content-Type": "application/json"})
            began = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    answer, status = json.loads(r.read()), r.status
            except urllib.error.HTTPError as e:
                status = e.code
                try:
                    answer = {"error": json.loads(e.read())["error"]["code"]}
                except (ValueError, KeyError, TypeError):
                    answer = {"error": str(status)}
            except (urllib.error.URLError, OSError) as e:
                status, answer = 0, {"error": f"network: {e}"}
            took = time.perf_counter() - began
            if status in (429, 503) and attempt < 4:
                time.sleep(0.2 * (attempt + 1))
                continue
            return answer, took
        raise AssertionError("unreachable")

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, numbers))


def summarise(numbers, answers) -> dict:
    cells = defaultdict(lambda: [0, 0])  # (length, category) -> [right, total]
    kinds = Counter()
    confidences = []
    for number, (answer, _) in zip(numbers, answers, strict=True):
        got = answer.get("number")
        right = got == number.label
        cell = cells[(len(number.label), number.category)]
        cell[0] += right
        cell[1] += 1
        if right:
            kinds["right"] += 1
        elif got is None:
            kinds[f"error {answer.get('error')}"] += 1
        elif len(got) > len(number.label):
            kinds["too many digits"] += 1
        elif len(got) < len(number.label):
            kinds["too few digits"] += 1
        else:
            kinds["a digit misread"] += 1
        if got is not None:
            confidences.append((float(answer.get("confidence", 0.0)), right))

    def rate(select):
        right = sum(v[0] for k, v in cells.items() if select(*k))
        total = sum(v[1] for k, v in cells.items() if select(*k))
        return {"right": right, "n": total, "accuracy": round(right / total, 4) if total else None}

    lengths = sorted({len(n.label) for n in numbers})
    table = {
        str(length): {cat: rate(lambda ln, c, L=length, C=cat: ln == L and c == C)
                      for cat in CATEGORIES} | {"all": rate(lambda ln, c, L=length: ln == L)}
        for length in lengths
    }
    bins = []
    for lo, hi in ((0, 0.5), (0.5, 0.8), (0.8, 0.9), (0.9, 0.97), (0.97, 0.99), (0.99, 1.01)):
        inside = [r for c, r in confidences if lo <= c < hi]
        if inside:
            mean_c = float(np.mean([c for c, _ in confidences if lo <= c < hi]))
            bins.append({"confidence": f"{lo:.2f}-{min(hi, 1):.2f}", "n": len(inside),
                         "mean_confidence": round(mean_c, 4),
                         "accuracy": round(sum(inside) / len(inside), 4)})
    return {
        "table": table,
        "apart_2_6": rate(lambda ln, c: 2 <= ln <= 6 and c != "touching"),
        "separated_2_6": rate(lambda ln, c: 2 <= ln <= 6 and c == "separated"),
        "overlapping_2_6": rate(lambda ln, c: 2 <= ln <= 6 and c == "overlapping"),
        "touching_2_6": rate(lambda ln, c: 2 <= ln <= 6 and c == "touching"),
        "touching_all": rate(lambda ln, c: c == "touching"),
        "all": rate(lambda ln, c: True),
        "outcomes": dict(kinds),
        "calibration": bins,
    }


def print_table(result: dict) -> None:
    print(f"{'digits':>6} | " + " | ".join(f"{c:>17}" for c in (*CATEGORIES, "all")))
    for length, row in result["table"].items():
        cells = []
        for cat in (*CATEGORIES, "all"):
            v = row[cat]
            cells.append(f"{v['accuracy']:>8.1%} ({v['right']:>3}/{v['n']:>3})"
                         if v["n"] else f"{'-':>17}")
        print(f"{length:>6} | " + " | ".join(cells))
    for key in ("apart_2_6", "separated_2_6", "overlapping_2_6", "touching_2_6",
                "touching_all", "all"):
        v = result[key]
        if v["n"]:
            print(f"{key:>16}: {v['accuracy']:.2%} ({v['right']}/{v['n']})")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(result["outcomes"].items())))
    print("calibration: " + "; ".join(
        f"{b['confidence']}: n={b['n']} conf {b['mean_confidence']:.3f} acc {b['accuracy']:.3f}"
        for b in result["calibration"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.eval_numbers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="MNIST folder (IDX .gz files); without it no mnist style")
    p.add_argument("--n", type=int, default=1600, help="numbers (lengths cycle 1..8)")
    # Seed 3 is the fit's (tools/fit_segment.py) and 5-7 were used to tune the cuts.
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--url", help="a running stack: evaluate through POST /predict/number")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--max-digits", type=int, default=12)
    p.add_argument("--model-dir", help="model store (default: the shipped one)")
    p.add_argument("--out", default="artifacts/numbers_eval.json")
    p.add_argument("--cache", help="folder for the drawn set (default artifacts/numbers-SEED-N)")
    p.add_argument("--ceiling", action="store_true",
                   help="also read each digit alone (a perfect segmentation); redraws the set")
    p.add_argument("--oracle", action="store_true",
                   help="also count the numbers whose candidates hold a right reading")
    p.add_argument("--failures", type=int, default=0, help="list this many misreadings")
    args = p.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tools.numbers_set import load_or_make, make_numbers, mnist_by_digit

    began = time.perf_counter()
    cache = args.cache or ROOT / "artifacts" / f"numbers-{args.seed}-{args.n}"
    if args.ceiling or args.oracle:  # each digit's own layer is kept in memory only
        numbers = make_numbers(args.n, args.seed,
                               by_digit=mnist_by_digit(args.data) if args.data else None)
    else:
        numbers = load_or_make(args.n, args.seed, args.data, cache)
    print(f"{len(numbers)} numbers in {time.perf_counter() - began:.1f} s "
          f"({dict(Counter(n.category for n in numbers))})", flush=True)
    began = time.perf_counter()
    if args.url:
        answers = read_http(numbers, args.url, args.threads)
    else:
        answers = read_local(numbers, args.max_digits, args.model_dir)
    seconds = time.perf_counter() - began
    result = summarise(numbers, answers)
    times = sorted(t for _, t in answers)
    result.update(n=len(numbers), seed=args.seed, via=args.url or "in-process",
                  seconds=round(seconds, 1),
                  ms_p50=round(1000 * times[len(times) // 2], 2),
                  candidates_mean=round(float(np.mean(
                      [a.get("candidates", 0) for a, _ in answers])), 2))
    if args.ceiling:
        result["ceiling"] = summarise(numbers, read_alone(numbers, args.model_dir))
    if args.oracle:
        result["oracle"] = summarise(numbers, read_oracle(numbers, args.model_dir))
    print_table(result)
    for key, what in (("ceiling", "each digit read alone (a perfect segmentation)"),
                      ("oracle", "a right reading among the candidates (a perfect score)")):
        if key in result:
            c = result[key]
            print(f"{what}: " + ", ".join(
                f"{k} {c[k]['accuracy']:.2%}" for k in
                ("apart_2_6", "separated_2_6", "touching_2_6", "touching_all", "all")))
    print(f"{'request' if args.url else 'segmentation'} p50 {result['ms_p50']} ms; "
          f"candidates per number {result['candidates_mean']}; {seconds:.1f} s in all")
    if args.failures:
        wrong = [(n, a) for n, (a, _) in zip(numbers, answers, strict=True)
                 if a.get("number") != n.label]
        index = {id(n): i for i, n in enumerate(numbers)}
        for n, a in wrong[: args.failures]:
            got = a.get("number") or a.get("error")
            print(f"  {index[id(n)]:5d} {n.label:>9} -> {got!s:>9}  {n.category:11} "
                  f"{n.style:5} {n.pairs}")
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
