"""The learning loop's targets, measured end to end through a private stack.

    python -m tools.feedback_eval --data ../shared/data/mnist     # make feedback-eval

1. A population of drawings in styles MNIST lacks (tools/feedback_population.py):
   ``--corrections`` of them (seed 1) are the users' labels, ``--test`` others (seed 2)
   the test set.
2. A private stack (Redis, 2 workers, gunicorn, a fresh SQLite feedback database and a
   copy of the shipped model) answers every drawing through /predict.
3. Each correction goes through POST /feedback with the answer it corrects, from
   ``--clients`` simulated users (X-Forwarded-For behind TRUSTED_PROXIES=1).
4. ``python -m trainer finetune`` runs once, timed, with the machine's load average.
5. While it trains and promotes, 2 threads keep POSTing /predict (20 a second): each
   answer's status and model version is logged, so the time from the promotion (the
   pointer file's mtime) to the first and to every worker answering with the new
   version is known, and so is any failed request.
6. The test set and the MNIST-redrawn canvas set (tools/canvas_set.py) go through
   /predict again; MNIST test accuracy is the gate's (all 10,000 images). ``--numbers``
   drawn numbers (tools/numbers_set.py, seed 11) go through /predict/number before and
   after: a fine-tune must not cost the number endpoint its reading.

Writes artifacts/feedback_eval.json and prints the before/after table.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from digits.settings import ROOT, child_environment
from digits.stack import Stack
from models.store import ModelStore, shipped_store
from tools.eval_canvas import post as predict_png
from tools.load import predict_clients

TARGETS = {"error_cut": 0.5, "mnist_floor": 0.994, "canvas_drop": 0.003, "finetune_s": 300,
           "reload_s": 2.0}


def _post_json(url: str, body: dict, headers: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def error_rate(url: str, drawings: list[tuple[bytes, int]], threads: int = 8) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(lambda d: predict_png(url, d[0]), drawings))
    wrong = sum(1 for a, (_, label) in zip(answers, drawings, strict=True)
                if a["status"] != 200 or a["answer"].get("digit") != label)
    versions = sorted({a["answer"].get("model_version") for a in answers}, key=str)
    return {"n": len(drawings), "wrong": wrong, "error": round(wrong / len(drawings), 4),
            "versions": versions}


def numbers_read(url: str, numbers) -> dict:
    """Exact match of drawn numbers through POST /predict/number."""
    from tools.eval_numbers import read_http, summarise

    if not numbers:
        return {"right": 0, "n": 0, "accuracy": None}
    return summarise(numbers, read_http(numbers, url))["all"]


def send_corrections(url: str, drawings, clients: int) -> dict:
    """/predict, then POST /feedback with its answer, for each drawing."""
    corrected = 0
    for i, d in enumerate(drawings):
        answer = predict_png(url, d.png)["answer"]
        image = "data:image/png;base64," + base64.b64encode(d.png).decode()
        status, body = _post_json(url + "/feedback", {
            "image": image, "label": d.label, "predicted": answer.get("digit"),
            "model_version": answer.get("model_version"), "request_id": f"eval-{i}"},
            {"X-Forwarded-For": f"192.0.2.{i % clients + 1}"})
        if status != 201:
            raise RuntimeError(f"POST /feedback answered {status}: {body}")
        corrected += answer.get("digit") != d.label
    return {"sent": len(drawings), "misread_when_sent": corrected}


def reload_times(answers: list, version: int, promoted_at: float) -> dict:
    """From /predict answers (tools.load.Answer) logged around a promotion: how long
    until the first, and until every, answer came from the new version."""
    after = [a for a in answers if a.t >= promoted_at]
    first = next((a.t for a in after if a.version == version), None)
    # From then on, did every answer come from the new version?
    last_old = max((a.t for a in after if a.status == 200 and a.version != version),
                   default=None)
    return {
        "requests": len(answers),
        "failed": sum(1 for a in answers if a.status != 200),
        "first_new_s": round(first - promoted_at, 3) if first else None,
        "all_new_s": round(max(last_old or promoted_at, first or promoted_at)
                           - promoted_at, 3) if first else None,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.feedback_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="MNIST folder")
    p.add_argument("--corrections", type=int, default=1500)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--canvas", type=int, default=2000, help="MNIST-redrawn canvas drawings")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--numbers", type=int, default=400, help="drawn numbers (0: none)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--database-url", help="default: a fresh SQLite file")
    p.add_argument("--finetune-args", default="", help="extra arguments for finetune")
    p.add_argument("--out", default="artifacts/feedback_eval.json")
    args = p.parse_args(argv)

    from tools.canvas_set import make_drawings
    from tools.feedback_population import population
    from tools.numbers_set import make_numbers, mnist_by_digit
    from trainer.data import load

    started = time.perf_counter()
    corrections = population(args.corrections, seed=1)
    test = [(d.png, d.label) for d in population(args.test, seed=2)]
    mnist = load(args.data)
    canvas = make_drawings(mnist.x_test, mnist.y_test, args.canvas, seed=0)
    numbers = make_numbers(args.numbers, 11, by_digit=mnist_by_digit(args.data))
    print(f"{len(corrections)} corrections, {len(test)} test drawings, {len(canvas)} canvas "
          f"drawings in {time.perf_counter() - started:.0f} s", flush=True)

    folder = Path(tempfile.mkdtemp(prefix="digits-feedback-eval-"))
    models = ModelStore(folder / "models")
    models.seed_from(shipped_store())
    base = models.current()
    db = args.database_url or f"sqlite:///{folder / 'feedback.db'}"
    stack = Stack(workers=args.workers, model_dir=models.root, log_dir=folder / "logs", env={
        "DATABASE_URL": db, "TRUSTED_PROXIES": "1", "FEEDBACK_RATE_LIMIT": "", "RATE_LIMIT": ""})
    result: dict = {"base_version": base, "corrections": len(corrections),
                    "clients": args.clients}
    try:
        stack.start(wait=300)
        result["before"] = {"test": error_rate(stack.url, test),
                            "canvas": error_rate(stack.url, canvas),
                            "numbers": numbers_read(stack.url, numbers)}
        print(f"before: {result['before']}", flush=True)
        result["sent"] = send_corrections(stack.url, corrections, args.clients)
        load_before = os.getloadavg()
        probe = {"image": "data:image/png;base64," + base64.b64encode(test[0][0]).decode()}
        # About 20 answers a second from 2 clients: light next to the training.
        with predict_clients(stack.url, probe, n=2, pause=0.1) as prober:
            t0 = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "trainer", "--model-dir", str(models.root), "finetune",
                 "--data", args.data, *args.finetune_args.split()],
                cwd=ROOT, capture_output=True, text=True,
                env=child_environment(DATABASE_URL=db, REDIS_URL=stack.redis_url))
            seconds = time.perf_counter() - t0
            print(done.stdout, flush=True)
            time.sleep(3)  # answers after the promotion
        result["finetune"] = {"exit": done.returncode, "seconds": round(seconds, 1),
                              "load_average_before": [round(v, 2) for v in load_before],
                              "load_average_after": [round(v, 2) for v in os.getloadavg()],
                              "stderr_tail": done.stderr[-1500:] if done.returncode else ""}
        new = models.current()
        promoted_at = (models.base / "CURRENT").stat().st_mtime
        result["reload"] = reload_times(prober.records, new, promoted_at)
        result["after_version"] = new
        result["manifest"] = models.get(models.versions()[-1]).manifest.get("finetune")
        result["after"] = {"test": error_rate(stack.url, test),
                           "canvas": error_rate(stack.url, canvas),
                           "numbers": numbers_read(stack.url, numbers)}
    finally:
        stack.stop()
    _report(result, models)
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {out}")
    return 0 if result["finetune"]["exit"] == 0 else 1


def _report(r: dict, models: ModelStore) -> None:
    b, a = r["before"], r.get("after", {})
    mnist_b = models.get(r["base_version"]).manifest["test_accuracy"]
    mnist_a = models.get(r["after_version"]).manifest["test_accuracy"]
    rows = [
        ("population test error", f"{b['test']['error']:.2%}", f"{a['test']['error']:.2%}",
         f"<= {b['test']['error'] * TARGETS['error_cut']:.2%}"),
        ("MNIST test accuracy", f"{mnist_b:.2%}", f"{mnist_a:.2%}",
         f">= {TARGETS['mnist_floor']:.1%}"),
        ("canvas (MNIST redrawn) accuracy", f"{1 - b['canvas']['error']:.2%}",
         f"{1 - a['canvas']['error']:.2%}",
         f">= {1 - b['canvas']['error'] - TARGETS['canvas_drop']:.2%}"),
    ]
    if b["numbers"]["n"]:
        rows.append((f"numbers exact match ({b['numbers']['n']})",
                     f"{b['numbers']['accuracy']:.2%}",
                     f"{a['numbers']['accuracy']:.2%}" if a else "-", ""))
    print(f"{'':34}{'before':>10}{'after':>10}  target")
    for name, x, y, t in rows:
        print(f"{name:34}{x:>10}{y:>10}  {t}")
    ft, rl = r["finetune"], r["reload"]
    print(f"finetune: exit {ft['exit']}, {ft['seconds']} s (target <= {TARGETS['finetune_s']} s; "
          f"load average {ft['load_average_before']} before, {ft['load_average_after']} after)")
    print(f"hot reload: first answer from version {r['after_version']} "
          f"{rl['first_new_s']} s after promotion, every answer {rl['all_new_s']} s after; "
          f"{rl['failed']} failed of {rl['requests']} /predict requests")


if __name__ == "__main__":
    sys.exit(main())
