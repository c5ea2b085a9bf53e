"""GPU runs end to end: where a push or retrain trains (PUSHTRAIN_DEFAULT_COMPUTE, `compute`, the
`<tag>-cuda` variant), the GPU task's RunTask request, the per-family digest pinning, and the
on-demand resume of a GPU run whose Spot task was interrupted or never found capacity.

moto emulates the account (an EC2 container instance stands in for the GPU Auto Scaling group, since
moto places a task of an EC2 capacity provider only on a registered instance); Stubber checks the
exact RunTask requests against the ECS API model."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY
from moto.ec2 import utils as ec2_utils
from trigger import notices, stops
from trigger.config import Config, load_config
from trigger.ecs import capacity_providers, run_task_request, start_task
from trigger.errors import ConfigError, ImageNotFoundError, InvalidEventError, StartInFlightError
from trigger.events import SkippedEvent, parse_task_stop_event
from trigger.handler import handle, parse
from trigger.notices import STOP_REASON_PREFIX
from trigger.records import new_record
from trigger.runs import RunSpec, push_run_id
from trigger.taskdef import ensure_pinned_revision, index_key
from trigger_testkit import (
    ACCOUNT,
    DIGEST,
    ENVIRONMENT,
    GIT_SHA,
    NOW,
    REGION,
    Emulated,
    Stubbed,
    clock,
    env_of,
    load_event,
    no_sleep,
    stop_event_for,
)

GPU_FAMILY, SPOT_GPU, ON_DEMAND_GPU = "pushtrain-trainer-gpu", "pushtrain-gpu", "pushtrain-gpu-od"
GPU_ENVIRONMENT = {
    "PUSHTRAIN_GPU_TASK_FAMILY": GPU_FAMILY,
    "PUSHTRAIN_GPU_CAPACITY_PROVIDER": SPOT_GPU,
    "PUSHTRAIN_GPU_ON_DEMAND_CAPACITY_PROVIDER": ON_DEMAND_GPU,
}
CUDA_TAG = f"{GIT_SHA}-cuda"
CUDA_DIGEST = "sha256:" + "c0da" * 16
GPU_REVISION = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{GPU_FAMILY}:3"
TASK_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/pushtrain/0f6c1d2e3b4a49c8a7b6c5d4e3f2a1b0"
NO_CAPACITY = "Capacity is unavailable at this time. Please try again later or in a different availability zone"
UNPLACED = "TaskFailedToStart: EMPTY CAPACITY PROVIDER"


def gpu_config(aws: Emulated, default: str = "cpu", **changes: str) -> Config:
    return load_config({**aws.environment(), **GPU_ENVIRONMENT, "PUSHTRAIN_DEFAULT_COMPUTE": default, **changes})


@pytest.fixture
def gpu(aws: Emulated) -> Iterator[Emulated]:
    """The emulated account with var.gpu deployed: the GPU family's base revision, one GPU container
    instance in the cluster, and the CUDA variant of the push sample's image (`<git sha>-cuda`)."""
    container = {**copy.deepcopy(aws.ecs.describe_task_definition(taskDefinition=aws.base_arn)["taskDefinition"])}
    (trainer,) = container["containerDefinitions"]
    trainer.update(memory=2048, resourceRequirements=[{"type": "GPU", "value": "1"}])
    aws.ecs.register_task_definition(
        family=GPU_FAMILY,
        networkMode="awsvpc",
        requiresCompatibilities=["EC2"],
        cpu="1024",
        memory="2048",
        containerDefinitions=[trainer],
    )
    instance = boto3.resource("ec2", region_name=REGION).create_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="g6.xlarge"
    )[0]
    document = json.dumps(ec2_utils.generate_instance_identity_document(instance))
    aws.ecs.register_container_instance(cluster="pushtrain", instanceIdentityDocument=document)
    aws.push_image(CUDA_DIGEST, CUDA_TAG)
    aws.config = gpu_config(aws)
    yield aws


def push_of(tag: str, digest: str) -> dict[str, Any]:
    event = load_event("ecr_image_push.json")
    event["detail"].update({"image-tag": tag, "image-digest": digest})
    return event


def retrain(image: str, **extra: Any) -> dict[str, Any]:
    return {"action": "retrain", "request_id": "7001", "image": image, "params": {"epochs": 2}, **extra}


def task_of(aws: Emulated, arn: str) -> dict[str, Any]:
    (task,) = aws.ecs.describe_tasks(cluster="pushtrain", tasks=[arn])["tasks"]
    return task


def family_of(task: dict[str, Any]) -> str:
    return task["taskDefinitionArn"].split("/")[-1].split(":")[0]


# --- configuration ----------------------------------------------------------------------------------


