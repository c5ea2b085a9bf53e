"""The artifact store: one interface, two backends (a local folder and S3), the same keys.

Keys are '/'-separated paths relative to the store root (`runs/<run_id>/status.json`,
`models/<name>/<version>/manifest.json`, see RUNS.md). Every object write is atomic: a reader
sees the old bytes or the new bytes, never a mix. Two conditional writes give the guarantees
the rest of the trainer is built on:

- `put(key, data, if_none_match=True)` creates the object only if it does not exist
  (S3 `If-None-Match: *`): a published version is never overwritten.
- `put(key, data, if_match=etag)` replaces the object only if it still has that ETag
  (S3 `If-Match`): compare-and-swap for `status.json` and `champion.json`.

A failed precondition raises `PreconditionFailed`; the caller re-reads and decides again.

    store = open_store("s3://my-bucket")          # or "./store", "file:///abs/path"
    data, etag = store.get_with_etag("models/cifar10/champion.json")
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

DEFAULT_STORE_URI = ".pushtrain/store"  # TrainConfig.store_uri: a folder beside the checkout

# Connection errors, 500/503 and throttling are retried by botocore's standard mode, S3_MAX_ATTEMPTS sends
# in all; a conditional write that loses a race is not an error there and reaches us as PreconditionFailed.
S3_MAX_ATTEMPTS = 8
# Each lost compare-and-swap race means another writer's update landed, so `update_json` always makes
# progress; the bound only guards against a store that keeps refusing (a bug, not contention).
MAX_CAS_ATTEMPTS = 64
LOCK_FILE_NAME = ".pushtrain-store.lock"
_TMP_PREFIX = ".tmp-"

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreError(Exception):
    """A store operation failed (I/O, permissions, the service)."""


class NotFound(StoreError):  # noqa: N818 -- named after the S3 error code it stands for, like PreconditionFailed
    """The key does not exist in the store."""

    def __init__(self, uri: str) -> None:
        super().__init__(f"not found: {uri}")
        self.uri = uri


class PreconditionFailed(StoreError):  # noqa: N818 -- the S3 error code (HTTP 412) it stands for
    """A conditional write lost: the object exists (If-None-Match) or changed (If-Match)."""

    def __init__(self, uri: str, condition: str) -> None:
        super().__init__(f"precondition failed for {uri}: {condition}")
        self.uri = uri
        self.condition = condition


def sha256_file(path: Path) -> str:
    """The SHA-256 of a local file, read in 1 MiB chunks (checkpoints and model files are tens of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_b64(hex_digest: str) -> str:
    """S3's form of a SHA-256 (`ChecksumSHA256`: base64 of the 32 bytes) from its hex form."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def validate_key(key: str) -> str:
    """Return key if it is a clean relative store key; raise ValueError naming it otherwise."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise ValueError(f"invalid store key {key!r}: want a relative path like 'runs/<run_id>/status.json'")
    if any(p.startswith(_TMP_PREFIX) or p == LOCK_FILE_NAME for p in parts):
        raise ValueError(f"invalid store key {key!r}: names starting {_TMP_PREFIX!r} are reserved")
    return key


def _describe_condition(if_none_match: bool, if_match: str | None) -> str:
    if if_none_match and if_match is not None:
        raise ValueError("put: if_none_match and if_match are mutually exclusive")
    if if_none_match:
        return "If-None-Match: * (object already exists)"
    return f"If-Match: {if_match} (object changed or is missing)"


class Store(ABC):
    """Byte objects under string keys, with atomic and conditional writes."""

    uri: str

    def uri_of(self, key: str) -> str:
        """The full URI of key, for messages and logs."""
        return f"{self.uri.rstrip('/')}/{key}"

    @abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and its ETag; NotFound if absent."""

    @abstractmethod
    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        """Write the object atomically and return its new ETag; PreconditionFailed if a condition fails."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether the key exists."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key starting with prefix, sorted."""

    @abstractmethod
    def upload_file(self, path: Path, key: str, *, if_none_match: bool = False, sha256: str | None = None) -> str:
        """Upload a local file (atomically, optionally create-only) and return its ETag.

        sha256 (hex): the file's SHA-256 as the caller computed it; S3 checks the bytes it received against
        it and stores it with the object (`ChecksumSHA256`), for `sha256_of` to answer without a download.
        """

    @abstractmethod
    def sha256_of(self, key: str) -> str:
        """The object's SHA-256 (hex) as the store holds it, without downloading it where the store keeps one
        (S3: the checksum stored at upload, HeadObject with ChecksumMode); NotFound if absent."""

    @abstractmethod
    def download_file(self, key: str, path: Path) -> None:
        """Download the object to path (written atomically); NotFound if absent."""

    def get(self, key: str) -> bytes:
        """The object's bytes; NotFound if absent."""
        return self.get_with_etag(key)[0]

    def has_any(self, prefix: str) -> bool:
        """Whether at least one key starts with prefix (a store's root holds `runs/` and `models/`)."""
        return bool(self.list(prefix))

    def update_json(
        self,
        key: str,
        change: Callable[[T | None], T | None],
        *,
        decode: Callable[[bytes], T] = json.loads,
        max_attempts: int = MAX_CAS_ATTEMPTS,
    ) -> T | None:
        """Read-modify-write one JSON object by compare-and-swap; return what `change` returned last.

        1. read the object and its ETag (`decode` turns the bytes into a value, raising on a bad one);
        2. `change(current)` (None when the key is absent) returns the new value, or None to write nothing;
        3. write it with `If-Match: <etag>` (`If-None-Match: *` when creating); when another writer
           won in between, start over on the fresh object, so `change` may run more than once.
        """
        for attempt in range(1, max_attempts + 1):
            try:
                data, etag = self.get_with_etag(key)
                current: T | None = decode(data)
            except NotFound:
                current, etag = None, None
            updated = change(current)
            if updated is None:
                return None
            body = json.dumps(updated, indent=2, sort_keys=True).encode()
            try:
                if etag is None:
                    self.put(key, body, if_none_match=True)
                else:
                    self.put(key, body, if_match=etag)
            except PreconditionFailed:
                log.info("%s changed while updating it (try %d); reading it again", self.uri_of(key), attempt)
                time.sleep(random.uniform(0, 0.01 * min(attempt, 10)))  # noqa: S311 -- jitter, not cryptography
                continue
            return updated
        raise StoreError(f"could not update {self.uri_of(key)} after {max_attempts} compare-and-swap attempts")


# --- local folder -----------------------------------------------------------------------------


class LocalStore(Store):
    """A folder with the same layout as the bucket.

    Writes go to a temporary file in the target's folder and are renamed into place (atomic
    on POSIX) while holding an exclusive `fcntl` lock on one lock file at the store root, so a
    conditional write's check-then-rename is atomic across threads and processes on this machine. The ETag
    is the SHA-256 of the content, so it changes exactly when the bytes do.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    @staticmethod
    def _etag(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK_FILE_NAME).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _etag_of_file(self, path: Path) -> str | None:
        try:
            return self._etag(path.read_bytes())
        except FileNotFoundError:
            return None

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(self.uri_of(key)) from None
        except OSError as exc:
            raise StoreError(f"cannot read {self.uri_of(key)}: {exc}") from exc
        return data, self._etag(data)

    def _write_tmp(self, target: Path, data: bytes | None, source: Path | None) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f"{_TMP_PREFIX}{target.name}.{uuid.uuid4().hex}"
        with tmp.open("wb") as fh:
            if source is not None:
                with source.open("rb") as src:
                    while chunk := src.read(1 << 20):
                        fh.write(chunk)
            else:
                fh.write(data or b"")
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def _commit(self, key: str, tmp: Path, if_none_match: bool, if_match: str | None) -> None:
        target = self._path(key)
        conditional = if_none_match or if_match is not None
        condition = _describe_condition(if_none_match, if_match) if conditional else ""
        try:
            # Plain writes take the lock too, so that no write can land between a conditional
            # write's check and its rename (as S3 evaluates conditions at commit time).
            with self._locked():
                if conditional:
                    current = self._etag_of_file(target)
                    if (if_none_match and current is not None) or (if_match is not None and current != if_match):
                        raise PreconditionFailed(self.uri_of(key), condition)
                tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        target = self._path(key)
        try:
            tmp = self._write_tmp(target, data, None)
            self._commit(key, tmp, if_none_match, if_match)
        except OSError as exc:
            raise StoreError(f"cannot write {self.uri_of(key)}: {exc}") from exc
        return self._etag(data)

    def upload_file(self, path: Path, key: str, *, if_none_match: bool = False, sha256: str | None = None) -> str:
        target = self._path(key)
        try:
            tmp = self._write_tmp(target, None, path)
            etag = self._etag(tmp.read_bytes())
            if sha256 is not None and etag != sha256:  # the ETag is the content's SHA-256: S3's BadDigest
                tmp.unlink(missing_ok=True)
                raise StoreError(f"cannot upload {path} to {self.uri_of(key)}: its SHA-256 is {etag}, not {sha256}")
            self._commit(key, tmp, if_none_match, None)
        except OSError as exc:
            raise StoreError(f"cannot upload {path} to {self.uri_of(key)}: {exc}") from exc
        return etag

    def sha256_of(self, key: str) -> str:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(self.uri_of(key))
        try:
            return sha256_file(path)
        except OSError as exc:
            raise StoreError(f"cannot read {self.uri_of(key)}: {exc}") from exc

    def download_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise NotFound(self.uri_of(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{_TMP_PREFIX}{path.name}.{uuid.uuid4().hex}"
        try:
            with source.open("rb") as src, tmp.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            tmp.replace(path)
        except OSError as exc:
            raise StoreError(f"cannot download {self.uri_of(key)} to {path}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def has_any(self, prefix: str) -> bool:
        """A folder counts even when empty: a store made by hand before its first run is still one."""
        return (self.root / prefix).is_dir() or super().has_any(prefix)

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(_TMP_PREFIX)]
            rel_dir = Path(dirpath).relative_to(self.root)
            for name in filenames:
                if name.startswith(_TMP_PREFIX) or name == LOCK_FILE_NAME:
                    continue
                key = (rel_dir / name).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)


# --- S3 ---------------------------------------------------------------------------------------


class S3Store(Store):
    """An S3 bucket (optionally under a prefix), through boto3 with the standard retry mode.

    The endpoint comes from boto3's own configuration (`AWS_ENDPOINT_URL` for an emulator).
    Conditional writes are S3's own (`If-None-Match: *`, `If-Match: <etag>`), so they hold
    across machines.
    """

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        if not bucket:
            raise ValueError("S3 store needs a bucket name, got an empty one")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        if client is None:
            import boto3
            from botocore.config import Config

            # total_max_attempts counts every send; botocore's "max_attempts" key would mean retries (one more send)
            retries = {"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS}
            # Every GetObject body is checked against the SHA-256 S3 stored with it (a mismatch raises); set here
            # so AWS_RESPONSE_CHECKSUM_VALIDATION=when_required cannot turn it off. "when_supported" validates every
            # response of an operation that can carry a checksum:
            # docs.aws.amazon.com/sdkref/latest/guide/feature-dataintegrity.html
            validation = "when_supported"
            client = boto3.client("s3", config=Config(retries=retries, response_checksum_validation=validation))
        self.client = client

    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @staticmethod
    def _code(exc: Exception) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))

    def _translate(self, exc: Exception, key: str, action: str, condition: str = "") -> StoreError:
        code = self._code(exc)
        if code in {"NoSuchKey", "404", "NotFound"}:
            return NotFound(self.uri_of(key))
        # 409 ConditionalRequestConflict: a concurrent conditional write won; same meaning as 412.
        if code in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
            return PreconditionFailed(self.uri_of(key), condition or code)
        return StoreError(f"cannot {action} {self.uri_of(key)}: {exc}")

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read(), response["ETag"]
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, key, "read") from exc

    def _put(self, key: str, body: Any, if_none_match: bool, if_match: str | None, sha256: str | None = None) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        condition = _describe_condition(if_none_match, if_match) if (if_none_match or if_match) else ""
        # Every object is stored with its SHA-256: S3 checks it on arrival and keeps it, and HeadObject with
        # ChecksumMode=ENABLED returns it: docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html
        # Given our own hash, S3 refuses bytes that differ from what we hashed (BadDigest); else botocore hashes
        # the body. moto 5.2.5 keeps a given checksum without checking it (trainer/tests/test_store_backends.py).
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": body}
        kwargs["ChecksumAlgorithm"] = "SHA256"  # with ChecksumSHA256 too: moto 5.2.5 keeps the value only then
        if sha256 is not None:
            kwargs["ChecksumSHA256"] = sha256_b64(sha256)
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        try:
            return str(self.client.put_object(**kwargs)["ETag"])
        except (ClientError, BotoCoreError) as exc:
            error = self._translate(exc, key, "write", condition)
            if if_match is not None and isinstance(error, NotFound):
                # If-Match on a deleted object: the object changed under us, same as a 412.
                error = PreconditionFailed(self.uri_of(key), condition)
            raise error from exc

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        return self._put(key, data, if_none_match, if_match)

    def upload_file(self, path: Path, key: str, *, if_none_match: bool = False, sha256: str | None = None) -> str:
        # One PutObject (up to 5 GB) keeps the create-only condition and gives a full-object SHA-256
        # (a multipart upload's would be a checksum of checksums); our largest file is tens of MB.
        with path.open("rb") as body:
            return self._put(key, body, if_none_match, None, sha256)

    def sha256_of(self, key: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, key, "check") from exc
        stored = head.get("ChecksumSHA256")
        if isinstance(stored, str) and "-" not in stored:  # "-<parts>": a multipart checksum of checksums
            return base64.b64decode(stored).hex()
        # Uploaded without a checksum (before the trainer sent them): hash the bytes, as the store holds them.
        log.info("%s has no stored SHA-256; hashing its bytes", self.uri_of(key))
        return hashlib.sha256(self.get(key)).hexdigest()

    def download_file(self, key: str, path: Path) -> None:
        data = self.get(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{_TMP_PREFIX}{path.name}.{uuid.uuid4().hex}"
        try:
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError as exc:
            raise StoreError(f"cannot write {path} (downloading {self.uri_of(key)}): {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            error = self._translate(exc, key, "check")
            if isinstance(error, NotFound):
                return False
            raise error from exc
        return True

    def has_any(self, prefix: str) -> bool:
        """One ListObjectsV2 call of at most one key, not a listing of every run."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=full_prefix, MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot list {self.uri_of(prefix)}: {exc}") from exc
        return bool(page.get("Contents"))

    def list(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"cannot list {self.uri_of(prefix)}: {exc}") from exc
        return sorted(keys)


def open_store(uri: str) -> Store:
    """The store at uri: `s3://bucket[/prefix]`, `file:///abs/path`, or a local path."""
    if not uri:
        raise ValueError("store URI is empty: want s3://bucket[/prefix], file:///path or a local folder")
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"store URI {uri!r} has no bucket: want s3://bucket[/prefix]")
        return S3Store(parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        if parsed.netloc not in {"", "localhost"}:
            raise ValueError(f"store URI {uri!r} names a host: want file:///absolute/path")
        return LocalStore(Path(unquote(parsed.path)))
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ValueError(f"store URI {uri!r} has unsupported scheme {parsed.scheme!r}: want s3://, file:// or a path")
    return LocalStore(Path(uri))
