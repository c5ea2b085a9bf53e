"""A succeeded run sends one short SNS message (moto SNS -> SQS); a refused send never changes the outcome."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from trainer.config import ConfigError, TrainConfig
from trainer.runstate import read_status
from trainer.store import open_store
from trainer.synth import write_folder

from trainer import run

BUCKET = "pushtrain-notify-test"
RUN = "push-0a1b2c3d4e5f60718293"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_folder(root, n_train=256, n_test=64, seed=3)
    return root


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """GIVEN an artifacts bucket and a topic with a queue subscribed to it."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        sns, sqs = boto3.client("sns"), boto3.client("sqs")
        topic = sns.create_topic(Name="pushtrain-notifications")["TopicArn"]
        queue_url = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        yield {"topic": topic, "queue_url": queue_url}


def config(data_dir: Path, tmp_path: Path, **changes: Any) -> TrainConfig:
    return TrainConfig(model="cnn").replace(
        epochs=1, batch_size=64, lr=0.02, run_id=RUN, data_uri=str(data_dir), store_uri=f"s3://{BUCKET}",
        work_dir=str(tmp_path / "work"), progress="none", threads=1, accuracy_floor=0.0, **changes,
    )  # fmt: skip


def received(queue_url: str) -> list[dict[str, Any]]:
    messages = boto3.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def test_a_succeeded_run_publishes_one_message_with_model_version_accuracy_gate_and_cost(
    aws: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    # WHEN a run succeeds with the topic configured
    code = run.main(config(data_dir, tmp_path, notify_topic_arn=aws["topic"]))
    # THEN exactly one message says what was trained, how well, whether it was promoted and the cost
    assert code == run.EXIT_SUCCEEDED
    (message,) = received(aws["queue_url"])
    record = read_status(open_store(f"s3://{BUCKET}"), RUN)
    assert record is not None
    assert message["Subject"].startswith("pushtrain: cifar10 ") and message["Subject"].endswith("promoted to champion")
    body = message["Message"]
    assert f"version {record['version']}" in body
    assert "accuracy: " in body and "cost:     $" in body
    assert f"report:   s3://{BUCKET}/runs/{RUN}/report.md" in body
    # AND a second run of the same command finds the run finished and sends nothing more
    assert run.main(config(data_dir, tmp_path, notify_topic_arn=aws["topic"])) == run.EXIT_SUCCEEDED
    assert received(aws["queue_url"]) == []


def test_a_refused_notification_is_logged_and_the_run_still_succeeds(
    aws: dict[str, str], data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a topic ARN that does not exist (SNS answers NotFound)
    missing = aws["topic"].rsplit(":", 1)[0] + ":no-such-topic"
    with caplog.at_level(logging.WARNING, logger="trainer.notify"):
        code = run.main(config(data_dir, tmp_path, notify_topic_arn=missing))
    assert code == run.EXIT_SUCCEEDED
    assert any("could not notify" in r.getMessage() for r in caplog.records)


def test_without_a_topic_nothing_is_sent(aws: dict[str, str], data_dir: Path, tmp_path: Path) -> None:
    assert run.main(config(data_dir, tmp_path)) == run.EXIT_SUCCEEDED
    assert received(aws["queue_url"]) == []


def test_a_topic_setting_that_is_not_an_sns_arn_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="notify_topic_arn"):
        TrainConfig().replace(notify_topic_arn="pushtrain-notifications")