def test_default_compute_gpu_without_gpu_capacity_is_a_config_error_naming_the_variable() -> None:
    # GIVEN pushes asked to train on GPU, and no GPU capacity deployed
    with pytest.raises(ConfigError, match=r"PUSHTRAIN_DEFAULT_COMPUTE='gpu' needs GPU capacity"):
        load_config({**ENVIRONMENT, "PUSHTRAIN_DEFAULT_COMPUTE": "gpu"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"PUSHTRAIN_DEFAULT_COMPUTE": "tpu"}, r"PUSHTRAIN_DEFAULT_COMPUTE='tpu' is not one of \['cpu', 'gpu'\]"),
        (
            {"PUSHTRAIN_GPU_ON_DEMAND_CAPACITY_PROVIDER": ON_DEMAND_GPU},
            r"PUSHTRAIN_GPU_ON_DEMAND_CAPACITY_PROVIDER is set but PUSHTRAIN_GPU_CAPACITY_PROVIDER is empty",
        ),
    ],
)
def test_wrong_gpu_settings_are_config_errors_naming_the_variable(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({**ENVIRONMENT, **changes})


def test_without_the_new_variables_a_function_trains_on_cpu_as_before() -> None:
    config = load_config(ENVIRONMENT)
    assert (config.default_compute, config.gpu_on_demand_capacity_provider) == ("cpu", "")


# --- capacity providers and the exact RunTask request ------------------------------------------------


def spec(compute: str = "gpu", *, on_demand: bool = False, attempt: int = 1) -> RunSpec:
    run_id = push_run_id(CUDA_DIGEST, {})
    return RunSpec(run_id, attempt, CUDA_DIGEST, GIT_SHA, {}, compute=compute, on_demand=on_demand)


@pytest.mark.parametrize(
    ("compute", "on_demand", "od_provider", "expected"),
    [
        ("cpu", False, ON_DEMAND_GPU, ("FARGATE_SPOT", "FARGATE")),
        ("gpu", False, ON_DEMAND_GPU, (SPOT_GPU, ON_DEMAND_GPU)),
        ("gpu", True, ON_DEMAND_GPU, (ON_DEMAND_GPU,)),
        ("gpu", False, "", (SPOT_GPU,)),  # var.gpu.spot = false: the one provider is on-demand
        ("gpu", True, "", (SPOT_GPU,)),
    ],
)
def test_each_attempt_tries_its_computes_providers_in_order(
    config: Config, compute: str, on_demand: bool, od_provider: str, expected: tuple[str, ...]
) -> None:
    deployed = dataclasses.replace(
        config,
        gpu_task_family=GPU_FAMILY,
        gpu_capacity_provider=SPOT_GPU,
        gpu_on_demand_capacity_provider=od_provider,
    )
    assert capacity_providers(deployed, spec(compute, on_demand=on_demand)) == expected


def gpu_request(config: Config, provider: str, *, fallback: bool = False) -> dict[str, Any]:
    return run_task_request(spec(), config, GPU_REVISION, provider, fallback=fallback)


def test_a_gpu_task_is_asked_of_the_gpu_provider_with_awsvpc_and_no_public_ip(stubbed: Stubbed) -> None:
    # GIVEN a stack whose Fargate tasks get public IPs (public network mode), with GPU capacity
    config = load_config({**ENVIRONMENT, **GPU_ENVIRONMENT, "PUSHTRAIN_ASSIGN_PUBLIC_IP": "ENABLED"})
    expected = {
        "cluster": "pushtrain",
        "taskDefinition": GPU_REVISION,
        "count": 1,
        "capacityProviderStrategy": [{"capacityProvider": SPOT_GPU, "weight": 1}],
        "clientToken": f"{push_run_id(CUDA_DIGEST, {})}-a1",
        "startedBy": push_run_id(CUDA_DIGEST, {}),
        # the GPU family is awsvpc (terraform/gpu.tf); an EC2 task cannot have a public IP
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": ["subnet-0abc1234def567890", "subnet-0fed9876cba543210"],
                "securityGroups": ["sg-0123456789abcdef0"],
                "assignPublicIp": "DISABLED",
            }
        },
        "overrides": ANY,
        "tags": ANY,
        "enableECSManagedTags": True,
    }
    stubbed.ecs.add_response("run_task", {"tasks": [{"taskArn": TASK_ARN}], "failures": []}, expected)
    # WHEN attempt 1 of a GPU run starts
    started = start_task(stubbed.clients.ecs, spec(), config, GPU_REVISION, sleep=no_sleep)
    # THEN exactly that request went out, and the task is recorded on the Spot GPU provider
    assert (started.task_arn, started.capacity_provider) == (TASK_ARN, SPOT_GPU)
    stubbed.assert_done()


def test_a_gpu_runtask_capacity_failure_falls_back_to_the_on_demand_provider_with_its_own_token(
    stubbed: Stubbed,
) -> None:
    config = load_config({**ENVIRONMENT, **GPU_ENVIRONMENT})
    refused = {"tasks": [], "failures": [{"arn": GPU_REVISION, "reason": NO_CAPACITY}]}
    stubbed.ecs.add_response("run_task", refused, gpu_request(config, SPOT_GPU))
    stubbed.ecs.add_response(
        "run_task", {"tasks": [{"taskArn": TASK_ARN}]}, gpu_request(config, ON_DEMAND_GPU, fallback=True)
    )
    started = start_task(stubbed.clients.ecs, spec(), config, GPU_REVISION, sleep=no_sleep)
    assert started.capacity_provider == ON_DEMAND_GPU
    assert gpu_request(config, ON_DEMAND_GPU, fallback=True)["clientToken"].endswith("-a1-od")
    stubbed.assert_done()


