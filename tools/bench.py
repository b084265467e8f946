"""Throughput and latency of /predict, against the original design, in one run.

    python -m tools.bench --data ../shared/data/mnist          (make bench)

On the same machine, one system after another (never two at once):

1. model     the raw batched forward pass of the current model (the worker's traced graph, 2 TF
             threads) in a subprocess: images/s at batch 1, 64, 256, median of repeats.
2. baseline  tools/baseline_app.py under ``gunicorn -w 4`` (sync): what the original
             Number-Visualizer did, one Keras ``model.predict`` per request per process.
3. noop      tools/noop_celery.py: Flask (gthread, our API's workers and threads)
             sending a no-op Celery task over Redis and waiting: the round-trip ceiling.
4. ours      digits.stack.Stack (RATE_LIMIT off), warmed up first.

Each HTTP system is driven by wrk at each concurrency (default 1, 8, 32, 64) with
real canvas-drawing PNG bodies (tools/canvas_set), after a 50-drawing accuracy
check. Prints a table, ratios, raw model images/s and RSS; writes bench.json and
bench.png into --out; the LAST stdout line is a one-line JSON summary.

Try configurations of our stack with ``--env KEY=VALUE`` (COALESCE=0,
GUNICORN_THREADS=16, WEB_CONCURRENCY=1, WORKER_THREADS=4, ...) and a subset with
``--only ours,noop``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from digits.stack import Stack, free_port  # noqa: E402

SYSTEMS = ("model", "baseline", "noop", "ours")
HTTP_SYSTEMS = ("baseline", "noop", "ours")
LABELS = {
    "ours": "our stack",
    "baseline": "baseline (gunicorn -w {workers}, predict per request)",
    "noop": "no-op Celery round trip",
}
N_BODIES = 200
N_ACCURACY = 50
WRK_TIMEOUT = "5s"

# wrk (LuaJIT; every wrk thread runs its own Lua state). setup() runs in the main
# state and numbers the threads so they start at different bodies; init() loads the
# bodies (args: folder, count) and pre-formats one request each; request() rotates.
# done() prints one machine-readable line that run_wrk() parses.
WRK_LUA = r"""
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_no", counter)
end

