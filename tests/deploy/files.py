"""Readers of docker-compose.yml, the Dockerfiles and .dockerignore, for tests/deploy.

The compose file is parsed with PyYAML (``safe_load`` resolves ``<<: *anchor`` merges
the way Compose does); Dockerfiles are read as instructions, continuations joined.
"""

from __future__ import annotations

import ast
import re
import shlex
from functools import cache
from pathlib import Path

import yaml

from digits.settings import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKER_DIR = ROOT / "docker"
DOCKERIGNORE = ROOT / ".dockerignore"
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")

# What compose sets that local processes (digits.stack) get another way: the container's
# side of a host fact. test_commands drops these when it runs the compose commands here.
CONTAINER_FACTS = {
    "REDIS_URL": "the compose service `redis`, not 127.0.0.1",
    "MODEL_DIR": "a folder the image's user may write (a folder store without MODEL_STORE)",
    "MODEL_CACHE": "a folder the image's user may write",
    "AWS_ENDPOINT_URL": "the compose service `minio`, not 127.0.0.1",
    "PORT": "gunicorn's port inside the container; .env's PORT is the host port",
}


# -- compose ---------------------------------------------------------------------------------
@cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def service(name: str) -> dict:
    return services()[name]


def command(svc: dict) -> list[str]:
    cmd = svc["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):  # ["NAME=value", ...]
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def resolve(value: str) -> str:
    """A compose value with every ${NAME:-default} replaced by its default."""
    return INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "", value)


def one_off(svc: dict) -> bool:
    """A job that runs to completion (models-init, the trainer), not a server."""
    return str(svc.get("restart", "no")) == "no"


def dockerfile(svc: dict) -> Path | None:
    build = svc.get("build")
    if not build:
        return None
    if isinstance(build, str):
        return (ROOT / build / "Dockerfile").resolve()
    return (ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve()


def built() -> dict[str, Path]:
    """service -> its Dockerfile, for every service built from this repository."""
    return {name: path for name, svc in services().items() if (path := dockerfile(svc))}


def healthcheck(svc: dict) -> list[str]:
    """The healthcheck as the argv the engine execs."""
    test = svc["healthcheck"]["test"]
    if isinstance(test, str):
        return ["sh", "-c", test]
    if test[0] == "CMD":
        return list(test[1:])
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", test[1]]
    raise AssertionError(f"unexpected healthcheck form: {test}")


def named_volumes(svc: dict) -> dict[str, str]:
    """volume name -> mount point, bind mounts left out."""
    found = {}
    for mount in svc.get("volumes", []):
        if isinstance(mount, dict):
            if mount.get("type") == "volume":
                found[mount["source"]] = mount["target"]
            continue
        source, target = resolve(mount).split(":")[:2]
        if not source.startswith((".", "/", "~")):
            found[source] = target
    return found


# -- Dockerfiles ------------------------------------------------------------------------------
def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with line continuations joined and comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        pending = ""
        out.append((keyword.upper(), args.strip()))
    return out


def arguments(path: Path, keyword: str) -> list[str]:
    return [args for kw, args in instructions(path) if kw == keyword]


def copies(path: Path) -> list[tuple[list[str], str]]:
    """COPY instructions as (sources, destination), flags dropped."""
    out = []
    for args in arguments(path, "COPY"):
        tokens = [t for t in shlex.split(args) if not t.startswith("--")]
        out.append((tokens[:-1], tokens[-1]))
    return out


def exec_form(args: str) -> list[str]:
    return yaml.safe_load(args) if args.startswith("[") else shlex.split(args)


def env_lines(path: Path) -> dict[str, str]:
    """The ENV instructions' NAME=value pairs."""
    found = {}
    for args in arguments(path, "ENV"):
        for token in shlex.split(args):
            name, _, value = token.partition("=")
            found[name] = value
    return found


def requirements_installed(path: Path) -> list[Path]:
    """The requirements files the image's ``pip install -r`` lines name."""
    return [ROOT / req for args in arguments(path, "RUN") for req in re.findall(r"-r\s+(\S+)",
                                                                                 args)]


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


def image_sources(path: Path) -> list[Path]:
    """The Python files a Dockerfile copies into its image."""
    files = []
    for sources, _dest in copies(path):
        for src in sources:
            source = ROOT / src
            if source.is_dir():
                files += sorted(p for p in source.rglob("*.py") if "__pycache__" not in p.parts)
            elif source.suffix == ".py":
                files.append(source)
    return files


# -- .dockerignore ------------------------------------------------------------------------------
def _ignore_patterns() -> list[tuple[bool, re.Pattern]]:
    out = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").strip("/")
        rx = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        rx = rx.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
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


# -- what a role's code imports --------------------------------------------------------------------
def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported(file: Path) -> set[str]:
    """Dotted names a file imports, at module level or lazily, with their parents (importing
    a.b.c runs a and a.b too) and, for ``from a import b``, a.b (b may be a module)."""
    package = file.relative_to(ROOT).parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names |= {f"{module}.{a.name}" for a in node.names}
    return {".".join(n.split(".")[:i + 1]) for n in names if n for i in range(n.count(".") + 1)}


def role_code(role: str) -> tuple[list[Path], set[str]]:
    """The files of ours a role runs (its package and every module of ours they import,
    transitively) and the top-level names they import that are not ours."""
    todo = sorted(p for p in (ROOT / role).rglob("*.py") if "__pycache__" not in p.parts)
    files, outside = set(), set()
    while todo:
        file = todo.pop()
        if file in files:
            continue
        files.add(file)
        for name in imported(file):
            if found := _module_file(name):
                todo.append(found)
            elif not (ROOT / name.split(".")[0]).is_dir():
                outside.add(name.split(".")[0])
    return sorted(files), outside - {"__future__"}
