"""Stops that are not Spot interruptions: a run whose task never started, was killed or exited with a
failure is recorded `failed` (guarded on its attempt, never over a final state); the trainer's own
endings (exit 0, exit 75) are left as the trainer wrote them."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from trigger.errors import AttemptsExhaustedError
from trigger.events import TaskStopEvent
from trigger.handler import handle
from trigger.handler import parse as parse_event
from trigger_testkit import PUSH_RUN_ID, Emulated, clock, no_sleep, stop_event_for

PULL_ERROR = "CannotPullContainerError: pull image manifest has been retried 5 time(s)"


@pytest.fixture
def pushed(aws: Emulated, push_event: dict[str, Any]) -> Emulated:
    """GIVEN the push sample was trained: attempt 1 of PUSH_RUN_ID has a task."""
    handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    return aws


def set_record(aws: Emulated, **fields: Any) -> None:
    record = aws.record(PUSH_RUN_ID)
    record.update(fields)
    aws.s3.put_object(Bucket=aws.config.bucket, Key=f"runs/{PUSH_RUN_ID}/status.json", Body=json.dumps(record).encode())


def stop_of_our_task(
    aws: Emulated, sample: dict[str, Any], stop_code: str, exit_code: int | None, reason: str
) -> dict[str, Any]:
    """The sample stop event, for the task the record names, stopped (in ECS too) with `stop_code` / `exit_code`."""
    return stop_event_for(aws, sample, aws.record(PUSH_RUN_ID)["task_arn"], stop_code, exit_code, reason)


def test_task_that_failed_to_start_marks_the_run_failed(pushed: Emulated, spot_stop_event: dict[str, Any]) -> None:
    # GIVEN the task of attempt 1 could not pull its image (the record is still queued)
    event = stop_of_our_task(pushed, spot_stop_event, "TaskFailedToStart", None, PULL_ERROR)

    # WHEN the training-failed rule delivers its stop event
    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    # THEN the record says failed, naming the stop code, the missing exit code and ECS's reason
    assert (decision["decision"], decision["outcome"]) == ("fail", "marked-failed")
    record = pushed.record(PUSH_RUN_ID)
    assert (record["state"], record["attempt"]) == ("failed", 1)
    assert record["reason"] == f"stopCode TaskFailedToStart, no exit code: {PULL_ERROR}"
    assert record["history"][-1]["state"] == "failed"
    # AND nothing was started again
    assert len(pushed.tasks()) == 1


@pytest.mark.parametrize(
    ("exit_code", "reason"),
    [(137, "OutOfMemoryError: Container killed due to memory usage"), (2, "Essential container in task exited")],
    ids=["oom-kill", "failure-exit"],
)
def test_running_task_killed_or_exiting_with_a_failure_marks_the_run_failed(
    pushed: Emulated, spot_stop_event: dict[str, Any], exit_code: int, reason: str
) -> None:
    # GIVEN the trainer marked the run running and then died without writing its end
    set_record(pushed, state="running")
    event = stop_of_our_task(pushed, spot_stop_event, "EssentialContainerExited", exit_code, reason)

    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert decision["outcome"] == "marked-failed"
    record = pushed.record(PUSH_RUN_ID)
    assert record["state"] == "failed"
    assert record["reason"] == f"stopCode EssentialContainerExited, exit code {exit_code}: {reason}"


@pytest.mark.parametrize(
    ("state", "stop_code", "exit_code"),
    [
        ("succeeded", "EssentialContainerExited", 0),
        ("running", "EssentialContainerExited", 0),
        ("interrupted", "UserInitiated", 75),
        ("failed", "EssentialContainerExited", 1),
    ],
    ids=["normal-exit", "exit-0-before-the-record-caught-up", "stopped-by-a-person", "trainer-wrote-failed"],
)
def test_the_trainers_own_endings_are_left_as_written(
    pushed: Emulated, spot_stop_event: dict[str, Any], state: str, stop_code: str, exit_code: int
) -> None:
    # GIVEN the record as the trainer left it
    set_record(pushed, state=state, reason="trainer's reason")
    before = pushed.record(PUSH_RUN_ID)
    event = stop_of_our_task(pushed, spot_stop_event, stop_code, exit_code, "stopped")

    # WHEN its stop event arrives
    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    # THEN nothing changes and nothing starts; the log line says why
    assert decision["outcome"] == "no-restart"
    assert f"stopCode {stop_code}, exit code {exit_code}" in decision["reason"]
    assert pushed.record(PUSH_RUN_ID) == before
    assert len(pushed.tasks()) == 1


def test_failure_of_an_older_attempt_leaves_the_newer_attempt_alone(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    # GIVEN the run moved on to attempt 2 (the event's task is attempt 1)
    event = stop_of_our_task(pushed, spot_stop_event, "EssentialContainerExited", 137, "OutOfMemoryError")
    set_record(pushed, attempt=2, state="running")

    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert decision["outcome"] == "no-restart"
    assert "at attempt 2" in decision["reason"]
    assert (pushed.record(PUSH_RUN_ID)["state"], pushed.record(PUSH_RUN_ID)["attempt"]) == ("running", 2)


def test_failure_of_a_task_the_record_does_not_name_changes_nothing(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    # GIVEN a stop event for some other task carrying the same run id (the sample's task ARN)
    event = copy.deepcopy(spot_stop_event)
    event["detail"].update(stopCode="TaskFailedToStart", stoppedReason=PULL_ERROR)

    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert decision["outcome"] == "no-restart"
    assert pushed.record(PUSH_RUN_ID)["state"] == "queued"


def test_failure_event_delivered_twice_writes_failed_once(pushed: Emulated, spot_stop_event: dict[str, Any]) -> None:
    event = stop_of_our_task(pushed, spot_stop_event, "TaskFailedToStart", None, PULL_ERROR)
    handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    second = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert second["outcome"] == "no-restart"
    assert [h["state"] for h in pushed.record(PUSH_RUN_ID)["history"]].count("failed") == 1


def test_failure_of_a_task_without_run_id_is_logged_not_raised(aws: Emulated, spot_stop_event: dict[str, Any]) -> None:
    # GIVEN a task of our family started by hand, with no TRAINER_* overrides
    event = copy.deepcopy(spot_stop_event)
    event["detail"].update(stopCode="TaskFailedToStart", overrides={"containerOverrides": []})
    event["detail"]["containers"][0].pop("exitCode")

    decision = handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep)

    assert decision["outcome"] == "no-restart"
    assert "no TRAINER_RUN_ID" in decision["reason"]


def test_interruption_of_the_last_allowed_attempt_marks_the_run_failed_before_raising(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    # GIVEN attempt 3 of 3 was interrupted
    third = pushed.start_attempt(PUSH_RUN_ID, 3)
    set_record(pushed, attempt=3, state="interrupted", task_arn=third)
    event = stop_event_for(pushed, spot_stop_event, third, "SpotInterruption", 75, "Your Spot Task was interrupted.")

    # WHEN / THEN the handler raises, and the record already says failed, with the same reason
    with pytest.raises(AttemptsExhaustedError) as raised:
        handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    record = pushed.record(PUSH_RUN_ID)
    assert (record["state"], record["attempt"]) == ("failed", 3)
    assert record["reason"] == str(raised.value)


def test_a_task_that_failed_to_start_parses_without_an_exit_code(
    aws: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    event = copy.deepcopy(spot_stop_event)
    event["detail"].update(stopCode="TaskFailedToStart", stoppedReason=PULL_ERROR)
    event["detail"]["containers"][0].pop("exitCode")

    parsed = parse_event(event, aws.config)

    assert isinstance(parsed, TaskStopEvent)
    assert (parsed.stop_code, parsed.exit_code, parsed.resumable) == ("TaskFailedToStart", None, False)
