"""A worker on "another host": its own network namespace, its own empty cache, no shared disk.

The namespace has only a loopback and one end of a veth pair (10.200.x.y/30, addresses
this test creates). Redis and the S3 server listen on the host end's address only, so
the worker reaches them over that link or not at all. The worker is given a MODEL_DIR
that does not exist: it never needs the trainer's folders. It must serve, then
hot-reload a version the trainer publishes and promotes from the host.

Needs root (``ip netns``); CI runs as root.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import (
    ROOT,
    SEVEN,
    SHIPPED_VERSION,
    data_url,
    draw_png,
    get,
    open_s3_store,
    post,
    start_stack,
)
from tests.s3server import S3Server
from tools.faults import publish_copy
from trainer.notice import announce

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2 (ip netns)")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _taken_networks() -> list:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    return [ipaddress.ip_interface(word).network for line in out.splitlines()
            for word in line.split() if "/" in word and word[0].isdigit()]


@contextlib.contextmanager
def namespace():
    """(namespace name, host address, namespace address); everything removed after."""
    taken = _taken_networks()
    for _ in range(50):
        third, fourth = secrets.randbelow(256), 4 * secrets.randbelow(64)
        net = ipaddress.ip_network(f"10.200.{third}.{fourth}/30")
        if not any(net.overlaps(t) for t in taken):
            break
    host, guest = (str(a) for a in net.hosts())
    tag = secrets.token_hex(3)
    name, host_if, guest_if = f"digits-{tag}", f"dgh{tag}", f"dgn{tag}"
    try:
        ip("netns", "add", name)
        ip("link", "add", host_if, "type", "veth", "peer", "name", guest_if)
        ip("link", "set", guest_if, "netns", name)
        ip("addr", "add", f"{host}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", name, "addr", "add", f"{guest}/30", "dev", guest_if)
        ip("-n", name, "link", "set", guest_if, "up")
        ip("-n", name, "link", "set", "lo", "up")
        yield name, host, guest
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("netns", "del", name)  # takes its end of the pair, and so the pair, along
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "del", host_if)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, proc=None, log=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} waiting for {what}:\n"
                                 f"{log.read_text()[-3000:] if log else ''}")
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}\n"
                         f"{log.read_text()[-3000:] if log else ''}")


def predicted_version(stack) -> int | None:
    status, answer, _ = post(stack.url + "/predict", {"image": data_url(draw_png(SEVEN))})
    return answer["model_version"] if status == 200 else None


def test_a_worker_in_its_own_network_namespace_serves_and_hot_reloads(tmp_path):
    procs: list[subprocess.Popen] = []
    server = stack = None
    with namespace() as (ns, host, guest):
        try:
            redis_port = free_port(host)
            procs.append(subprocess.Popen(
                ["redis-server", "--bind", host, "--port", str(redis_port), "--save", "",
                 "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmp_path)],
                stdout=subprocess.DEVNULL, start_new_session=True))
            redis_url = f"redis://{host}:{redis_port}/0"
            server = S3Server(tmp_path / "s3", host=host).start()
            url = server.url("netns")
            # The API on this side, no worker of its own; the stack seeds the bucket.
            stack = start_stack(tmp_path, workers=0, model_dir=url, redis_url=redis_url,
                                env=server.env(), wait=0)
            cache = tmp_path / "guest-cache"
            env = {**os.environ, **server.env(), "PYTHONPATH": str(ROOT),
                   "REDIS_URL": redis_url, "MODEL_STORE": url, "MODEL_CACHE": str(cache),
                   "MODEL_DIR": str(tmp_path / "no-such-folder"), "MODEL_POLL_SECONDS": "60",
                   "WORKER_ALIVE_DIR": str(tmp_path), "WORKER_DRAIN_SECONDS": "0"}
            log = tmp_path / "guest-worker.log"
            with open(log, "wb") as out:
                worker = subprocess.Popen(
                    ["ip", "netns", "exec", ns, sys.executable, "-m", "worker",
                     "-n", "guest@%h"], cwd=ROOT, env=env, stdout=out,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            procs.append(worker)

            def serving() -> bool:
                try:
                    status, body, _ = get(stack.url + "/ready")
                except OSError:  # the API is still starting
                    return False
                return status == 200 and body["workers_serving"] == 1

            wait_for(serving, 180, "the namespaced worker serving", worker, log)
            assert predicted_version(stack) == SHIPPED_VERSION
            cached = cache / "models" / "netns" / "digits" / str(SHIPPED_VERSION)
            assert (cached / "model.keras").is_file()
            assert not (tmp_path / "no-such-folder").exists()

            store = open_s3_store(server, url, tmp_path / "host-cache")
            store.on_pointer_moved = announce(store, redis_url)
            second = publish_copy(store, "for the namespaced worker")
            store.set_current(second.number)
            wait_for(lambda: predicted_version(stack) == second.number, 30,
                     "the namespaced worker serving the new version", worker, log)
            assert (cache / "models" / "netns" / "digits" / str(second.number)).is_dir()
            assert f"notice: version {second.number} is current" in log.read_text()
        finally:
            for proc in reversed(procs):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            if stack:
                stack.stop()
            if server:
                server.close()
