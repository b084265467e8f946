"""The S3 backend: any S3-compatible server (AWS S3, MinIO, SeaweedFS...)::

    s3://bucket/prefix/digits/
        CURRENT                pointer, moved by compare-and-swap on its ETag
        1/.reserved            claims the number (If-None-Match: *); kept for good
        1/model.keras          uploaded with its SHA-256 checksum, then checked by HEAD
        1/history.png
        1/manifest.json        written last, If-None-Match: *: the version is now complete
        2/...

Publishing is ordered so that no reader ever loads a partial version:

1. reserve the next number: ``<n>/.reserved`` with ``If-None-Match: *``; a 412 means
   another publisher has it, so try ``n + 1`` (concurrent publishers get distinct numbers).
   The claim is never deleted: a publisher that listed the store before ``n`` was taken
   must still find the number claimed, or it would write over a published version;
2. upload every file with ``x-amz-checksum-sha256`` (the server refuses a body that
   does not match), then HEAD each one and compare its size and checksum;
3. write the manifest (sha256 of the model file): the version now exists;
4. only a caller's ``set_current`` moves the pointer, with ``If-Match`` on the ETag it
   read (``If-None-Match: *`` when there is none), so a racing promote or rollback is
   re-read and re-applied rather than lost.

A publisher killed before step 3 leaves a reserved number without a manifest: it is
never listed, never loaded, and its number is never reused. Readers fetch a version
into the local cache (models/store/cache.py) and check its sha256 before loading.

boto3 is imported here only: the API, which never opens an S3 store, does not need it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from models.store.base import (
    MANIFEST_FILE,
    MODEL_FILE,
    POINTER_FILE,
    Store,
    StoreError,
    StoreUnavailable,
    Version,
    new_manifest,
    now_text,
    parse_pointer,
    sha256_file,
)
from models.store.cache import Cache

log = logging.getLogger("models.store.s3")
RESERVED = ".reserved"
CONFLICT = (409, 412)  # 409: AWS's answer to two conditional writes at once


def make_client(endpoint_url: str = "", access_key: str = "", secret_key: str = "",
                region: str = ""):
    """A boto3 S3 client from the settings; empty values fall back to boto3's own chain
    (an instance role, ~/.aws). Short timeouts: a worker's watcher must not hang."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=2, read_timeout=15,
        retries={"mode": "standard", "total_max_attempts": 3},
        # Custom endpoints (MinIO, SeaweedFS) serve buckets as paths, not host names.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    return boto3.client("s3", endpoint_url=endpoint_url or None,
                        aws_access_key_id=access_key or None,
                        aws_secret_access_key=secret_key or None,
                        region_name=region or None, config=config)


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StoreError(f"{url!r}: an S3 store is s3://bucket or s3://bucket/prefix")
    return bucket, prefix.strip("/")


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


