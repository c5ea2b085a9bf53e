"""The stop decision table (trigger.stops.decide_stop), row by row and over every combination, without AWS."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from trigger import stops
from trigger.events import TaskStopEvent
from trigger_testkit import DIGEST, PUSH_RUN_ID

TASK = "arn:aws:ecs:us-east-1:123456789012:task/pushtrain/0f6c1d2e3b4a49c8a7b6c5d4e3f2a1b0"
OTHER_TASK = "arn:aws:ecs:us-east-1:123456789012:task/pushtrain/ffffffffffffffffffffffffffffffff"
MAX = 3


def stop(
    *,
    status: str = "STOPPED",
    code: str | None = "SpotInterruption",
    exit_code: int | None = 143,
    attempt: str | None = "1",
    run_id: str | None = PUSH_RUN_ID,
    digest: str = DIGEST,
) -> TaskStopEvent:
    env = {"TRAINER_IMAGE_DIGEST": digest}
    if run_id is not None:
        env["TRAINER_RUN_ID"] = run_id
    if attempt is not None:
        env["TRAINER_ATTEMPT"] = attempt
    return TaskStopEvent(
        event_id="e",
        task_arn=TASK,
        task_definition_arn="arn:aws:ecs:us-east-1:123456789012:task-definition/pushtrain-trainer:2",
        last_status=status,
        stop_code=code,
        stopped_reason="why",
        exit_code=exit_code,
        environment=env,
    )


def record(*, attempt: int = 1, state: str = "running", task_arn: str | None = TASK, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": PUSH_RUN_ID,
        "attempt": attempt,
        "state": state,
        "task_arn": task_arn,
        "image_digest": DIGEST,
        **extra,
    }


FAILURE = {"code": "EssentialContainerExited", "exit_code": 1}

ROWS = [
    # (id, record, stop, expected action, expected attempt)
    ("notice-while-running", record(), stop(status="RUNNING"), stops.IGNORE, None),
    ("spot-of-current-attempt", record(), stop(), stops.RESUME, 2),
    ("termination-notice", record(), stop(code="TerminationNotice"), stops.RESUME, 2),
    ("spot-of-queued-attempt", record(state="queued"), stop(), stops.RESUME, 2),
    ("spot-of-interrupted", record(state="interrupted"), stop(), stops.RESUME, 2),
    ("spot-of-last-attempt", record(attempt=3), stop(attempt="3"), stops.EXHAUSTED, 3),
    ("spot-after-success", record(state="succeeded"), stop(), stops.NO_OP, 1),
    ("spot-after-failure", record(state="failed"), stop(), stops.NO_OP, 1),
    ("spot-already-resumed", record(attempt=2, state="queued", task_arn=OTHER_TASK), stop(), stops.DUPLICATE, 2),
    ("spot-resumed-and-running", record(attempt=2, task_arn=None), stop(), stops.DUPLICATE, 2),
    ("spot-resumed-long-ago", record(attempt=3), stop(), stops.DUPLICATE, 3),
    ("spot-resume-claimed-no-task", record(attempt=2, state="queued", task_arn=None), stop(), stops.RETRY_RESUME, 2),
    ("spot-of-attempt-ahead-of-record", record(attempt=1), stop(attempt="3"), stops.CONFLICT, 3),
    ("spot-of-another-digest", record(image_digest="sha256:" + "0" * 64), stop(), stops.CONFLICT, None),
    ("spot-without-record", None, stop(), stops.NO_OP, None),
    ("spot-without-run-id", None, stop(run_id=None), stops.NO_OP, None),
    ("spot-without-attempt", record(), stop(attempt=None), stops.INVALID, None),
    ("spot-with-superscript-attempt", record(), stop(attempt="²"), stops.INVALID, None),
    ("spot-with-attempt-zero", record(), stop(attempt="0"), stops.INVALID, None),
    ("failure-of-current-attempt", record(), stop(**FAILURE), stops.FAIL, 1),
    ("failure-of-queued-attempt", record(state="queued", task_arn=None), stop(**FAILURE), stops.FAIL, 1),
    ("failed-to-start", record(state="queued"), stop(code="TaskFailedToStart", exit_code=None), stops.FAIL, 1),
    ("oom-kill", record(), stop(code="EssentialContainerExited", exit_code=137), stops.FAIL, 1),
    ("exit-0", record(), stop(code="EssentialContainerExited", exit_code=0), stops.NO_OP, None),
    ("exit-75-by-a-person", record(), stop(code="UserInitiated", exit_code=75), stops.NO_OP, None),
    ("exit-73-duplicate-trainer", record(), stop(code="EssentialContainerExited", exit_code=73), stops.NO_OP, None),
    ("failure-after-success", record(state="succeeded"), stop(**FAILURE), stops.NO_OP, 1),
    ("failure-already-recorded", record(state="failed"), stop(**FAILURE), stops.NO_OP, 1),
    ("failure-of-older-attempt", record(attempt=2), stop(**FAILURE), stops.NO_OP, 1),
    ("failure-of-another-task", record(task_arn=OTHER_TASK), stop(**FAILURE), stops.NO_OP, 1),
    ("failure-without-record", None, stop(**FAILURE), stops.NO_OP, 1),
    ("failure-without-run-id", None, stop(run_id=None, **FAILURE), stops.NO_OP, None),
    ("failure-without-attempt", record(), stop(attempt=None, **FAILURE), stops.INVALID, None),
]


@pytest.mark.parametrize(("current", "event", "action", "attempt"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_each_row_of_the_stop_decision_table(
    current: dict[str, Any] | None, event: TaskStopEvent, action: str, attempt: int | None
) -> None:
    decision = stops.decide_stop(current, event, MAX)

    assert (decision.action, decision.attempt) == (action, attempt), decision.reason


def test_every_decision_of_the_table_is_reached() -> None:
    reached = {stops.decide_stop(current, event, MAX).action for _, current, event, _, _ in ROWS}
    assert reached == set(stops.DECISIONS)


def test_a_duplicate_names_the_task_that_resumed_the_run() -> None:
    decision = stops.decide_stop(record(attempt=2, state="queued", task_arn=OTHER_TASK), stop(), MAX)
    assert decision.task_arn == OTHER_TASK


STATES = ("queued", "running", "interrupted", "succeeded", "failed")
STOP_KINDS = {
    "spot": {"code": "SpotInterruption", "exit_code": 143},
    "notice": {"code": "TerminationNotice", "exit_code": 75},
    "failed-to-start": {"code": "TaskFailedToStart", "exit_code": None},
    "failure-exit": {"code": "EssentialContainerExited", "exit_code": 1},
    "exit-0": {"code": "EssentialContainerExited", "exit_code": 0},
    "exit-75": {"code": "UserInitiated", "exit_code": 75},
    "exit-73": {"code": "EssentialContainerExited", "exit_code": 73},
}


def every_combination() -> list[tuple[str, dict[str, Any] | None, TaskStopEvent]]:
    records: list[dict[str, Any] | None] = [None]
    for attempt, state, task in itertools.product((1, 2, 3, 4), STATES, (None, TASK, OTHER_TASK)):
        records.append(record(attempt=attempt, state=state, task_arn=task))
    cases = []
    for (kind, fields), status, attempt, current in itertools.product(
        STOP_KINDS.items(), ("RUNNING", "STOPPED"), ("1", "2", "3"), records
    ):
        cases.append((kind, current, stop(status=status, attempt=attempt, **fields)))
    return cases


def test_over_every_combination_only_interruptions_resume_and_failures_only_fail() -> None:
    for kind, current, event in every_combination():
        decision = stops.decide_stop(current, event, MAX)
        where = f"{kind} {event.last_status} attempt {event.environment['TRAINER_ATTEMPT']} record {current}"
        assert decision.action in stops.DECISIONS, where
        if event.last_status != "STOPPED":
            assert decision.action == stops.IGNORE, where
            continue
        if kind in {"spot", "notice"}:
            assert decision.action not in {stops.FAIL, stops.IGNORE}, where
        else:
            # a failure stop is never logged or carried out as a resume
            assert decision.action in {stops.FAIL, stops.NO_OP}, where
        if decision.action == stops.RESUME:
            assert current is not None and current["state"] in stops.RESUMABLE_STATES, where
            assert decision.attempt == int(event.environment["TRAINER_ATTEMPT"]) + 1 <= MAX, where
        if decision.action == stops.FAIL:
            assert current is not None and current["state"] not in stops.FINAL_STATES, where
            assert current["task_arn"] in (None, TASK), where
