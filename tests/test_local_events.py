"""The events the local pipeline builds look like AWS's: the rules from terraform/ and the trigger's parser accept them.

GIVEN the real sample events (lambda/tests/events) and the rules' patterns from terraform/, WHEN the
pipeline builds an ECR push or an ECS Spot-interruption event, THEN moto's EventBridge matcher routes
it to the rule that targets the trigger, the trigger's own parser accepts it, and the variants that
must not train (a DELETE, another repository) match no trigger rule.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pushtrain_local import events
from tfread.terraform import TerraformModule, rule_targets
from trigger.config import Config, load_config
from trigger.events import PushEvent, TaskStopEvent
from trigger.handler import parse as parse_event

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "lambda" / "tests" / "events"
ACCOUNT, REGION = "123456789012", "us-east-1"
CLUSTER_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/pushtrain"
DIGEST = "sha256:" + "ab" * 32
RUN_ID = "push-0123456789abcdef0123"


@pytest.fixture(scope="module")
def patterns() -> dict[str, dict[str, Any]]:
    module = TerraformModule.load(REPO / "terraform")
    return module.event_patterns(ACCOUNT, REGION, {("aws_ecs_cluster", "arn"): CLUSTER_ARN})


@pytest.fixture(scope="module")
def trigger_rules() -> set[str]:
    return {
        name
        for name, kinds in rule_targets(TerraformModule.load(REPO / "terraform")).items()
        if "aws_lambda_function" in kinds
    }


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(
        {
            "PUSHTRAIN_CLUSTER": "pushtrain",
            "PUSHTRAIN_TASK_FAMILY": "pushtrain-trainer",
            "PUSHTRAIN_CONTAINER_NAME": "trainer",
            "PUSHTRAIN_REPOSITORY_NAME": "pushtrain-trainer",
            "PUSHTRAIN_REPOSITORY_URI": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/pushtrain-trainer",
            "PUSHTRAIN_SUBNETS": "subnet-0aaaaaaaaaaaaaaa1",
            "PUSHTRAIN_SECURITY_GROUPS": "sg-0bbbbbbbbbbbbbbb1",
            "PUSHTRAIN_ASSIGN_PUBLIC_IP": "DISABLED",
            "PUSHTRAIN_BUCKET": f"pushtrain-artifacts-{ACCOUNT}-{REGION}",
            "PUSHTRAIN_MAX_ATTEMPTS": "3",
            "PUSHTRAIN_CLAIM_SECONDS": "180",
            "PUSHTRAIN_RECONCILE_LOOKBACK_DAYS": "7",
        }
    )


def _push(repository: str = "pushtrain-trainer", action: str = "PUSH") -> dict[str, Any]:
    sample = events.find_sample(SAMPLES, events.ECR_DETAIL_TYPE)
    return events.ecr_push_event(
        sample, account_id=ACCOUNT, region=REGION, repository=repository, digest=DIGEST, tag="a" * 40, action=action
    )


def _matching(patterns: dict[str, dict[str, Any]], event: dict[str, Any]) -> set[str]:
    return {name for name, pattern in patterns.items() if events.matches(pattern, event)}


def test_push_event_keeps_the_sample_shape_with_our_values() -> None:
    sample = events.find_sample(SAMPLES, events.ECR_DETAIL_TYPE)

    event = _push()

    assert set(event) == set(sample)
    assert set(event["detail"]) >= set(sample["detail"])
    assert event["detail"]["image-digest"] == DIGEST
    assert (event["account"], event["region"]) == (ACCOUNT, REGION)
    assert event["id"] != sample["id"]


def test_push_event_reaches_only_the_trigger_rule_and_the_trigger_accepts_it(
    patterns: dict[str, dict[str, Any]], trigger_rules: set[str], config: Config
) -> None:
    event = _push()

    matched = _matching(patterns, event)

    assert len(matched) == 1
    assert matched <= trigger_rules
    parsed = parse_event(event, config)
    assert isinstance(parsed, PushEvent)
    assert parsed.digest == DIGEST


@pytest.mark.parametrize(("repository", "action"), [("pushtrain-trainer", "DELETE"), ("someone-else", "PUSH")])
def test_delete_or_foreign_repository_matches_no_rule(
    patterns: dict[str, dict[str, Any]], repository: str, action: str
) -> None:
    assert _matching(patterns, _push(repository=repository, action=action)) == set()


def _described_task() -> dict[str, Any]:
    """A task as ECS DescribeTasks returns it after the trigger's RunTask."""
    task_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/pushtrain/0123456789abcdef"
    return {
        "taskArn": task_arn,
        "clusterArn": CLUSTER_ARN,
        "taskDefinitionArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/pushtrain-trainer:2",
        "group": "family:pushtrain-trainer",
        "startedBy": RUN_ID,
        "capacityProviderName": "FARGATE_SPOT",
        "containers": [
            {"name": "trainer", "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/pushtrain-trainer@{DIGEST}"}
        ],
        "overrides": {
            "containerOverrides": [
                {
                    "name": "trainer",
                    "environment": [
                        {"name": "TRAINER_RUN_ID", "value": RUN_ID},
                        {"name": "TRAINER_ATTEMPT", "value": "1"},
                    ],
                }
            ]
        },
    }