def test_an_attempt_sent_to_on_demand_asks_only_the_on_demand_provider(stubbed: Stubbed) -> None:
    config = load_config({**ENVIRONMENT, **GPU_ENVIRONMENT})
    resumed = spec(on_demand=True, attempt=2)
    expected = run_task_request(resumed, config, GPU_REVISION, ON_DEMAND_GPU)
    assert expected["clientToken"].endswith("-a2")
    stubbed.ecs.add_response("run_task", {"tasks": [{"taskArn": TASK_ARN}]}, expected)
    assert start_task(stubbed.clients.ecs, resumed, config, GPU_REVISION, sleep=no_sleep).capacity_provider == (
        ON_DEMAND_GPU
    )
    stubbed.assert_done()


# --- pushes: the default compute picks the variant that trains -----------------------------------------


@pytest.mark.parametrize(
    ("default", "tag", "digest", "trains"),
    [
        ("cpu", GIT_SHA, DIGEST, "pushtrain-trainer"),
        ("cpu", CUDA_TAG, CUDA_DIGEST, None),
        ("gpu", GIT_SHA, DIGEST, None),
        ("gpu", CUDA_TAG, CUDA_DIGEST, GPU_FAMILY),
    ],
    ids=["cpu-plain", "cpu-cuda", "gpu-plain", "gpu-cuda"],
)
def test_a_push_trains_only_the_variant_of_the_default_compute(
    gpu: Emulated, default: str, tag: str, digest: str, trains: str | None
) -> None:
    # GIVEN pushes train on `default`
    config = gpu_config(gpu, default)
    # WHEN an image is pushed under `tag`
    decision = handle(push_of(tag, digest), config, gpu.clients, clock=clock, sleep=no_sleep)
    if trains is None:
        # THEN the other variant is skipped, and the log line says why
        assert (decision["decision"], decision["outcome"]) == ("skip", "not-for-us")
        assert f"PUSHTRAIN_DEFAULT_COMPUTE={default!r}" in decision["reason"]
        assert gpu.tasks() == []
        return
    # THEN the default compute's variant starts one task of its family, recorded with its compute
    (task,) = gpu.tasks()
    assert family_of(task) == trains
    record = gpu.record(decision["run_id"])
    assert (record["compute"], record["image_digest"], record["git_sha"]) == (default, digest, GIT_SHA)
    assert record["capacity_provider"] == (SPOT_GPU if default == "gpu" else "FARGATE_SPOT")


def test_a_duplicate_delivery_of_a_gpu_push_starts_one_task(gpu: Emulated) -> None:
    config = gpu_config(gpu, "gpu")
    event = push_of(CUDA_TAG, CUDA_DIGEST)
    first = handle(event, config, gpu.clients, clock=clock, sleep=no_sleep)
    second = handle(event, config, gpu.clients, clock=clock, sleep=no_sleep)
    assert (first["outcome"], second["outcome"]) == ("started", "duplicate")
    assert second["task_arn"] == first["task_arn"]
    assert len(gpu.tasks()) == 1


def test_a_delivery_while_a_gpu_start_is_claimed_starts_nothing(gpu: Emulated) -> None:
    # GIVEN another invocation claimed the GPU push's start a moment ago and has not called RunTask yet
    config = gpu_config(gpu, "gpu")
    run = RunSpec(push_run_id(CUDA_DIGEST, {}), 1, CUDA_DIGEST, GIT_SHA, {}, compute="gpu")
    gpu.s3.put_object(
        Bucket=config.bucket, Key=f"runs/{run.run_id}/status.json", Body=json.dumps(new_record(run, "push", NOW))
    )
    # WHEN the push is delivered again, THEN it raises a retryable error and starts no task
    with pytest.raises(StartInFlightError):
        handle(push_of(CUDA_TAG, CUDA_DIGEST), config, gpu.clients, clock=clock, sleep=no_sleep)
    assert gpu.tasks() == []


def test_reconcile_starts_only_unseen_images_of_the_default_compute(gpu: Emulated) -> None:
    scheduled = load_event("scheduled_event.json")
    decision = handle(scheduled, gpu_config(gpu, "gpu"), gpu.clients, clock=clock, sleep=no_sleep)
    # THEN only the CUDA image was started (the CPU image is another variant), on the GPU family
    assert decision["started"] == 1
    (task,) = gpu.tasks()
    assert family_of(task) == GPU_FAMILY
    assert env_of(task)["TRAINER_IMAGE_DIGEST"] == CUDA_DIGEST


