"""Exactly-once starts across calls (moto keeps the state): duplicates, re-tags, failed starts."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from trigger.errors import InvalidEventError, StartInFlightError
from trigger.flows import push_spec
from trigger.handler import handle
from trigger.records import STATES, new_record
from trigger_testkit import (
    BASE_CONTAINER,
    DIGEST,
    GIT_SHA,
    NOW,
    PUSH_RUN_ID,
    SIGNATURE_MANIFEST,
    Emulated,
    clock,
    env_of,
    no_sleep,
    run_task_failing_once,
    stop_event_for,
)


def test_push_starts_one_task_on_the_pinned_digest_and_records_it(aws: Emulated, push_event: dict[str, Any]) -> None:
    # WHEN the push sample arrives
    decision = handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)

    # THEN one task runs the pushed digest (not a tag) with the run's identity in its environment
    (task,) = aws.tasks()
    assert task["taskArn"] == decision["task_arn"]
    pinned = aws.ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    assert pinned["containerDefinitions"][0]["image"].endswith(f"/pushtrain-trainer@{DIGEST}")
    assert env_of(task) == {
        "TRAINER_RUN_ID": PUSH_RUN_ID,
        "TRAINER_ATTEMPT": "1",
        "TRAINER_IMAGE_DIGEST": DIGEST,
        "TRAINER_GIT_SHA": GIT_SHA,
    }
    # AND the run record says so, in the shape docs/contracts.md gives
    record = aws.record(PUSH_RUN_ID)
    assert record["state"] in STATES
    assert {k: record[k] for k in ("schema", "state", "attempt", "source", "image_digest", "git_sha", "task_arn")} == {
        "schema": 1,
        "state": "queued",
        "attempt": 1,
        "source": "push",
        "image_digest": DIGEST,
        "git_sha": GIT_SHA,
        "task_arn": task["taskArn"],
    }
    assert record["created_at"] == "2026-11-25T19:00:00Z"
    assert record["history"] == [{"at": "2026-11-25T19:00:00Z", "state": "queued", "attempt": 1, "reason": None}]


def test_duplicate_push_event_starts_no_second_task(aws: Emulated, push_event: dict[str, Any]) -> None:
    # GIVEN the push was handled once
    first = handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)

    # WHEN EventBridge delivers the same event again
    second = handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)

    # THEN it is a duplicate pointing at the first task, and still one task runs
    assert second["outcome"] == "duplicate"
    assert second["task_arn"] == first["task_arn"]
    assert len(aws.tasks()) == 1


def test_same_digest_pushed_under_another_tag_days_later_starts_nothing_and_registers_nothing(
    aws: Emulated, push_event: dict[str, Any]
) -> None:
    # GIVEN a push was trained, and its revision registered
    handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    revisions = aws.revisions()

    # WHEN the same digest is pushed under another tag three days later (past the clientToken's 24 h)
    retag = {**push_event, "id": "5c0e9d2a-1111-2222-3333-444455556666"}
    retag["detail"] = {**push_event["detail"], "image-tag": "v1.2.0"}
    decision = handle(retag, aws.config, aws.clients, clock=lambda: NOW + timedelta(days=3), sleep=no_sleep)

    # THEN the run record alone stops it: no task, no revision
    assert decision["outcome"] == "duplicate"
    assert len(aws.tasks()) == 1
    assert aws.revisions() == revisions
    assert len(revisions) == 2  # the base and one pinned copy


def test_push_of_a_run_the_trainer_already_finished_starts_nothing(aws: Emulated, push_event: dict[str, Any]) -> None:
    # GIVEN a run record the trainer moved on (succeeded) without the trigger's task ARN
    handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    record = aws.record(PUSH_RUN_ID)
    record.update(state="succeeded", task_arn=None)
    aws.s3.put_object(Bucket=aws.config.bucket, Key=f"runs/{PUSH_RUN_ID}/status.json", Body=json.dumps(record).encode())

    decision = handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)

    assert decision["outcome"] == "duplicate"
    assert len(aws.tasks()) == 1


def test_failed_start_raises_and_its_retry_starts_exactly_one_task(aws: Emulated, push_event: dict[str, Any]) -> None:
    with run_task_failing_once(aws):
        # GIVEN RunTask fails on the first delivery
        # WHEN the push is handled: THEN the failure raises (Lambda retries it; the DLQ sees the last one)
        with pytest.raises(ClientError, match="injected"):
            handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
        assert aws.tasks() == []
        assert aws.record(PUSH_RUN_ID)["task_arn"] is None  # queued, no task: a start that failed

        # WHEN Lambda retries the same event
        decision = handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)

    # THEN the start is retried once, and recorded
    assert decision["outcome"] == "retried-start"
    (task,) = aws.tasks()
    assert aws.record(PUSH_RUN_ID)["task_arn"] == task["taskArn"]
    assert len(aws.revisions()) == 2  # the retry reused the revision the first try registered


def test_each_decision_is_one_json_line_naming_event_run_digest_task_and_outcome(
    aws: Emulated, push_event: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    handle({**push_event, "detail": {**push_event["detail"], "action-type": "DELETE"}}, aws.config, aws.clients)
    with pytest.raises(InvalidEventError, match="image-digest"):
        handle({**push_event, "detail": {**push_event["detail"], "image-digest": "sha256:1"}}, aws.config, aws.clients)

    started, skipped, refused = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert {k: started[k] for k in ("decision", "outcome", "event_id", "run_id", "digest")} == {
        "decision": "start",
        "outcome": "started",
        "event_id": push_event["id"],
        "run_id": PUSH_RUN_ID,
        "digest": DIGEST,
    }
    assert started["task_arn"].startswith("arn:aws:ecs:")
    # a well-formed event that is not for us is a logged skip, not an error (no retry, no dead letter)
    assert (skipped["decision"], skipped["outcome"], skipped["event_id"]) == ("skip", "not-for-us", push_event["id"])
    assert "action-type='DELETE'" in skipped["reason"]
    assert (refused["decision"], refused["outcome"], refused["event_id"]) == (
        "reject",
        "invalid-event",
        push_event["id"],
    )
    assert "image-digest='sha256:1'" in refused["error"]


def test_untagged_push_is_a_manifest_inside_an_index_and_starts_nothing(
    aws: Emulated, push_event: dict[str, Any]
) -> None:
    untagged = {**push_event, "detail": {k: v for k, v in push_event["detail"].items() if k != "image-tag"}}

    decision = handle(untagged, aws.config, aws.clients, clock=clock, sleep=no_sleep)

    assert decision["outcome"] == "ignored"
    assert aws.tasks() == []


def test_a_fresh_claim_without_task_is_a_start_in_flight_and_starts_nothing(
    aws: Emulated, push_event: dict[str, Any]
) -> None:
    # GIVEN another invocation created the record a minute ago and is calling RunTask right now
    handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    aws.put_record(PUSH_RUN_ID, task_arn=None, claimed_at="2026-11-25T18:59:00Z")
    before = len(aws.tasks())

    # WHEN the same push is delivered again / THEN it raises a retryable error and calls no RunTask
    with pytest.raises(StartInFlightError, match="is in flight"):
        handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    assert len(aws.tasks()) == before


def test_a_start_whose_answer_was_lost_is_found_not_started_again(aws: Emulated, push_event: dict[str, Any]) -> None:
    # GIVEN RunTask started attempt 1, then the invocation died before recording the task (claim expired)
    task_arn = aws.start_attempt(PUSH_RUN_ID, 1)
    record = new_record(push_spec(DIGEST, GIT_SHA), "push", NOW - timedelta(minutes=10))
    aws.s3.put_object(Bucket=aws.config.bucket, Key=f"runs/{PUSH_RUN_ID}/status.json", Body=json.dumps(record))

    # WHEN the push is delivered again
    decision = handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)

    # THEN the claim is taken over, the task is found by startedBy, recorded, and no second one starts
    assert (decision["outcome"], decision["task_arn"]) == ("recovered", task_arn)
    assert [t["taskArn"] for t in aws.tasks()] == [task_arn]
    assert (aws.record(PUSH_RUN_ID)["task_arn"], aws.record(PUSH_RUN_ID)["claimed_at"]) == (
        task_arn,
        "2026-11-25T19:00:00Z",
    )


def test_an_expired_claim_without_task_is_taken_over_once(aws: Emulated, push_event: dict[str, Any]) -> None:
    # GIVEN a start claimed ten minutes ago whose RunTask never happened (its invocation died)
    record = new_record(push_spec(DIGEST, GIT_SHA), "push", NOW - timedelta(minutes=10))
    aws.s3.put_object(Bucket=aws.config.bucket, Key=f"runs/{PUSH_RUN_ID}/status.json", Body=json.dumps(record))

    first = handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    second = handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)

    assert (first["outcome"], second["outcome"]) == ("retried-start", "duplicate")
    assert len(aws.tasks()) == 1


@pytest.mark.parametrize(
    ("kind", "manifest"),
    [
        ("cosign signature", SIGNATURE_MANIFEST),
        (
            "in-toto attestation",
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": DIGEST},
                "layers": [{"mediaType": "application/vnd.dsse.envelope.v1+json", "size": 9, "digest": DIGEST}],
            },
        ),
        (
            "sbom artifact",
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/spdx+json",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": DIGEST},
                "layers": [{"mediaType": "application/spdx+json", "size": 9, "digest": DIGEST}],
            },
        ),
        (
            "helm chart",
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "size": 2, "digest": DIGEST},
                "layers": [
                    {"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "size": 9, "digest": DIGEST}
                ],
            },
        ),
        (
            "index of attestations only",
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": DIGEST,
                        "size": 9,
                        "platform": {"architecture": "unknown", "os": "unknown"},
                        "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                    }
                ],
            },
        ),
    ],
)
def test_a_tagged_push_of_something_that_is_not_an_image_starts_nothing_and_writes_nothing(
    aws: Emulated, push_event: dict[str, Any], kind: str, manifest: dict[str, Any]
) -> None:
    # GIVEN an artifact pushed under a tag (its digest differs from the sample image's)
    digest = "sha256:" + "7" * 64
    aws.push_image(digest, "sha256-811d8fd9.sig", manifest=manifest)
    event = {**push_event, "detail": {**push_event["detail"], "image-digest": digest, "image-tag": "sha256-x.sig"}}

    decision = handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep)

    # THEN it is skipped with the reason logged: no task, no record, no revision
    assert (decision["decision"], decision["outcome"]) == ("skip", "not-an-image"), kind
    assert "not a runnable container image" in decision["reason"]
    assert aws.tasks() == []
    assert aws.s3.list_objects_v2(Bucket=aws.config.bucket).get("KeyCount") == 0
    assert len(aws.revisions()) == 1


def test_a_multi_platform_index_is_a_runnable_image(aws: Emulated, push_event: dict[str, Any]) -> None:
    digest = "sha256:" + "8" * 64
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": DIGEST,
                "size": 9,
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + "9" * 64,
                "size": 9,
                "platform": {"architecture": "unknown", "os": "unknown"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
            },
        ],
    }
    aws.push_image(digest, "0" * 40, manifest=index)
    event = {**push_event, "detail": {**push_event["detail"], "image-digest": digest, "image-tag": "0" * 40}}

    assert handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep)["outcome"] == "started"
    assert len(aws.tasks()) == 1


def test_a_push_event_for_a_digest_not_in_the_repository_starts_nothing(
    aws: Emulated, push_event: dict[str, Any]
) -> None:
    # GIVEN an event naming a digest ECR does not hold (forged, or deleted since)
    event = {**push_event, "detail": {**push_event["detail"], "image-digest": "sha256:" + "e" * 64}}

    decision = handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep)

    assert (decision["decision"], decision["outcome"]) == ("skip", "not-in-repository")
    assert aws.tasks() == []
    assert aws.s3.list_objects_v2(Bucket=aws.config.bucket).get("KeyCount") == 0


def test_a_digest_pinned_before_the_base_changed_gets_a_revision_of_the_new_base(
    aws: Emulated, push_event: dict[str, Any], spot_stop_event: dict[str, Any]
) -> None:
    # GIVEN the push trained on a copy of the base, and Terraform then registered a new base (more memory)
    handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    first = aws.record(PUSH_RUN_ID)["task_arn"]
    aws.ecs.register_task_definition(
        family="pushtrain-trainer",
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="2048",
        memory="16384",
        containerDefinitions=[{**copy.deepcopy(BASE_CONTAINER), "memory": 16384}],
    )

    # WHEN the run resumes after a Spot interruption
    event = stop_event_for(aws, spot_stop_event, first, "SpotInterruption", 75, "Your Spot Task was interrupted.")
    decision = handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep)

    # THEN attempt 2 runs a new copy, of the new base, with the same pinned image
    assert decision["registered_task_definition"] is True
    resumed = aws.ecs.describe_task_definition(taskDefinition=decision["task_definition_arn"])["taskDefinition"]
    assert resumed["memory"] == "16384"
    assert resumed["containerDefinitions"][0]["image"].endswith(f"@{DIGEST}")
    # AND a later start on that digest reuses it
    again = handle(
        {**push_event, "detail": {**push_event["detail"], "image-tag": "v2"}}, aws.config, aws.clients, clock=clock
    )
    assert again["outcome"] == "duplicate"
    index = json.loads(
        aws.s3.get_object(Bucket=aws.config.bucket, Key=f"runs/_taskdefs/pushtrain-trainer/{DIGEST}.json")[
            "Body"
        ].read()
    )
    assert index["task_definition_arn"] == decision["task_definition_arn"]
