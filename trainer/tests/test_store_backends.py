"""The artifact store: both backends keep the same promises (atomic, conditional writes, listing)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from trainer.store import LocalStore, NotFound, PreconditionFailed, S3Store, Store, StoreError, open_store

BUCKET = "pushtrain-test-artifacts"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
        return
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield open_store(f"s3://{BUCKET}/team-a")


def test_put_then_get_returns_the_bytes_and_a_stable_etag(store: Store) -> None:
    etag = store.put("runs/r1/status.json", b'{"state": "queued"}')
    data, etag_read = store.get_with_etag("runs/r1/status.json")
    assert data == b'{"state": "queued"}'
    assert etag_read == etag


def test_missing_key_raises_not_found_naming_the_uri(store: Store) -> None:
    with pytest.raises(NotFound, match=r"runs/none/status\.json"):
        store.get("runs/none/status.json")
    assert not store.exists("runs/none/status.json")


def test_create_only_write_is_refused_when_the_object_exists(store: Store) -> None:
    store.put("models/m/v1/manifest.json", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed, match="If-None-Match"):
        store.put("models/m/v1/manifest.json", b"second", if_none_match=True)
    assert store.get("models/m/v1/manifest.json") == b"first"


def test_compare_and_swap_succeeds_with_the_current_etag_and_fails_with_a_stale_one(store: Store) -> None:
    first = store.put("models/m/champion.json", b"a", if_none_match=True)
    second = store.put("models/m/champion.json", b"b", if_match=first)
    assert second != first
    with pytest.raises(PreconditionFailed, match="If-Match"):
        store.put("models/m/champion.json", b"c", if_match=first)
    assert store.get("models/m/champion.json") == b"b"


def test_compare_and_swap_on_a_missing_object_fails_as_a_precondition(store: Store) -> None:
    with pytest.raises(PreconditionFailed):
        store.put("models/m/champion.json", b"x", if_match="0123456789abcdef")


def test_list_returns_sorted_keys_under_the_prefix_only(store: Store) -> None:
    for key in ["models/m/v2/manifest.json", "models/m/v1/manifest.json", "runs/r/status.json"]:
        store.put(key, b"{}")
    assert store.list("models/") == ["models/m/v1/manifest.json", "models/m/v2/manifest.json"]
    assert store.list("nothing/") == []


def test_files_round_trip_and_create_only_upload_is_refused_twice(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "checkpoint.pt"
    source.write_bytes(bytes(range(256)) * 1000)
    store.upload_file(source, "runs/r/checkpoint.pt", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.upload_file(source, "runs/r/checkpoint.pt", if_none_match=True)
    target = tmp_path / "down" / "checkpoint.pt"
    store.download_file("runs/r/checkpoint.pt", target)
    assert target.read_bytes() == source.read_bytes()
    with pytest.raises(NotFound):
        store.download_file("runs/r/other.pt", target)


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "runs/.tmp-x"])
def test_keys_that_escape_or_collide_with_internals_are_rejected(store: Store, key: str) -> None:
    with pytest.raises(ValueError, match="invalid store key"):
        store.put(key, b"x")


def test_local_store_leaves_no_temporary_files_behind(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a/b.json", b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("a/b.json", b"2", if_none_match=True)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.json"]
    assert store.list() == ["a/b.json"]


@pytest.mark.parametrize(
    ("uri", "kind", "where"),
    [
        ("s3://bucket", S3Store, "s3://bucket"),
        ("s3://bucket/some/prefix/", S3Store, "s3://bucket/some/prefix"),
        ("file:///tmp/pushtrain-store", LocalStore, "/tmp/pushtrain-store"),
        ("/tmp/pushtrain-store", LocalStore, "/tmp/pushtrain-store"),
    ],
)
def test_open_store_picks_the_backend_from_the_uri(
    uri: str, kind: type, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = open_store(uri)
    assert isinstance(store, kind)
    assert store.uri == where


@pytest.mark.parametrize("uri", ["", "s3://", "gs://bucket/x", "file://host/path"])
def test_open_store_rejects_malformed_uris_naming_them(uri: str) -> None:
    with pytest.raises(ValueError, match="store URI"):
        open_store(uri)


def test_s3_store_retries_with_botocores_standard_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = open_store("s3://bucket")
    assert isinstance(store, S3Store)
    assert store.client.meta.config.retries["mode"] == "standard"


def test_the_sha256_an_upload_is_given_is_what_the_store_answers_without_a_download(
    store: Store, tmp_path: Path
) -> None:
    # GIVEN a file uploaded with its SHA-256 (S3: ChecksumSHA256, stored with the object)
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights" * 1000)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    store.upload_file(path, "models/m/v1/model.pt", if_none_match=True, sha256=digest)
    # WHEN its SHA-256 is asked for, THEN it is the file's, and on S3 no GetObject was sent (HeadObject only)
    sent: list[str] = []
    if isinstance(store, S3Store):
        store.client.meta.events.register("before-call.s3.*", lambda model, **_: sent.append(model.name))
    assert store.sha256_of("models/m/v1/model.pt") == digest
    assert "GetObject" not in sent
    with pytest.raises(NotFound):
        store.sha256_of("models/m/v1/absent.pt")


def test_an_object_replaced_after_upload_answers_its_new_sha256(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights")
    store.upload_file(path, "models/m/v1/model.pt", sha256=hashlib.sha256(b"weights").hexdigest())
    store.put("models/m/v1/model.pt", b"tampered")  # a plain PUT: S3 computes the checksum of these bytes
    assert store.sha256_of("models/m/v1/model.pt") == hashlib.sha256(b"tampered").hexdigest()


def test_the_local_store_refuses_an_upload_whose_bytes_differ_from_the_sha256_given(tmp_path: Path) -> None:
    # S3 answers BadDigest; the local store does the same check. (moto 5.2.5 does not check a given
    # ChecksumSHA256: it stores what it is told, so this is tested where the check really happens.)
    store = LocalStore(tmp_path / "store")
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights")
    with pytest.raises(StoreError, match="SHA-256"):
        store.upload_file(path, "models/m/v1/model.pt", sha256="0" * 64)
    assert not store.exists("models/m/v1/model.pt")
