"""run.main end to end in-process: success on S3 and locally, and every failure path.

A failed run must leave status `failed` with the reason, publish nothing, leave the champion
untouched and return a non-zero exit code.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from trainer.checkpoint import checkpoint_key
from trainer.config import ConfigError, TrainConfig
from trainer.gate import champion_key
from trainer.registry import published_versions
from trainer.runstate import new_record, read_status, status_key
from trainer.store import LocalStore, S3Store, Store, open_store
from trainer.synth import write_folder
from trainer.train import TrainingSession

from trainer import run

BUCKET = "pushtrain-run-test"
RUN = "push-00112233445566778899"
CHAMPION = b'{"schema": 1, "version": "20261101T000000Z-push-old", "accuracy": 0.99, "history": []}'


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_folder(root, n_train=512, n_test=128, seed=2)
    return root


def make_config(data_dir: Path, tmp_path: Path, store_uri: str, **changes: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "model": "cnn", "epochs": 2, "batch_size": 64, "lr": 0.02, "seed": 0, "run_id": RUN,
        "data_uri": str(data_dir), "store_uri": store_uri, "work_dir": str(tmp_path / "work"),
        "progress": "none", "threads": 1, "accuracy_floor": 0.0,
    }  # fmt: skip
    settings.update(changes)
    return TrainConfig(model="cnn").replace(**settings)


@pytest.fixture
def s3_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Store]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        store = open_store(f"s3://{BUCKET}")
        assert isinstance(store, S3Store)
        # the run must use this very store (and client), so that errors can be injected into it
        monkeypatch.setattr(run, "open_store", lambda uri: store)
        yield store


def assert_failed_cleanly(store: Store, code: int, reason_part: str) -> None:
    assert code == run.EXIT_FAILED
    record = read_status(store, RUN)
    assert record is not None
    assert record["state"] == "failed"
    assert reason_part in record["reason"]
    assert published_versions(store, "cifar10") == []
    assert store.get(champion_key("cifar10")) == CHAMPION


def test_successful_run_on_s3_publishes_promotes_and_records_the_version(
    s3_store: S3Store, data_dir: Path, tmp_path: Path
) -> None:
    code = run.main(make_config(data_dir, tmp_path, f"s3://{BUCKET}"))
    assert code == run.EXIT_SUCCEEDED
    record = read_status(s3_store, RUN)
    assert record is not None
    versions = published_versions(s3_store, "cifar10")
    assert len(versions) == 1
    assert (record["state"], record["version"], record["source"]) == ("succeeded", versions[0], "manual")
    champion = json.loads(s3_store.get(champion_key("cifar10")))
    assert champion["version"] == versions[0]
    assert s3_store.exists(checkpoint_key(RUN))
    # AND the record, the manifest and the report say what ran: 512 images make the small-data rule halve the
    # batch (an epoch needs 16 steps) and the lr with it, and both configured values are kept beside them
    ran = {"batch_size": 32, "lr": 0.01, "configured_batch_size": 64, "configured_lr": 0.02}
    assert record["effective"] == ran
    assert json.loads(s3_store.get(f"models/cifar10/{versions[0]}/manifest.json"))["effective"] == ran
    assert "batch 32, lr 0.01 (configured 64 and 0.02" in s3_store.get(f"runs/{RUN}/report.md").decode()


def test_injected_s3_write_error_while_publishing_fails_the_run_cleanly(
    s3_store: S3Store, data_dir: Path, tmp_path: Path
) -> None:
    # GIVEN a champion, and an S3 that refuses to store the TorchScript file of any new version
    s3_store.put(champion_key("cifar10"), CHAMPION)

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if params["Key"].endswith("model.torchscript.pt"):
            raise ClientError({"Error": {"Code": "InternalError", "Message": "injected failure"}}, "PutObject")

    s3_store.client.meta.events.register("before-parameter-build.s3.PutObject", refuse)
    # WHEN the run trains and tries to publish
    code = run.main(make_config(data_dir, tmp_path, f"s3://{BUCKET}"))
    # THEN the run is failed with the S3 error as its reason, no version is visible, the champion stays
    assert_failed_cleanly(s3_store, code, "InternalError")
    assert s3_store.list("models/cifar10/")  # model.pt got there first, invisible without a manifest


def test_exception_mid_training_fails_the_run_cleanly(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a champion, and training that breaks in its second epoch
    store = LocalStore(tmp_path / "store")
    store.put(champion_key("cifar10"), CHAMPION)
    original = TrainingSession.run_epoch

    def breaking(self: TrainingSession, *args: Any, **kwargs: Any) -> Any:
        if self.epochs_done == 1:
            raise RuntimeError("NaN loss at step 9")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TrainingSession, "run_epoch", breaking)
    # WHEN the run trains
    code = run.main(make_config(data_dir, tmp_path, str(store.root)))
    # THEN it failed with that reason and published nothing; the first epoch's checkpoint remains
    assert_failed_cleanly(store, code, "RuntimeError: NaN loss at step 9")
    assert store.exists(checkpoint_key(RUN))


def test_corrupted_checkpoint_fails_the_run_with_a_clear_reason(data_dir: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put(champion_key("cifar10"), CHAMPION)
    store.put(checkpoint_key(RUN), b"\x00garbage, not a checkpoint")
    code = run.main(make_config(data_dir, tmp_path, str(store.root)))
    assert_failed_cleanly(store, code, "is unreadable (corrupted or not a checkpoint)")


def test_invalid_setting_found_at_run_time_is_recorded_and_raised_for_exit_2(data_dir: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ConfigError, match="batch_size"):
        run.main(make_config(data_dir, tmp_path, str(store.root), limit_train=8))  # < 16 steps at any batch
    record = read_status(store, RUN)
    assert record is not None
    assert record["state"] == "failed"
    assert "batch_size" in record["reason"]


def test_a_signal_that_came_while_torch_loaded_stops_the_run_before_it_downloads_anything(tmp_path: Path) -> None:
    # GIVEN the CLI's stop event already set (SIGTERM during `import torch`) and data that is not there
    store = LocalStore(tmp_path / "store")
    stop = threading.Event()
    stop.set()
    # WHEN the run starts
    code = run.main(make_config(tmp_path / "no-data", tmp_path, str(store.root)), stop=stop)
    # THEN it ends interrupted (exit 75) without reaching the data (which would have failed it), and stored nothing
    assert code == run.EXIT_INTERRUPTED
    record = read_status(store, RUN)
    assert record is not None
    assert (record["state"], record["lease"]) == ("interrupted", None)
    assert "before training started" in record["reason"]
    assert not store.exists(checkpoint_key(RUN))
    assert published_versions(store, "cifar10") == []


def test_run_keeps_the_trigger_fields_and_uses_the_trigger_attempt(data_dir: Path, tmp_path: Path) -> None:
    # GIVEN the record the trigger wrote for a Spot resume (attempt 2, still queued)
    store = LocalStore(tmp_path / "store")
    queued = {
        "schema": 1, "run_id": RUN, "state": "queued", "attempt": 2, "source": "spot-resume",
        "image_digest": "sha256:" + "b" * 64, "git_sha": None, "params": {"epochs": 2},
        "task_arn": "arn:aws:ecs:us-east-1:123456789012:task/pushtrain/abc", "reason": None, "version": None,
        "created_at": "2026-11-25T19:00:00Z", "updated_at": "2026-11-25T19:00:00Z", "history": [],
    }  # fmt: skip
    store.put(status_key(RUN), json.dumps(queued).encode())
    # WHEN the trainer runs it
    code = run.main(make_config(data_dir, tmp_path, str(store.root), attempt=2))
    # THEN the record is the trigger's, moved to succeeded
    record = read_status(store, RUN)
    assert code == run.EXIT_SUCCEEDED
    assert record is not None
    assert (record["state"], record["attempt"], record["source"]) == ("succeeded", 2, "spot-resume")
    assert record["task_arn"] == queued["task_arn"]


def test_run_that_published_but_died_before_recording_it_is_finished_without_training(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a run that published its version, then died before the gate and the status update
    store = LocalStore(tmp_path / "store")
    config = make_config(data_dir, tmp_path, str(store.root))

    def killed(self: run.Run, version: str, accuracy: float) -> None:
        raise SystemExit(137)  # the process dies here, as under SIGKILL: no except clause runs

    monkeypatch.setattr(run.Run, "gate", killed)
    with pytest.raises(SystemExit):
        run.main(config)
    assert (read_status(store, RUN) or {}).get("state") == "running"
    monkeypatch.undo()
    monkeypatch.setattr(TrainingSession, "run_epoch", lambda *a, **k: pytest.fail("must not train again"))
    # WHEN it is started again
    code = run.main(config)
    # THEN the published version is gated and recorded; no second version appears
    versions = published_versions(store, "cifar10")
    record = read_status(store, RUN)
    assert code == run.EXIT_SUCCEEDED
    assert len(versions) == 1
    assert record is not None
    assert (record["state"], record["version"]) == ("succeeded", versions[0])
    assert json.loads(store.get(champion_key("cifar10")))["version"] == versions[0]


def test_unreadable_champion_while_finishing_a_published_run_records_the_gate_pending(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a run that published and died before the gate, and a champion record that is damaged
    store = LocalStore(tmp_path / "store")
    config = make_config(data_dir, tmp_path, str(store.root))

    def killed(self: run.Run, version: str, accuracy: float) -> None:
        raise SystemExit(137)

    monkeypatch.setattr(run.Run, "gate", killed)
    with pytest.raises(SystemExit):
        run.main(config)
    monkeypatch.undo()
    store.put(champion_key("cifar10"), b"{damaged")
    # WHEN it is started again
    code = run.main(config)
    # THEN its visible version makes it succeeded (exit 0, never failed), with the gate recorded as pending
    # for a retry, and the damaged champion left as it is
    versions = published_versions(store, "cifar10")
    record = read_status(store, RUN)
    assert code == run.EXIT_SUCCEEDED
    assert record is not None
    assert (record["state"], record["version"], record["gate"]["outcome"]) == ("succeeded", versions[0], "pending")
    assert store.get(champion_key("cifar10")) == b"{damaged"


@pytest.mark.parametrize("created_at", ["2099-01-01T00:00:00Z", "garbage", "2026-11-25T19:00:00", 17])
def test_a_record_whose_created_at_cannot_name_the_version_fails_the_run_naming_it(
    data_dir: Path, tmp_path: Path, created_at: object
) -> None:
    # GIVEN a record (the trigger's) whose created_at is in the future, not a time, not UTC, or not a string
    store = LocalStore(tmp_path / "store")
    queued = new_record(RUN, now="2026-11-25T19:00:00Z", source="push")
    store.put(status_key(RUN), json.dumps({**queued, "created_at": created_at}).encode())
    # WHEN the trainer runs it
    code = run.main(make_config(data_dir, tmp_path, str(store.root)))
    # THEN it fails before training, naming the field, and publishes nothing (no version 2099… or 1970…)
    record = read_status(store, RUN)
    assert code == run.EXIT_FAILED
    assert record is not None and record["state"] == "failed"
    assert f"created_at {created_at!r}" in record["reason"]
    assert store.list("models/") == []
    assert not store.exists(checkpoint_key(RUN))
