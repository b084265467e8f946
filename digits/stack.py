"""The whole topology as local processes: Redis, Celery workers, gunicorn.

``make up`` runs ``python -m digits.stack``, which starts the stack and then
supervises it (``Supervisor``): a process that dies is restarted with back-off, as
compose's ``restart: unless-stopped`` would, and only Ctrl-C/SIGTERM stops the
stack. The tests, ``make bench`` and ``make soak`` use the same ``Stack`` class,
so they exercise exactly what users run. These are the same entry commands
docker-compose.yml gives its services.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

from digits.settings import ROOT, child_environment, is_set, load_or_exit

# The services' commands, shared with docker-compose.yml (a test checks they match).
WORKER_CMD = ["python", "-m", "worker"]
API_CMD = ["gunicorn", "-c", "api/gunicorn_conf.py", "api:create_app()"]
TRAINER_CMD = ["python", "-m", "trainer", "train"]
# The feedback database's schema (Alembic), migrated before the API starts.
MIGRATE_CMD = ["python", "-m", "digits.feedback_db", "upgrade"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _python_cmd(cmd: list[str]) -> list[str]:
    """Run a service command with this interpreter (the venv's), whatever is on PATH."""
    if cmd[0] == "python":
        return [sys.executable, *cmd[1:]]
    return [sys.executable, "-m", *cmd]


class Stack:
    def __init__(self, workers: int = 2, port: int | None = None, redis_url: str | None = None,
                 model_dir: str | os.PathLike | None = None, env: dict | None = None,
                 log_dir: str | os.PathLike | None = None, quiet: bool = True):
        self.n_workers = workers
        self.port = port or free_port()
        self.external_redis = redis_url
        self.redis_port = None if redis_url else free_port()
        self.redis_url = redis_url or f"redis://127.0.0.1:{self.redis_port}/0"
        # The model store: a folder or an s3:// URL (MODEL_STORE, else MODEL_DIR).
        settings = load_or_exit()
        self.model_store = str(model_dir or settings.MODEL_STORE or settings.MODEL_DIR)
        self.model_dir = self.model_store
        self.extra_env = env or {}
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="digits-logs-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.quiet = quiet
        self.redis: subprocess.Popen | None = None
        self.workers: dict[int, subprocess.Popen] = {}
        self.api: subprocess.Popen | None = None
        self.started_with: dict[str, dict] = {}  # name -> env overrides, for restarts

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **more) -> dict:
        return child_environment(**{
            "REDIS_URL": self.redis_url, "MODEL_STORE": self.model_store, "PORT": self.port,
            "HOST": "127.0.0.1", "PYTHONPATH": ROOT, "PYTHONUNBUFFERED": 1,
            **self.extra_env, **more})

    def _spawn(self, name: str, cmd: list[str], **env) -> subprocess.Popen:
        if not self.quiet:
            return subprocess.Popen(cmd, cwd=ROOT, env=self.env(**env),
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        with open(self.log_dir / f"{name}.log", "ab") as out:  # the child keeps its own fd
            return subprocess.Popen(
                cmd, cwd=ROOT, env=self.env(**env), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    # -- parts -------------------------------------------------------------------------
    def start_redis(self) -> subprocess.Popen | None:
        if self.external_redis:
            return None
        binary = shutil.which("redis-server")
        if not binary:
            raise SystemExit(
                "redis-server was not found. Install it (Debian/Ubuntu: "
                "'sudo apt-get install redis-server'; macOS: 'brew install redis'), "
                "or point REDIS_URL at a running Redis.")
        self.redis = self._spawn("redis", [
            binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
            "--dir", str(self.log_dir),
        ])
        self._wait(lambda: self._redis_ping(), 10, "redis-server to answer PING")
        return self.redis

    def stop_redis(self, kill: bool = False) -> None:
        if self.redis:
            self._end(self.redis, 5, kill)
            self.redis = None

    def _redis_ping(self) -> bool:
        host, port = "127.0.0.1", self.redis_port
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def seed_models(self) -> None:
        from digits.settings import load
        from models.store import open_store

        # With the children's settings: an S3 store's endpoint and keys may be in env=.
        store = open_store(self.model_store, settings=load(environ=self.env()))
        if store.current() is None:
            raise SystemExit(f"no model in {self.model_store} and none shipped to seed it with")

    def start_worker(self, index: int, **env) -> subprocess.Popen:
        self.started_with[f"worker{index}"] = env
        proc = self._spawn(f"worker{index}", [*_python_cmd(WORKER_CMD), "-n",
                                              f"worker{index}@%h"], **env)
        self.workers[index] = proc
        return proc

    def stop_worker(self, index: int, kill: bool = False) -> None:
        proc = self.workers.pop(index, None)
        if proc:
            self._end(proc, 15, kill)

    def migrate(self) -> None:
        """The feedback database's schema, to head (as compose's db-migrate service)."""
        done = subprocess.run(_python_cmd(MIGRATE_CMD), cwd=ROOT, env=self.env(),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode:
            raise RuntimeError(f"feedback database migration failed:\n{done.stderr[-2000:]}")

    def start_api(self, **env) -> subprocess.Popen:
        self.started_with["api"] = env
        self.api = self._spawn("api", _python_cmd(API_CMD), **env)
        return self.api

    def stop_api(self) -> None:
        if self.api:
            self._end(self.api, 15)
            self.api = None

    # -- whole ----------------------------------------------------------------------------
    def start(self, wait: float = 120) -> Stack:
        try:
            self.seed_models()
            self.start_redis()
            for i in range(1, self.n_workers + 1):
                self.start_worker(i)
            self.migrate()
            self.start_api()
            if wait:
                self.wait_ready(wait)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 120, workers: int | None = None) -> None:
        want = self.n_workers if workers is None else workers

        def ready():
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=2) as r:
                    import json

                    return json.load(r).get("workers_serving", 0) >= want
            except (urllib.error.URLError, OSError, ValueError):
                return False

        self._wait(ready, timeout, f"/ready with {want} workers serving")

    def _wait(self, check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            for name, proc in self.processes():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for "
                                       f"{what}:\n{self.tail(name)}")
            time.sleep(0.1)
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}\n{self.tail('api')}")

    def processes(self):
        if self.redis:
            yield "redis", self.redis
        for i, proc in self.workers.items():
            yield f"worker{i}", proc
        if self.api:
            yield "api", self.api

    def tail(self, name: str, lines: int | None = 40) -> str:
        """The last ``lines`` lines of a process's log (None: all of it)."""
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return f"({name}: no log)"
        kept = path.read_text(errors="replace").splitlines()
        return f"--- {name} ---\n" + "\n".join(kept[-lines:] if lines else kept)

    @staticmethod
    def _end(proc: subprocess.Popen, timeout: float, kill: bool = False) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop(self) -> None:
        procs = [p for _, p in self.processes() if p is not self.redis]
        for proc in procs:  # in parallel: SIGTERM all, then wait
            with contextlib.suppress(ProcessLookupError):
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            self._end(proc, 15)
        self.workers.clear()
        self.api = None
        self.stop_redis()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class CrashLoop(RuntimeError):
    """A process exited too often in too short a time to be worth restarting."""


