"""Processes, for the developer tools and the fault tests.

Children start in their own session (so one ``killpg`` reaches their children too) and
end in a group: SIGTERM to all at once, SIGKILL for whatever lingers. ``wait_for`` and
``wait_until`` are the polling loops; ``scan`` reads RSS and CPU time from /proc.
``Reaper`` and ``TrackedStack`` make sure a tool leaves no process behind, Ctrl-C
included.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from digits.settings import ROOT, Settings, SettingsError, load
from digits.stack import Stack


# -- starting and ending ----------------------------------------------------------------------
def spawn(cmd: list[str], log_path: Path, env: dict | None = None) -> subprocess.Popen:
    """A child in its own session (its own process group), its output in ``log_path``."""
    with open(log_path, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def signal_group(proc: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def alive(proc: subprocess.Popen | None) -> bool:
    return proc is not None and proc.poll() is None


def end(procs: Iterable[subprocess.Popen], timeout: float = 10) -> None:
    """SIGTERM the processes' groups all at once and wait up to ``timeout`` in all; then
    SIGKILL each group, which also reaches any grandchild left in it."""
    procs = list(procs)
    for proc in procs:
        signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
    for proc in procs:
        signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def timed_exits(procs: dict[str, subprocess.Popen], timeout: float = 10) -> dict[str, float]:
    """SIGTERM every process (name -> Popen) at once; the seconds each took to exit
    (``inf``: not within ``timeout``; it is left running)."""
    started = time.monotonic()
    for proc in procs.values():
        signal_group(proc, signal.SIGTERM)
    took = {}
    for name, proc in procs.items():
        try:
            proc.wait(max(0.0, started + timeout - time.monotonic()))
            took[name] = round(time.monotonic() - started, 2)
        except subprocess.TimeoutExpired:
            took[name] = float("inf")
    return took


# -- waiting ------------------------------------------------------------------------------------
def wait_for(check: Callable[[], object], timeout: float, interval: float = 0.2,
             stop: threading.Event | None = None, errors: tuple = ()) -> object:
    """Call ``check`` every ``interval`` seconds until it returns something true, which is
    returned; None once ``timeout`` passes or ``stop`` is set. An exception of a type in
    ``errors`` counts as not yet."""
    deadline = time.monotonic() + timeout
    while stop is None or not stop.is_set():
        try:
            value = check()
        except errors:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        if stop is None:
            time.sleep(interval)
        else:
            stop.wait(interval)
    return None


def wait_until(check: Callable[[], object], timeout: float, what: str, interval: float = 0.2,
               procs: Iterable[subprocess.Popen] = (),
               details: Callable[[], str] | None = None) -> object:
    """``wait_for`` that raises: TimeoutError naming ``what`` (and ``details()``), or
    RuntimeError as soon as one of ``procs`` exits."""
    procs = list(procs)

    def checked():
        value = check()
        for proc in procs:
            if not value and proc.poll() is not None:
                raise RuntimeError(f"a process exited ({proc.returncode}) waiting for {what}")
        return value

    value = wait_for(checked, timeout, interval)
    if not value:
        more = f"\n{details()}" if details else ""
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{more}")
    return value


# -- /proc ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ProcInfo:
    pid: int
    pgid: int
    name: str
    cpu_s: float  # user + system
    rss_mb: float | None = None  # VmRSS: also the mapped files' pages (shared libraries)
    anon_mb: float | None = None  # RssAnon: the process's own memory


_TICK = os.sysconf("SC_CLK_TCK")
_KB = {key: re.compile(rf"^{key}:\s+(\d+)\s+kB", re.M) for key in ("VmRSS", "RssAnon")}


def scan(memory: bool = True) -> list[ProcInfo]:
    """Every process we can read, from /proc/<pid>/stat (and status, for ``memory``);
    a kernel thread or zombie without VmRSS is left out when ``memory``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                stat = fh.read()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, ...
            info = dict(pid=int(entry.name), pgid=int(fields[2]), name=name,
                        cpu_s=(int(fields[11]) + int(fields[12])) / _TICK)
            if memory:
                with open(f"/proc/{entry.name}/status") as fh:
                    status = fh.read()
        except (OSError, ValueError, IndexError):
            continue
        if memory:
            kb = {k: rx.search(status) for k, rx in _KB.items()}
            if not kb["VmRSS"]:
                continue
            info.update(rss_mb=int(kb["VmRSS"].group(1)) / 1024,
                        anon_mb=int(kb["RssAnon"].group(1)) / 1024 if kb["RssAnon"] else None)
        found.append(ProcInfo(**info))
    return found


def by_group(procs: Iterable[ProcInfo]) -> dict[int, list[ProcInfo]]:
    groups: dict[int, list[ProcInfo]] = {}
    for p in procs:
        groups.setdefault(p.pgid, []).append(p)
    return groups


def rss_by_group(pgid: int) -> list[dict]:
    """VmRSS and RssAnon (MB, one decimal) of every process in a process group, by pid."""
    return [
        {"pid": p.pid, "name": p.name, "rss_mb": round(p.rss_mb, 1),
         "anon_mb": round(p.anon_mb, 1) if p.anon_mb is not None else None}
        for p in sorted(scan(), key=lambda p: p.pid) if p.pgid == pgid
    ]