function init(args)
  local dir, n = args[1], tonumber(args[2])
  local headers = {["Content-Type"] = "application/json"}
  reqs = {}
  for i = 0, n - 1 do
    local f = assert(io.open(string.format("%s/%04d.json", dir, i), "rb"))
    local body = f:read("*a")
    f:close()
    reqs[#reqs + 1] = wrk.format("POST", "/predict", headers, body)
  end
  idx = (((thread_no or 1) - 1) * 97) % #reqs
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'WRKJSON {"requests":%.0f,"duration_s":%.6f,"bytes":%.0f,' ..
    '"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f},' ..
    '"rps":%.3f,"latency_us":{"p50":%.0f,"p90":%.0f,"p99":%.0f,"mean":%.1f,"max":%.0f}}\n',
    summary.requests, secs, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    secs > 0 and summary.requests / secs or 0,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""

# ------------------------------------------------------------------ process hygiene
_PROCS: list[subprocess.Popen] = []
_STACKS: list[Stack] = []


def spawn(cmd: list[str], log_path: Path, env: dict | None = None) -> subprocess.Popen:
    """A child in its own session (its own process group), logged to a file."""
    out = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        out.close()
    _PROCS.append(proc)
    return proc


def end(proc: subprocess.Popen, timeout: float = 10) -> None:
    end_all([proc], timeout)


def end_all(procs: list[subprocess.Popen], timeout: float = 10) -> None:
    """SIGTERM the children's process groups all at once; SIGKILL whatever lingers."""
    for proc in procs:
        if proc in _PROCS:
            _PROCS.remove(proc)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # also any grandchild left in the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def stop_stack(stack: Stack) -> None:
    if stack in _STACKS:
        _STACKS.remove(stack)
    stack.stop()


def cleanup() -> None:
    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
    for stack in list(_STACKS):
        with contextlib.suppress(Exception):
            stop_stack(stack)
    with contextlib.suppress(Exception):
        end_all(list(_PROCS), 5)


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


# ------------------------------------------------------------------ measurements
def rss_by_group(pgid: int) -> list[dict]:
    """VmRSS and RssAnon (MB) of every process in a process group, from /proc.

    RSS also counts the pages of mapped files (TensorFlow's libraries: over half a
    worker's RSS), shared between processes and varying with the page cache; RssAnon
    is the process's own memory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid:  # state, ppid, pgrp, ...
                continue
            status = (entry / "status").read_text()
        except (OSError, ValueError):
            continue
        rss = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.M)
        anon = re.search(r"^RssAnon:\s+(\d+)\s+kB", status, re.M)
        name = re.search(r"^Name:\s+(\S+)", status, re.M)
        if rss:
            found.append(
                {
                    "pid": int(entry.name),
                    "name": name.group(1) if name else "?",
                    "rss_mb": round(int(rss.group(1)) / 1024, 1),
                    "anon_mb": round(int(anon.group(1)) / 1024, 1) if anon else None,
                }
            )
    return sorted(found, key=lambda p: p["pid"])


def http(method: str, url: str, body: bytes | None = None, timeout: float = 10):
    """(status, parsed JSON or None); status 0 when the connection failed."""
    req = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def wait_until(check, timeout: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a process exited ({proc.returncode}) waiting for {what}")
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def post_many(url: str, bodies: list[bytes], threads: int = 8, timeout: float = 60) -> list:
    """POST each body to url/predict concurrently; [(status, json)] in order."""
    pool = ThreadPoolExecutor(threads)
    try:
        return list(pool.map(lambda b: http("POST", url + "/predict", b, timeout), bodies))
    finally:  # on Ctrl-C, drop the queued requests instead of waiting for them
        pool.shutdown(wait=False, cancel_futures=True)


def accuracy_check(url: str, bodies: list[bytes], labels: list[int]) -> dict:
    answers = post_many(url, bodies[:N_ACCURACY], threads=4)
    ok = [(a, y) for a, y in zip(answers, labels, strict=False) if a[0] == 200 and a[1]]
    right = sum(1 for (_, js), y in ok if js.get("digit") == y)
    statuses: dict[str, int] = {}
    for status, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "n": len(answers),
        "answered": len(ok),
        "correct": right,
        "accuracy": round(right / len(answers), 4) if answers else None,
        "statuses": statuses,
    }


def warm_up(url: str, bodies: list[bytes], n: int, threads: int = 8) -> dict:
    started = time.perf_counter()
    answers = post_many(url, [bodies[i % len(bodies)] for i in range(n)], threads, timeout=120)
    bad = sum(1 for status, _ in answers if status != 200)
    return {"requests": n, "non_200": bad, "seconds": round(time.perf_counter() - started, 2)}


def run_wrk(
    name: str,
    url: str,
    concurrency: int,
    duration: int,
    script: Path,
    body_dir: Path,
    n_bodies: int,
    log_dir: Path,
) -> dict:
    wrk = shutil.which("wrk") or "/usr/bin/wrk"
    threads = min(2, concurrency)
    cmd = [
        wrk,
        "-t",
        str(threads),
        "-c",
        str(concurrency),
        "-d",
        f"{duration}s",
        "--timeout",
        WRK_TIMEOUT,
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        str(body_dir),
        str(n_bodies),
    ]
    log_path = log_dir / f"wrk-{name}-c{concurrency}.log"
    proc = spawn(cmd, log_path)
    try:
        proc.wait(duration + 60)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"wrk hung (c={concurrency}); see {log_path}") from None
    finally:  # also on Ctrl-C: the servers can't shut down gracefully under load
        end(proc)
    text = log_path.read_text(errors="replace")
    line = next((ln for ln in reversed(text.splitlines()) if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result (exit {proc.returncode}):\n{text[-2000:]}")
    raw = json.loads(line[len("WRKJSON ") :])
    errors = raw["errors"]
    lat = raw["latency_us"]
    return {
        "concurrency": concurrency,
        "wrk_threads": threads,
        "requests": int(raw["requests"]),
        "duration_s": round(raw["duration_s"], 3),
        "rps": round(raw["rps"], 1),
        "p50_ms": round(lat["p50"] / 1000, 2),
        "p90_ms": round(lat["p90"] / 1000, 2),
        "p99_ms": round(lat["p99"] / 1000, 2),
        "mean_ms": round(lat["mean"] / 1000, 2),
        "max_ms": round(lat["max"] / 1000, 2),
        "errors": int(sum(errors.values())),
        "error_kinds": {k: int(v) for k, v in errors.items()},
    }


def cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: the process group
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def drive(name: str, url: str, ctx: dict) -> dict:
    levels = {}
    for c in ctx["concurrency"]:
        before = ctx["scrape"]() if ctx.get("scrape") else None
        groups = ctx.get("cpu_groups") or {}
        cpu_before = {role: sum(map(cpu_seconds, pgids)) for role, pgids in groups.items()}
        result = run_wrk(
            name,
            url,
            c,
            ctx["duration"],
            ctx["script"],
            ctx["body_dir"],
            ctx["n_bodies"],
            ctx["log_dir"],
        )
        if before is not None:
            result["server"] = metrics_delta(before, ctx["scrape"]())
        if groups and result.get("requests"):
            # CPU milliseconds each role spent per request answered: where the time goes.
            result["cpu_ms_per_request"] = {
                role: round((sum(map(cpu_seconds, pgids)) - cpu_before[role]) * 1000
                            / result["requests"], 3)
                for role, pgids in groups.items()
            }
        levels[str(c)] = result
        extra = ""
        if result.get("server"):
            s = result["server"]
            extra = (
                f"  [mean group {s['mean_group']}, mean batch {s['mean_batch']}, "
                f"hedges {s['hedges']}, error codes {s['error_codes'] or '-'}]"
            )
        if result.get("cpu_ms_per_request"):
            extra += "  CPU ms/request " + ", ".join(
                f"{role} {ms}" for role, ms in result["cpu_ms_per_request"].items())
        log(
            f"  {name:8s} c={c:<3d} {result['rps']:8.1f} req/s  p50 {result['p50_ms']:7.1f}  "
            f"p99 {result['p99_ms']:7.1f} ms  errors {result['errors']} "
            f"{_kinds(result['error_kinds'])}{extra}"
        )
    return levels


def _kinds(kinds: dict) -> str:
    shown = {k: v for k, v in kinds.items() if v}
    return "(" + ", ".join(f"{k} {v}" for k, v in shown.items()) + ")" if shown else ""


# ------------------------------------------------------------------ our /metrics
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)")


def scrape(url: str) -> dict:
    """Sums of the /metrics samples we care about, keyed by name (+ label for codes)."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    sums: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, labels, value = m.groups()
        try:
            v = float(value)
        except ValueError:
            continue
        if name == "digits_errors_total":
            code = re.search(r'code="([^"]*)"', labels or "")
            name = f"error:{code.group(1) if code else '?'}"
        elif name == "digits_http_requests_total" and 'route="/predict"' not in (labels or ""):
            continue
        elif name == "digits_http_requests_total":
            st = re.search(r'status="([^"]*)"', labels or "")
            name = f"status:{st.group(1) if st else '?'}"
        sums[name] = sums.get(name, 0.0) + v
    return sums


def metrics_delta(before: dict, after: dict) -> dict:
    def d(key):
        return after.get(key, 0.0) - before.get(key, 0.0)

    groups = d("digits_dispatch_group_size_count")
    batches = d("digits_worker_batch_size_count")
    codes = {k[6:]: int(d(k)) for k in after if k.startswith("error:") and d(k)}
    statuses = {k[7:]: int(d(k)) for k in after if k.startswith("status:") and d(k)}
    return {
        "tasks": int(groups),
        "mean_group": round(d("digits_dispatch_group_size_sum") / groups, 2) if groups else None,
        "mean_batch": round(d("digits_worker_batch_size_sum") / batches, 2) if batches else None,
        "hedges": int(d("digits_hedged_tasks_total")),
        "error_codes": codes,
        "statuses": statuses,
    }


# ------------------------------------------------------------------ the systems
def bench_model(args, ctx) -> dict:
    log("model: raw batched forward pass (subprocess, TF_NUM_INTRAOP_THREADS=2)")
    env = dict(
        os.environ,
        TF_NUM_INTRAOP_THREADS="2",
        TF_NUM_INTEROP_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=str(ROOT),
        MODEL_DIR=str(ctx["model_dir"]),
    )
    seconds = max(0.5, min(1.0, args.duration / 5))
    out = ctx["log_dir"] / "model-probe.json"
    cmd = [
        sys.executable,
        "-m",
        "tools.bench",
        "--model-probe",
        str(out),
        "--probe-seconds",
        str(seconds),
        "--probe-batches",
        "1,64,256",
    ]
    proc = spawn(cmd, ctx["log_dir"] / "model-probe.log", env)
    try:
        proc.wait(600)
    except subprocess.TimeoutExpired:
        end(proc)
        raise RuntimeError("the model probe hung") from None
    end(proc)
    if proc.returncode != 0 or not out.exists():
        tail = (ctx["log_dir"] / "model-probe.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"model probe failed ({proc.returncode}):\n{tail}")
    result = json.loads(out.read_text())
    for b, r in result["batches"].items():
        log(f"  batch {b:>4s}: {r['images_per_s']:9.0f} images/s (median of {r['repeats']})")
    return result


def model_probe(out: str, seconds: float, batches: list[int], repeats: int = 5) -> int:
    """Runs in the subprocess: load the current model as a worker does, time forward()."""
    import numpy as np

    from models.store import open_store
    from worker.predictor import configure_tensorflow, load_version

    configure_tensorflow()
    store = open_store()
    loaded = load_version(store, store.current())
    rng = np.random.default_rng(0)
    result = {"model_version": loaded.version, "tf_intra_op_threads": 2, "batches": {}}
    for b in batches:
        x = rng.integers(0, 256, (b, 28, 28, 1)).astype(np.float32)
        for _ in range(3):
            np.asarray(loaded.forward(x))  # trace and warm
        rates = []
        for _ in range(repeats):
            n, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                np.asarray(loaded.forward(x))
                n += b
            rates.append(n / (time.perf_counter() - started))
        result["batches"][str(b)] = {
            "images_per_s": round(statistics.median(rates), 1),
            "repeats": repeats,
            "all": [round(r, 1) for r in rates],
        }
    Path(out).write_text(json.dumps(result))
    return 0


def bench_baseline(args, ctx) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log(f"baseline: gunicorn -w {args.baseline_workers} tools.baseline_app:app on {url}")
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        MODEL_DIR=str(ctx["model_dir"]),
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    # --timeout 120: the lazy TensorFlow import of the first request blocks a sync worker
    # for tens of seconds on a busy machine, past gunicorn's default 30 s (it then kills
    # the worker mid-import, and the next one starts over).
    proc = spawn(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            str(args.baseline_workers),
            "-b",
            f"127.0.0.1:{port}",
            "--timeout",
            "120",
            "tools.baseline_app:app",
        ],
        ctx["log_dir"] / "baseline.log",
        env,
    )
    try:
        wait_until(
            lambda: http("GET", url + "/health", timeout=2)[0] == 200,
            60,
            "the baseline's /health",
            [proc],
        )
        # Each worker loads its model on its first request: 8 at once reach all of them.
        warm = warm_up(url, ctx["bodies"], max(40, 10 * args.baseline_workers))
        log(f"  warm-up: {warm}")
        acc = accuracy_check(url, ctx["bodies"], ctx["labels"])
        log(f"  accuracy on {acc['n']} drawings: {acc['accuracy']} (statuses {acc['statuses']})")
        levels = drive("baseline", url, ctx)
        rss = rss_by_group(proc.pid)
    finally:
        end(proc, 15)
    return {
        "url": url,
        "workers": args.baseline_workers,
        "warm_up": warm,
        "accuracy": acc,
        "levels": levels,
        "rss": {"processes": rss, "max_mb": _max_rss(rss)},
    }


def bench_noop(args, ctx) -> dict:
    web = int(ctx["env"].get("WEB_CONCURRENCY", os.environ.get("WEB_CONCURRENCY", 2)))
    threads = int(ctx["env"].get("GUNICORN_THREADS", os.environ.get("GUNICORN_THREADS", 32)))
    wthreads = ctx["env"].get("WORKER_THREADS", os.environ.get("WORKER_THREADS", 8))
    prefetch = ctx["env"].get("WORKER_PREFETCH", os.environ.get("WORKER_PREFETCH", 2))
    n_workers = args.noop_workers or args.workers
    redis = Stack(workers=0, log_dir=ctx["log_dir"] / "noop-redis")
    _STACKS.append(redis)
    procs = []
    try:
        redis.start_redis()
        env = redis.env(TF_CPP_MIN_LOG_LEVEL="2")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log(
            f"noop: gunicorn gthread -w {web} --threads {threads} + {n_workers} Celery "
            f"worker(s) (threads pool, {wthreads} threads) on {url}"
        )
        for i in range(1, n_workers + 1):
            procs.append(
                spawn(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "tools.noop_celery:celery",
                        "worker",
                        "--pool=threads",
                        f"--concurrency={wthreads}",
                        f"--prefetch-multiplier={prefetch}",
                        "-Q",
                        "bench-noop",
                        "-n",
                        f"noop{i}@%h",
                        "--loglevel=WARNING",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ],
                    ctx["log_dir"] / f"noop-worker{i}.log",
                    env,
                )
            )
        api = spawn(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-k",
                "gthread",
                "-w",
                str(web),
                "--threads",
                str(threads),
                "--backlog",
                "2048",
                "--keep-alive",
                "5",
                "-b",
                f"127.0.0.1:{port}",
                "tools.noop_celery:app",
            ],
            ctx["log_dir"] / "noop-api.log",
            env,
        )
        procs.append(api)
        body = ctx["bodies"][0]
        wait_until(
            lambda: http("POST", url + "/predict", body, timeout=6)[0] == 200,
            90,
            "a no-op round trip",
            procs,
        )
        warm = warm_up(url, ctx["bodies"], 200)
        log(f"  warm-up: {warm}")
        levels = drive("noop", url, ctx)
        api_rss = rss_by_group(api.pid)
        worker_rss = [p for w in procs[:-1] for p in rss_by_group(w.pid)]
    finally:
        # The API first, while the workers still answer its in-flight requests.
        end_all(procs[-1:], 15)
        end_all(procs[:-1], 15)
        stop_stack(redis)
    return {
        "url": url,
        "web_concurrency": web,
        "gunicorn_threads": threads,
        "celery_workers": n_workers,
        "worker_threads": int(wthreads),
        "warm_up": warm,
        "levels": levels,
        "rss": {
            "api": api_rss,
            "workers": worker_rss,
            "api_max_mb": _max_rss(api_rss),
            "worker_max_mb": _max_rss(worker_rss),
        },
    }