# --- retrain requests: compute, the default, and the CUDA variant ------------------------------------


def test_a_gpu_retrain_by_tag_trains_the_cuda_variant_of_that_tag(gpu: Emulated) -> None:
    answer = handle(retrain(GIT_SHA, compute="gpu"), gpu.config, gpu.clients, clock=clock, sleep=no_sleep)
    assert (answer["image_digest"], answer["compute"]) == (CUDA_DIGEST, "gpu")
    (task,) = gpu.tasks()
    assert family_of(task) == GPU_FAMILY
    assert env_of(task)["TRAINER_IMAGE_DIGEST"] == CUDA_DIGEST
    assert gpu.record(answer["run_id"])["compute"] == "gpu"


def test_a_retrain_without_compute_runs_on_the_default(gpu: Emulated) -> None:
    answer = handle(retrain(CUDA_TAG), gpu_config(gpu, "gpu"), gpu.clients, clock=clock, sleep=no_sleep)
    assert (answer["image_digest"], answer["compute"]) == (CUDA_DIGEST, "gpu")
    # AND an explicit compute wins over the default
    answer = handle(
        retrain(GIT_SHA, compute="cpu", request_id="7002"),
        gpu_config(gpu, "gpu"),
        gpu.clients,
        clock=clock,
        sleep=no_sleep,
    )
    assert (answer["image_digest"], answer["compute"]) == (DIGEST, "cpu")
    assert sorted(family_of(t) for t in gpu.tasks()) == ["pushtrain-trainer", GPU_FAMILY]


def test_a_gpu_retrain_by_digest_trains_a_digest_that_carries_a_cuda_tag(gpu: Emulated) -> None:
    answer = handle(retrain(CUDA_DIGEST, compute="gpu"), gpu.config, gpu.clients, clock=clock, sleep=no_sleep)
    assert answer["image_digest"] == CUDA_DIGEST
    assert family_of(gpu.tasks()[0]) == GPU_FAMILY


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (retrain(DIGEST, compute="gpu"), InvalidEventError, r"compute='gpu' with digest .* carries no -cuda tag"),
        (retrain(CUDA_TAG, compute="cpu"), InvalidEventError, r"compute='cpu' with image .*-cuda tag is the CUDA"),
        (retrain(CUDA_DIGEST, compute="cpu"), InvalidEventError, r"compute='cpu' with digest .* carries a -cuda tag"),
        (retrain("v1", compute="gpu"), ImageNotFoundError, r"the CUDA variant of 'v1', tagged 'v1-cuda'"),
    ],
    ids=["gpu-digest-without-cuda-tag", "cpu-on-cuda-tag", "cpu-on-cuda-digest", "gpu-tag-without-variant"],
)
def test_a_retrain_on_the_wrong_variant_is_refused_clearly_and_starts_nothing(
    gpu: Emulated, request_: dict[str, Any], error: type[Exception], message: str
) -> None:
    gpu.push_image("sha256:" + "1" * 64, "v1")
    with pytest.raises(error, match=message):
        handle(request_, gpu.config, gpu.clients, clock=clock, sleep=no_sleep)
    assert gpu.tasks() == []


def test_a_gpu_retrain_is_refused_naming_the_variable_when_gpu_is_not_deployed(aws: Emulated) -> None:
    with pytest.raises(InvalidEventError, match=r"compute='gpu' needs GPU capacity.*var\.gpu\.enabled"):
        handle(retrain(GIT_SHA, compute="gpu"), aws.config, aws.clients, clock=clock, sleep=no_sleep)
    assert aws.tasks() == []


# --- pinning: one index per family, so CPU and GPU copies never collide ------------------------------


def test_the_cpu_and_gpu_copies_of_one_digest_have_their_own_revisions_and_index_keys(gpu: Emulated) -> None:
    cpu_arn, _ = ensure_pinned_revision(gpu.ecs, gpu.s3, gpu.config, DIGEST, NOW, sleep=no_sleep)
    gpu_arn, registered = ensure_pinned_revision(
        gpu.ecs, gpu.s3, gpu.config, DIGEST, NOW, family=GPU_FAMILY, sleep=no_sleep
    )
    # THEN the GPU family got its own revision (not the CPU one from the index), each under its own key
    assert registered
    assert ":task-definition/pushtrain-trainer:" in cpu_arn
    assert f":task-definition/{GPU_FAMILY}:" in gpu_arn
    indexes = {
        family: json.loads(gpu.s3.get_object(Bucket=gpu.config.bucket, Key=index_key(family, DIGEST))["Body"].read())
        for family in ("pushtrain-trainer", GPU_FAMILY)
    }
    assert indexes["pushtrain-trainer"]["task_definition_arn"] == cpu_arn
    assert indexes[GPU_FAMILY]["task_definition_arn"] == gpu_arn
    # AND a repeat finds each family's own copy
    again = ensure_pinned_revision(gpu.ecs, gpu.s3, gpu.config, DIGEST, NOW, family=GPU_FAMILY, sleep=no_sleep)
    assert again == (gpu_arn, False)


