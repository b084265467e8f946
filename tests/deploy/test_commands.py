"""The containers' commands work: run them, as written in docker-compose.yml, as local
processes against a private redis-server and a private S3 server (SeaweedFS, in MinIO's
place).

Without a Docker engine this is the closest check: the same argv (``python`` is this
interpreter, ``gunicorn`` is ``python -m gunicorn``), the same environment values the
compose file gives each service (host names and paths aside), models-init creating the
bucket and seeding the empty store before the worker starts, the worker started without
``-n`` so it takes Celery's default node name as in a container, and the healthchecks run
as the engine would exec them. Then the trainer's command publishes a version and the
running worker hot-reloads it. A second group rebuilds each image's file layout from its
Dockerfile's COPY lines and checks the role starts from that layout alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digits.settings import ROOT
from digits.stack import Stack, _python_cmd, free_port
from tests.conftest import NEXT_VERSION, SEVEN, SHIPPED_VERSION, data_url, draw_png, get, post
from tests.deploy.files import (
    CONTAINER_FACTS,
    DOCKER_DIR,
    command,
    copies,
    environment,
    healthcheck,
    instructions,
    resolve,
    service,
)
from tests.s3server import S3Server


def container_env(name: str) -> dict[str, str]:
    """The service's compose environment with every ${VAR:-default} at its default, less
    the container-side facts (the Redis host, the volume, the port) digits.stack sets."""
    env = {k: resolve(v) for k, v in environment(service(name)).items()}
    return {k: v for k, v in env.items() if k not in CONTAINER_FACTS}


def local(argv: list[str]) -> list[str]:
    """A container argv for this machine: `python` is this venv's interpreter."""
    return _python_cmd(argv) if argv[0] in ("python", "gunicorn") else list(argv)