def bench_ours(args, ctx) -> dict:
    env = {"RATE_LIMIT": "", **ctx["env"]}
    stack = Stack(
        workers=args.workers, model_dir=ctx["model_dir"], env=env, log_dir=ctx["log_dir"] / "ours"
    )
    _STACKS.append(stack)
    log(f"ours: Stack(workers={args.workers}) env {env}")
    try:
        stack.start(wait=300)
        log(f"  up on {stack.url}")
        warm = warm_up(stack.url, ctx["bodies"], 300)
        log(f"  warm-up: {warm}")
        acc = accuracy_check(stack.url, ctx["bodies"], ctx["labels"])
        log(f"  accuracy on {acc['n']} drawings: {acc['accuracy']} (statuses {acc['statuses']})")
        cpu_groups = {
            "api": [stack.api.pid],
            "workers": [proc.pid for proc in stack.workers.values()],
            "redis": [stack.redis.pid] if stack.redis else [],
        }
        ctx = dict(ctx, scrape=lambda: scrape(stack.url), cpu_groups=cpu_groups)
        levels = drive("ours", stack.url, ctx)
        api_rss = rss_by_group(stack.api.pid)
        worker_rss = [p for proc in stack.workers.values() for p in rss_by_group(proc.pid)]
        alive = {name: proc.poll() is None for name, proc in stack.processes()}
        ready = http("GET", stack.url + "/ready", timeout=5)
        logs = log_findings(stack.log_dir)
    finally:
        stop_stack(stack)
    return {
        "url": stack.url,
        "workers": args.workers,
        "env": env,
        "warm_up": warm,
        "accuracy": acc,
        "levels": levels,
        "alive_after": alive,
        "ready_after": {"status": ready[0], "body": ready[1]},
        "log_findings": logs,
        "log_dir": str(stack.log_dir),
        "rss": {
            "api": api_rss,
            "workers": worker_rss,
            "api_max_mb": _max_rss(api_rss),
            "worker_max_mb": _max_rss(worker_rss),
        },
    }


