"""Static checks of the container deployment against the code. No Docker engine needed.

docker-compose.yml is parsed with PyYAML (``safe_load`` resolves the ``<<: *anchor``
merges the way Compose does); the Dockerfiles, .dockerignore and .env.example are read
as text. Environment variables "read by the code" are found in the Python sources by
their syntax (``os.environ.get("NAME")``, ``os.environ["NAME"]``, ``os.getenv``) plus the
keys of ``api/config.py``'s DEFAULTS, which ``from_env`` reads.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKER_DIR = ROOT / "docker"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"
CONFIG_PY = ROOT / "api" / "config.py"

SERVICES = {"redis", "models-init", "api", "worker", "trainer"}
# Where "the code" lives (tests excluded: a variable only a test reads configures nothing).
CODE_DIRS = ("api", "worker", "trainer", "models", "scripts")
LOCAL_PACKAGES = {"api", "worker", "trainer", "models", "scripts", "tests"}
MODEL_MOUNT = "/var/lib/digits/models"
# Compose defaults that deliberately differ from the code's defaults, and why.
CONTAINER_DEFAULTS = {"REDIS_URL": "the compose service 'redis', not 127.0.0.1"}
# Never in the API image: it answers requests and must stay small and quick to start.
HEAVY = {"tensorflow", "tensorflow-cpu", "tf-nightly", "keras", "torch", "jax"}

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
NO_DEFAULT = object()  # os.environ.get("X") without a default
NOT_LITERAL = object()  # a default computed at run time (os.cpu_count(), a temp folder)


# -- compose -----------------------------------------------------------------------------
@cache
def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service(name: str) -> dict:
    return load_compose()["services"][name]


def command(svc: dict) -> list[str]:
    cmd = svc["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):  # ["NAME=value", ...]
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def interpolated_default(value: str) -> tuple[str, str] | None:
    """'${NAME:-default}' -> (NAME, default); None for a fixed value."""
    m = INTERPOLATION.fullmatch(value.strip())
    if not m:
        return None
    name, op, default = m.groups()
    return name, (default if op in (":-", "-") else "")


def resolve(value: str) -> str:
    """A compose value with every ${NAME:-default} replaced by its default."""
    return INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "", value)


def host_side_variables() -> set[str]:
    """Variables compose interpolates outside any environment mapping (ports, mounts)."""
    data = load_compose()
    names = set()

    def walk(node, in_env=False):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, in_env or key == "environment")
        elif isinstance(node, list):
            for item in node:
                walk(item, in_env)
        elif isinstance(node, str) and not in_env:
            names.update(m.group(1) for m in INTERPOLATION.finditer(node))

    walk(data)
    return names


def built_services() -> dict[str, Path]:
    """service -> its Dockerfile."""
    out = {}
    for name, svc in load_compose()["services"].items():
        build = svc.get("build")
        if build:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            out[name] = (context / dockerfile).resolve()
    return out


def healthcheck(svc: dict) -> list[str]:
    test = svc["healthcheck"]["test"]
    if isinstance(test, str):
        return ["sh", "-c", test]
    if test[0] == "CMD":
        return list(test[1:])
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", test[1]]
    raise AssertionError(f"unexpected healthcheck form: {test}")


def named_volume(mount: str) -> tuple[str, str] | None:
    """'models:/path[:ro]' -> ('models', '/path'); None for bind mounts."""
    if isinstance(mount, dict):
        return (mount["source"], mount["target"]) if mount.get("type") == "volume" else None
    source, target = resolve(mount).split(":")[:2]
    if source.startswith((".", "/", "~", "$")):
        return None
    return source, target


# -- Dockerfiles -------------------------------------------------------------------------
def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with line continuations joined and comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def copies(path: Path) -> list[tuple[list[str], str]]:
    """COPY instructions as (sources, destination), flags dropped."""
    out = []
    for keyword, args in instructions(path):
        if keyword != "COPY":
            continue
        tokens = [t for t in shlex.split(args) if not t.startswith("--")]
        out.append((tokens[:-1], tokens[-1]))
    return out


def exec_form(args: str) -> list[str]:
    return yaml.safe_load(args) if args.startswith("[") else shlex.split(args)


def role_sources(dockerfile: Path) -> list[Path]:
    """The Python files a Dockerfile copies into its image."""
    files = []
    for sources, _dest in copies(dockerfile):
        for src in sources:
            path = ROOT / src
            if src.rstrip("/") == "requirements":
                continue
            if path.is_dir():
                files += sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
            elif path.suffix == ".py":
                files.append(path)
    return files


def requirement_lines(path: Path) -> list[str]:
    """Requirement specifiers of a requirements file, following -r (not -c)."""
    out = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith(("-c", "--constraint")):
            continue
        if line.startswith(("-r", "--requirement")):
            out += requirement_lines(path.parent / line.split(None, 1)[1].strip())
            continue
        out.append(line)
    return out


def installed_closure(lines: list[str]) -> set[str]:
    """Canonical names of these requirements and, through installed metadata, their deps."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[tuple[str, frozenset]] = set()
    names: set[str] = set()
    todo = [Requirement(line) for line in lines]
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(key[0])
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            dep = Requirement(text)
            if dep.marker is None or any(
                dep.marker.evaluate({"extra": extra}) for extra in (req.extras or {""})
            ):
                todo.append(dep)
    return names