# --- stops: both families reach the trigger, nothing else does -------------------------------------------


def stop_detail(family: str) -> dict[str, Any]:
    event = json.loads(json.dumps(load_event("ecs_task_stopped_spot.json")).replace("us-west-2", REGION))
    event["detail"]["taskDefinitionArn"] = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:4"
    return event


@pytest.mark.parametrize(
    ("family", "ours"),
    [
        ("pushtrain-trainer", True),
        (GPU_FAMILY, True),
        ("pushtrain-trainer-gpux", False),
        ("pushtrain-trainer-g", False),
    ],
)
def test_the_stop_parser_accepts_both_families_and_nothing_else(aws: Emulated, family: str, ours: bool) -> None:
    parsed = parse_task_stop_event(stop_detail(family), gpu_config(aws))
    assert isinstance(parsed, stops.TaskStopEvent) == ours


def test_without_gpu_capacity_a_gpu_family_stop_is_not_ours(config: Config) -> None:
    assert not isinstance(parse_task_stop_event(stop_detail(GPU_FAMILY), config), stops.TaskStopEvent)


# --- the on-demand resume of a GPU run ----------------------------------------------------------------------


@pytest.fixture
def gpu_run(gpu: Emulated) -> tuple[Emulated, str]:
    """GIVEN a GPU push trained: attempt 1 runs on the Spot GPU provider."""
    gpu.config = gpu_config(gpu, "gpu")
    decision = handle(push_of(CUDA_TAG, CUDA_DIGEST), gpu.config, gpu.clients, clock=clock, sleep=no_sleep)
    return gpu, decision["run_id"]


def stop_gpu_task(aws: Emulated, run_id: str, stop_code: str, reason: str, exit_code: int | None) -> dict[str, Any]:
    sample = json.loads(json.dumps(load_event("ecs_task_stopped_spot.json")).replace("us-west-2", REGION))
    record = aws.record(run_id)
    event = stop_event_for(aws, sample, record["task_arn"], stop_code, exit_code, reason)
    event["detail"].update(capacityProviderName=record["capacity_provider"], launchType="EC2")
    return event


@pytest.mark.parametrize(
    ("stop_code", "reason", "exit_code"),
    [
        ("SpotInterruption", "Your Spot Task was interrupted.", 75),
        ("TerminationNotice", "Spot instance termination notice", 75),
        ("TaskFailedToStart", UNPLACED, None),
    ],
    ids=["spot-interruption", "termination-notice", "never-placed"],
)
def test_a_gpu_spot_task_interrupted_or_never_placed_resumes_on_the_on_demand_provider(
    gpu_run: tuple[Emulated, str], stop_code: str, reason: str, exit_code: int | None
) -> None:
    aws, run_id = gpu_run
    first = aws.record(run_id)
    assert (first["capacity_provider"], first["on_demand"]) == (SPOT_GPU, False)
    # WHEN its task stops that way, and ECS says so
    event = stop_gpu_task(aws, run_id, stop_code, reason, exit_code)
    decision = handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    # THEN attempt 2 starts on the on-demand GPU provider, of the GPU family, on the same CUDA digest
    assert (decision["decision"], decision["outcome"], decision["capacity_provider"]) == (
        "resume",
        "started",
        ON_DEMAND_GPU,
    )
    record = aws.record(run_id)
    assert (record["attempt"], record["state"], record["on_demand"]) == (2, "queued", True)
    assert (record["compute"], record["capacity_provider"]) == ("gpu", ON_DEMAND_GPU)
    resumed = task_of(aws, decision["task_arn"])
    assert family_of(resumed) == GPU_FAMILY
    assert env_of(resumed)["TRAINER_ATTEMPT"] == "2"
    assert env_of(resumed)["TRAINER_IMAGE_DIGEST"] == CUDA_DIGEST


def test_a_gpu_task_that_failed_to_start_for_another_reason_marks_the_run_failed(
    gpu_run: tuple[Emulated, str],
) -> None:
    aws, run_id = gpu_run
    event = stop_gpu_task(aws, run_id, "TaskFailedToStart", "CannotPullContainerError: pull access denied", None)
    decision = handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    assert (decision["decision"], decision["outcome"]) == ("fail", "marked-failed")
    assert aws.record(run_id)["state"] == "failed"
    assert len(aws.tasks()) == 1


def test_without_an_on_demand_gpu_provider_an_unplaced_gpu_task_marks_the_run_failed(
    gpu_run: tuple[Emulated, str],
) -> None:
    # GIVEN var.gpu.spot = false: the one GPU provider is on-demand, there is nothing to fall back to
    aws, run_id = gpu_run
    config = gpu_config(aws, "gpu", PUSHTRAIN_GPU_ON_DEMAND_CAPACITY_PROVIDER="")
    event = stop_gpu_task(aws, run_id, "TaskFailedToStart", UNPLACED, None)
    decision = handle(event, config, aws.clients, clock=clock, sleep=no_sleep)
    assert (decision["decision"], decision["outcome"]) == ("fail", "marked-failed")
    assert len(aws.tasks()) == 1