def log_findings(folder: Path) -> dict:
    """Counts of worrying lines in our stack's logs (hedges, errors, tracebacks)."""
    patterns = {
        "hedged": "sending it again",
        "error": " ERROR",
        "warning": " WARNING",
        "traceback": "Traceback",
        "worker_timeout": "WORKER TIMEOUT",
    }
    found = {}
    for path in sorted(folder.glob("*.log")):
        text = path.read_text(errors="replace")
        counts = {k: text.count(p) for k, p in patterns.items() if p in text}
        if counts:
            found[path.stem] = counts
    return found


def _max_rss(procs: list[dict], key: str = "rss_mb"):
    return max((p[key] for p in procs if p[key] is not None), default=None)


# ------------------------------------------------------------------ report
def report(results: dict, concurrency: list[int]) -> tuple[str, dict]:
    lines = []
    http_systems = [s for s in HTTP_SYSTEMS if s in results]
    if http_systems:
        lines.append(
            f"{'system':10s} {'conc':>5s} {'req/s':>9s} {'p50 ms':>9s} {'p90 ms':>9s} "
            f"{'p99 ms':>9s} {'errors':>7s}"
        )
        for s in http_systems:
            for c in concurrency:
                r = results[s]["levels"].get(str(c))
                if r:
                    lines.append(
                        f"{s:10s} {c:5d} {r['rps']:9.1f} {r['p50_ms']:9.1f} "
                        f"{r['p90_ms']:9.1f} {r['p99_ms']:9.1f} {r['errors']:7d}"
                    )
    ratios = {}
    if "ours" in results:
        ours = results["ours"]["levels"]
        for other in ("baseline", "noop"):
            if other not in results:
                continue
            theirs = results[other]["levels"]
            ratios[other] = {}
            for c in concurrency:
                mine, their = ours.get(str(c), {}).get("rps"), theirs.get(str(c), {}).get("rps")
                ratios[other][str(c)] = round(mine / their, 2) if mine and their else None
        if ratios:
            lines.append("")
            lines.append("our req/s divided by theirs, per concurrency:")
            for other, per in ratios.items():
                shown = "  ".join(f"c{c}: {v if v is not None else '-'}" for c, v in per.items())
                lines.append(f"  vs {other:9s} {shown}")
    if "model" in results:
        lines.append("")
        best = results["model"]["batches"]
        lines.append(
            "raw model (traced graph, 2 TF threads): "
            + ", ".join(f"batch {b}: {r['images_per_s']:.0f} images/s" for b, r in best.items())
        )
    rss_lines = []
    for s in http_systems:
        rss = results[s]["rss"]
        if s == "baseline":
            rss_lines.append(
                f"  baseline: max {rss['max_mb']} MB per process "
                f"({len(rss['processes'])} processes)"
            )
        else:
            rss_lines.append(
                f"  {s}: API max {rss['api_max_mb']} MB per process "
                f"({len(rss['api'])} processes), Celery worker max "
                f"{rss['worker_max_mb']} MB ({len(rss['workers'])} processes); RssAnon max: "
                f"API {_max_rss(rss['api'], 'anon_mb')} MB, "
                f"worker {_max_rss(rss['workers'], 'anon_mb')} MB"
            )
    if rss_lines:
        lines += ["", "RSS after the load:", *rss_lines]
    for s in ("baseline", "ours"):
        if s in results:
            a = results[s]["accuracy"]
            lines.append(
                f"accuracy on {a['n']} canvas drawings, {s}: {a['accuracy']} "
                f"(statuses {a['statuses']})"
            )
    return "\n".join(lines), ratios


