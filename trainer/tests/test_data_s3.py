"""The dataset from s3://: downloaded once into the work dir, verified, and a missing object named."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import torch
from moto import mock_aws
from trainer.config import load_config
from trainer.data import DatasetNotFoundError, load_dataset

from trainer import synth

BUCKET = "pushtrain-artifacts-123456789012-eu-west-1"
KEY = "datasets/cifar-10-python.tar.gz"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


def test_s3_archive_is_downloaded_verified_and_cached(s3: object, tmp_path: Path) -> None:
    # GIVEN a generated archive uploaded to the bucket at the contract's key
    archive = synth.write_archive(tmp_path / "upload.tar.gz", 60, 20, seed=3)
    s3.upload_file(str(archive), BUCKET, KEY)  # type: ignore[attr-defined]
    config = load_config(["--data-uri", f"s3://{BUCKET}/{KEY}", "--work-dir", str(tmp_path / "work")], {})
    # WHEN loaded
    data = load_dataset(config)
    # THEN it matches the local archive, and the download sits in the work dir
    local = load_dataset(load_config(["--data-uri", str(archive), "--work-dir", str(tmp_path / "w2")], {}))
    assert torch.equal(data.train_images, local.train_images)
    assert data.checksum == local.checksum
    assert data.source == f"s3://{BUCKET}/{KEY}"
    cached = tmp_path / "work" / "datasets" / "s3" / BUCKET / KEY
    assert cached.read_bytes() == archive.read_bytes()
    # AND a second load with the object unchanged does not download again
    cached.with_name(cached.name + ".partial").write_text("sentinel")
    assert torch.equal(load_dataset(config).test_images, data.test_images)
    assert cached.with_name(cached.name + ".partial").read_text() == "sentinel"


def test_missing_s3_object_names_the_uri(s3: object, tmp_path: Path) -> None:
    uri = f"s3://{BUCKET}/datasets/missing.tar.gz"
    config = load_config(["--data-uri", uri, "--work-dir", str(tmp_path)], {})
    with pytest.raises(DatasetNotFoundError, match=uri):
        load_dataset(config)
