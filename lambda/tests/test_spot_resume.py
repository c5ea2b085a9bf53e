"""Spot resume: an interrupted training task starts again with the same run id and attempt + 1,
up to PUSHTRAIN_MAX_ATTEMPTS; normal and failure exits start nothing; a redelivered stop event
starts nothing twice."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from trigger.errors import AttemptsExhaustedError
from trigger.handler import handle
from trigger_testkit import DIGEST, PUSH_RUN_ID, Emulated, clock, env_of, no_sleep, run_task_failing_once


def with_attempt(event: dict[str, Any], attempt: int) -> dict[str, Any]:
    event = copy.deepcopy(event)
    for pair in event["detail"]["overrides"]["containerOverrides"][0]["environment"]:
        if pair["name"] == "TRAINER_ATTEMPT":
            pair["value"] = str(attempt)
    return event


def stopped_with(event: dict[str, Any], stop_code: str, exit_code: int, reason: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    event["detail"].update(stopCode=stop_code, stoppedReason=reason)
    event["detail"]["containers"][0]["exitCode"] = exit_code
    return event


@pytest.fixture
def pushed(aws: Emulated, push_event: dict[str, Any]) -> Emulated:
    """GIVEN the push sample was trained: attempt 1 of PUSH_RUN_ID runs."""
    handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    return aws


def test_spot_interrupted_task_restarts_with_same_run_id_and_next_attempt(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    # WHEN attempt 1 is stopped by a Spot interruption (the sample event)
    decision = handle(spot_stop_event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    # THEN attempt 2 of the same run starts, on the same digest
    assert decision["outcome"] == "started"
    tasks = {t["taskArn"]: t for t in pushed.tasks()}
    assert len(tasks) == 2
    resumed = env_of(tasks[decision["task_arn"]])
    assert resumed["TRAINER_RUN_ID"] == PUSH_RUN_ID
    assert resumed["TRAINER_ATTEMPT"] == "2"
    assert resumed["TRAINER_IMAGE_DIGEST"] == DIGEST
    # AND the record carries attempt 2, its task and why
    record = pushed.record(PUSH_RUN_ID)
    assert (record["attempt"], record["state"], record["source"]) == (2, "queued", "spot-resume")
    assert record["task_arn"] == decision["task_arn"]
    assert record["reason"] == "SpotInterruption: Your Spot Task was interrupted."
    assert [h["attempt"] for h in record["history"]] == [1, 2]


def test_termination_notice_stop_code_also_resumes(pushed: Emulated, spot_stop_event: dict[str, Any]) -> None:
    event = stopped_with(spot_stop_event, "TerminationNotice", 75, "Task stopped due to a termination notice")

    assert handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)["outcome"] == "started"
    assert len(pushed.tasks()) == 2


def test_stop_event_delivered_twice_starts_one_new_task(pushed: Emulated, spot_stop_event: dict[str, Any]) -> None:
    first = handle(spot_stop_event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    second = handle(spot_stop_event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert second["outcome"] == "duplicate"
    assert second["task_arn"] == first["task_arn"]
    assert len(pushed.tasks()) == 2


def test_resume_whose_start_failed_is_retried_by_the_redelivered_stop_event(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    # GIVEN the resume recorded attempt 2 but its RunTask failed (the handler raised: Lambda retries)
    with run_task_failing_once(pushed), pytest.raises(ClientError, match="injected"):
        handle(spot_stop_event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    assert (pushed.record(PUSH_RUN_ID)["attempt"], pushed.record(PUSH_RUN_ID)["task_arn"]) == (2, None)

    # WHEN the stop event is delivered again
    decision = handle(spot_stop_event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    # THEN attempt 2 starts, once
    assert (decision["outcome"], decision["attempt"]) == ("retried-start", 2)
    assert len(pushed.tasks()) == 2
    assert pushed.record(PUSH_RUN_ID)["task_arn"] == decision["task_arn"]


def test_interruption_of_the_last_allowed_attempt_raises(pushed: Emulated, spot_stop_event: dict[str, Any]) -> None:
    # GIVEN PUSHTRAIN_MAX_ATTEMPTS=3 and attempt 3 of the run was interrupted
    assert pushed.config.max_attempts == 3
    record = pushed.record(PUSH_RUN_ID)
    record.update(attempt=3, state="interrupted")
    pushed.s3.put_object(
        Bucket=pushed.config.bucket, Key=f"runs/{PUSH_RUN_ID}/status.json", Body=json.dumps(record).encode()
    )
    event = with_attempt(spot_stop_event, 3)

    # WHEN / THEN the handler raises (the DLQ and its alarm see a run that cannot finish on Spot)
    with pytest.raises(AttemptsExhaustedError, match="PUSHTRAIN_MAX_ATTEMPTS=3 allows no attempt 4"):
        handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    assert len(pushed.tasks()) == 1
    assert pushed.record(PUSH_RUN_ID)["attempt"] == 3


@pytest.mark.parametrize(
    ("stop_code", "exit_code", "reason"),
    [
        ("EssentialContainerExited", 0, "Essential container in task exited"),
        ("EssentialContainerExited", 1, "Essential container in task exited"),
        ("UserInitiated", 143, "Task stopped by user"),
    ],
    ids=["normal-exit", "failure-exit", "stopped-by-user"],
)
def test_stops_that_are_not_interruptions_start_nothing(
    pushed: Emulated, spot_stop_event: dict[str, Any], stop_code: str, exit_code: int, reason: str
) -> None:
    event = stopped_with(spot_stop_event, stop_code, exit_code, reason)

    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert decision["outcome"] == "no-restart"
    assert f"exit code {exit_code}" in decision["reason"]
    assert len(pushed.tasks()) == 1
    assert pushed.record(PUSH_RUN_ID)["attempt"] == 1


def test_termination_notice_while_still_running_waits_for_the_stopped_event(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    # GIVEN the first event of an interruption: desired STOPPED, last status still RUNNING (checkpointing)
    event = copy.deepcopy(spot_stop_event)
    event["detail"]["lastStatus"] = "RUNNING"

    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert decision["outcome"] == "ignored"
    assert len(pushed.tasks()) == 1


def test_interrupted_run_that_already_succeeded_is_not_restarted(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    record = pushed.record(PUSH_RUN_ID)
    record["state"] = "succeeded"
    pushed.s3.put_object(
        Bucket=pushed.config.bucket, Key=f"runs/{PUSH_RUN_ID}/status.json", Body=json.dumps(record).encode()
    )

    decision = handle(spot_stop_event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert decision["outcome"] == "no-restart"
    assert len(pushed.tasks()) == 1


def test_interruption_of_an_unknown_run_raises(aws: Emulated, spot_stop_event: dict[str, Any]) -> None:
    with pytest.raises(Exception, match=f"runs/{PUSH_RUN_ID}/status.json is missing"):
        handle(spot_stop_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    assert aws.tasks() == []