def summary(results: dict, concurrency: list[int]) -> dict:
    ours = results.get("ours", {}).get("levels", {})

    def level(c, key):
        return ours.get(str(c), {}).get(key)

    def best(system):
        levels = results.get(system, {}).get("levels", {})
        return max((r["rps"] for r in levels.values()), default=None)

    baseline_best = best("baseline")
    c32 = level(32, "rps") if 32 in concurrency else best("ours")
    model = results.get("model", {}).get("batches", {})
    ours_rss = results.get("ours", {}).get("rss", {})
    return {
        "c32_rps": level(32, "rps"),
        "c32_p99_ms": level(32, "p99_ms"),
        "c32_errors": level(32, "errors"),
        "c1_p50_ms": level(1, "p50_ms"),
        "c64_rps": level(64, "rps"),
        "baseline_best_rps": baseline_best,
        "ratio_vs_baseline": round(c32 / baseline_best, 2) if c32 and baseline_best else None,
        "noop_ceiling_rps": best("noop"),
        "model_images_per_s": max((r["images_per_s"] for r in model.values()), default=None),
        "api_rss_mb": ours_rss.get("api_max_mb"),
        "worker_rss_mb": ours_rss.get("worker_max_mb"),
    }


def plot(results: dict, concurrency: list[int], path: Path) -> bool:
    systems = [s for s in HTTP_SYSTEMS if s in results]
    if not systems:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in systems:
        cs = [c for c in concurrency if str(c) in results[s]["levels"]]
        rows = [results[s]["levels"][str(c)] for c in cs]
        label = LABELS[s].format(workers=results[s].get("workers"))
        left.plot(cs, [r["rps"] for r in rows], marker="o", label=label)
        right.plot(cs, [max(r["p99_ms"], 0.01) for r in rows], marker="o", label=label)
    for ax, title, ylabel in (
        (left, "Throughput", "requests/s"),
        (right, "Tail latency", "p99 latency (ms)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrency, [str(c) for c in concurrency])
        ax.set_xlabel("concurrent connections (wrk)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=8)
    left.set_ylim(bottom=0)
    title = "POST /predict with canvas-drawing PNGs (wrk)"
    model = results.get("model", {}).get("batches")
    if model:  # a line on the axis would flatten the curves: say it in the title
        best = max(model.items(), key=lambda kv: kv[1]["images_per_s"])
        title += f"; raw model alone: {best[1]['images_per_s']:.0f} images/s at batch {best[0]}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------ main
def log(message: str) -> None:
    print(message, flush=True)


def make_bodies(data_dir: str, n: int, folder: Path, seed: int = 0):
    from tools.canvas_set import make_drawings
    from trainer.data import load

    mnist = load(data_dir)
    drawings = make_drawings(mnist.x_test, mnist.y_test, n, seed)
    bodies = []
    for i, (png, _) in enumerate(drawings):
        body = json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode()})
        (folder / f"{i:04d}.json").write_text(body)
        bodies.append(body.encode())
    return bodies, [label for _, label in drawings]


def parse_only(values: list[str] | None) -> list[str]:
    if not values:
        return list(SYSTEMS)
    chosen = {v.strip() for value in values for v in value.split(",") if v.strip()}
    unknown = chosen - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"--only: unknown {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    return [s for s in SYSTEMS if s in chosen]


def parse_env(values: list[str] | None) -> dict:
    env = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env wants KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", help="MNIST folder (IDX .gz files), for the drawings")
    p.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WORKERS", 2)),
        help="Celery workers of our stack (default $WORKERS or 2)",
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per load level (wrk -d)")
    p.add_argument("--concurrency", default="1,8,32,64", help="comma list of wrk -c levels")
    p.add_argument(
        "--only",
        action="append",
        help="subset: ours|baseline|noop|model (repeatable or comma list)",
    )
    p.add_argument("--out", default="artifacts/bench", help="folder for bench.json, bench.png")
    p.add_argument(
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="environment for our stack (repeatable), e.g. COALESCE=0",
    )
    p.add_argument(
        "--model-dir",
        default=os.environ.get("MODEL_DIR"),
        help="model store every system loads (default $MODEL_DIR, else a fresh copy of the "
        "shipped default model: a long-lived var/models may hold an older one)",
    )
    p.add_argument("--baseline-workers", type=int, default=4, help="gunicorn -w of the baseline")
    p.add_argument(
        "--noop-workers",
        type=int,
        default=0,
        help="Celery worker processes for the no-op (default: as --workers)",
    )
    p.add_argument("--model-probe", help=argparse.SUPPRESS)
    p.add_argument("--probe-seconds", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--probe-batches", default="1,64,256", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.model_probe:  # the subprocess of step 1
        return model_probe(
            args.model_probe, args.probe_seconds, [int(b) for b in args.probe_batches.split(",")]
        )

    only = parse_only(args.only)
    env = parse_env(args.env)
    try:
        concurrency = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    except ValueError:
        raise SystemExit(
            f"--concurrency wants a comma list of integers: {args.concurrency}"
        ) from None
    if not concurrency or min(concurrency) < 1:
        raise SystemExit("--concurrency: every level must be at least 1")
    if args.duration < 1:
        raise SystemExit("--duration: at least 1 second")
    needs_http = any(s in only for s in HTTP_SYSTEMS)
    if needs_http and not args.data:
        raise SystemExit("--data (the MNIST folder) is needed for the request bodies")
    if needs_http and not (shutil.which("wrk") or Path("/usr/bin/wrk").exists()):
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")

    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    atexit.register(cleanup)
    tmp = Path(tempfile.mkdtemp(prefix="digits-bench-"))
    log_dir = tmp / "logs"
    body_dir = tmp / "bodies"
    log_dir.mkdir()
    body_dir.mkdir()
    script = tmp / "bodies.lua"
    script.write_text(WRK_LUA)
    started = time.time()
    results: dict = {}
    failures: dict = {}
    ctx = {
        "concurrency": concurrency,
        "duration": args.duration,
        "script": script,
        "body_dir": body_dir,
        "log_dir": log_dir,
        "env": env,
        "model_dir": Path(args.model_dir or log_dir.parent / "models").resolve(),
    }
    load_before = os.getloadavg()
    log(
        f"bench: {', '.join(only)}; concurrency {concurrency}, {args.duration} s each; "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f}; logs in {log_dir}"
    )
    try:
        if needs_http:
            t0 = time.perf_counter()
            bodies, labels = make_bodies(args.data, N_BODIES, body_dir)
            ctx.update(bodies=bodies, labels=labels, n_bodies=len(bodies))
            size = statistics.median(len(b) for b in bodies)
            log(
                f"{len(bodies)} canvas-drawing bodies (median {size / 1024:.1f} KiB) in "
                f"{time.perf_counter() - t0:.1f} s"
            )
        # Make sure the store exists (seeded from the shipped model) before anyone loads it.
        from models.store import open_store

        if open_store(ctx["model_dir"]).current() is None:
            raise SystemExit(f"no model in {ctx['model_dir']}")
        runners = {
            "model": bench_model,
            "baseline": bench_baseline,
            "noop": bench_noop,
            "ours": bench_ours,
        }
        for system in only:
            try:
                results[system] = runners[system](args, ctx)
            except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
                failures[system] = f"{type(exc).__name__}: {exc}"
                log(f"{system}: FAILED, going on without it: {exc}")
    except KeyboardInterrupt:
        log("\ninterrupted: stopping everything")
        cleanup()
        return 130
    finally:
        cleanup()

    table, ratios = report(results, concurrency)
    line = summary(results, concurrency)
    load_after = os.getloadavg()
    doc = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after],
        },
        "config": {
            "systems": only,
            "concurrency": concurrency,
            "duration_s": args.duration,
            "workers": args.workers,
            "env": env,
            "wrk_timeout": WRK_TIMEOUT,
            "bodies": ctx.get("n_bodies"),
            "model_dir": str(ctx["model_dir"]),
        },
        "definitions": {
            "rps": "wrk requests completed / duration (non-2xx answers included; see errors)",
            "errors": "wrk connect+read+write+timeout errors plus non-2xx statuses",
            "ratio_vs_baseline": (
                "our req/s at c=32 (our best if c=32 was not run) / "
                "the baseline's best req/s at any level"
            ),
            "noop_ceiling_rps": "the no-op Celery round trip's best req/s at any level",
            "model_images_per_s": "best median images/s of the raw forward pass over batches",
            "rss": "VmRSS per process after the load; *_rss_mb is the largest process",
        },
        "results": results,
        "ratios": ratios,
        "failures": failures,
        "summary": line,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(doc, indent=1) + "\n")
    plotted = plot(results, concurrency, out / "bench.png")
    shutil.rmtree(body_dir, ignore_errors=True)
    log("")
    log(table)
    log("")
    log(
        f"wrote {out / 'bench.json'}"
        + (f" and {out / 'bench.png'}" if plotted else "")
        + f"; logs in {log_dir}"
    )
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