def max_rss(procs: list[dict], key: str = "rss_mb") -> float | None:
    return max((p[key] for p in procs if p[key] is not None), default=None)


def cpu_seconds(pgids: Iterable[int]) -> float:
    """User + system CPU seconds of every live process in these process groups."""
    wanted = set(pgids)
    return sum(p.cpu_s for p in scan(memory=False) if p.pgid in wanted)


# -- leaving nothing behind ---------------------------------------------------------------------
def interrupt_on_sigterm() -> None:
    """SIGTERM ends a tool as Ctrl-C does (KeyboardInterrupt, so its cleanup runs), and
    Ctrl-C works even when it was started with SIGINT ignored (from a background shell)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def sigint_ignored():
    """For a cleanup: a second Ctrl-C must not cut it short."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals go to the main thread anyway
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


class TrackedStack(Stack):
    """A Stack that remembers every process it started and starts none once closing,
    so a thread caught mid-restart cannot leave a stray behind."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spawned: list[tuple[str, subprocess.Popen]] = []
        self._spawn_lock = threading.Lock()
        self._closed = False

    def _spawn(self, name: str, cmd: list[str], **env) -> subprocess.Popen:
        with self._spawn_lock:
            if self._closed:
                raise RuntimeError(f"not starting {name}: the stack is closing")
            proc = super()._spawn(name, cmd, **env)
            self.spawned.append((name, proc))
            return proc

    def close(self) -> list[str]:
        """Stop everything; return what was still running after Stack.stop() (killed)."""
        with self._spawn_lock:
            self._closed = True
        with contextlib.suppress(Exception):
            self.stop()
        strays = []
        for name, proc in self.spawned:
            if proc.poll() is None:
                strays.append(f"{name} pid {proc.pid}")
            signal_group(proc, signal.SIGKILL)  # also whatever is left in its group
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        return strays

    def snapshot(self) -> dict[str, subprocess.Popen]:
        """name -> process, safe to call from another thread while faults run."""
        procs = {}
        if self.redis is not None:
            procs["redis"] = self.redis
        for index, proc in dict(self.workers).items():
            procs[f"worker{index}"] = proc
        if self.api is not None:
            procs["api"] = self.api
        return procs


class Reaper:
    """Every process and stack a tool starts, so that one ``close()`` (at exit, on
    Ctrl-C) ends whatever is still running."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.stacks: list[TrackedStack] = []

    def spawn(self, cmd: list[str], log_path: Path, env: dict | None = None):
        proc = spawn(cmd, log_path, env)
        self.procs.append(proc)
        return proc

    def end(self, procs: Iterable[subprocess.Popen], timeout: float = 10) -> None:
        procs = list(procs)
        self.procs = [p for p in self.procs if p not in procs]
        end(procs, timeout)

    def stack(self, **kwargs) -> TrackedStack:
        stack = TrackedStack(**kwargs)
        self.stacks.append(stack)
        return stack

    def stop(self, stack: TrackedStack) -> list[str]:
        if stack in self.stacks:
            self.stacks.remove(stack)
        return stack.close()

    def close(self) -> None:
        with sigint_ignored():
            for stack in list(self.stacks):
                self.stop(stack)
            self.end(list(self.procs), 5)


# -- the environment a tool gives the stack it starts --------------------------------------------
def parse_env(values: list[str] | None) -> dict:
    """``--env KEY=VALUE`` arguments as a dict."""
    env = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env wants KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def stack_settings(env: dict) -> Settings:
    """The settings a stack started with ``env`` (on top of this environment) runs with."""
    try:
        return load(environ={**os.environ, **{k: str(v) for k, v in env.items()}})
    except SettingsError as exc:
        raise SystemExit(f"configuration error: {exc}") from None


# -- their logs --------------------------------------------------------------------------------
def log_texts(folder: Path) -> dict[str, str]:
    """name -> text of every ``*.log`` in a folder (a stack's logs: api, worker1, ...)."""
    return {p.stem: p.read_text(errors="replace") for p in sorted(Path(folder).glob("*.log"))}


def log_counts(folder: Path, patterns: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per log, how often each pattern (name -> text) occurs; logs without any left out."""
    found = {}
    for name, text in log_texts(folder).items():
        counts = {k: text.count(p) for k, p in patterns.items() if p in text}
        if counts:
            found[name] = counts
    return found


# -- the stack a tool measures -------------------------------------------------------------------
@contextlib.contextmanager
def measured_stack(url: str | None, workers: int, env: dict, log_dir: Path | None = None,
                   model_dir: str | os.PathLike | None = None, say: Callable = print):
    """Yields (url, stack): ``url`` and None when one is given; else a private Stack
    (``workers``, ``env``) started here on ``model_dir`` (default: a fresh copy of the
    shipped model) and stopped when the block ends, however it ends."""
    if url:
        yield url.rstrip("/"), None
        return
    import tempfile

    stack = Stack(workers=workers, env=env, log_dir=log_dir,
                  model_dir=model_dir or tempfile.mkdtemp(prefix="digits-tool-models-"))
    say(f"starting a private stack ({workers} workers, env {env})...")
    try:
        stack.start(wait=300)
        yield stack.url, stack
    finally:
        stack.stop()