def test_a_redelivered_gpu_stop_resumes_once(gpu_run: tuple[Emulated, str]) -> None:
    aws, run_id = gpu_run
    event = stop_gpu_task(aws, run_id, "TaskFailedToStart", UNPLACED, None)
    first = handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    second = handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    assert (second["decision"], second["task_arn"]) == ("duplicate", first["task_arn"])
    assert len(aws.tasks()) == 2


@pytest.mark.parametrize(
    ("placed", "recorded", "compute", "resumes"),
    [
        (SPOT_GPU, SPOT_GPU, "gpu", True),
        (None, SPOT_GPU, "gpu", True),  # an event without capacityProviderName: the record says where
        (ON_DEMAND_GPU, ON_DEMAND_GPU, "gpu", False),  # on-demand already: nothing further to fall back to
        (None, ON_DEMAND_GPU, "gpu", False),
        ("FARGATE_SPOT", "FARGATE_SPOT", "cpu", False),  # a Fargate task that never started is a failure
    ],
)
def test_only_a_gpu_spot_task_that_never_placed_resumes_on_on_demand(
    placed: str | None, recorded: str, compute: str, resumes: bool
) -> None:
    record = {"compute": compute, "capacity_provider": recorded, "task_arn": TASK_ARN}
    stop = stops.TaskStopEvent(
        "e", TASK_ARN, GPU_REVISION, "STOPPED", "TaskFailedToStart", UNPLACED, None, {}, capacity_provider=placed
    )
    assert stops.never_placed_on(record, stop, SPOT_GPU) == resumes
    # AND a deployment without an on-demand GPU provider never resumes it
    assert not stops.never_placed_on(record, stop, None)


# --- sweeps run on the default compute ---------------------------------------------------------------------


def test_a_sweep_runs_on_the_default_compute_and_trains_the_cuda_variant(gpu: Emulated) -> None:
    sweep = {**retrain(GIT_SHA), "sweep": {"list": [{"lr": 0.5}, {"lr": 1.5}]}}
    answer = handle(sweep, gpu_config(gpu, "gpu"), gpu.clients, clock=clock, sleep=no_sleep)
    assert answer["image_digest"] == CUDA_DIGEST
    assert sorted(family_of(t) for t in gpu.tasks()) == [GPU_FAMILY, GPU_FAMILY]
    assert {gpu.record(run["run_id"])["compute"] for run in answer["runs"]} == {"gpu"}


def test_a_sweep_takes_no_compute_of_its_own(gpu: Emulated) -> None:
    sweep = {**retrain(GIT_SHA, compute="gpu"), "sweep": {"list": [{"lr": 0.5}]}}
    with pytest.raises(InvalidEventError, match="compute"):
        handle(sweep, gpu.config, gpu.clients, clock=clock, sleep=no_sleep)
    assert gpu.tasks() == []


# --- EC2 Spot notices: stop the GPU task gracefully, resume it on demand (trigger.notices) -------------------

WARNING, REBALANCE = "EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation"


def gpu_instance_id(aws: Emulated) -> str:
    """The EC2 instance id of the GPU container instance the fixture registered."""
    (arn,) = aws.ecs.list_container_instances(cluster="pushtrain")["containerInstanceArns"]
    (instance,) = aws.ecs.describe_container_instances(cluster="pushtrain", containerInstances=[arn])[
        "containerInstances"
    ]
    return str(instance["ec2InstanceId"])


def notice_of(instance_id: str, kind: str = WARNING) -> dict[str, Any]:
    """The AWS documentation's example of the notice (spot-instance-termination-notices.html,
    rebalance-recommendations.html), for `instance_id` in our region."""
    detail: dict[str, Any] = {"instance-id": instance_id}
    if kind == WARNING:
        detail["instance-action"] = "terminate"
    return {
        "version": "0",
        "id": "12345678-1234-1234-1234-123456789012",
        "detail-type": kind,
        "source": "aws.ec2",
        "account": ACCOUNT,
        "time": "2026-11-25T19:40:00Z",
        "region": REGION,
        "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"],
        "detail": detail,
    }


class StopTaskCalls:
    """Counts the StopTask requests the trigger's ECS client sends (a botocore event hook)."""

    def __init__(self, ecs: Any) -> None:
        self.ecs, self.requests = ecs, []
        ecs.meta.events.register("provide-client-params.ecs.StopTask", self._seen)

    def _seen(self, params: dict[str, Any], **_: Any) -> None:
        self.requests.append(params)

    def close(self) -> None:
        self.ecs.meta.events.unregister("provide-client-params.ecs.StopTask", self._seen)


@pytest.fixture
def stop_calls(gpu_run: tuple[Emulated, str]) -> Iterator[StopTaskCalls]:
    calls = StopTaskCalls(gpu_run[0].ecs)
    yield calls
    calls.close()