def run(argv, env=None, timeout=60, cwd=ROOT, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory):
    """The registry (an S3 server with compose's keys and no bucket yet), models-init,
    Redis, one worker and the API, run with the compose file's commands."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    tmp = tmp_path_factory.mktemp("compose")
    store = container_env("worker")
    bucket = store["MODEL_STORE"].removeprefix("s3://").split("/")[0]
    registry = S3Server(tmp / "s3", bucket=f"{bucket}-other", access_key=store[
        "AWS_ACCESS_KEY_ID"], secret_key=store["AWS_SECRET_ACCESS_KEY"]).start()
    # models-init creates the bucket and seeds it before the workers start.
    env = dict(os.environ, **container_env("models-init"),
               AWS_ENDPOINT_URL=registry.endpoint, MODEL_CACHE=str(tmp / "init-cache"))
    seeded = run(local(command(service("models-init"))), env=env)
    assert seeded.returncode == 0, seeded.stderr
    assert seeded.stdout.splitlines() == [
        f"model store: created bucket {bucket}",
        f"model store: current version {SHIPPED_VERSION}"], seeded.stdout
    alive = tmp / "alive"
    alive.mkdir()
    stack = Stack(
        workers=1, model_dir=store["MODEL_STORE"], log_dir=tmp / "logs",
        env={"WORKER_ALIVE_DIR": alive, "AWS_ENDPOINT_URL": registry.endpoint,
             "MODEL_CACHE": tmp / "worker-cache"},
    )
    try:
        stack.start_redis()
        # Not Stack.start_worker: that adds -n worker1@%h; the container passes no -n.
        stack.workers[1] = stack._spawn(
            "worker1", local(command(service("worker"))), **container_env("worker")
        )
        stack.api = stack._spawn("api", local(command(service("api"))), **container_env("api"))
        stack.wait_ready(180)
        yield stack
    finally:
        stack.stop()
        registry.close()


def predict_seven(stack: Stack, within: float = 15):
    """POST a drawn 7. Right after /ready turns green, the other gunicorn process may not
    have refreshed its cached view of the workers yet (it answers 503 no_workers with
    Retry-After), so retry those for a few seconds."""
    deadline = time.monotonic() + within
    while True:
        status, body, headers = post(stack.url + "/predict", {"image": data_url(draw_png(SEVEN))})
        if status != 503 or time.monotonic() > deadline:
            return status, body
        time.sleep(float(headers.get("Retry-After", 1)) / 4)


def test_predict_through_the_compose_commands(compose_stack):
    status, body = predict_seven(compose_stack)
    assert status == 200, body
    assert body["digit"] in range(10) and body["model_version"] == SHIPPED_VERSION, body


def test_worker_healthcheck_finds_the_default_node_name(compose_stack):
    env = compose_stack.env()  # the worker's environment: same WORKER_ALIVE_DIR
    argv = local(healthcheck(service("worker")))
    result = run(argv, env=env)
    assert result.returncode == 0, result.stdout + result.stderr + compose_stack.tail("worker1")
    assert result.stdout.startswith(f"alive: model version {SHIPPED_VERSION}"), result.stdout
    # And it is a real check: another node name has no alive file.
    other = run([*argv, "--name", "celery@no-such-host"], env=env)
    assert other.returncode == 1 and other.stdout.startswith("not alive"), other.stdout


def test_api_healthcheck(compose_stack):
    argv = local(healthcheck(service("api")))
    port_in_container = "127.0.0.1:8000"
    assert sum(port_in_container in part for part in argv) == 1, argv

    def pointed_at(port):
        return [part.replace(port_in_container, f"127.0.0.1:{port}") for part in argv]

    result = run(pointed_at(compose_stack.port), timeout=30)
    assert result.returncode == 0, result.stderr
    assert run(pointed_at(free_port()), timeout=30).returncode != 0


def test_redis_healthcheck(compose_stack):
    argv = healthcheck(service("redis"))
    if not shutil.which(argv[0]):
        pytest.skip(f"{argv[0]} is not installed")
    result = run([argv[0], "-p", str(compose_stack.redis_port), *argv[1:]], timeout=10)
    assert result.returncode == 0 and result.stdout.strip() == "PONG", result


def test_trainer_command_publishes_and_the_worker_reloads(compose_stack, mnist_dir):
    argv = command(service("trainer"))
    argv[argv.index("--data") + 1] = str(mnist_dir)  # the container's /data/mnist mount
    env = compose_stack.env(
        **container_env("trainer"), TF_NUM_INTRAOP_THREADS=1, TF_NUM_INTEROP_THREADS=1
    )
    result = run(
        [*local(argv), "--limit", "500", "--epochs", "1", "--force", "--quiet"],
        env=env,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    published = re.search(r"published version (\d+)", result.stdout)
    assert published, result.stdout
    version = int(published.group(1))
    assert version == NEXT_VERSION and f"version {version} is now current" in result.stdout

    deadline = time.monotonic() + 10
    seen = None
    while time.monotonic() < deadline:
        status, body, _ = get(compose_stack.url + "/ready", timeout=2)
        seen = body.get("model_versions") if isinstance(body, dict) else body
        if status == 200 and seen == [version]:
            break
        time.sleep(0.2)
    else:
        pytest.fail(
            f"worker did not reload version {version} within 10 s: /ready says {seen}\n"
            + compose_stack.tail("worker1")
        )
    # Both gunicorn processes must route to the reloaded worker.
    for _ in range(4):
        status, body = predict_seven(compose_stack)
        assert status == 200 and body["model_version"] == version, body


# -- each image's file layout, rebuilt from its Dockerfile ----------------------------------------
def image_layout(dockerfile: str, into: Path) -> Path:
    """Copy what the Dockerfile's COPY lines copy (requirements aside) under ``into``."""
    path = DOCKER_DIR / dockerfile
    workdirs = [args for kw, args in instructions(path) if kw == "WORKDIR"]
    assert workdirs == ["/app"], workdirs
    app = into / "app"
    app.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    for sources, dest in copies(path):
        assert not dest.startswith("/"), dest
        for src in sources:
            if src.rstrip("/") == "requirements":
                continue
            source = ROOT / src
            if source.is_dir():  # COPY dir/ dest/: the folder's contents into dest
                shutil.copytree(source, app / dest, ignore=ignore, dirs_exist_ok=True)
            else:
                target = app / dest / source.name if dest.endswith("/") else app / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    return app