class S3Store(Store):
    def __init__(self, url: str, name: str, cache_dir: str | os.PathLike, client=None,
                 endpoint_url: str = ""):
        self.bucket, self.prefix = split_url(url)
        self.name = name
        self.location = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.endpoint = endpoint_url or "AWS"
        self.client = client if client is not None else make_client(endpoint_url)
        self.keys = f"{self.prefix}/{name}/" if self.prefix else f"{name}/"
        self.cache = Cache(Path(cache_dir) / self.bucket / self.prefix / name)
        self._pointer_seen: tuple[str, dict] | None = None  # (ETag, content) last read

    def key(self, *parts) -> str:
        return self.keys + "/".join(str(p) for p in parts)

    def url(self, *parts) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    # -- one place that turns boto3's failures into StoreError ---------------------------
    def _call(self, op: str, quiet: tuple[int, ...] = (), **kwargs):
        """``client.<op>(Bucket=..., **kwargs)``. An HTTP status in ``quiet`` comes back
        as the int; other failures raise StoreError or StoreUnavailable."""
        import botocore.exceptions as bx

        try:
            return getattr(self.client, op)(Bucket=self.bucket, **kwargs)
        except bx.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = exc.response.get("Error", {}).get("Code", "")
            where = f"model store {self.location} ({self.endpoint})"
            if code == "NoSuchBucket":
                raise StoreError(f"{where}: bucket {self.bucket!r} does not exist") from exc
            if status in quiet:
                return status
            if status in (401, 403):
                raise StoreError(f"{where}: access denied ({code}); check AWS_ACCESS_KEY_ID "
                                 "and AWS_SECRET_ACCESS_KEY") from exc
            if status >= 500 or status == 0:
                raise StoreUnavailable(f"{where} failed: {code or status}: {exc}") from exc
            raise StoreError(f"{where}: {op} {kwargs.get('Key', '')}: {code or status}: "
                             f"{exc}") from exc
        except (bx.BotoCoreError, OSError) as exc:
            raise StoreUnavailable(f"model store {self.location} is unreachable at "
                                   f"{self.endpoint}: {exc}") from exc

    def status(self) -> str:
        try:
            self._call("head_bucket")
        except StoreError as exc:
            return str(exc)
        return "ok"

    # -- listing -----------------------------------------------------------------------
    def _numbers(self) -> tuple[set[int], set[int]]:
        """(complete versions, every number taken, complete or not)."""
        complete, taken = set(), set()
        token = None
        while True:
            page = self._call("list_objects_v2", Prefix=self.keys,
                              **({"ContinuationToken": token} if token else {}))
            for item in page.get("Contents", []):
                number, _, leaf = item["Key"][len(self.keys):].partition("/")
                if number.isdigit():
                    taken.add(int(number))
                    if leaf == MANIFEST_FILE:
                        complete.add(int(number))
            if not page.get("IsTruncated"):
                return complete, taken
            token = page["NextContinuationToken"]

    def versions(self) -> list[int]:
        return sorted(self._numbers()[0])

    def get(self, number: int) -> Version:
        body = self._get_bytes(self.key(int(number), MANIFEST_FILE))
        if body is None:
            raise StoreError(f"version {number} does not exist in {self.location}")
        try:
            manifest = json.loads(body)
        except ValueError as exc:
            raise StoreError(f"version {number}: unreadable manifest: {exc}") from exc
        return Version(int(number), self.cache.path(number), manifest,
                       self.url(int(number)) + "/")

    def _get_bytes(self, key: str) -> bytes | None:
        got = self._call("get_object", quiet=(404,), Key=key)
        if got == 404:
            return None
        return self._read_body(got, key)

    def _read_body(self, got: dict, key: str) -> bytes:
        import botocore.exceptions as bx

        try:
            return got["Body"].read()
        except (bx.BotoCoreError, OSError) as exc:  # a cut connection: IncompleteReadError
            raise StoreUnavailable(f"reading s3://{self.bucket}/{key} failed: {exc}") from exc

    # -- verifying and fetching ------------------------------------------------------------
    def verify(self, number: int) -> Version:
        """Fetch into the cache (unless there already) and check sha256. With the store
        unreachable, a version the cache already verified is still good."""
        try:
            version = self.get(number)
        except StoreUnavailable:
            cached = self.cache.verified(number)
            if cached is None:
                raise
            manifest = json.loads((cached / MANIFEST_FILE).read_text())
            return Version(int(number), cached, manifest, self.url(int(number)) + "/")
        path = self.cache.fetch(number, version.manifest, self._download_to(number),
                                (MODEL_FILE,))
        return Version(version.number, path, version.manifest, version.location)

    def _download_to(self, number: int) -> Callable[[str, Path], None]:
        def download(name: str, dest: Path) -> None:
            key = self.key(number, name)
            got = self._call("get_object", quiet=(404,), Key=key)
            if got == 404:
                raise StoreError(f"version {number}: s3://{self.bucket}/{key} is missing")
            import botocore.exceptions as bx

            written = 0
            try:
                with open(dest, "wb") as out:
                    for chunk in got["Body"].iter_chunks(1 << 20):
                        out.write(chunk)
                        written += len(chunk)
            except (bx.BotoCoreError, OSError) as exc:
                raise StoreUnavailable(f"version {number}: download of {name} cut after "
                                       f"{written} bytes: {exc}") from exc
            if written != got.get("ContentLength", written):
                raise StoreError(f"version {number}: {name} truncated: {written} of "
                                 f"{got['ContentLength']} bytes")

        return download

    # -- the pointer -------------------------------------------------------------------------
    def _read_pointer(self) -> tuple[dict, object]:
        got = self._call("get_object", quiet=(404,), Key=self.key(POINTER_FILE))
        if got == 404:
            return {}, None
        raw = self._read_body(got, self.key(POINTER_FILE))
        data = parse_pointer(raw)
        self._pointer_seen = (got["ETag"], data)
        self.cache.remember_pointer(raw)
        return data, got["ETag"]

    def pointer_state(self) -> tuple[int | None, object]:
        """A conditional GET: 304 Not Modified (no body) while the pointer is unchanged."""
        seen = self._pointer_seen
        if seen is None:
            return super().pointer_state()
        got = self._call("get_object", quiet=(304, 404), Key=self.key(POINTER_FILE),
                         IfNoneMatch=seen[0])
        if got == 304:
            return seen[1].get("version"), seen[0]
        if got == 404:
            self._pointer_seen = None
            return None, None
        raw = self._read_body(got, self.key(POINTER_FILE))
        data = parse_pointer(raw)
        self._pointer_seen = (got["ETag"], data)
        self.cache.remember_pointer(raw)
        return data.get("version"), got["ETag"]

    def cached_current(self) -> int | None:
        raw = self.cache.last_pointer()
        try:
            return parse_pointer(raw).get("version") if raw else None
        except StoreError:
            return None

    def _swap_pointer(self, raw: bytes, token) -> bool:
        condition = {"IfMatch": token} if token else {"IfNoneMatch": "*"}
        got = self._call("put_object", quiet=CONFLICT, Key=self.key(POINTER_FILE), Body=raw,
                         ContentType="application/json", **condition)
        if got in CONFLICT:
            return False
        self._pointer_seen = (got["ETag"], parse_pointer(raw))
        self.cache.remember_pointer(raw)
        return True

    # -- publishing --------------------------------------------------------------------------
    def publish(self, write: Callable[[Path], dict]) -> Version:
        with tempfile.TemporaryDirectory(prefix="digits-publish-") as tmp:
            folder = Path(tmp)
            fields = write(folder)
            if not (folder / MODEL_FILE).is_file():
                raise StoreError(f"publish: the writer produced no {MODEL_FILE}")
            files = {p.name: sha256_file(p) for p in sorted(folder.iterdir())
                     if p.is_file() and p.name != MANIFEST_FILE}
            number = self._reserve(files[MODEL_FILE])
            manifest = new_manifest(self.name, number, files[MODEL_FILE], fields)
            if not self._upload_version(number, folder, files, manifest):
                raise StoreError(f"version {number} was completed by another publisher")
            self.cache.adopt(folder, number, manifest)  # promote needs no download
        return Version(number, self.cache.path(number), manifest, self.url(number) + "/")

    def _claim(self, number: int, sha: str) -> bool:
        """One conditional write of ``<n>/.reserved``: True if the number is now ours."""
        claim = json.dumps({"sha256": sha, "host": socket.gethostname(), "pid": os.getpid(),
                            "at": now_text()}).encode()
        return self._call("put_object", quiet=CONFLICT, Key=self.key(number, RESERVED),
                          Body=claim, IfNoneMatch="*") not in CONFLICT

    def _reserve(self, sha: str) -> int:
        """Claim the next free number; a number someone else claimed first is skipped."""
        number = max(self._numbers()[1], default=0) + 1
        while not self._claim(number, sha):
            number += 1
        return number

    def _upload_version(self, number: int, folder: Path, files: dict, manifest: dict) -> bool:
        """Upload and check the files, then the manifest. False: a manifest was there."""
        for name, sha in files.items():
            self._upload(number, folder / name, sha)
        body = (json.dumps(manifest, indent=2) + "\n").encode()
        # The commit point: from here on the version exists.
        answer = self._call("put_object", quiet=CONFLICT, Key=self.key(number, MANIFEST_FILE),
                            Body=body, ContentType="application/json", IfNoneMatch="*")
        return answer not in CONFLICT

    def _upload(self, number: int, path: Path, sha: str) -> None:
        key = self.key(number, path.name)
        size = path.stat().st_size
        with open(path, "rb") as body:
            self._call("put_object", Key=key, Body=body, ChecksumSHA256=_b64(sha),
                       Metadata={"sha256": sha})
        head = self._call("head_object", quiet=(404,), Key=key, ChecksumMode="ENABLED")
        if head == 404:
            raise StoreError(f"version {number}: {path.name} vanished after its upload")
        checksum = head.get("ChecksumSHA256")
        claimed = head.get("Metadata", {}).get("sha256")
        if head.get("ContentLength") != size or (checksum and checksum != _b64(sha)) \
                or (claimed and claimed != sha):
            raise StoreError(f"version {number}: {path.name} does not match after upload "
                             f"({head.get('ContentLength')} of {size} bytes)")

    def _seed_version(self, source: Version) -> bool:
        """Copy a shipped version in under its own number. Seeders racing on an empty
        store (the same shipped model) may both upload it: the objects are identical and
        only one manifest write succeeds."""
        number, sha = source.number, source.manifest["sha256"]
        if self._get_bytes(self.key(number, MANIFEST_FILE)) is not None:
            return False
        if not self._claim(number, sha):
            # Claimed already: by a seeder of the same model (carry on: same bytes), or
            # by a publisher of another one (not ours to fill).
            claim = self._get_bytes(self.key(number, RESERVED))
            if claim is None or json.loads(claim).get("sha256") != sha:
                return False
        files = {p.name: sha256_file(p) for p in sorted(source.path.iterdir())
                 if p.is_file() and p.name != MANIFEST_FILE}
        return self._upload_version(number, source.path, files, source.manifest)