class Supervisor:
    """Keeps a started Stack running: a process that exits is started again.

    The delay before a restart doubles with each exit in the last ``window`` seconds
    (``first_delay``, 2x, 4x... at most ``max_delay``), as compose's restart policy backs
    off. ``max_exits`` exits of one process within ``window`` seconds is a crash loop:
    ``run()`` raises CrashLoop, naming the process with the end of its log.
    """

    def __init__(self, stack: Stack, max_exits: int = 5, window: float = 60.0,
                 first_delay: float = 0.5, max_delay: float = 8.0, say=print):
        self.stack = stack
        self.max_exits = max_exits
        self.window = window
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.say = say
        self.exits: dict[str, deque] = {}
        self.restarts = 0
        self._due: dict[str, float] = {}  # name -> monotonic time of its restart

    def _starter(self, name: str):
        stack = self.stack
        if name == "redis":
            return stack.start_redis
        env = stack.started_with.get(name, {})
        if name == "api":
            return lambda: stack.start_api(**env)
        return lambda: stack.start_worker(int(name.removeprefix("worker")), **env)

    def check(self, now: float | None = None) -> None:
        """One round: notice exits, schedule their restarts, start those that are due."""
        now = time.monotonic() if now is None else now
        for name, proc in list(self.stack.processes()):
            if proc.poll() is None or name in self._due:
                continue
            exits = self.exits.setdefault(name, deque())
            exits.append(now)
            while exits and now - exits[0] > self.window:
                exits.popleft()
            if len(exits) >= self.max_exits:
                raise CrashLoop(f"{name} exited {len(exits)} times in {self.window:.0f} s "
                                f"(last exit code {proc.returncode}); giving up.\n"
                                f"{self.stack.tail(name, 20)}")
            delay = min(self.first_delay * 2 ** (len(exits) - 1), self.max_delay)
            self.say(f"{name} (pid {proc.pid}) exited with code {proc.returncode}; "
                     f"restarting it in {delay:.1f} s ({len(exits)} exit(s) in the last "
                     f"{self.window:.0f} s)", flush=True)
            self._due[name] = now + delay
        for name, due in list(self._due.items()):
            if now >= due:
                del self._due[name]
                try:
                    proc = self._starter(name)()
                except (OSError, RuntimeError, TimeoutError) as exc:
                    self.say(f"{name} could not be started again: {exc}", flush=True)
                    self.exits[name].append(time.monotonic())
                    self._due[name] = time.monotonic() + self.max_delay
                    continue
                self.restarts += 1
                self.say(f"{name} restarted (pid {proc.pid if proc else '-'})", flush=True)

    def run(self, stopped=lambda: False, interval: float = 0.2) -> None:
        while not stopped():
            self.check()
            time.sleep(interval)


def main(argv=None) -> int:
    settings = load_or_exit()
    p = argparse.ArgumentParser(prog="python -m digits.stack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=settings.WORKERS)
    p.add_argument("--port", type=int, default=settings.PORT)
    args = p.parse_args(argv)
    external = settings.REDIS_URL if is_set("REDIS_URL") else None
    stack = Stack(workers=args.workers, port=args.port, redis_url=external,
                  log_dir=ROOT / "var/log", quiet=False)

    def _stop(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    # Started in the background (`make up &`, nohup, a supervisor) SIGINT arrives
    # ignored, and Python then leaves it so: the README's Ctrl-C/SIGINT would do nothing.
    signal.signal(signal.SIGINT, _stop)
    started = time.monotonic()
    try:
        stack.start(wait=300)
        print(f"\nready in {time.monotonic() - started:.1f} s: open {stack.url}/  "
              f"(Redis {stack.redis_url}, {args.workers} workers; Ctrl-C stops everything)",
              flush=True)
        Supervisor(stack).run()
        return 0
    except (CrashLoop, RuntimeError, TimeoutError) as exc:  # crash loop, or failed start
        print(f"\nstopping: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