@pytest.mark.parametrize("kind", [WARNING, REBALANCE])
def test_a_spot_notice_stops_the_gpu_task_once_and_its_stop_resumes_on_demand(
    gpu_run: tuple[Emulated, str], stop_calls: StopTaskCalls, kind: str
) -> None:
    # GIVEN a GPU run training on the Spot GPU provider, its trainer running
    aws, run_id = gpu_run
    aws.put_record(run_id, state="running")
    task_arn = aws.record(run_id)["task_arn"]
    event = notice_of(gpu_instance_id(aws), kind)
    # WHEN EC2's notice for its instance arrives, twice (EventBridge delivers at least once)
    first = handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    second = handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    # THEN the task was stopped once, with the reason the Spot rule matches, after its record was marked
    assert (first["decision"], first["outcome"], first["task_arn"]) == ("spot-notice", "stopped", task_arn)
    assert (second["decision"], second["outcome"]) == ("spot-notice", "nothing-running")
    (request,) = stop_calls.requests
    assert request["task"] == task_arn
    assert request["reason"].startswith(STOP_REASON_PREFIX)
    assert len(request["reason"]) <= 255  # StopTask accepts 255 characters
    marker = aws.record(run_id)["spot_notice"]
    assert (marker["task_arn"], marker["kind"], marker["instance_id"]) == (task_arn, kind, gpu_instance_id(aws))
    # WHEN the trainer checkpoints, records `interrupted` and exits 75, and that stop event arrives
    aws.put_record(run_id, state="interrupted")
    stop = stop_gpu_task(aws, run_id, "UserInitiated", request["reason"], 75)
    decision = handle(stop, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    # THEN attempt 2 starts on the on-demand GPU provider, as after a Spot interruption
    assert (decision["decision"], decision["outcome"], decision["capacity_provider"]) == (
        "resume",
        "started",
        ON_DEMAND_GPU,
    )
    record = aws.record(run_id)
    assert (record["attempt"], record["on_demand"], record["source"]) == (2, True, "spot-resume")
    # AND a redelivery of that stop is a duplicate: one resumed task
    again = handle(stop, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    assert (again["decision"], again["task_arn"]) == ("duplicate", decision["task_arn"])
    assert len(aws.tasks()) == 2


@pytest.mark.parametrize(
    ("marked_ago", "outcome", "stops_"),
    [(timedelta(seconds=30), "duplicate", 0), (timedelta(hours=1), "stopped", 1)],
    ids=["being-stopped-by-another-invocation", "marked-by-an-invocation-that-died"],
)
def test_a_notice_for_a_task_another_invocation_marked_stops_it_only_once_that_claim_expired(
    gpu_run: tuple[Emulated, str], stop_calls: StopTaskCalls, marked_ago: timedelta, outcome: str, stops_: int
) -> None:
    # GIVEN a concurrent delivery of the notice marked the task (PUSHTRAIN_CLAIM_SECONDS = 180) and the task
    # is still meant to run
    aws, run_id = gpu_run
    task_arn = aws.record(run_id)["task_arn"]
    at = (NOW - marked_ago).strftime("%Y-%m-%dT%H:%M:%SZ")
    aws.put_record(run_id, state="running", spot_notice={"task_arn": task_arn, "kind": WARNING, "at": at})
    # WHEN this delivery runs
    decision = handle(notice_of(gpu_instance_id(aws)), aws.config, aws.clients, clock=clock, sleep=no_sleep)
    # THEN a fresh claim is left to its holder; an expired one is taken over and the task stopped
    assert (decision["decision"], decision["outcome"]) == ("spot-notice", outcome)
    assert len(stop_calls.requests) == stops_


def test_a_stoptask_that_fails_releases_the_marker_and_the_retry_stops_the_task(
    gpu_run: tuple[Emulated, str], stop_calls: StopTaskCalls
) -> None:
    aws, run_id = gpu_run
    aws.put_record(run_id, state="running")
    event = notice_of(gpu_instance_id(aws))

    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ServerException", "Message": "injected"}}, "StopTask")

    # GIVEN StopTask fails once (a botocore hook answers for ECS)
    aws.ecs.meta.events.register_first("before-call.ecs.StopTask", refuse)
    with pytest.raises(ClientError, match="injected"):
        handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    aws.ecs.meta.events.unregister("before-call.ecs.StopTask", refuse)
    # THEN the claim is released: Lambda's retry of the same notice stops the task at once
    assert aws.record(run_id)["spot_notice"] is None
    decision = handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    assert decision["outcome"] == "stopped"
    assert aws.record(run_id)["spot_notice"]["task_arn"] == decision["task_arn"]


def test_a_notice_for_an_instance_outside_our_cluster_stops_nothing(
    gpu_run: tuple[Emulated, str], stop_calls: StopTaskCalls
) -> None:
    # moto ignores ListContainerInstances' filter and lists every instance of the cluster: the trigger
    # must check each container instance's ec2InstanceId itself, or this would stop our task.
    aws, run_id = gpu_run
    decision = handle(notice_of("i-0fedcba9876543210"), aws.config, aws.clients, clock=clock, sleep=no_sleep)
    assert (decision["decision"], decision["outcome"]) == ("spot-notice", "not-ours")
    assert stop_calls.requests == []
    assert "spot_notice" not in aws.record(run_id)


def test_the_container_instance_is_asked_of_ecs_by_its_ec2_instance_id(stubbed: Stubbed) -> None:
    # GIVEN the exact request (Stubber checks it against the ECS API model): our cluster, the cluster query
    # language's ec2InstanceId (docs: cluster-query-language.html)
    config = load_config({**ENVIRONMENT, **GPU_ENVIRONMENT})
    expected = {"cluster": "pushtrain", "filter": "ec2InstanceId == i-1234567890abcdef0"}
    stubbed.ecs.add_response("list_container_instances", {"containerInstanceArns": []}, expected)
    assert notices.container_instances(stubbed.clients, config, "i-1234567890abcdef0") == []
    stubbed.assert_done()


@pytest.mark.parametrize("state", ["succeeded", "interrupted"])
def test_a_notice_leaves_a_run_that_no_longer_trains_alone(
    gpu_run: tuple[Emulated, str], stop_calls: StopTaskCalls, state: str
) -> None:
    aws, run_id = gpu_run
    aws.put_record(run_id, state=state)
    decision = handle(notice_of(gpu_instance_id(aws)), aws.config, aws.clients, clock=clock, sleep=no_sleep)
    assert (decision["decision"], decision["outcome"]) == ("spot-notice", "left-running")
    assert stop_calls.requests == []


def test_a_notice_without_spot_gpu_capacity_is_skipped() -> None:
    # GIVEN var.gpu.spot = false: no task of ours runs on Spot (the rule is not even deployed)
    config = load_config({**ENVIRONMENT, **GPU_ENVIRONMENT, "PUSHTRAIN_GPU_ON_DEMAND_CAPACITY_PROVIDER": ""})
    skipped = parse(notice_of("i-1234567890abcdef0"), config)
    assert isinstance(skipped, SkippedEvent)
    assert "var.gpu.spot" in skipped.reason


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"instance-id": "i-XYZ"}, r"detail\.instance-id='i-XYZ' is not an EC2 instance id"),
        ({"instance-id": None}, r"detail\.instance-id=None is not an EC2 instance id"),
        ({"instance-action": 3}, r"detail\.instance-action=3 must be a string"),
    ],
)
def test_a_malformed_notice_is_refused_at_the_front_door_naming_the_field(change: dict[str, Any], message: str) -> None:
    event = notice_of("i-1234567890abcdef0")
    event["detail"].update(change)
    with pytest.raises(InvalidEventError, match=message):
        parse(event, load_config({**ENVIRONMENT, **GPU_ENVIRONMENT}))


