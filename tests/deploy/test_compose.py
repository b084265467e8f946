"""Static checks of the container deployment against the code. No Docker engine needed.

Settings come from ``digits.settings`` (every service reads an optional .env through
env_file); docker-compose.yml sets only what differs inside the containers, and that is
what is checked here: each value it sets is a known setting, parses, and differs from
the default; the commands are digits.stack's; each image installs what its code imports
and holds no more than its role needs. Services are handled by what they are (built
here, a server or a one-off job, in a profile), not by name, where that can be avoided.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from digits.settings import BY_NAME, ROOT
from digits.stack import API_CMD, TRAINER_CMD, WORKER_CMD
from tests.deploy.files import (
    COMPOSE_FILE,
    CONTAINER_FACTS,
    DOCKER_DIR,
    INTERPOLATION,
    arguments,
    built,
    command,
    compose,
    copies,
    dockerignored,
    env_lines,
    environment,
    exec_form,
    healthcheck,
    image_sources,
    instructions,
    named_volumes,
    one_off,
    requirement_lines,
    requirements_installed,
    resolve,
    role_code,
    service,
    services,
)

ROLE_COMMANDS = {"api": API_CMD, "worker": WORKER_CMD, "trainer": TRAINER_CMD}
# Never in the API image: it answers requests and must stay small and quick to start.
HEAVY = {"tensorflow", "tensorflow-cpu", "tf-nightly", "keras", "torch", "jax"}
# Set by the Dockerfiles for the interpreter and pip, not settings of ours.
INTERPRETER_ENV = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_DISABLE_PIP_VERSION_CHECK",
                   "PYTHONPATH"}


def same(setting, text: str) -> bool:
    """Whether a compose value is the setting's default (a folder: relative to compose)."""
    value = setting.parse(text)
    if setting.name.endswith("_DIR"):
        return (COMPOSE_FILE.parent / value).resolve() == Path(setting.default).resolve()
    return value == setting.default


def host_side(node=None, in_env: bool = False) -> list[str]:
    """Strings compose interpolates outside the services' environment (ports, mounts)."""
    node = compose() if node is None else node
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in host_side(v, in_env or k == "environment")]
    if isinstance(node, list):
        return [s for item in node for s in host_side(item, in_env)]
    return [node] if isinstance(node, str) and not in_env else []


# -- environment ---------------------------------------------------------------------------------
def test_compose_sets_only_known_settings_that_differ_from_the_defaults():
    for name, svc in services().items():
        if name not in built():
            continue  # a pulled image's own variables: test_pulled_images_take_settings
        for var, value in environment(svc).items():
            setting = BY_NAME.get(var)
            assert setting, f"{name}: {var} is not a setting (digits/settings.py)"
            resolved = resolve(value)
            setting.parse(resolved)  # a bad value fails here, naming the variable
            if var not in CONTAINER_FACTS:
                assert not same(setting, resolved), (
                    f"{name}: {var}={resolved} is the default: leave it to digits.settings")
            if m := INTERPOLATION.fullmatch(value):
                assert m.group(1) == var, f"{name}: {var} interpolates {m.group(1)}"


def test_host_side_interpolations_are_settings_with_their_defaults():
    """${NAME:-default} outside the services' environment (ports, mounts): .env sets
    them, so they are settings, and compose falls back on the settings' defaults."""
    for m in (m for text in host_side() for m in INTERPOLATION.finditer(text)):
        setting = BY_NAME.get(m.group(1))
        assert setting, f"compose interpolates {m.group(1)}, which is not a setting"
        assert m.group(2) in (":-", "-") and same(setting, m.group(3)), m.group(0)


def test_images_set_only_container_facts_and_interpreter_variables():
    for path in set(built().values()):
        for var, value in env_lines(path).items():
            if var in INTERPRETER_ENV:
                continue
            assert var in CONTAINER_FACTS and var in BY_NAME, f"{path.name}: ENV {var}"
            assert not same(BY_NAME[var], value), f"{path.name}: ENV {var} is the default"


def test_every_service_built_here_reads_the_optional_env_file():
    for name in built():
        files = service(name).get("env_file") or []
        assert {"path": ".env", "required": False} in files, (name, files)


# The database image's first-start variables: fixed development values for a server with
# no host port, which the default DATABASE_URL repeats (checked below).
DB_INIT = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}


def test_database_url_default_matches_the_postgres_service():
    from sqlalchemy import make_url

    env = environment(service("postgres"))
    url = make_url(resolve(environment(service("api"))["DATABASE_URL"]))
    assert (url.username, url.password, url.database, url.host) == (
        env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"], "postgres")
    for name in ("api", "db-migrate", "watch", "trainer"):
        assert environment(service(name))["DATABASE_URL"] == environment(
            service("api"))["DATABASE_URL"], name


def test_pulled_images_take_settings():
    """A pulled image's variables (MinIO's root user) interpolate our settings, with the
    defaults the services built here use: one .env line changes both sides."""
    ours = {var: value for name in built() for var, value in environment(service(name)).items()}
    for name, svc in services().items():
        if name in built():
            continue
        for var, value in environment(svc).items():
            if name == "postgres" and var in DB_INIT:
                continue
            m = INTERPOLATION.fullmatch(value)
            assert m and m.group(1) in BY_NAME, f"{name}: {var}={value} is not a setting"
            assert ours.get(m.group(1)) == value, (
                f"{name}: {var}={value}, but the services built here set {m.group(1)}="
                f"{ours.get(m.group(1))}")


MODEL_STORE_VARS = ("MODEL_STORE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY")


def test_trainer_and_workers_share_a_registry_not_a_disk():
    roles = ("trainer", "worker", "models-init")
    for name in roles:
        assert not named_volumes(service(name)), f"{name}: mounts a volume"
        env = environment(service(name))
        assert resolve(env["MODEL_STORE"]).startswith("s3://"), name
        assert "MODEL_DIR" not in env, f"{name}: MODEL_STORE is the store"
    for var in MODEL_STORE_VARS:
        assert len({environment(service(n))[var] for n in roles}) == 1, var
    endpoint = resolve(environment(service("worker"))["AWS_ENDPOINT_URL"])
    host = endpoint.split("//")[1].split(":")[0]
    assert host in services() and "healthcheck" in service(host), endpoint
    for name in ("worker", "models-init"):
        assert service(name)["depends_on"][host]["condition"] == "service_healthy", name
    # The registry creates the bucket the store names, at start (models-init).
    assert command(service("models-init")) == ["python", "-m", "models.store", "init"]


# -- services -------------------------------------------------------------------------------
def test_commands_are_digits_stacks():
    for role, cmd in ROLE_COMMANDS.items():
        assert command(service(role))[: len(cmd)] == cmd, role
    assert command(service("api")) == API_CMD and command(service("worker")) == WORKER_CMD


def test_each_image_runs_its_role_and_other_services_on_it_are_jobs():
    for name, path in built().items():
        role = path.name.removesuffix(".Dockerfile")
        cmd = exec_form(arguments(path, "CMD")[-1])
        assert cmd[: len(ROLE_COMMANDS[role])] == ROLE_COMMANDS[role], path.name
        assert command(service(name)) == cmd or one_off(service(name)) or (
            name == "watch" and command(service(name))[:4] == ["python", "-m", "trainer",
                                                               "watch"]), (
            f"{name} runs {path.name} with another command: only a one-off job (or the "
            "trainer's long-running watch, docs/feedback.md) may")


def test_servers_restart_and_are_health_checked_jobs_do_not_restart():
    for name, svc in services().items():
        if one_off(svc):
            assert "healthcheck" not in svc, f"{name}: a job that exits has no health"
        else:
            assert svc.get("restart") == "unless-stopped", name
            assert "healthcheck" in svc and healthcheck(svc), f"{name}: a server needs one"


def test_depends_on_conditions_match_what_they_wait_for():
    for name, svc in services().items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            target = service(dep)
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in target, (name, dep)
            else:
                assert condition == "service_completed_successfully" and one_off(target), (
                    f"{name} waits on {dep} with {condition}")
            assert set(target.get("profiles", [])) <= set(svc.get("profiles", [])), (
                f"{name} depends on {dep}, which only starts with its profile")


def test_trainer_is_an_on_demand_job_with_mnist_read_only():
    trainer = service("trainer")
    assert trainer["profiles"] and one_off(trainer)
    cmd = command(trainer)
    data = cmd[cmd.index("--data") + 1]
    mounts = [m for m in trainer["volumes"] if isinstance(m, str) and resolve(m).split(":")[1]
              == data]
    assert mounts and mounts[0].endswith(":ro") and "${MNIST_DIR" in mounts[0], mounts


def test_workers_are_scalable():
    worker = service("worker")
    for key, why in (("container_name", "a fixed name"), ("ports", "host ports"),
                     ("hostname", "a shared hostname (one Celery node name)")):
        assert key not in worker, f"{why} breaks --scale worker=N"
    # Started without -n, each replica is celery@<hostname>: the probe's default name.
    assert not any(c in ("-n", "--hostname") or c.startswith("--hostname=")
                   for c in command(worker))
    assert healthcheck(worker) == ["python", "-m", "worker.probe"]


def test_probe_default_name_is_celerys_default_node_name(monkeypatch):
    from celery.utils.nodenames import default_nodename

    from worker import probe

    asked = []
    monkeypatch.setattr(probe, "alive_file", lambda folder, name: asked.append(name) or ROOT)
    assert probe.main([]) == 1
    assert asked == [default_nodename(None)]


def test_redis_is_pinned_private_and_transient():
    redis = service("redis")
    assert "ports" not in redis, "Redis has no password: never publish it on the host"
    cmd = command(redis)
    assert cmd[cmd.index("--save") + 1] == "" and cmd[cmd.index("--appendonly") + 1] == "no"


def test_images_pulled_are_pinned():
    for name, svc in services().items():
        if "image" in svc and "build" not in svc:
            # A version tag (MinIO's are RELEASE.<date>) or a digest.
            assert re.search(r":\d|:RELEASE\.\d{4}-|@sha256:", svc["image"]), (
                f"{name}: unpinned {svc['image']}")


def test_servers_stop_gracefully():
    drain = max(BY_NAME["GRACEFUL_TIMEOUT"].default, BY_NAME["WORKER_DRAIN_SECONDS"].default)
    for name, svc in services().items():
        if name in built() and not one_off(svc):
            grace = str(svc.get("stop_grace_period", "10s"))
            assert int(grace.removesuffix("s")) > drain, f"{name}: {grace} < a {drain} s drain"


def test_named_volumes_are_declared_and_used():
    used = {v for svc in services().values() for v in named_volumes(svc)}
    assert set(compose().get("volumes") or {}) == used


# -- Dockerfiles -----------------------------------------------------------------------------------
def test_every_dockerfile_is_built_by_a_service():
    assert {p.resolve() for p in DOCKER_DIR.glob("*.Dockerfile")} == set(built().values())


def test_dockerfiles_pin_the_base_and_run_as_a_user():
    for path in set(built().values()):
        for image in (args.split()[0] for args in arguments(path, "FROM")):
            assert re.search(r":\d+\.\d+|@sha256:", image), f"{path.name}: FROM {image}"
        users = arguments(path, "USER")
        assert users and users[-1].split(":")[0] not in ("root", "0"), path.name


def test_each_image_installs_its_roles_requirements_only():
    for path in set(built().values()):
        role = path.name.removesuffix(".Dockerfile")
        assert [p.name for p in requirements_installed(path)] == [f"{role}.txt"], path.name
        steps = instructions(path)
        copy_req = min(i for i, (kw, a) in enumerate(steps) if kw == "COPY" and
                       a.startswith("requirements/"))
        install = min(i for i, (kw, a) in enumerate(steps) if "pip install" in a)
        assert copy_req < install, f"{path.name}: -c constraints.txt needs requirements/"


def test_each_image_copies_digits_and_what_exists():
    for path in set(built().values()):
        sources = [s for srcs, _ in copies(path) for s in srcs]
        assert "digits/" in sources, f"{path.name}: no COPY digits/ (settings, protocol)"
        for src in sources:
            assert (ROOT / src).exists(), f"{path.name}: COPY {src}: no such file"


def test_images_with_a_volume_create_its_mount_point_for_the_user():
    for name, path in built().items():
        runs = " ".join(arguments(path, "RUN"))
        for mount in named_volumes(service(name)).values():
            assert f"mkdir -p {mount}" in runs and f"chown app:app {mount}" in runs, (
                f"{path.name}: a fresh named volume at {mount} must be writable by the user")


def _installed(requirements: list[Path]) -> set[str]:
    """Canonical names of these requirements and, through installed metadata, their deps."""
    todo = [Requirement(line) for req in requirements for line in requirement_lines(req)]
    seen: set = set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for dep in map(Requirement, requires):
            if dep.marker is None or any(dep.marker.evaluate({"extra": e})
                                         for e in (req.extras or {""})):
                todo.append(dep)
    return {name for name, _ in seen}


def test_each_image_holds_what_its_role_imports():
    """The role's package and every module of ours it imports (at module level or lazily)
    are copied into its image, and every other package they import is installed."""
    dists = importlib.metadata.packages_distributions()
    problems = []
    for path in sorted(set(built().values())):
        files, outside = role_code(path.name.removesuffix(".Dockerfile"))
        copied = set(image_sources(path))
        problems += [f"{path.name}: the role imports {f.relative_to(ROOT)}, not copied"
                     for f in files if f not in copied]
        installed = _installed(requirements_installed(path))
        problems += [f"{path.name}: the role imports {mod}, which the image does not install"
                     for mod in sorted(outside - set(sys.stdlib_module_names))
                     if not {canonicalize_name(d) for d in dists.get(mod, [])} & installed]
    assert not problems, "\n".join(problems)


def test_api_image_has_no_tensorflow():
    path = DOCKER_DIR / "api.Dockerfile"
    assert not _installed(requirements_installed(path)) & HEAVY
    assert not role_code("api")[1] & HEAVY  # nor does its code import it, even lazily


# -- .dockerignore ----------------------------------------------------------------------
def test_dockerignore_keeps_secrets_and_clutter_out():
    for path in (".venv", ".git", ".env", ".env.local", "var", "artifacts", "tests",
                 "api/__pycache__/x.pyc", "models/__pycache__/s.pyc"):
        assert dockerignored(path), f".dockerignore lets {path} into the build context"


def test_dockerignore_keeps_what_the_images_copy():
    for path in set(built().values()):
        for src in (s for srcs, _ in copies(path) for s in srcs):
            root = ROOT / src
            files = [root] if root.is_file() else [
                p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                and not p.name.startswith(".")]
            for file in files:
                rel = file.relative_to(ROOT).as_posix()
                assert not dockerignored(rel), f"{path.name} copies {rel}: .dockerignore drops it"


# -- docker compose itself, when this machine has it ------------------------------------
def test_docker_compose_config_accepts_the_file():
    cli = None
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        cli = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        cli = ["docker-compose"]
    if cli is None:
        pytest.skip("no docker compose CLI on this machine")
    profiles = sorted({p for svc in services().values() for p in svc.get("profiles", [])})
    for extra in ([], *(["--profile", p] for p in profiles)):
        result = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT),
                                 *extra, "config", "--quiet"], capture_output=True, text=True,
                                timeout=60, cwd=ROOT)
        assert result.returncode == 0, result.stderr
