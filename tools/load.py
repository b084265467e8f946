"""Load for the developer tools and the fault tests.

Request bodies (MNIST test digits redrawn as canvas PNGs by tools/canvas_set, as the
page sends them), a plain HTTP call, many requests at once (warm-up, accuracy), client
threads on keep-alive sessions until stopped, and wrk driven at one concurrency.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tools.procs import end, spawn

N_ACCURACY = 50
WRK_TIMEOUT = "5s"


# -- bodies ------------------------------------------------------------------------------------
def image_body(value: str) -> bytes:
    """A /predict body: ``{"image": value}``."""
    return json.dumps({"image": value}).encode()


def png_body(png: bytes) -> bytes:
    return image_body("data:image/png;base64," + base64.b64encode(png).decode())


def drawing_bodies(data_dir: str, n: int, seed: int = 0) -> list[tuple[bytes, int]]:
    """(body, label) for ``n`` canvas drawings of MNIST test digits."""
    from tools.canvas_set import make_drawings
    from trainer.data import load

    mnist = load(data_dir)
    return [(png_body(png), label)
            for png, label in make_drawings(mnist.x_test, mnist.y_test, n, seed)]


# -- requests ----------------------------------------------------------------------------------
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


# -- clients -----------------------------------------------------------------------------------
class Clients:
    """``n`` threads, each with its own keep-alive ``requests.Session``, sending until
    stopped. ``client(index)`` makes each thread's sender: a callable that sends one
    request on the session it is given and returns its record, which goes to
    ``records`` (in the order they finish). ``pause(record)``: seconds to wait before
    the next request."""

    def __init__(self, n: int, client: Callable[[int], Callable], pause=None, name="client"):
        self.records: list = []
        self.stopped = threading.Event()
        self._pause = pause
        self._threads = [threading.Thread(target=self._run, args=(client(i),), daemon=True,
                                          name=f"{name}-{i}") for i in range(n)]

    def start(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 35) -> None:
        self.stopped.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout)

    def __enter__(self) -> Clients:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self, send: Callable) -> None:
        import requests

        with requests.Session() as session:
            while not self.stopped.is_set():
                record = send(session)
                self.records.append(record)  # list.append is atomic
                pause = self._pause(record) if self._pause else 0
                if pause:
                    self.stopped.wait(pause)

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.records) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        if len(self.records) < count:
            raise TimeoutError(f"only {len(self.records)} requests in {timeout} s")


@dataclass(frozen=True)
class Answer:
    """One /predict answer as a client saw it."""

    t: float  # time.time() when it came back
    status: int  # 0: no HTTP answer at all
    body: object  # the JSON answer, else the start of the text or the exception

    @property
    def version(self) -> int | None:
        return self.body.get("model_version") if isinstance(self.body, dict) else None


def predict_clients(url: str, body: dict, n: int = 4, pause: float = 0.0,
                    timeout: float = 15) -> Clients:
    """``n`` clients POSTing ``body`` to ``url``/predict until stopped, ``pause`` seconds
    apart each; every answer goes to ``records`` as an ``Answer``."""
    import requests

    def send(session) -> Answer:
        try:
            r = session.post(url + "/predict", json=body, timeout=timeout)
        except requests.RequestException as exc:
            return Answer(time.time(), 0, f"{type(exc).__name__}: {exc}")
        try:
            answer = r.json()
        except ValueError:
            answer = r.text[:200]
        return Answer(time.time(), r.status_code, answer)

    return Clients(n, lambda _: send, pause=(lambda _: pause) if pause else None,
                   name="predict")


# -- wrk -------------------------------------------------------------------------------------------
# wrk (LuaJIT; every wrk thread runs its own Lua state). setup() runs in the main
# state and numbers the threads so they start at different bodies; init() loads the
# bodies (args: folder, count, path: /predict by default) and pre-formats one request
# each; request() rotates.
# done() prints one machine-readable line that run_wrk() parses.
WRK_LUA = r"""
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_no", counter)
end

function init(args)
  local dir, n, path = args[1], tonumber(args[2]), args[3] or "/predict"
  local headers = {["Content-Type"] = "application/json"}
  reqs = {}
  for i = 0, n - 1 do
    local f = assert(io.open(string.format("%s/%04d.json", dir, i), "rb"))
    local body = f:read("*a")
    f:close()
    reqs[#reqs + 1] = wrk.format("POST", path, headers, body)
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


def wrk_binary() -> str | None:
    return shutil.which("wrk") or ("/usr/bin/wrk" if Path("/usr/bin/wrk").exists() else None)


def write_wrk_inputs(bodies: list[bytes], folder: Path) -> Path:
    """The bodies as folder/NNNN.json and the Lua script beside them; returns the script."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, body in enumerate(bodies):
        (folder / f"{i:04d}.json").write_bytes(body)
    script = folder.parent / "bodies.lua"
    script.write_text(WRK_LUA)
    return script


def run_wrk(name: str, url: str, concurrency: int, duration: int, script: Path,
            body_dir: Path, n_bodies: int, log_dir: Path, path: str = "/predict") -> dict:
    """wrk against url + path for ``duration`` s at ``concurrency`` connections."""
    threads = min(2, concurrency)
    cmd = [
        wrk_binary() or "wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{duration}s",
        "--timeout", WRK_TIMEOUT, "--latency", "-s", str(script), url, "--",
        str(body_dir), str(n_bodies), path,
    ]
    log_path = log_dir / f"wrk-{name}-c{concurrency}.log"
    proc = spawn(cmd, log_path)
    try:
        proc.wait(duration + 60)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"wrk hung (c={concurrency}); see {log_path}") from None
    finally:  # also on Ctrl-C: the servers can't shut down gracefully under load
        end([proc])
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
