"""RunTask: the request for one attempt of a run, and the capacity strategy around it.

Each attempt tries its capacity providers in order (`capacity_providers`): a CPU run Fargate Spot
first and, when Spot has no capacity, once more on on-demand Fargate; a GPU run the GPU provider (Spot
with var.gpu.spot) and then the on-demand GPU provider. An EC2 capacity provider seldom refuses a task
for lack of instances: the task waits in PROVISIONING while managed scaling launches one, and when none
comes it stops (TaskFailedToStart); that stop, not RunTask, moves a GPU run to on-demand
(trigger.stops). A response with `failures` for any other reason raises. Throttling is retried by
botocore (adaptive mode, see `trigger.aws`) and, past that, here with capped exponential backoff and
full jitter; RunTask is idempotent under its clientToken, so repeating it cannot start a second task.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from trigger.compute import GPU, task_family
from trigger.config import Config
from trigger.errors import RunTaskFailedError
from trigger.launcher import Launched
from trigger.runs import RunSpec, client_token, container_environment, resource_tags, started_by
from trigger.s3json import error_code
from trigger.taskdef import ensure_pinned_revision

SPOT, ON_DEMAND = "FARGATE_SPOT", "FARGATE"
# The reason ECS gives when Fargate (Spot) cannot place a task: "Capacity is unavailable at this time.
# Please try again later or in a different availability zone".
_CAPACITY = re.compile(r"capacity is unavailable|insufficient capacity|no (?:spot )?capacity", re.IGNORECASE)
THROTTLING_CODES = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded", "SlowDown"}
)
THROTTLE_TRIES = 3  # after botocore's own retries; see the time budget in trigger.aws
BACKOFF_BASE = 0.5  # seconds, doubled per try
BACKOFF_CAP = 8.0  # seconds
DESCRIBE_BATCH = 100  # tasks per DescribeTasks call (the API's limit)

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Started:
    """A task that RunTask accepted, and on which capacity."""

    task_arn: str
    capacity_provider: str


def capacity_providers(config: Config, spec: RunSpec) -> tuple[str, ...]:
    """The capacity providers an attempt tries, in order (pure).

    CPU: Fargate Spot, then on-demand Fargate. GPU: PUSHTRAIN_GPU_CAPACITY_PROVIDER, then
    PUSHTRAIN_GPU_ON_DEMAND_CAPACITY_PROVIDER when there is one; an attempt the record sends to
    on-demand (`on_demand`, after a GPU Spot interruption or a start without capacity) tries only that.
    """
    if spec.compute != GPU:
        return (SPOT, ON_DEMAND)
    on_demand = config.gpu_on_demand_capacity_provider
    if spec.on_demand and on_demand:
        return (on_demand,)
    return (config.gpu_capacity_provider, on_demand) if on_demand else (config.gpu_capacity_provider,)


def run_task_request(
    spec: RunSpec, config: Config, task_definition_arn: str, capacity_provider: str, *, fallback: bool = False
) -> dict[str, Any]:
    """The RunTask request for one attempt on one capacity provider (pure).

    `fallback`: the attempt's second provider, after the first had no capacity (another clientToken:
    ECS answers a reused token with the first answer). Both families use awsvpc networking; a task on
    an EC2 instance cannot get a public IP (ECS accepts assignPublicIp ENABLED for Fargate only), and
    the GPU capacity needs the private network, so a GPU task never asks for one.
    """
    public_ip = "DISABLED" if spec.compute == GPU else config.assign_public_ip
    return {
        "cluster": config.cluster,
        "taskDefinition": task_definition_arn,
        "count": 1,
        "capacityProviderStrategy": [{"capacityProvider": capacity_provider, "weight": 1}],
        "clientToken": client_token(spec.run_id, spec.attempt, on_demand=fallback),
        "startedBy": started_by(spec.run_id),
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": list(config.subnets),
                "securityGroups": list(config.security_groups),
                "assignPublicIp": public_ip,
            }
        },
        "overrides": {
            "containerOverrides": [{"name": config.container_name, "environment": container_environment(spec)}]
        },
        "tags": resource_tags(spec),
        # aws:ecs:clusterName on the task, for cost allocation next to our own tags.
        "enableECSManagedTags": True,
    }


def is_capacity_failure(reason: str) -> bool:
    return bool(_CAPACITY.search(reason))


def _call_with_backoff(ecs: Any, request: dict[str, Any], sleep: Sleep) -> dict[str, Any]:
    for attempt in range(1, THROTTLE_TRIES + 1):
        try:
            return ecs.run_task(**request)
        except ClientError as error:
            if error_code(error) not in THROTTLING_CODES or attempt == THROTTLE_TRIES:
                raise
            sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))  # noqa: S311 (jitter, not crypto)
    raise AssertionError("unreachable: the last try returns or raises")


def _attempt(ecs: Any, request: dict[str, Any], sleep: Sleep) -> tuple[str | None, str | None]:
    """(task ARN, None) on success, (None, capacity reason) when there is no capacity; raise otherwise."""
    try:
        response = _call_with_backoff(ecs, request, sleep)
    except ClientError as error:
        message = str(error.response.get("Error", {}).get("Message", ""))
        if is_capacity_failure(message):
            return None, f"{error_code(error)}: {message}"
        raise
    failures = response.get("failures") or []
    reasons = [f"{f.get('arn', '?')}: {f.get('reason', '?')} {f.get('detail', '')}".strip() for f in failures]
    if failures and all(is_capacity_failure(str(f.get("reason", ""))) for f in failures):
        return None, "; ".join(reasons)
    if failures:
        raise RunTaskFailedError(f"RunTask {request['clientToken']} on {request['taskDefinition']} failed: {reasons}")
    tasks = response.get("tasks") or []
    if len(tasks) != 1 or not tasks[0].get("taskArn"):
        raise RunTaskFailedError(f"RunTask {request['clientToken']} returned {len(tasks)} tasks and no failures")
    return str(tasks[0]["taskArn"]), None


def start_task(ecs: Any, spec: RunSpec, config: Config, task_definition_arn: str, sleep: Sleep = time.sleep) -> Started:
    """Start one attempt on the first of its capacity providers that has capacity (`capacity_providers`)."""
    providers = capacity_providers(config, spec)
    refusals: list[str] = []
    for index, provider in enumerate(providers):
        request = run_task_request(spec, config, task_definition_arn, provider, fallback=index > 0)
        task_arn, reason = _attempt(ecs, request, sleep)
        if task_arn:
            return Started(task_arn=task_arn, capacity_provider=provider)
        refusals.append(f"{provider} said {reason!r}")
    kind = "GPU" if spec.compute == GPU else "Fargate"
    raise RunTaskFailedError(f"no {kind} capacity for run {spec.run_id} attempt {spec.attempt}: {'; '.join(refusals)}")


# --- what ECS knows: the tasks of a run, the facts of a stopped task --------------------------------


def task_environment(task: dict[str, Any], container_name: str) -> dict[str, str]:
    """The trainer container's environment overrides of a described task (its run id, attempt, digest)."""
    overrides = (task.get("overrides") or {}).get("containerOverrides") or []
    for override in overrides:
        if override.get("name") == container_name:
            return {pair["name"]: pair.get("value", "") for pair in override.get("environment") or []}
    return {}