def test_spot_stop_event_reaches_the_trigger_with_run_id_and_exit_code(
    patterns: dict[str, dict[str, Any]], trigger_rules: set[str], config: Config
) -> None:
    sample = events.find_sample(SAMPLES, events.ECS_DETAIL_TYPE)

    event = events.ecs_task_stopped_event(
        _described_task(), account_id=ACCOUNT, region=REGION, exit_code=75, sample=sample
    )

    assert event["detail"]["stopCode"] == "SpotInterruption"
    assert event["resources"] == [event["detail"]["taskArn"]]
    assert _matching(patterns, event) & trigger_rules
    parsed = parse_event(event, config)
    assert isinstance(parsed, TaskStopEvent)
    assert parsed.environment["TRAINER_RUN_ID"] == RUN_ID
    assert parsed.exit_code == 75
    assert parsed.last_status == "STOPPED"


def test_a_task_that_simply_finished_reaches_only_the_success_rule(
    patterns: dict[str, dict[str, Any]], trigger_rules: set[str]
) -> None:
    # the trainer exited 0: the success rule delivers it (keep the image; a sweep starts its next set),
    # neither the Spot rule (resume) nor the failure rule
    event = events.ecs_task_stopped_event(
        _described_task(),
        account_id=ACCOUNT,
        region=REGION,
        stop_code="EssentialContainerExited",
        stopped_reason="Essential container in task exited",
        exit_code=0,
    )

    assert _matching(patterns, event) & trigger_rules == {"training_succeeded"}


def test_a_pattern_object_matches_one_element_of_an_array_of_objects_whole() -> None:
    # EventBridge (aws/event-ruler's array consistency): every field from the same element
    pattern = {"detail": {"containers": {"name": ["trainer"], "exitCode": [0]}}}
    trainer_ok = {"detail": {"containers": [{"name": "sidecar", "exitCode": 1}, {"name": "trainer", "exitCode": 0}]}}
    crossed = {"detail": {"containers": [{"name": "sidecar", "exitCode": 0}, {"name": "trainer", "exitCode": 1}]}}
    assert events.matches(pattern, trainer_ok)
    assert not events.matches(pattern, crossed)
    assert not events.matches(pattern, {"detail": {"containers": []}})


def test_a_task_of_another_cluster_reaches_no_rule(patterns: dict[str, dict[str, Any]]) -> None:
    task = copy.deepcopy(_described_task())
    task["clusterArn"] = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/other"

    event = events.ecs_task_stopped_event(task, account_id=ACCOUNT, region=REGION, exit_code=75)

    assert _matching(patterns, event) == set()


def test_missing_sample_folder_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(events.EventError, match=r"no sample 'ECR Image Action' event in .*"):
        events.find_sample(tmp_path, events.ECR_DETAIL_TYPE)


def test_a_digest_that_is_not_sha256_is_rejected() -> None:
    sample = events.find_sample(SAMPLES, events.ECR_DETAIL_TYPE)
    with pytest.raises(events.EventError, match="md5:abc"):
        events.ecr_push_event(sample, account_id=ACCOUNT, region=REGION, repository="r", digest="md5:abc", tag="t")