# -- what the code reads ---------------------------------------------------------------------
def _is_environ(node) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _literal(node, constants: dict):
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    try:
        return ast.literal_eval(node)
    except ValueError:
        return NOT_LITERAL


def _config_defaults() -> dict:
    """api/config.py's DEFAULTS, loaded from the file alone (it imports only os)."""
    spec = importlib.util.spec_from_file_location("_digits_config", CONFIG_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.DEFAULTS)


def env_reads(files) -> dict[str, list]:
    """NAME -> defaults the code reads it with (a value, NO_DEFAULT or NOT_LITERAL)."""
    found: dict[str, list] = {}
    for path in files:
        path = Path(path)
        tree = ast.parse(path.read_text(), str(path))
        constants = {}
        for stmt in tree.body:
            if (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
            ):
                value = _literal(stmt.value, {})
                if value is not NOT_LITERAL:
                    constants[stmt.targets[0].id] = value
        for node in ast.walk(tree):
            name = default = None
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                is_get = (
                    isinstance(func, ast.Attribute)
                    and func.attr == "get"
                    and _is_environ(func.value)
                )
                is_getenv = (
                    isinstance(func, ast.Attribute)
                    and func.attr == "getenv"
                    and isinstance(func.value, ast.Name)
                    and func.value.id == "os"
                )
                if is_get or is_getenv:
                    name = node.args[0].value
                    default = (
                        _literal(node.args[1], constants) if len(node.args) > 1 else NO_DEFAULT
                    )
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.ctx, ast.Load)
                and _is_environ(node.value)
                and isinstance(node.slice, ast.Constant)
            ):
                name, default = node.slice.value, NO_DEFAULT
            if isinstance(name, str):
                found.setdefault(name, []).append(default)
        if path.resolve() == CONFIG_PY.resolve():
            for key, value in _config_defaults().items():
                found.setdefault(key, []).append(
                    NOT_LITERAL if key == "WEB_DIR" else value
                )  # WEB_DIR: computed path
    return found


def code_files() -> list[Path]:
    return sorted(
        p for d in CODE_DIRS for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts
    )


@cache
def read_by_code() -> dict[str, list]:
    return env_reads(code_files())