def describe_tasks(ecs: Any, config: Config, task_arns: list[str]) -> dict[str, dict[str, Any]]:
    """task ARN -> DescribeTasks description, for those ECS still knows (stopped tasks fade after ~1 hour)."""
    described: dict[str, dict[str, Any]] = {}
    for start in range(0, len(task_arns), DESCRIBE_BATCH):
        response = ecs.describe_tasks(cluster=config.cluster, tasks=task_arns[start : start + DESCRIBE_BATCH])
        described.update({str(task["taskArn"]): task for task in response.get("tasks") or []})
    return described


def find_task(ecs: Any, config: Config, spec: RunSpec) -> str | None:
    """The task a start of this run and attempt already made, or None (ListTasks by startedBy).

    A RunTask whose response was lost (a timeout, a crash before the record was written) may have
    started a task; the next claimant looks for it before calling RunTask again, so the run record, not
    ECS's 24-hour clientToken, is what keeps a start to one task.
    """
    arns: list[str] = []
    for status in ("RUNNING", "STOPPED"):
        response = ecs.list_tasks(cluster=config.cluster, startedBy=started_by(spec.run_id), desiredStatus=status)
        arns.extend(response.get("taskArns") or [])
    for arn, task in describe_tasks(ecs, config, arns).items():
        if task_environment(task, config.container_name).get("TRAINER_ATTEMPT") == str(spec.attempt):
            return arn
    return None


# --- the launcher seam (trigger.launcher) -----------------------------------------------------------


@dataclass(frozen=True)
class EcsLauncher:
    """Runs on ECS: Fargate (compute "cpu") or the GPU capacity providers on EC2 (compute "gpu")."""

    ecs: Any
    run_task_client: Any  # RunTask's own client (trigger.aws.Clients.launch_client: no automatic retries)
    s3: Any
    config: Config
    now: datetime
    sleep: Sleep

    def find_existing(self, spec: RunSpec) -> str | None:
        return find_task(self.ecs, self.config, spec)

    def launch(self, spec: RunSpec) -> Launched:
        family = task_family(self.config, spec.compute)
        definition, registered = ensure_pinned_revision(
            self.ecs, self.s3, self.config, spec.digest, self.now, family=family, sleep=self.sleep
        )
        started = start_task(self.run_task_client, spec, self.config, definition, self.sleep)
        return Launched(started.task_arn, started.capacity_provider, definition, registered)
