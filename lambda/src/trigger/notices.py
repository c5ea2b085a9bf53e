"""EC2 Spot notices for the stack's GPU instances: stop their training tasks gracefully, resume on demand.

A GPU run's task on the Spot GPU capacity provider (terraform/gpu.tf, var.gpu.spot) lives on an EC2
instance that EC2 may reclaim. Two EventBridge events from aws.ec2 say so ahead of time:

- "EC2 Spot Instance Interruption Warning": the instance is stopped or terminated in two minutes
  (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html);
- "EC2 Instance Rebalance Recommendation": the instance is at elevated risk of interruption; it may
  come sooner than the warning, or with it
  (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/rebalance-recommendations.html).

Both are best effort, and neither names a task: ECS sets a container instance DRAINING on the warning
(ECS_ENABLE_SPOT_INSTANCE_DRAINING) but stops only *service* tasks; a standalone task, which every
training task is, keeps running until the instance dies ("Draining Amazon ECS container instances",
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/container-instance-draining.html). And an
Auto Scaling group's capacity rebalancing removes an instance without any notice to ECS. So the trigger
does it (`handle_instance_notice`), for either event:

1. The instance's container instance in our cluster: ListContainerInstances with the cluster query
   `ec2InstanceId == <id>` (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/cluster-query-language.html),
   then DescribeContainerInstances, keeping only those whose `ec2InstanceId` really is the event's (the
   filter is not taken on trust: moto, for one, ignores it). None: not our instance (the rule cannot
   tell the stack's GPU instances from the account's other Spot instances), skipped.
2. Its tasks still meant to run (ListTasks `desiredStatus=RUNNING`), described; only ours count: a
   revision of the trainer's GPU (or CPU) family with a TRAINER_RUN_ID the trigger makes.
3. Per task, by compare-and-swap on the run record, the marker `spot_notice` naming the task, the
   instance and the notice (`decide_notice`: only for the record's current attempt and task, while the
   run is queued or running). The marker comes first: the stop event that follows must find it; and it
   is the claim on the StopTask, as a start's claim is on its RunTask (`_stop_one`).
4. StopTask with a reason starting with STOP_REASON_PREFIX: the trainer gets SIGTERM, checkpoints,
   records `interrupted` and exits 75 within the task's stopTimeout (120 s, inside EC2's two minutes).

The stop event of that task (stopCode UserInitiated, stoppedReason with our prefix: the Spot rule
delivers it, terraform/event-patterns/spot-interruption.json.tftpl) then goes through the front door as
any stop does, and trigger.stops resumes a stop whose record marker names its task exactly like a Spot
interruption: the next attempt, on the on-demand GPU provider. Deliveries of one notice stop the task
once: a later one finds no task of ours still meant to run (ECS set its desiredStatus to STOPPED), a
concurrent one the fresh marker of the invocation that is stopping it.

AWS Batch multi-node jobs are not concerned: Batch runs no multi-node parallel job on Spot capacity,
so the stack's Batch compute environment is on demand (terraform/batch.tf).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from trigger.aws import Clients
from trigger.config import Config
from trigger.ecs import describe_tasks, task_environment
from trigger.errors import InvalidEventError, TriggerError
from trigger.events import SkippedEvent, shown
from trigger.records import (
    Clock,
    Record,
    append_history,
    parse_timestamp,
    read_record,
    timestamp,
    update_record,
    utc_now,
)
from trigger.runs import RUN_ID
from trigger.s3json import Sleep
from trigger.starts import Outcome

INTERRUPTION_WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE_RECOMMENDATION = "EC2 Instance Rebalance Recommendation"
NOTICES = (INTERRUPTION_WARNING, REBALANCE_RECOMMENDATION)
# Every StopTask reason of ours starts with this; the Spot rule's pattern matches it as a prefix
# (eventbridge.tf local.notice_stop_reason_prefix; tests/test_terraform_event_patterns.py checks both agree).
STOP_REASON_PREFIX = "pushtrain spot notice:"
MAX_STOP_REASON = 255  # characters StopTask accepts in `reason` (ECS API reference, StopTask)
RESUMABLE_STATES = frozenset({"queued", "running"})  # a run whose task still trains (or is starting)
DECISION = "spot-notice"
_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}", re.ASCII)
_EVENT_ID = re.compile(r"[A-Za-z0-9-]{1,64}", re.ASCII)
_TASK_FAMILY = re.compile(r"arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:task-definition/(?P<family>[A-Za-z0-9_-]+):\d+")


@dataclass(frozen=True)
class InstanceNotice:
    """EC2 says one instance is about to go (a warning) or at elevated risk (a rebalance recommendation)."""

    event_id: str
    kind: str  # one of NOTICES
    instance_id: str
    instance_action: str | None  # the warning's terminate | stop | hibernate; None for a recommendation


def is_instance_notice(event: Mapping[str, Any]) -> bool:
    return event.get("source") == "aws.ec2" and event.get("detail-type") in NOTICES


def parse_instance_notice(event: Mapping[str, Any], config: Config) -> InstanceNotice | SkippedEvent:
    """The notice, validated; skipped when this stack has no Spot GPU capacity (nothing of ours to stop)."""
    event_id = event.get("id")
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise InvalidEventError(f"event id={shown(event_id, 80)} must match {_EVENT_ID.pattern}")
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise InvalidEventError(f"event.detail must be an object, got {type(detail).__name__}")
    instance_id = detail.get("instance-id")
    if not isinstance(instance_id, str) or not _INSTANCE_ID.fullmatch(instance_id):
        raise InvalidEventError(f"detail.instance-id={shown(instance_id, 80)} is not an EC2 instance id")
    action = detail.get("instance-action")
    if action is not None and not isinstance(action, str):
        raise InvalidEventError(f"detail.instance-action={shown(action, 80)} must be a string")
    if not (config.gpu_task_family and config.gpu_on_demand_capacity_provider):
        return SkippedEvent(
            event_id,
            f"{event['detail-type']} for {instance_id}: this stack runs no task on Spot instances "
            "(Terraform var.gpu.enabled with var.gpu.spot)",
        )
    return InstanceNotice(event_id, str(event["detail-type"]), instance_id, action)


def stop_reason(notice: InstanceNotice) -> str:
    """StopTask's reason: our prefix (the Spot rule matches it), the notice and the instance."""
    return f"{STOP_REASON_PREFIX} {notice.kind} for {notice.instance_id}; checkpoint and resume on demand"[
        :MAX_STOP_REASON
    ]