def same_value(code_default, text: str) -> bool:
    if code_default is NO_DEFAULT or code_default is None:
        return text == ""
    if isinstance(code_default, bool):
        return (text.strip().lower() in ("1", "true", "yes", "on")) == code_default
    if isinstance(code_default, int | float):
        try:
            return float(text) == float(code_default)
        except ValueError:
            return False
    return str(code_default).casefold() == text.casefold()


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    """(active NAME=value lines, commented-out '# NAME=value' lines)."""
    active, commented = {}, {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if m := re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(.*)", line):
            active[m.group(1)] = m.group(2)
        elif m := re.fullmatch(r"#\s*([A-Z_][A-Z0-9_]*)=(.*)", line):
            commented[m.group(1)] = m.group(2)
    return active, commented


# -- services ------------------------------------------------------------------------------
def test_services_present():
    assert set(load_compose()["services"]) == SERVICES


def test_redis_is_pinned_checked_and_private():
    redis = service("redis")
    image = redis["image"]
    assert ":" in image and re.search(r":\d", image) and not image.endswith(":latest"), image
    assert healthcheck(redis) == ["redis-cli", "ping"]
    assert "ports" not in redis, "Redis has no password: never publish it on the host"
    cmd = command(redis)
    # Transient broker: no persistence (or, if someone turns it on, a volume to keep it).
    no_persistence = (
        "--appendonly" in cmd
        and cmd[cmd.index("--appendonly") + 1] == "no"
        and "--save" in cmd
        and cmd[cmd.index("--save") + 1] == ""
    )
    assert no_persistence or redis.get("volumes"), cmd
    assert redis.get("restart") == "unless-stopped"


def test_api_service():
    api = service("api")
    probe = healthcheck(api)
    assert any("/health" in part for part in probe), probe
    assert "curl" not in probe[0] or "curl" in (ROOT / "docker/api.Dockerfile").read_text()
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["ports"] == ["${PORT:-8000}:8000"]
    # Inside the container gunicorn must listen on the published port, 8000.
    env = environment(api)
    assert "PORT" not in env and "HOST" not in env
    assert api.get("restart") == "unless-stopped"
    assert not any(named_volume(m) for m in api.get("volumes", [])), (
        "the API reads no models: it needs no model volume"
    )


def test_worker_is_scalable_and_probed():
    worker = service("worker")
    assert "container_name" not in worker, "a fixed name breaks --scale worker=N"
    assert "ports" not in worker, "host ports break --scale worker=N"
    assert "hostname" not in worker, "replicas would share one Celery node name"
    # Started without -n, each replica is celery@<hostname>: the probe's default name.
    cmd = command(worker)
    assert not {"-n", "--hostname"} & set(cmd) and not any(
        c.startswith(("-n", "--hostname=")) for c in cmd[3:]
    ), cmd
    assert healthcheck(worker) == ["python", "-m", "worker.probe"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker.get("restart") == "unless-stopped"


def test_probe_default_name_is_celerys_default_node_name(monkeypatch):
    """A worker started without -n is celery@<hostname>; the probe looks for that name."""
    from celery.utils.nodenames import default_nodename

    from worker import probe

    asked = []
    monkeypatch.setattr(probe, "alive_file", lambda folder, name: asked.append(name) or ROOT / "nope")
    assert probe.main([]) == 1
    assert asked == [default_nodename(None)]


def test_trainer_is_an_on_demand_job():
    trainer = service("trainer")
    assert trainer["profiles"] == ["train"]
    assert trainer.get("restart", "no") == "no", "a finished job must not be restarted"
    cmd = command(trainer)
    data = cmd[cmd.index("--data") + 1]
    mnist = [
        m for m in trainer["volumes"] if isinstance(m, str) and resolve(m).split(":")[1] == data
    ]
    assert mnist and mnist[0].endswith(":ro"), "MNIST is mounted read-only at --data"
    assert "${MNIST_DIR" in mnist[0]


def test_models_init_seeds_the_volume_before_workers_and_trainer_start():
    init = service("models-init")
    assert init["build"]["dockerfile"] == "docker/worker.Dockerfile"  # has the shipped model
    assert init.get("restart") == "no" and "profiles" not in init
    assert "open_store()" in " ".join(command(init))
    for name in ("worker", "trainer"):
        assert service(name)["depends_on"]["models-init"] == {
            "condition": "service_completed_successfully"
        }, name


def test_named_volumes_declared_used_and_shared():
    data = load_compose()
    declared = set(data.get("volumes") or {})
    used = {}
    for name, svc in data["services"].items():
        for mount in svc.get("volumes", []):
            if nv := named_volume(mount):
                used.setdefault(nv[0], {})[name] = nv[1]
    assert declared == set(used), (declared, used)
    assert used["models"] == {
        "models-init": MODEL_MOUNT,
        "worker": MODEL_MOUNT,
        "trainer": MODEL_MOUNT,
    }
    for name in used["models"]:
        assert environment(service(name))["MODEL_DIR"] == MODEL_MOUNT


def test_long_running_services_stop_gracefully():
    graceful = int(resolve(environment(service("api"))["GRACEFUL_TIMEOUT"]))
    for name in ("api", "worker"):
        grace = str(service(name).get("stop_grace_period", "10s"))
        assert grace.endswith("s") and int(grace[:-1]) > graceful, (
            f"{name}: stop_grace_period {grace} leaves no room after a {graceful} s drain"
        )


# -- commands ------------------------------------------------------------------------------
def test_commands_match_scripts_stack():
    from digits.stack import API_CMD, TRAINER_CMD, WORKER_CMD

    assert command(service("worker")) == WORKER_CMD
    assert command(service("api")) == API_CMD
    trainer = command(service("trainer"))
    assert trainer[: len(TRAINER_CMD)] == TRAINER_CMD


def test_dockerfile_cmd_matches_compose():
    for name, dockerfile in built_services().items():
        if name == "models-init":
            continue  # the worker image, with a one-shot command instead of its CMD
        cmds = [exec_form(args) for kw, args in instructions(dockerfile) if kw == "CMD"]
        assert cmds and cmds[-1] == command(service(name)), dockerfile.name


# -- environment -----------------------------------------------------------------------------
def test_every_compose_variable_is_read_by_the_code():
    reads = read_by_code()
    for name, svc in load_compose()["services"].items():
        for var in environment(svc):
            assert var in reads, f"{name}: {var} is set but no code reads it"


def test_every_compose_variable_is_read_in_that_services_image():
    for name, dockerfile in built_services().items():
        reads = env_reads(role_sources(dockerfile))
        unread = set(environment(service(name))) - set(reads)
        assert not unread, f"{name}: the code in its image never reads {sorted(unread)}"


def test_compose_defaults_equal_the_codes():
    for name, dockerfile in built_services().items():
        reads = env_reads(role_sources(dockerfile))
        for var, value in environment(service(name)).items():
            parsed = interpolated_default(value)
            if parsed is None or var in CONTAINER_DEFAULTS:
                continue  # a fixed container setting (MODEL_DIR), or a known difference
            assert parsed[0] == var, f"{name}: {var} interpolates {parsed[0]}"
            literals = [d for d in reads[var] if d is not NOT_LITERAL]
            assert literals, f"{name}: {var}: the code's default is computed; cannot compare"
            assert any(same_value(d, parsed[1]) for d in literals), (
                f"{name}: {var} defaults to {parsed[1]!r} in compose, {literals} in the code"
            )


def test_env_example_documents_every_variable_the_services_read():
    active, commented = env_example()
    documented = set(active) | set(commented)
    assert not set(active) & set(commented)
    # The services' code and the local runner (not tooling such as benchmarks).
    files = [p for p in code_files() if p.parts[len(ROOT.parts)] != "scripts"]
    missing = set(env_reads([*files, ROOT / "scripts" / "stack.py"])) - documented
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_env_example_lists_only_variables_that_do_something():
    active, commented = env_example()
    reads, host = read_by_code(), host_side_variables()
    for var in {**active, **commented}:
        assert var in reads or var in host, f".env.example: nothing reads {var}"


def test_env_example_values_are_compose_defaults():
    active, commented = env_example()
    interpolated = {}
    for svc in load_compose()["services"].values():
        for value in environment(svc).values():
            if parsed := interpolated_default(value):
                interpolated.setdefault(parsed[0], set()).add(parsed[1])
    for var in host_side_variables():
        for m in INTERPOLATION.finditer(COMPOSE_FILE.read_text()):
            if m.group(1) == var and m.group(2) in (":-", "-"):
                interpolated.setdefault(var, set()).add(m.group(3))
    for var, defaults in interpolated.items():
        assert len(defaults) == 1, f"{var} has several compose defaults: {defaults}"
        assert var in active, f"compose reads {var} from .env: list it (uncommented)"
        assert active[var] == next(iter(defaults)), (
            f"{var}: .env.example says {active[var]!r}, compose's default is {defaults}"
        )
    for var in commented:
        assert var not in interpolated, f"{var} is passed by compose: uncomment it"


def test_env_example_has_a_comment_per_variable():
    lines = ENV_EXAMPLE.read_text().splitlines()
    var = re.compile(r"#?\s*[A-Z_][A-Z0-9_]*=")
    for i, line in enumerate(lines):
        if var.match(line):
            before = lines[i - 1] if i else ""
            assert before.startswith("# ") and not var.match(before), (
                f".env.example line {i + 1}: {line!r} needs a one-line comment above it"
            )


# -- Dockerfiles -----------------------------------------------------------------------------
def dockerfiles() -> list[Path]:
    found = sorted(DOCKER_DIR.glob("*.Dockerfile"))
    assert {p.name for p in found} == {"api.Dockerfile", "worker.Dockerfile", "trainer.Dockerfile"}
    assert set(built_services().values()) == {p.resolve() for p in found}
    return found


def test_dockerfiles_pin_the_base_image():
    for path in dockerfiles():
        froms = [args.split()[0] for kw, args in instructions(path) if kw == "FROM"]
        assert froms, path.name
        for image in froms:
            pinned = "@sha256:" in image or re.search(r":\d+\.\d+", image)
            assert pinned and ":latest" not in image, f"{path.name}: unpinned FROM {image}"


def test_dockerfiles_run_as_a_non_root_user():
    for path in dockerfiles():
        users = [args for kw, args in instructions(path) if kw == "USER"]
        assert users, f"{path.name}: no USER"
        assert users[-1].split(":")[0] not in ("root", "0"), path.name
        text = path.read_text()
        assert "useradd" in text and "--uid 10001" in text


def test_dockerfiles_python_hygiene():
    for path in dockerfiles():
        env = " ".join(args for kw, args in instructions(path) if kw == "ENV")
        assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
        for kw, args in instructions(path):
            if kw == "RUN" and "pip install" in args:
                assert "--no-cache-dir" in args, f"{path.name}: {args}"


def test_requirements_folder_is_copied_whole_before_installing():
    for path in dockerfiles():
        steps = instructions(path)
        copy_req = [
            i
            for i, (kw, args) in enumerate(steps)
            if kw == "COPY" and re.search(r"(^|\s)requirements/?\s", args + " ")
        ]
        installs = [
            i for i, (kw, args) in enumerate(steps) if kw == "RUN" and "pip install" in args
        ]
        assert copy_req and installs and copy_req[0] < installs[0], path.name
        for i in installs:
            for req in re.findall(r"-r\s+(\S+)", steps[i][1]):
                file = ROOT / req
                assert file.is_file(), req
                for line in file.read_text().splitlines():  # -c/-r resolve inside requirements/
                    if line.startswith(("-c", "-r")):
                        assert (file.parent / line.split()[1]).is_file(), (req, line)


def role_requirements(path: Path) -> list[Path]:
    return [
        ROOT / req
        for kw, args in instructions(path)
        if kw == "RUN"
        for req in re.findall(r"-r\s+(\S+)", args)
    ]


def test_api_image_has_no_tensorflow():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    path = DOCKER_DIR / "api.Dockerfile"
    assert [p.name for p in role_requirements(path)] == ["api.txt"]
    text = " ".join(f"{kw} {args}" for kw, args in instructions(path)).lower()
    for word in ("worker.txt", "trainer.txt", "dev.txt", "tensorflow", "keras"):
        assert word not in text, f"api.Dockerfile mentions {word}"
    names = {
        canonicalize_name(Requirement(line).name)
        for line in requirement_lines(ROOT / "requirements/api.txt")
    }
    assert not names & HEAVY, names & HEAVY
    # Nor does any code the API image holds import it, even lazily.
    for file in role_sources(path):
        for node in ast.walk(ast.parse(file.read_text())):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for mod in mods:
                assert mod.split(".")[0] not in HEAVY, f"{file}: imports {mod}"


def test_model_store_folder_is_created_for_the_app_user():
    for name in ("worker", "trainer"):
        path = built_services()[name]
        runs = " ".join(args for kw, args in instructions(path) if kw == "RUN")
        assert f"mkdir -p {MODEL_MOUNT}" in runs and f"chown app:app {MODEL_MOUNT}" in runs, (
            f"{path.name}: a fresh named volume must be writable by the app user"
        )


def test_copied_sources_exist():
    for path in dockerfiles():
        for sources, dest in copies(path):
            for src in sources:
                assert (ROOT / src).exists(), f"{path.name}: COPY {src}: no such file"
            if len(sources) > 1:
                assert dest.endswith("/"), f"{path.name}: COPY of several files needs a folder"


def test_worker_and_trainer_images_ship_the_default_model():
    from models.store import shipped_store

    store = shipped_store()
    assert store.current() is not None, "no default model shipped in models/digits/"
    for name in ("worker", "trainer"):
        sources = [s.rstrip("/") for srcs, _ in copies(built_services()[name]) for s in srcs]
        assert "models" in sources, f"{name} image lacks models/ (the shipped default)"


def test_each_role_installs_what_its_code_imports():
    stdlib = set(sys.stdlib_module_names)
    dists = importlib.metadata.packages_distributions()
    from packaging.utils import canonicalize_name

    for name, path in built_services().items():
        lines = [line for req in role_requirements(path) for line in requirement_lines(req)]
        closure = installed_closure(lines)
        for file in role_sources(path):
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    mods = [node.module]
                else:
                    continue
                for mod in mods:
                    top = mod.split(".")[0]
                    if top in stdlib or top in LOCAL_PACKAGES or top == "__future__":
                        continue
                    providers = {canonicalize_name(d) for d in dists.get(top, [])}
                    assert providers & closure, (
                        f"{name} image: {file.relative_to(ROOT)} imports {top}, which "
                        f"{[p.name for p in role_requirements(path)]} do not install"
                    )


# -- .dockerignore ----------------------------------------------------------------------------
def _ignore_patterns() -> list[tuple[bool, re.Pattern]]:
    out = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rx = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pattern[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pattern[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pattern[i]), i + 1
        out.append((negate, re.compile(rx)))
    return out


def dockerignored(relpath: str) -> bool:
    """Docker's rule, near enough: the last matching pattern wins; a match on a parent
    folder excludes everything under it."""
    parts = relpath.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for negate, rx in _ignore_patterns():
        if any(rx.fullmatch(c) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_context_small_and_secret_free():
    for path in (
        ".venv",
        ".git",
        ".env",
        "var",
        "artifacts",
        "tests",
        "api/__pycache__/x.pyc",
        "worker/__pycache__",
        "models/__pycache__/s.pyc",
    ):
        assert dockerignored(path), f".dockerignore lets {path} into the build context"


def test_dockerignore_keeps_what_the_images_copy():
    for path in dockerfiles():
        for sources, _ in copies(path):
            for src in sources:
                root = ROOT / src
                files = (
                    [root]
                    if root.is_file()
                    else [
                        p
                        for p in root.rglob("*")
                        if p.is_file()
                        and "__pycache__" not in p.parts
                        and not p.name.startswith(".")
                    ]
                )
                for file in files:
                    rel = file.relative_to(ROOT).as_posix()
                    assert not dockerignored(rel), (
                        f"{path.name} copies {rel}: .dockerignore drops it"
                    )


# -- docker compose itself, when this machine has it --------------------------------------------
def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_accepts_the_file(tmp_path):
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose CLI on this machine")
    for profile in ([], ["--profile", "train"]):
        result = subprocess.run(
            [
                *cli,
                "-f",
                str(COMPOSE_FILE),
                "--project-directory",
                str(ROOT),
                *profile,
                "config",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr
