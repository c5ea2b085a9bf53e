"""Exactly-once starts across calls (moto keeps the state): duplicates, re-tags, failed starts."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from trigger.errors import InvalidEventError
from trigger.handler import handle
from trigger.records import STATES
from trigger_testkit import (
    DIGEST,
    GIT_SHA,
    NOW,
    PUSH_RUN_ID,
    Emulated,
    clock,
    env_of,
    no_sleep,
    run_task_failing_once,
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