def decide_notice(
    record: Record | None, task_arn: str, attempt: str | None, *, now: datetime, claim: timedelta
) -> tuple[str, str]:
    """(action, reason) for one running task of ours under a notice. Pure.

    "mark": write the marker, which claims the StopTask for this invocation; "duplicate": another
    invocation marked the task less than `claim` ago and is stopping it; "take-over": a marker older
    than that belongs to an invocation that died before its StopTask, so this one stops the task;
    "leave": not a task the notice concerns.
    """
    if record is None:
        return "leave", "no run record: not a run the trigger started"
    if str(record.get("attempt")) != attempt or record.get("task_arn") != task_arn:
        return "leave", (
            f"the record is at attempt {record.get('attempt')} with task {record.get('task_arn')}, "
            f"not attempt {attempt} with this task"
        )
    if record.get("state") not in RESUMABLE_STATES:
        return "leave", f"the run is {record.get('state')}: nothing left to checkpoint"
    marked = record.get("spot_notice")
    if isinstance(marked, Mapping) and marked.get("task_arn") == task_arn:
        at = parse_timestamp(marked.get("at"))
        if at is not None and now - at < claim:
            return "duplicate", f"{marked.get('kind')} at {marked.get('at')} marked it; that invocation stops it"
        return "take-over", f"marked by {marked.get('kind')} at {marked.get('at')} and still running"
    return "mark", "the task trains on an instance EC2 is about to reclaim"


def container_instances(clients: Clients, config: Config, instance_id: str) -> list[str]:
    """The container instance ARNs of our cluster that really run on `instance_id` (usually one, or none)."""
    listed = clients.ecs.list_container_instances(cluster=config.cluster, filter=f"ec2InstanceId == {instance_id}")
    arns = list(listed.get("containerInstanceArns") or [])
    if not arns:
        return []
    described = clients.ecs.describe_container_instances(cluster=config.cluster, containerInstances=arns)
    return [
        str(each["containerInstanceArn"])
        for each in described.get("containerInstances") or []
        if each.get("ec2InstanceId") == instance_id
    ]


def our_running_tasks(clients: Clients, config: Config, container_instance: str) -> list[dict[str, Any]]:
    """The training tasks of ours on one container instance that ECS still means to run."""
    listed = clients.ecs.list_tasks(
        cluster=config.cluster, containerInstance=container_instance, desiredStatus="RUNNING"
    )
    families = {family for family in (config.task_family, config.gpu_task_family) if family}
    ours = []
    for task in describe_tasks(clients.ecs, config, list(listed.get("taskArns") or [])).values():
        family = _TASK_FAMILY.fullmatch(str(task.get("taskDefinitionArn", "")))
        run_id = task_environment(task, config.container_name).get("TRAINER_RUN_ID", "")
        if family and family.group("family") in families and RUN_ID.fullmatch(run_id):
            ours.append(task)
    return ours


def handle_instance_notice(
    clients: Clients, config: Config, notice: InstanceNotice, *, clock: Clock = utc_now, sleep: Sleep = time.sleep
) -> list[Outcome]:
    """Stop our training tasks on the instance the notice names, each after marking its run record."""
    now = clock()
    instances = container_instances(clients, config, notice.instance_id)
    if not instances:
        why = f"{notice.kind}: {notice.instance_id} is no container instance of cluster {config.cluster}"
        return [Outcome(DECISION, "not-ours", reason=why)]
    outcomes = [
        _stop_one(clients, config, notice, task, now=now, sleep=sleep)
        for arn in instances
        for task in our_running_tasks(clients, config, arn)
    ]
    if not outcomes:
        why = f"{notice.kind}: no training task of ours is still meant to run on {notice.instance_id}"
        return [Outcome(DECISION, "nothing-running", reason=why)]
    return outcomes


def _stop_one(
    clients: Clients, config: Config, notice: InstanceNotice, task: dict[str, Any], *, now: datetime, sleep: Sleep
) -> Outcome:
    """Mark the task's run record, then StopTask: once per task, like a start (trigger.starts).

    The marker is the claim: only the invocation whose compare-and-swap wrote it stops the task, and a
    StopTask that raises clears it again, so Lambda's retry of the notice starts over at once. A marker
    older than PUSHTRAIN_CLAIM_SECONDS on a task still meant to run belongs to an invocation that died
    before its StopTask: it is taken over.
    """
    task_arn = str(task["taskArn"])
    env = task_environment(task, config.container_name)
    run_id, attempt = env["TRAINER_RUN_ID"], env.get("TRAINER_ATTEMPT")
    claim = timedelta(seconds=config.claim_seconds)
    existing = read_record(clients.s3, config.bucket, run_id)
    action, why = decide_notice(existing[0] if existing else None, task_arn, attempt, now=now, claim=claim)
    held = [(action, why)]
    marker = {
        "task_arn": task_arn,
        "instance_id": notice.instance_id,
        "kind": notice.kind,
        "event_id": notice.event_id,
        "at": timestamp(now),
    }

    def mark(current: Record) -> Record | None:
        held[0] = decide_notice(current, task_arn, attempt, now=now, claim=claim)  # again on every CAS round
        if held[0][0] not in {"mark", "take-over"}:
            return None
        current["spot_notice"] = dict(marker)
        append_history(current, now, f"{notice.kind} for {notice.instance_id}: stopping task {task_arn}")
        return current

    def unmark(current: Record) -> Record | None:
        if current.get("spot_notice") != marker:
            return None
        current["spot_notice"] = None
        return current

    if action in {"mark", "take-over"} and existing is not None:
        update_record(clients.s3, config.bucket, run_id, mark, now=now, known=existing, sleep=sleep)
        action, why = held[0]
    if action == "duplicate":
        return Outcome(DECISION, "duplicate", run_id=run_id, task_arn=task_arn, reason=why)
    if action not in {"mark", "take-over"}:
        return Outcome(DECISION, "left-running", run_id=run_id, task_arn=task_arn, reason=why)
    try:
        clients.ecs.stop_task(cluster=config.cluster, task=task_arn, reason=stop_reason(notice))
    except Exception:
        with contextlib.suppress(TriggerError, ClientError):  # the StopTask's error is the one to raise
            update_record(clients.s3, config.bucket, run_id, unmark, now=now, sleep=sleep)
        raise
    return Outcome(
        DECISION,
        "stopped",
        run_id=run_id,
        attempt=int(attempt) if attempt and attempt.isdecimal() else None,
        task_arn=task_arn,
        reason=f"{notice.kind} for {notice.instance_id}: {why}; the trainer checkpoints, the run resumes on demand",
    )
