"""The exact AWS requests a push makes, checked by botocore's Stubber against the real API models."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY
from trigger.config import Config
from trigger.errors import StoreAccessError
from trigger.handler import handle
from trigger.taskdef import fingerprint
from trigger_testkit import ACCOUNT, BUCKET, DIGEST, GIT_SHA, PUSH_RUN_ID, REGION, Stubbed, clock, no_sleep

FAMILY_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/pushtrain-trainer"
TASK_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/pushtrain/0f6c1d2e3b4a49c8a7b6c5d4e3f2a1b0"
PINNED_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/pushtrain-trainer@{DIGEST}"
RECORD_KEY = f"runs/{PUSH_RUN_ID}/status.json"
INDEX_KEY = f"runs/_taskdefs/pushtrain-trainer/{DIGEST}.json"

CONTAINER = {
    "name": "trainer",
    "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/pushtrain-trainer:bootstrap",
    "cpu": 0,
    "essential": True,
    "stopTimeout": 120,
    "environment": [{"name": "TRAINER_STORE_URI", "value": f"s3://{BUCKET}"}],
    "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/scratch", "readOnly": False}],
    "logConfiguration": {
        "logDriver": "awslogs",
        "options": {"awslogs-group": "/pushtrain/trainer", "awslogs-region": REGION, "awslogs-stream-prefix": "t"},
    },
}
# What DescribeTaskDefinition returns for the base revision Terraform registered: the request fields
# plus the ones only a description carries (ARN, revision, status, compatibilities, timestamps).
BASE = {
    "taskDefinitionArn": f"{FAMILY_ARN}:1",
    "family": "pushtrain-trainer",
    "revision": 1,
    "status": "ACTIVE",
    "taskRoleArn": f"arn:aws:iam::{ACCOUNT}:role/pushtrain-task",
    "executionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/pushtrain-execution",
    "networkMode": "awsvpc",
    "containerDefinitions": [CONTAINER],
    "volumes": [{"name": "scratch"}],
    "placementConstraints": [],
    "requiresCompatibilities": ["FARGATE"],
    "compatibilities": ["EC2", "FARGATE"],
    "requiresAttributes": [{"name": "com.amazonaws.ecs.capability.logging-driver.awslogs"}],
    "cpu": "2048",
    "memory": "8192",
    "runtimePlatform": {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
    "ephemeralStorage": {"sizeInGiB": 30},
    "registeredAt": datetime(2026, 11, 20, tzinfo=UTC),
    "registeredBy": f"arn:aws:sts::{ACCOUNT}:assumed-role/pushtrain-apply/terraform",
}
EXPECTED_REGISTER = {
    "family": "pushtrain-trainer",
    "taskRoleArn": f"arn:aws:iam::{ACCOUNT}:role/pushtrain-task",
    "executionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/pushtrain-execution",
    "networkMode": "awsvpc",
    "containerDefinitions": [{**CONTAINER, "image": PINNED_IMAGE}],
    "volumes": [{"name": "scratch"}],
    "placementConstraints": [],
    "requiresCompatibilities": ["FARGATE"],
    "cpu": "2048",
    "memory": "8192",
    "runtimePlatform": {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
    "ephemeralStorage": {"sizeInGiB": 30},
    "tags": [{"key": "pushtrain:image-digest", "value": DIGEST}],
}

# A pinned revision as DescribeTaskDefinition shows it (tags are returned beside it, not inside).
PINNED = {
    **BASE,
    **{key: value for key, value in EXPECTED_REGISTER.items() if key != "tags"},
    "taskDefinitionArn": f"{FAMILY_ARN}:2",
    "revision": 2,
}


def expected_run_task(config: Config, task_definition: str, provider: str, token: str) -> dict[str, Any]:
    return {
        "cluster": "pushtrain",
        "taskDefinition": task_definition,
        "count": 1,
        "capacityProviderStrategy": [{"capacityProvider": provider, "weight": 1}],
        "clientToken": token,
        "startedBy": PUSH_RUN_ID,
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": ["subnet-0abc1234def567890", "subnet-0fed9876cba543210"],
                "securityGroups": ["sg-0123456789abcdef0"],
                "assignPublicIp": "DISABLED",
            }
        },
        "overrides": {
            "containerOverrides": [
                {
                    "name": "trainer",
                    "environment": [
                        {"name": "TRAINER_ATTEMPT", "value": "1"},
                        {"name": "TRAINER_GIT_SHA", "value": GIT_SHA},
                        {"name": "TRAINER_IMAGE_DIGEST", "value": DIGEST},
                        {"name": "TRAINER_RUN_ID", "value": PUSH_RUN_ID},
                    ],
                }
            ]
        },
        "tags": [
            {"key": "pushtrain:run-id", "value": PUSH_RUN_ID},
            {"key": "pushtrain:attempt", "value": "1"},
            {"key": "pushtrain:image-digest", "value": DIGEST},
            {"key": "pushtrain:git-sha", "value": GIT_SHA},
        ],
        "enableECSManagedTags": True,
    }


def body(document: dict[str, Any]) -> StreamingBody:
    raw = json.dumps(document).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


BASE_PRINT = fingerprint(EXPECTED_REGISTER, "trainer")
IMAGE_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023, "digest": DIGEST},
    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 32654, "digest": DIGEST}],
}


def expect_image_checked(stubbed: Stubbed) -> None:
    """ECR confirms the digest exists (DescribeImages) and is a runnable image (BatchGetImage)."""
    stubbed.ecr.add_response(
        "describe_images",
        {
            "imageDetails": [
                {
                    "imageDigest": DIGEST,
                    "imageTags": [GIT_SHA],
                    "imageManifestMediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "artifactMediaType": "application/vnd.docker.container.image.v1+json",
                }
            ]
        },
        {"repositoryName": "pushtrain-trainer", "imageIds": [{"imageDigest": DIGEST}]},
    )
    stubbed.ecr.add_response(
        "batch_get_image",
        {"images": [{"imageId": {"imageDigest": DIGEST}, "imageManifest": json.dumps(IMAGE_MANIFEST)}], "failures": []},
        {
            "repositoryName": "pushtrain-trainer",
            "imageIds": [{"imageDigest": DIGEST}],
            "acceptedMediaTypes": ANY,
        },
    )


def expect_record_created(stubbed: Stubbed) -> None:
    expect_image_checked(stubbed)
    # a digest no push has trained (trigger.trained): looked up, then remembered before its record is created
    stubbed.s3.add_client_error(
        "get_object", "NoSuchKey", http_status_code=404, expected_params={"Bucket": BUCKET, "Key": DIGEST_KEY}
    )
    stubbed.s3.add_response(
        "put_object",
        {"ETag": '"digest-v1"'},
        {"Bucket": BUCKET, "Key": DIGEST_KEY, "Body": ANY, "ContentType": "application/json", "IfNoneMatch": "*"},
    )
    stubbed.s3.add_response(
        "put_object",
        {"ETag": '"record-v1"'},
        {"Bucket": BUCKET, "Key": RECORD_KEY, "Body": ANY, "ContentType": "application/json", "IfNoneMatch": "*"},
    )


DIGEST_KEY = f"digests/{DIGEST}.json"


def expect_task_arn_recorded(stubbed: Stubbed) -> None:
    stubbed.s3.add_response(
        "put_object",
        {"ETag": '"record-v2"'},
        {"Bucket": BUCKET, "Key": RECORD_KEY, "Body": ANY, "ContentType": "application/json", "IfMatch": '"record-v1"'},
    )


def expect_claim_released(stubbed: Stubbed) -> None:
    """After a start that raised: the record is read and its claim cleared (If-Match), so a retry may go."""
    claimed = {"run_id": PUSH_RUN_ID, "state": "queued", "attempt": 1, "task_arn": None, "claimed_at": "x"}
    stubbed.s3.add_response(
        "get_object", {"Body": body(claimed), "ETag": '"record-v1"'}, {"Bucket": BUCKET, "Key": RECORD_KEY}
    )
    stubbed.s3.add_response(
        "put_object",
        {"ETag": '"record-released"'},
        {"Bucket": BUCKET, "Key": RECORD_KEY, "Body": ANY, "ContentType": "application/json", "IfMatch": '"record-v1"'},
    )


def expect_index_written(stubbed: Stubbed, condition: dict[str, str]) -> None:
    """The registration is claimed in the index (pending), then the index names the new revision."""
    stubbed.s3.add_response(
        "put_object",
        {"ETag": '"index-pending"'},
        {"Bucket": BUCKET, "Key": INDEX_KEY, "Body": ANY, "ContentType": "application/json", **condition},
    )


def expect_index_done(stubbed: Stubbed) -> None:
    stubbed.s3.add_response(
        "put_object",
        {"ETag": '"index-v2"'},
        {
            "Bucket": BUCKET,
            "Key": INDEX_KEY,
            "Body": ANY,
            "ContentType": "application/json",
            "IfMatch": '"index-pending"',
        },
    )


def expect_first_registration(stubbed: Stubbed) -> None:
    stubbed.ecs.add_response(
        "describe_task_definition", {"taskDefinition": BASE}, {"taskDefinition": "pushtrain-trainer"}
    )
    stubbed.s3.add_client_error("get_object", "NoSuchKey", http_status_code=404)
    expect_index_written(stubbed, {"IfNoneMatch": "*"})
    stubbed.ecs.add_response("register_task_definition", {"taskDefinition": PINNED}, EXPECTED_REGISTER)
    expect_index_done(stubbed)


def index_body(arn: str | None, **extra: Any) -> StreamingBody:
    return body({"task_definition_arn": arn, "base_fingerprint": BASE_PRINT, **extra})


def test_ecr_push_sample_registers_one_pinned_revision_and_runs_one_task(
    stubbed: Stubbed, config: Config, push_event: dict[str, Any]
) -> None:
    # GIVEN the AWS docs' push event for our repository, a digest never seen, and a base revision
    expect_record_created(stubbed)
    expect_first_registration(stubbed)
    stubbed.ecs.add_response(
        "run_task",
        {"tasks": [{"taskArn": TASK_ARN}], "failures": []},
        expected_run_task(config, f"{FAMILY_ARN}:2", "FARGATE_SPOT", f"{PUSH_RUN_ID}-a1"),
    )
    expect_task_arn_recorded(stubbed)

    # WHEN the handler receives it
    decision = handle(push_event, config, stubbed.clients, clock=clock, sleep=no_sleep)

    # THEN exactly those requests were made (Stubber fails on any other), in that order
    stubbed.assert_done()
    assert decision["outcome"] == "started"
    assert decision["run_id"] == PUSH_RUN_ID
    assert decision["task_arn"] == TASK_ARN
    assert decision["registered_task_definition"] is True


def test_digest_already_pinned_reuses_its_revision_and_registers_none(
    stubbed: Stubbed, config: Config, push_event: dict[str, Any]
) -> None:
    # GIVEN the digest's revision is indexed, made from the current base, and still ACTIVE with the pinned image
    expect_record_created(stubbed)
    stubbed.ecs.add_response(
        "describe_task_definition", {"taskDefinition": BASE}, {"taskDefinition": "pushtrain-trainer"}
    )
    stubbed.s3.add_response(
        "get_object",
        {"Body": index_body(f"{FAMILY_ARN}:2"), "ETag": '"index-v1"'},
        {"Bucket": BUCKET, "Key": INDEX_KEY},
    )
    stubbed.ecs.add_response(
        "describe_task_definition",
        {"taskDefinition": PINNED},
        {"taskDefinition": f"{FAMILY_ARN}:2"},
    )
    stubbed.ecs.add_response(
        "run_task",
        {"tasks": [{"taskArn": TASK_ARN}], "failures": []},
        expected_run_task(config, f"{FAMILY_ARN}:2", "FARGATE_SPOT", f"{PUSH_RUN_ID}-a1"),
    )
    expect_task_arn_recorded(stubbed)

    # WHEN the push arrives
    decision = handle(push_event, config, stubbed.clients, clock=clock, sleep=no_sleep)

    # THEN no RegisterTaskDefinition was made (Stubber would have refused it) and the task runs on :2
    stubbed.assert_done()
    assert decision["registered_task_definition"] is False
    assert decision["task_definition_arn"] == f"{FAMILY_ARN}:2"


def test_indexed_revision_that_was_deregistered_is_replaced(
    stubbed: Stubbed, config: Config, push_event: dict[str, Any]
) -> None:
    # GIVEN the index points at a revision someone deregistered
    expect_record_created(stubbed)
    stubbed.ecs.add_response(
        "describe_task_definition", {"taskDefinition": BASE}, {"taskDefinition": "pushtrain-trainer"}
    )
    stubbed.s3.add_response(
        "get_object",
        {"Body": index_body(f"{FAMILY_ARN}:2"), "ETag": '"index-v1"'},
        {"Bucket": BUCKET, "Key": INDEX_KEY},
    )
    stubbed.ecs.add_response(
        "describe_task_definition",
        {"taskDefinition": {**PINNED, "status": "INACTIVE"}},
        {"taskDefinition": f"{FAMILY_ARN}:2"},
    )
    # the index is claimed only if it is still the version we read, then names the new revision
    expect_index_written(stubbed, {"IfMatch": '"index-v1"'})
    stubbed.ecs.add_response(
        "register_task_definition",
        {"taskDefinition": {**PINNED, "taskDefinitionArn": f"{FAMILY_ARN}:3", "revision": 3}},
        EXPECTED_REGISTER,
    )
    expect_index_done(stubbed)
    stubbed.ecs.add_response(
        "run_task",
        {"tasks": [{"taskArn": TASK_ARN}], "failures": []},
        expected_run_task(config, f"{FAMILY_ARN}:3", "FARGATE_SPOT", f"{PUSH_RUN_ID}-a1"),
    )
    expect_task_arn_recorded(stubbed)

    # WHEN the push arrives
    decision = handle(push_event, config, stubbed.clients, clock=clock, sleep=no_sleep)

    # THEN a fresh revision was registered and used
    stubbed.assert_done()
    assert decision["task_definition_arn"] == f"{FAMILY_ARN}:3"


def test_base_without_the_trainer_container_raises_before_running_anything(
    stubbed: Stubbed, config: Config, push_event: dict[str, Any]
) -> None:
    # GIVEN a base revision whose container is not named PUSHTRAIN_CONTAINER_NAME
    expect_record_created(stubbed)
    renamed = {**BASE, "containerDefinitions": [{**CONTAINER, "name": "app"}]}
    stubbed.ecs.add_response("describe_task_definition", {"taskDefinition": renamed})
    expect_claim_released(stubbed)

    # WHEN / THEN the push raises naming the container, and RunTask is never called
    with pytest.raises(Exception, match=r"expected exactly one named 'trainer'"):
        handle(push_event, config, stubbed.clients, clock=clock, sleep=no_sleep)
    stubbed.assert_done()


def test_missing_list_bucket_grant_is_named_when_s3_hides_a_missing_key(
    stubbed: Stubbed, config: Config, push_event: dict[str, Any]
) -> None:
    # GIVEN a role without s3:ListBucket: S3 answers a missing index with 403, not 404
    expect_record_created(stubbed)
    stubbed.ecs.add_response("describe_task_definition", {"taskDefinition": BASE})
    stubbed.s3.add_client_error("get_object", "AccessDenied", "Access Denied", http_status_code=403)
    expect_claim_released(stubbed)

    # WHEN / THEN the push raises naming the grant, and nothing is registered or run
    with pytest.raises(StoreAccessError, match="s3:ListBucket"):
        handle(push_event, config, stubbed.clients, clock=clock, sleep=no_sleep)
    stubbed.assert_done()


def test_concurrent_first_pushes_register_one_revision_and_wait_for_its_arn(
    stubbed: Stubbed, config: Config, push_event: dict[str, Any]
) -> None:
    # GIVEN another invocation claimed the registration for this digest just before us, then indexed :2
    expect_record_created(stubbed)
    stubbed.ecs.add_response("describe_task_definition", {"taskDefinition": BASE})
    stubbed.s3.add_client_error("get_object", "NoSuchKey", http_status_code=404)
    stubbed.s3.add_client_error("put_object", "PreconditionFailed", http_status_code=412)
    stubbed.s3.add_response(
        "get_object",
        {"Body": index_body(None, claimed_at="2026-11-25T19:00:00Z"), "ETag": '"index-pending"'},
        {"Bucket": BUCKET, "Key": INDEX_KEY},
    )
    stubbed.s3.add_response(
        "get_object",
        {"Body": index_body(f"{FAMILY_ARN}:2"), "ETag": '"index-v1"'},
        {"Bucket": BUCKET, "Key": INDEX_KEY},
    )
    stubbed.ecs.add_response(
        "describe_task_definition", {"taskDefinition": PINNED}, {"taskDefinition": f"{FAMILY_ARN}:2"}
    )
    # AND we registered nothing (Stubber would refuse a RegisterTaskDefinition): no orphan revision
    # THEN RunTask uses the winner's :2, so both invocations send one identical, idempotent request
    stubbed.ecs.add_response(
        "run_task",
        {"tasks": [{"taskArn": TASK_ARN}], "failures": []},
        expected_run_task(config, f"{FAMILY_ARN}:2", "FARGATE_SPOT", f"{PUSH_RUN_ID}-a1"),
    )
    expect_task_arn_recorded(stubbed)

    decision = handle(push_event, config, stubbed.clients, clock=clock, sleep=no_sleep)

    stubbed.assert_done()
    assert decision["task_definition_arn"] == f"{FAMILY_ARN}:2"


def test_task_arn_is_recorded_on_top_of_a_trainer_write_that_won_the_race(
    stubbed: Stubbed, config: Config, push_event: dict[str, Any]
) -> None:
    # GIVEN the trainer marked the run running between our create and our update
    expect_record_created(stubbed)
    expect_first_registration(stubbed)
    stubbed.ecs.add_response("run_task", {"tasks": [{"taskArn": TASK_ARN}], "failures": []})
    stubbed.s3.add_client_error("put_object", "PreconditionFailed", http_status_code=412)
    running = {"run_id": PUSH_RUN_ID, "state": "running", "attempt": 1, "task_arn": None, "history": []}
    stubbed.s3.add_response(
        "get_object", {"Body": body(running), "ETag": '"record-trainer"'}, {"Bucket": BUCKET, "Key": RECORD_KEY}
    )
    written: list[bytes] = []
    stubbed.s3.add_response(
        "put_object",
        {"ETag": '"record-v3"'},
        {
            "Bucket": BUCKET,
            "Key": RECORD_KEY,
            "Body": ANY,
            "ContentType": "application/json",
            "IfMatch": '"record-trainer"',
        },
    )

    def record_body(params: dict[str, Any], **_: Any) -> None:
        written.append(params["Body"])

    events = stubbed.clients.s3.meta.events
    events.register("provide-client-params.s3.PutObject", record_body)
    try:
        # WHEN the push is handled
        handle(push_event, config, stubbed.clients, clock=clock, sleep=no_sleep)
    finally:
        events.unregister("provide-client-params.s3.PutObject", record_body)

    # THEN the update was re-applied to the trainer's version: its state kept, our task ARN added
    stubbed.assert_done()
    final = json.loads(written[-1])
    assert (final["state"], final["task_arn"]) == ("running", TASK_ARN)