def layout_env(app: Path, **more) -> dict:
    """As the image's ENV: PYTHONPATH=/app, nothing from this checkout on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=str(app), PYTHONDONTWRITEBYTECODE="1", **more)
    return env


BLOCK_TF = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "


def test_api_image_layout_serves_health_without_tensorflow(tmp_path):
    app = image_layout("api.Dockerfile", tmp_path)
    code = BLOCK_TF + (
        "import runpy; runpy.run_path('api/gunicorn_conf.py'); "  # as gunicorn -c does
        "import api; "
        "assert api.__file__.startswith(sys.argv[1]), api.__file__; "
        "client = api.create_app().test_client(); r = client.get('/health'); "
        "assert r.status_code == 200, r.status_code; print(r.get_json()['status'])"
    )
    result = run(
        [sys.executable, "-c", code, str(app)],
        cwd=app,
        timeout=60,
        env=layout_env(
            app,
            REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
        ),
    )
    assert result.returncode == 0 and result.stdout.strip() == "healthy", result.stderr


def test_worker_image_layout_imports_and_probes_without_tensorflow(tmp_path):
    app = image_layout("worker.Dockerfile", tmp_path)
    code = (
        "import sys, worker.app, worker.batcher, worker.heartbeat, worker.predictor; "
        "assert worker.app.__file__.startswith(sys.argv[1]); "
        "assert 'tensorflow' not in sys.modules, 'importing the worker loads TensorFlow'; "
        "from models.store import shipped_store; print(shipped_store().current())"
    )
    result = run([sys.executable, "-c", code, str(app)], cwd=app, env=layout_env(app))
    assert result.returncode == 0 and result.stdout.strip() == str(SHIPPED_VERSION), result.stderr
    # The healthcheck itself, TensorFlow blocked: no alive file here, so "not alive".
    probe = BLOCK_TF + "import runpy; runpy.run_module('worker.probe', run_name='__main__')"
    alive = tmp_path / "alive"
    alive.mkdir()
    result = run(
        [sys.executable, "-c", probe], cwd=app, env=layout_env(app, WORKER_ALIVE_DIR=str(alive))
    )
    assert result.returncode == 1 and result.stdout.startswith("not alive"), result


def test_trainer_image_layout_seeds_a_fresh_store(tmp_path):
    app = image_layout("trainer.Dockerfile", tmp_path)
    store = tmp_path / "volume"  # an empty named volume
    result = run(
        [sys.executable, "-m", "trainer", "list", "--json"],
        cwd=app,
        env=layout_env(app, MODEL_DIR=str(store)),
    )
    assert result.returncode == 0, result.stderr
    assert '"current": true' in result.stdout and (store / "digits" / "CURRENT").is_file()


# -- make up ------------------------------------------------------------------------------


def _processes_with_env(entry: str) -> list[int]:
    """Live processes whose environment holds ``entry`` (e.g. PORT=12345)."""
    found = []
    needle = entry.encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                stat = (proc / "stat").read_text()
                if stat[stat.rindex(")") + 2] != "Z":  # zombies are already gone
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


def _redis_port(log: Path, wait: float = 0) -> int | None:
    """The private Redis' port, from the line `make up` prints once it is ready."""
    deadline = time.monotonic() + wait
    while True:
        found = re.search(r"Redis redis://127\.0\.0\.1:(\d+)/", log.read_text(errors="replace"))
        if found or time.monotonic() >= deadline:
            return int(found.group(1)) if found else None
        time.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_make_up_serves_and_stops_everything_on_a_signal(tmp_path, signum):
    """`make up`'s entry (`python -m digits.stack`) serves, and Ctrl-C or SIGTERM stops
    every process it started. Started as from a background shell, with SIGINT ignored."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # its own Redis
    env.update(MODEL_DIR=str(tmp_path / "models"), WORKERS="1", PORT=str(port))
    with open(tmp_path / "up.log", "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "digits.stack"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        stack = Stack(workers=1, port=port, log_dir=tmp_path / "unused")  # URL, wait_ready
        stack.wait_ready(180)
        status, body = predict_seven(stack)
        assert status == 200 and body["digit"] == 7, body
        children = _processes_with_env(f"PORT={port}")
        assert len(children) >= 4, children  # a worker, the gunicorn master and its workers
        redis_port = _redis_port(tmp_path / "up.log", wait=30)
        assert redis_port, (tmp_path / "up.log").read_text()
        up.send_signal(signum)
        assert up.wait(30) == 0, (tmp_path / "up.log").read_text()
        deadline = time.monotonic() + 10
        while _processes_with_env(f"PORT={port}") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_with_env(f"PORT={port}") == [], (tmp_path / "up.log").read_text()
        for listening in (port, redis_port):  # nothing listens any more, Redis included
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", listening), timeout=2).close()
    finally:  # whatever a failure left behind: the stack's children have their own sessions
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(10)
        for pid in _processes_with_env(f"PORT={port}"):  # Redis rewrites its environ: not it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        leftover = _redis_port(tmp_path / "up.log")
        if leftover:
            subprocess.run(["pkill", "-KILL", "-f", f"redis-server 127.0.0.1:{leftover}"])