@pytest.mark.parametrize(
    ("marked", "exit_code", "resumes"),
    [
        (True, 75, True),  # the trainer checkpointed on the trigger's StopTask
        (True, None, True),  # killed before its container reported
        (True, 137, True),  # SIGKILL at the stop timeout: its last epoch's checkpoint stands
        (True, 0, False),  # it finished first: the success path keeps the image
        (True, 73, False),  # a duplicate trainer stood down: the live one owns the run
        (False, 75, False),  # a person's stop: the run stays interrupted
    ],
)
def test_only_a_stop_the_trigger_made_on_a_notice_resumes(marked: bool, exit_code: int | None, resumes: bool) -> None:
    record = {"spot_notice": {"task_arn": TASK_ARN if marked else TASK_ARN + "0"}}
    stop = stops.TaskStopEvent("e", TASK_ARN, GPU_REVISION, "STOPPED", "UserInitiated", "x", exit_code, {})
    assert stops.stopped_on_notice(record, stop) == resumes


def test_a_run_stopped_on_a_notice_whose_stop_event_was_lost_is_resumed_by_reconcile(
    gpu_run: tuple[Emulated, str],
) -> None:
    # GIVEN a notice stopped the GPU task, the trainer recorded `interrupted`, and its stop event never came
    aws, run_id = gpu_run
    aws.put_record(run_id, state="running")
    handle(notice_of(gpu_instance_id(aws)), aws.config, aws.clients, clock=clock, sleep=no_sleep)
    aws.put_record(run_id, state="interrupted")
    aws.stopped[aws.record(run_id)["task_arn"]] = {"stopCode": "UserInitiated", "exitCode": 75}  # what ECS reports
    # WHEN the scheduled reconcile runs
    decision = handle(load_event("scheduled_event.json"), aws.config, aws.clients, clock=clock, sleep=no_sleep)
    # THEN it resumes the run as the stop event would have: attempt 2, on demand
    assert decision["started"] == 1
    record = aws.record(run_id)
    assert (record["attempt"], record["on_demand"], record["capacity_provider"]) == (2, True, ON_DEMAND_GPU)
