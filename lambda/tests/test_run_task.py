"""RunTask outcomes: failures raise, throttling is retried, no Spot capacity falls back to on-demand,
AccessDenied raises at once. Stubber checks each request against the ECS API model."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY
from trigger.config import Config
from trigger.ecs import THROTTLE_TRIES, run_task_request, start_task
from trigger.errors import RunTaskFailedError
from trigger.runs import RunSpec
from trigger_testkit import ACCOUNT, DIGEST, PUSH_RUN_ID, REGION, Stubbed

TASK_DEFINITION = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/pushtrain-trainer:2"
TASK_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/pushtrain/0f6c1d2e3b4a49c8a7b6c5d4e3f2a1b0"
SPEC = RunSpec(run_id=PUSH_RUN_ID, attempt=1, digest=DIGEST, git_sha=None, params={})
CAPACITY_REASON = "Capacity is unavailable at this time. Please try again later or in a different availability zone"


def request(config: Config, provider: str) -> dict[str, Any]:
    return run_task_request(SPEC, config, TASK_DEFINITION, provider, fallback=provider == "FARGATE")


def started(arn: str = TASK_ARN) -> dict[str, Any]:
    return {"tasks": [{"taskArn": arn}], "failures": []}


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_spot_capacity_failure_falls_back_once_to_on_demand_with_its_own_token(
    stubbed: Stubbed, config: Config
) -> None:
    # GIVEN Fargate Spot answers with a capacity failure and on-demand Fargate has room
    stubbed.ecs.add_response(
        "run_task", {"tasks": [], "failures": [{"reason": CAPACITY_REASON}]}, request(config, "FARGATE_SPOT")
    )
    stubbed.ecs.add_response("run_task", started(), request(config, "FARGATE"))

    # WHEN the attempt starts
    result = start_task(stubbed.clients.ecs, SPEC, config, TASK_DEFINITION, sleep=Sleeps())

    # THEN it runs on FARGATE, requested with the on-demand clientToken
    stubbed.assert_done()
    assert result.capacity_provider == "FARGATE"
    assert request(config, "FARGATE")["clientToken"] == f"{PUSH_RUN_ID}-a1-od"
    assert request(config, "FARGATE_SPOT")["clientToken"] == f"{PUSH_RUN_ID}-a1"


def test_capacity_error_raised_as_an_exception_also_falls_back(stubbed: Stubbed, config: Config) -> None:
    stubbed.ecs.add_client_error("run_task", "ServerException", CAPACITY_REASON, http_status_code=500)
    stubbed.ecs.add_response("run_task", started(), request(config, "FARGATE"))

    assert start_task(stubbed.clients.ecs, SPEC, config, TASK_DEFINITION, sleep=Sleeps()).task_arn == TASK_ARN
    stubbed.assert_done()


def test_no_capacity_anywhere_raises_with_both_reasons(stubbed: Stubbed, config: Config) -> None:
    for _ in range(2):
        stubbed.ecs.add_response("run_task", {"tasks": [], "failures": [{"reason": CAPACITY_REASON}]})

    with pytest.raises(RunTaskFailedError, match=r"no Fargate capacity.*FARGATE_SPOT said.*FARGATE said"):
        start_task(stubbed.clients.ecs, SPEC, config, TASK_DEFINITION, sleep=Sleeps())
    stubbed.assert_done()


def test_run_task_failures_other_than_capacity_raise_without_fallback(stubbed: Stubbed, config: Config) -> None:
    # GIVEN RunTask answers with a failure that more capacity would not fix
    stubbed.ecs.add_response(
        "run_task",
        {"tasks": [], "failures": [{"arn": TASK_DEFINITION, "reason": "MISSING", "detail": "bad subnet"}]},
        request(config, "FARGATE_SPOT"),
    )

    # WHEN / THEN it raises naming the reason, and no on-demand request follows (Stubber has none queued)
    with pytest.raises(RunTaskFailedError, match="MISSING bad subnet"):
        start_task(stubbed.clients.ecs, SPEC, config, TASK_DEFINITION, sleep=Sleeps())
    stubbed.assert_done()


def test_response_without_task_or_failure_raises(stubbed: Stubbed, config: Config) -> None:
    stubbed.ecs.add_response("run_task", {"tasks": [], "failures": []})

    with pytest.raises(RunTaskFailedError, match="returned 0 tasks"):
        start_task(stubbed.clients.ecs, SPEC, config, TASK_DEFINITION, sleep=Sleeps())


def test_throttling_is_retried_with_growing_backoff_and_the_same_token(stubbed: Stubbed, config: Config) -> None:
    # GIVEN RunTask is throttled twice, then succeeds
    for _ in range(2):
        stubbed.ecs.add_client_error("run_task", "ThrottlingException", "Rate exceeded", http_status_code=400)
    stubbed.ecs.add_response("run_task", started(), request(config, "FARGATE_SPOT"))
    sleeps = Sleeps()

    # WHEN the attempt starts
    result = start_task(stubbed.clients.ecs, SPEC, config, TASK_DEFINITION, sleep=sleeps)

    # THEN the third call (same request, same clientToken) started the task after two bounded waits
    stubbed.assert_done()
    assert result.task_arn == TASK_ARN
    assert len(sleeps) == 2
    assert all(0 <= s <= 8.0 for s in sleeps)


def test_throttling_that_never_ends_raises_the_throttling_error(stubbed: Stubbed, config: Config) -> None:
    for _ in range(THROTTLE_TRIES):
        stubbed.ecs.add_client_error("run_task", "ThrottlingException", "Rate exceeded", http_status_code=400)
    sleeps = Sleeps()

    with pytest.raises(ClientError, match="ThrottlingException"):
        start_task(stubbed.clients.ecs, SPEC, config, TASK_DEFINITION, sleep=sleeps)
    stubbed.assert_done()
    assert len(sleeps) == THROTTLE_TRIES - 1


def test_access_denied_raises_at_once_without_retry_or_fallback(stubbed: Stubbed, config: Config) -> None:
    stubbed.ecs.add_client_error(
        "run_task",
        "AccessDeniedException",
        "User is not authorized to perform: ecs:RunTask",
        http_status_code=400,
        expected_params={**request(config, "FARGATE_SPOT"), "clientToken": ANY},
    )
    sleeps = Sleeps()

    with pytest.raises(ClientError, match="AccessDeniedException"):
        start_task(stubbed.clients.ecs, SPEC, config, TASK_DEFINITION, sleep=sleeps)
    stubbed.assert_done()
    assert sleeps == []
