"""S3 answers a conditional write racing another with 409 ConditionalRequestConflict as well as 412:
updates re-read and re-apply; creates back off, look again, and either see a duplicate or try again
(bounded); the cold start refuses a botocore that cannot send conditional writes."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from trigger.aws import require_conditional_writes
from trigger.errors import ConfigError, RecordConflictError
from trigger.records import create_record, new_record, read_record, record_key, update_record
from trigger.runs import RunSpec
from trigger.s3json import put_json
from trigger.taskdef import index_key
from trigger_testkit import DIGEST, NOW, PUSH_RUN_ID, Emulated, no_sleep

SPEC = RunSpec(run_id=PUSH_RUN_ID, attempt=1, digest=DIGEST, git_sha=None, params={})
CONFLICT = {"Error": {"Code": "ConditionalRequestConflict", "Message": "A conflicting operation is in progress"}}


class ConflictingS3:
    """The emulated S3 client, answering the next `conflicts` PutObject calls with 409.

    `meanwhile` runs before each 409: the concurrent write that the conflict was about, if it landed.
    """

    def __init__(self, s3: Any, conflicts: int, meanwhile: Any = None) -> None:
        self._s3 = s3
        self.conflicts = conflicts
        self.meanwhile = meanwhile
        self.puts = 0

    def put_object(self, **kwargs: Any) -> Any:
        self.puts += 1
        if self.conflicts > 0:
            self.conflicts -= 1
            if self.meanwhile is not None:
                self.meanwhile()
            raise ClientError({**CONFLICT, "ResponseMetadata": {"HTTPStatusCode": 409}}, "PutObject")
        return self._s3.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def test_create_that_conflicts_with_a_create_that_landed_is_a_duplicate(aws: Emulated) -> None:
    # GIVEN another invocation's create of the same record lands while ours answers 409
    theirs = new_record(SPEC, "reconcile", NOW)
    landed = ConflictingS3(aws.s3, 1, lambda: create_record(aws.s3, aws.config.bucket, theirs, sleep=no_sleep))

    # WHEN we create the record
    etag = create_record(landed, aws.config.bucket, new_record(SPEC, "push", NOW), sleep=no_sleep)

    # THEN it is a duplicate (None), and the record is theirs
    assert etag is None
    assert aws.record(PUSH_RUN_ID)["source"] == "reconcile"


def test_create_that_conflicts_with_nothing_is_tried_again(aws: Emulated) -> None:
    s3 = ConflictingS3(aws.s3, 2)
    slept: list[float] = []

    etag = create_record(s3, aws.config.bucket, new_record(SPEC, "push", NOW), sleep=slept.append)

    assert etag is not None
    assert s3.puts == 3
    assert len(slept) == 2
    assert aws.record(PUSH_RUN_ID)["source"] == "push"


def test_create_that_keeps_conflicting_gives_up_naming_the_key(aws: Emulated) -> None:
    s3 = ConflictingS3(aws.s3, 100)

    with pytest.raises(RecordConflictError, match=f"{record_key(PUSH_RUN_ID)}: 4 creates answered 409"):
        create_record(s3, aws.config.bucket, new_record(SPEC, "push", NOW), sleep=no_sleep)
    assert s3.puts == 4


def test_update_that_conflicts_is_reapplied_to_the_write_that_landed(aws: Emulated) -> None:
    # GIVEN a record, and the trainer marking it running while our update answers 409
    bucket = aws.config.bucket
    create_record(aws.s3, bucket, new_record(SPEC, "push", NOW), sleep=no_sleep)

    def trainer_writes_running() -> None:
        record = aws.record(PUSH_RUN_ID)
        record["state"] = "running"
        aws.s3.put_object(Bucket=bucket, Key=record_key(PUSH_RUN_ID), Body=json.dumps(record).encode())

    s3 = ConflictingS3(aws.s3, 1, trainer_writes_running)
    known = read_record(aws.s3, bucket, PUSH_RUN_ID)

    # WHEN we set the task ARN on the version we read
    update_record(s3, bucket, PUSH_RUN_ID, lambda r: {**r, "task_arn": "arn:task"}, now=NOW, known=known)

    # THEN the update was applied on top of the trainer's write
    record = aws.record(PUSH_RUN_ID)
    assert (record["state"], record["task_arn"]) == ("running", "arn:task")


def _index(aws: Emulated, s3: Any, arn: str, etag: str | None = None) -> bool:
    document = {"task_definition_arn": arn, "base_task_definition_arn": "arn:base"}
    return (
        put_json(s3, aws.config.bucket, index_key("pushtrain-trainer", DIGEST), document, etag=etag, sleep=no_sleep)
        is not None
    )


def _indexed_arn(aws: Emulated) -> str:
    body = aws.s3.get_object(Bucket=aws.config.bucket, Key=index_key("pushtrain-trainer", DIGEST))["Body"].read()
    return str(json.loads(body)["task_definition_arn"])


def test_index_write_that_conflicts_with_a_write_that_landed_loses(aws: Emulated) -> None:
    s3 = ConflictingS3(aws.s3, 1, lambda: _index(aws, aws.s3, "arn:theirs"))

    assert _index(aws, s3, "arn:ours") is False
    assert _indexed_arn(aws) == "arn:theirs"


def test_index_write_that_conflicts_with_nothing_is_tried_again(aws: Emulated) -> None:
    s3 = ConflictingS3(aws.s3, 1)

    assert _index(aws, s3, "arn:ours") is True
    assert _indexed_arn(aws) == "arn:ours"


def _s3_model(members: set[str]) -> Any:
    shape = SimpleNamespace(members=dict.fromkeys(members))
    operation = SimpleNamespace(input_shape=shape)
    return SimpleNamespace(meta=SimpleNamespace(service_model=SimpleNamespace(operation_model=lambda _: operation)))


def test_botocore_without_conditional_writes_fails_the_cold_start_naming_its_version() -> None:
    old = _s3_model({"Bucket", "Key", "Body", "IfNoneMatch"})

    with pytest.raises(ConfigError, match=r"botocore 1\.34\.0 has no S3 PutObject IfMatch"):
        require_conditional_writes(old, "1.34.0")


def test_the_installed_botocore_has_conditional_writes(aws: Emulated) -> None:
    require_conditional_writes(aws.s3, "installed")
