"""A private PostgreSQL cluster on a free port, for tests and load tools.

Debian's server binaries (``initdb``, ``pg_ctl``: package ``postgresql``) make a
throw-away cluster in a temporary folder, listening on 127.0.0.1 only, trusted
local logins, no Unix socket. PostgreSQL refuses to run as root, so under root the
cluster belongs to the ``postgres`` system user that the package creates.

    with PgCluster() as pg:
        pg.url        # postgresql+psycopg://digits@127.0.0.1:PORT/digits
        pg.stop(); pg.start()   # a database outage and its end
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from digits.stack import free_port

USER = "digits"


def binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise FileNotFoundError(
            f"{name} not found: install PostgreSQL's server (apt-get install postgresql)")
    return found


class PgCluster:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="digits-pg-"))
        self.data = self.folder / "data"
        self._as = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            self._as = {"user": account.pw_uid, "group": account.pw_gid}
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self._initdb()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{USER}"

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, check=check,
                              cwd=self.folder, **self._as)

    def _initdb(self) -> None:
        self._run(binary("initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
                  "--encoding=UTF8", "--no-sync", "--no-instructions")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       "unix_socket_directories = ''\nmax_connections = 200\n"
                       "shared_buffers = 32MB\n")

    def start(self, timeout: float = 30) -> PgCluster:
        self._run(binary("pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log"),
                  "-w", "-t", str(int(timeout)), "start")
        deadline = time.monotonic() + timeout
        while self._run(binary("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                        "-d", "postgres", "-tAc", "SELECT 1", check=False).returncode:
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL did not answer:\n{self.log()}")
            time.sleep(0.2)
        exists = self._run(binary("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                           "-d", "postgres", "-tAc",
                           f"SELECT 1 FROM pg_database WHERE datname = '{USER}'").stdout.strip()
        if not exists:
            self._run(binary("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                      USER)
        return self

    def create_database(self) -> str:
        """A new empty database; its URL."""
        self._count = getattr(self, "_count", 0) + 1
        name = f"db{self._count}"
        self._run(binary("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{name}"

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop",
                      check=False)

    def log(self) -> str:
        path = self.folder / "log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.remove()
