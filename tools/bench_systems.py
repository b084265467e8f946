"""The HTTP systems ``tools.bench`` compares, each started, warmed up, checked for
accuracy, driven by wrk at each concurrency and measured (RSS, CPU per request, our
/metrics), then stopped: the original design's baseline, the no-op Celery round trip,
and our stack.

Every runner takes the parsed arguments and the run's context (a dict: concurrency,
duration, bodies, labels, the wrk script and body folder, log_dir, model_dir, the stack's
env and the Reaper that ends what is left on Ctrl-C) and returns its part of bench.json.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.error
import urllib.request
from functools import partial

from digits.stack import free_port
from tools.load import accuracy_check, http, run_wrk, warm_up
from tools.procs import cpu_seconds, log_counts, max_rss, rss_by_group, stack_settings, wait_until

log = partial(print, flush=True)
# Worrying lines in our stack's logs.
LOG_PATTERNS = {
    "hedged": "sending it again",
    "error": " ERROR",
    "warning": " WARNING",
    "traceback": "Traceback",
    "worker_timeout": "WORKER TIMEOUT",
}


# -- driving one system -----------------------------------------------------------------------
def drive(name: str, url: str, ctx: dict) -> dict:
    """wrk at every concurrency; with ``scrape`` and ``cpu_groups`` in ctx, also what our
    /metrics counted and the CPU each role spent per request."""
    levels = {}
    for c in ctx["concurrency"]:
        before = ctx["scrape"]() if ctx.get("scrape") else None
        groups = ctx.get("cpu_groups") or {}
        cpu_before = {role: cpu_seconds(pgids) for role, pgids in groups.items()}
        result = run_wrk(name, url, c, ctx["duration"], ctx["script"], ctx["body_dir"],
                         ctx["n_bodies"], ctx["log_dir"])
        if before is not None:
            result["server"] = metrics_delta(before, ctx["scrape"]())
        if groups and result.get("requests"):
            # CPU milliseconds each role spent per request answered: where the time goes.
            result["cpu_ms_per_request"] = {
                role: round((cpu_seconds(pgids) - cpu_before[role]) * 1000
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


# -- our /metrics -----------------------------------------------------------------------------
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


def _api_and_workers(api_rss: list[dict], worker_rss: list[dict]) -> dict:
    return {
        "api": api_rss,
        "workers": worker_rss,
        "api_max_mb": max_rss(api_rss),
        "worker_max_mb": max_rss(worker_rss),
    }


# -- the systems --------------------------------------------------------------------------------
def bench_baseline(args, ctx) -> dict:
    """tools/baseline_app.py under gunicorn -w N (sync): one model.predict per request."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log(f"baseline: gunicorn -w {args.baseline_workers} tools.baseline_app:app on {url}")
    env = dict(os.environ, MODEL_DIR=str(ctx["model_dir"]), TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONUNBUFFERED="1")
    # --timeout 120: the lazy TensorFlow import of the first request blocks a sync worker
    # for tens of seconds on a busy machine, past gunicorn's default 30 s (it then kills
    # the worker mid-import, and the next one starts over).
    cmd = [sys.executable, "-m", "gunicorn", "-w", str(args.baseline_workers),
           "-b", f"127.0.0.1:{port}", "--timeout", "120", "tools.baseline_app:app"]
    reaper = ctx["reaper"]
    proc = reaper.spawn(cmd, ctx["log_dir"] / "baseline.log", env)
    try:
        wait_until(lambda: http("GET", url + "/health", timeout=2)[0] == 200, 60,
                   "the baseline's /health", procs=[proc])
        # Each worker loads its model on its first request: 8 at once reach all of them.
        warm = warm_up(url, ctx["bodies"], max(40, 10 * args.baseline_workers))
        log(f"  warm-up: {warm}")
        acc = accuracy_check(url, ctx["bodies"], ctx["labels"])
        log(f"  accuracy on {acc['n']} drawings: {acc['accuracy']} (statuses {acc['statuses']})")
        levels = drive("baseline", url, ctx)
        rss = rss_by_group(proc.pid)
    finally:
        reaper.end([proc], 15)
    return {
        "url": url,
        "workers": args.baseline_workers,
        "warm_up": warm,
        "accuracy": acc,
        "levels": levels,
        "rss": {"processes": rss, "max_mb": max_rss(rss)},
    }


def bench_noop(args, ctx) -> dict:
    """Flask (gthread, our API's processes and threads) sending a no-op Celery task over
    Redis and waiting for it: the round trip's ceiling."""
    s = stack_settings(ctx["env"])
    web, threads = s.WEB_CONCURRENCY, s.GUNICORN_THREADS
    wthreads, prefetch = s.WORKER_THREADS, s.WORKER_PREFETCH
    n_workers = args.noop_workers or args.workers
    reaper = ctx["reaper"]
    redis = reaper.stack(workers=0, log_dir=ctx["log_dir"] / "noop-redis")
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
            cmd = [sys.executable, "-m", "celery", "-A", "tools.noop_celery:celery", "worker",
                   "--pool=threads", f"--concurrency={wthreads}",
                   f"--prefetch-multiplier={prefetch}", "-Q", "bench-noop", "-n", f"noop{i}@%h",
                   "--loglevel=WARNING", "--without-gossip", "--without-mingle",
                   "--without-heartbeat"]
            procs.append(reaper.spawn(cmd, ctx["log_dir"] / f"noop-worker{i}.log", env))
        cmd = [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", str(web),
               "--threads", str(threads), "--backlog", "2048", "--keep-alive", "5",
               "-b", f"127.0.0.1:{port}", "tools.noop_celery:app"]
        api = reaper.spawn(cmd, ctx["log_dir"] / "noop-api.log", env)
        procs.append(api)
        body = ctx["bodies"][0]
        wait_until(lambda: http("POST", url + "/predict", body, timeout=6)[0] == 200, 90,
                   "a no-op round trip", procs=procs)
        warm = warm_up(url, ctx["bodies"], 200)
        log(f"  warm-up: {warm}")
        levels = drive("noop", url, ctx)
        api_rss = rss_by_group(api.pid)
        worker_rss = [p for w in procs[:-1] for p in rss_by_group(w.pid)]
    finally:
        # The API first, while the workers still answer its in-flight requests.
        reaper.end(procs[-1:], 15)
        reaper.end(procs[:-1], 15)
        reaper.stop(redis)
    return {
        "url": url,
        "web_concurrency": web,
        "gunicorn_threads": threads,
        "celery_workers": n_workers,
        "worker_threads": wthreads,
        "warm_up": warm,
        "levels": levels,
        "rss": _api_and_workers(api_rss, worker_rss),
    }


def bench_ours(args, ctx, name: str = "ours", store_env: dict | None = None) -> dict:
    """digits.stack.Stack with RATE_LIMIT off (and --env, then store_env, on top), warmed
    up first."""
    env = {"RATE_LIMIT": "", **ctx["env"], **(store_env or {})}
    reaper = ctx["reaper"]
    stack = reaper.stack(workers=args.workers, model_dir=ctx["model_dir"], env=env,
                         log_dir=ctx["log_dir"] / name)
    log(f"{name}: Stack(workers={args.workers}) env {env}")
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
        levels = drive(name, stack.url, ctx)
        api_rss = rss_by_group(stack.api.pid)
        worker_rss = [p for proc in stack.workers.values() for p in rss_by_group(proc.pid)]
        alive = {name: proc.poll() is None for name, proc in stack.processes()}
        ready = http("GET", stack.url + "/ready", timeout=5)
        logs = log_counts(stack.log_dir, LOG_PATTERNS)
    finally:
        strays = reaper.stop(stack)
        if strays:
            log(f"  still running after the stack stopped (killed): {strays}")
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
        "rss": _api_and_workers(api_rss, worker_rss),
    }


def bench_ours_s3(args, ctx) -> dict:
    """Our stack again, its models in a bucket of a real S3 server (SeaweedFS, started
    here; the workers seed it and download into an empty MODEL_CACHE): the request path
    must not touch the store, so its figures should match ``ours``."""
    from tests.s3server import S3Server

    folder = ctx["log_dir"] / "s3"
    with S3Server(folder) as server:
        log(f"ours_s3: SeaweedFS on {server.endpoint}")
        store_env = {**server.env(), "MODEL_STORE": server.url("registry"),
                     "MODEL_CACHE": str(folder / "cache")}
        result = bench_ours(args, ctx, "ours_s3", store_env)
    result["store"] = store_env["MODEL_STORE"]
    return result


RUNNERS = {"baseline": bench_baseline, "noop": bench_noop, "ours": bench_ours,
           "ours_s3": bench_ours_s3}
