"""Spot resume: an interrupted training task starts again with the same run id and attempt + 1,
up to PUSHTRAIN_MAX_ATTEMPTS; other stops start nothing; a redelivered stop event starts nothing
twice; a stop event ECS does not back (a forged or mistaken one) changes nothing."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from botocore.exceptions import ClientError
from trigger.errors import AttemptsExhaustedError
from trigger.handler import handle
from trigger_testkit import (
    DIGEST,
    PUSH_RUN_ID,
    Emulated,
    clock,
    env_of,
    no_sleep,
    run_task_failing_once,
    stop_event_for,
)

SPOT_REASON = "Your Spot Task was interrupted."


@pytest.fixture
def pushed(aws: Emulated, push_event: dict[str, Any]) -> Emulated:
    """GIVEN the push sample was trained: attempt 1 of PUSH_RUN_ID runs."""
    handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    return aws


def first_task(aws: Emulated) -> str:
    return str(aws.record(PUSH_RUN_ID)["task_arn"])


def test_spot_interrupted_task_restarts_with_same_run_id_and_next_attempt(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    # WHEN attempt 1 is stopped by a Spot interruption, and ECS says so
    event = stop_event_for(pushed, spot_stop_event, first_task(pushed), "SpotInterruption", 75, SPOT_REASON)
    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    # THEN attempt 2 of the same run starts, on the same digest, logged as a resume
    assert (decision["decision"], decision["outcome"]) == ("resume", "started")
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
    assert record["reason"] == f"SpotInterruption: {SPOT_REASON}"
    assert [h["attempt"] for h in record["history"]] == [1, 2]


def test_termination_notice_stop_code_also_resumes(pushed: Emulated, spot_stop_event: dict[str, Any]) -> None:
    event = stop_event_for(pushed, spot_stop_event, first_task(pushed), "TerminationNotice", 75, "termination notice")

    assert handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)["outcome"] == "started"
    assert len(pushed.tasks()) == 2


def test_stop_event_delivered_twice_starts_one_new_task(pushed: Emulated, spot_stop_event: dict[str, Any]) -> None:
    event = stop_event_for(pushed, spot_stop_event, first_task(pushed), "SpotInterruption", 75, SPOT_REASON)
    first = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    second = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert (second["decision"], second["outcome"]) == ("duplicate", "duplicate")
    assert second["task_arn"] == first["task_arn"]
    assert len(pushed.tasks()) == 2


def test_resume_whose_start_failed_is_retried_by_the_redelivered_stop_event(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    event = stop_event_for(pushed, spot_stop_event, first_task(pushed), "SpotInterruption", 75, SPOT_REASON)
    # GIVEN the resume claimed attempt 2 but its RunTask failed (the handler raised: Lambda retries)
    with run_task_failing_once(pushed), pytest.raises(ClientError, match="injected"):
        handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    record = pushed.record(PUSH_RUN_ID)
    assert (record["attempt"], record["task_arn"], record["claimed_at"]) == (2, None, None)  # claim released

    # WHEN the stop event is delivered again
    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    # THEN attempt 2 starts, once
    assert (decision["decision"], decision["outcome"], decision["attempt"]) == ("resume", "retried-start", 2)
    assert len(pushed.tasks()) == 2
    assert pushed.record(PUSH_RUN_ID)["task_arn"] == decision["task_arn"]


def test_interruption_of_the_last_allowed_attempt_raises(pushed: Emulated, spot_stop_event: dict[str, Any]) -> None:
    # GIVEN PUSHTRAIN_MAX_ATTEMPTS=3 and attempt 3 of the run was interrupted
    assert pushed.config.max_attempts == 3
    third = pushed.start_attempt(PUSH_RUN_ID, 3)
    pushed.put_record(PUSH_RUN_ID, attempt=3, state="interrupted", task_arn=third)
    event = stop_event_for(pushed, spot_stop_event, third, "SpotInterruption", 75, SPOT_REASON)

    # WHEN / THEN the handler raises (the DLQ and its alarm see a run that cannot finish on Spot)
    with pytest.raises(AttemptsExhaustedError, match="PUSHTRAIN_MAX_ATTEMPTS=3 allows no attempt 4"):
        handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    assert len(pushed.tasks()) == 2
    assert (pushed.record(PUSH_RUN_ID)["attempt"], pushed.record(PUSH_RUN_ID)["state"]) == (3, "failed")


@pytest.mark.parametrize(
    ("stop_code", "exit_code", "reason"),
    [
        ("EssentialContainerExited", 0, "Essential container in task exited"),
        ("EssentialContainerExited", 1, "Essential container in task exited"),
        ("UserInitiated", 143, "Task stopped by user"),
    ],
    ids=["normal-exit", "failure-exit", "stopped-by-user"],
)
def test_stops_that_are_not_interruptions_start_nothing_and_are_not_logged_as_resumes(
    pushed: Emulated, spot_stop_event: dict[str, Any], stop_code: str, exit_code: int, reason: str
) -> None:
    event = stop_event_for(pushed, spot_stop_event, first_task(pushed), stop_code, exit_code, reason)

    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert decision["decision"] in {"no-op", "fail"}
    assert f"exit code {exit_code}" in decision["reason"]
    assert len(pushed.tasks()) == 1
    assert pushed.record(PUSH_RUN_ID)["attempt"] == 1


def test_termination_notice_while_still_running_waits_for_the_stopped_event(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    # GIVEN the first event of an interruption: desired STOPPED, last status still RUNNING (checkpointing)
    event = copy.deepcopy(spot_stop_event)
    event["detail"].update(lastStatus="RUNNING", taskArn=first_task(pushed))

    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert (decision["decision"], decision["outcome"]) == ("ignore", "ignored")
    assert len(pushed.tasks()) == 1


def test_interrupted_run_that_already_succeeded_is_not_restarted(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    pushed.put_record(PUSH_RUN_ID, state="succeeded")
    event = stop_event_for(pushed, spot_stop_event, first_task(pushed), "SpotInterruption", 75, SPOT_REASON)

    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert (decision["decision"], decision["outcome"]) == ("no-op", "no-restart")
    assert len(pushed.tasks()) == 1


def test_interruption_of_a_run_without_record_is_a_logged_no_op(aws: Emulated, spot_stop_event: dict[str, Any]) -> None:
    decision = handle(spot_stop_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)

    assert (decision["decision"], decision["outcome"]) == ("no-op", "no-restart")
    assert f"runs/{PUSH_RUN_ID}/status.json is missing" in decision["reason"]
    assert aws.tasks() == []


def test_spot_and_failure_stops_of_a_task_without_run_id_get_the_same_answer(
    aws: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    # GIVEN tasks of our family started by hand, with no TRAINER_* overrides
    answers = []
    for stop_code in ("SpotInterruption", "TaskFailedToStart"):
        event = copy.deepcopy(spot_stop_event)
        event["detail"].update(stopCode=stop_code, overrides={"containerOverrides": []})
        event["detail"]["containers"][0]["exitCode"] = 137
        answers.append(handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep))

    # THEN both are logged no-ops naming why, and nothing raised or started
    assert [(a["decision"], a["outcome"]) for a in answers] == [("no-op", "no-restart")] * 2
    assert all("no TRAINER_RUN_ID" in a["reason"] for a in answers)
    assert aws.tasks() == []


def test_forged_interruption_of_a_running_task_starts_nothing(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    # GIVEN a stop event naming our running task, which ECS says is still RUNNING
    event = copy.deepcopy(spot_stop_event)
    event["detail"]["taskArn"] = first_task(pushed)
    before = pushed.record(PUSH_RUN_ID)

    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    # THEN nothing starts and nothing is written: the log line says ECS contradicts the event
    assert (decision["decision"], decision["outcome"]) == ("no-op", "unverified")
    assert "lastStatus: event 'STOPPED', ECS 'RUNNING'" in decision["reason"]
    assert pushed.record(PUSH_RUN_ID) == before
    assert len(pushed.tasks()) == 1


def test_interruption_whose_stop_code_ecs_contradicts_starts_nothing(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    # GIVEN our task really stopped, with a failure exit, and an event claiming a Spot interruption
    pushed.stop_task(first_task(pushed), "EssentialContainerExited", 1)
    event = copy.deepcopy(spot_stop_event)
    event["detail"]["taskArn"] = first_task(pushed)

    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert (decision["decision"], decision["outcome"]) == ("no-op", "unverified")
    assert "stopCode: event 'SpotInterruption', ECS 'EssentialContainerExited'" in decision["reason"]
    assert len(pushed.tasks()) == 1
    assert pushed.record(PUSH_RUN_ID)["attempt"] == 1
