"""The events AWS would send, built like the real ones, and EventBridge's matching of them against a rule.

ECR emits no events in moto and EventBridge cannot deliver to a Lambda there, so the pipeline builds
the event EventBridge would deliver and matches it with moto's own implementation of EventBridge
pattern matching (`moto.events.models.EventPattern`); `events.test_event_pattern` answers nothing in
moto.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moto.events.models import EventPattern

ECR_DETAIL_TYPE = "ECR Image Action"
ECS_DETAIL_TYPE = "ECS Task State Change"


class EventError(ValueError):
    """A sample event or a pattern is missing or malformed; the message names the file or the field."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_sample(folder: Path, detail_type: str) -> dict[str, Any]:
    """The first `*.json` in `folder` (sorted) whose `detail-type` is `detail_type`: the template to copy."""
    for file in sorted(folder.glob("*.json")):
        try:
            event = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise EventError(f"{file} is not valid JSON: {exc}") from exc
        if isinstance(event, dict) and event.get("detail-type") == detail_type:
            if detail_type == ECR_DETAIL_TYPE and event.get("detail", {}).get("action-type") != "PUSH":
                continue
            return event
    raise EventError(f"no sample {detail_type!r} event in {folder} (the trigger's tests keep real events there)")


def ecr_push_event(
    sample: Mapping[str, Any],
    *,
    account_id: str,
    region: str,
    repository: str,
    digest: str,
    tag: str,
    action: str = "PUSH",
) -> dict[str, Any]:
    """An `ECR Image Action` event for one image, shaped exactly like `sample` (a real one)."""
    if not digest.startswith("sha256:"):
        raise EventError(f"image digest must be sha256:..., got {digest!r}")
    event = copy.deepcopy(dict(sample))
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise EventError(f"sample ECR event has no detail object: {sample!r}")
    event.update(id=str(uuid.uuid4()), account=account_id, region=region, time=_now(), resources=[])
    detail.update(
        {
            "result": "SUCCESS",
            "repository-name": repository,
            "image-digest": digest,
            "action-type": action,
            "image-tag": tag,
        }
    )
    return event


def ecs_task_stopped_event(
    task: Mapping[str, Any],
    *,
    account_id: str,
    region: str,
    stop_code: str = "SpotInterruption",
    stopped_reason: str = "Your Spot Task was interrupted.",
    exit_code: int | None = None,
    sample: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `ECS Task State Change` event ECS sends when `task` (as DescribeTasks returns it) has STOPPED.

    The detail carries what the real one carries: the task and cluster ARNs, the task definition,
    `startedBy`, the group, the capacity provider, `stopCode`/`stoppedReason`, the containers with
    their exit codes, and the RunTask `overrides` (the trigger reads the run id back from them).
    """
    now = _now()
    base = copy.deepcopy(dict(sample)) if sample else {}
    containers = [
        {
            "containerArn": c.get("containerArn", ""),
            "lastStatus": "STOPPED",
            "name": c["name"],
            "image": c.get("image", ""),
            "taskArn": task["taskArn"],
            "networkInterfaces": c.get("networkInterfaces", []),
            "cpu": str(c.get("cpu", "0")),
            "memory": str(c.get("memory", "")),
            **({"imageDigest": c["image"].rpartition("@")[2]} if "@sha256:" in c.get("image", "") else {}),
            **({"exitCode": exit_code} if exit_code is not None else {}),
        }
        for c in task.get("containers", [])
    ]
    detail = {
        **base.get("detail", {}),
        "attachments": task.get("attachments", []),
        "availabilityZone": task.get("availabilityZone", f"{region}a"),
        "capacityProviderName": task.get("capacityProviderName") or "FARGATE_SPOT",
        "clusterArn": task["clusterArn"],
        "connectivity": "CONNECTED",
        "containers": containers,
        "cpu": str(task.get("cpu", "")),
        "createdAt": _iso(task.get("createdAt")) or now,
        "desiredStatus": "STOPPED",
        "group": task.get("group", ""),
        "launchType": "FARGATE",
        "lastStatus": "STOPPED",
        "memory": str(task.get("memory", "")),
        "overrides": task.get("overrides", {"containerOverrides": []}),
        "platformVersion": task.get("platformVersion", "1.4.0"),
        "startedBy": task.get("startedBy", ""),
        "stopCode": stop_code,
        "stoppedAt": now,
        "stoppedReason": stopped_reason,
        "stoppingAt": now,
        "taskArn": task["taskArn"],
        "taskDefinitionArn": task["taskDefinitionArn"],
        "updatedAt": now,
        "version": int(task.get("version", 1)) + 2,
    }
    for moment in ("executionStoppedAt", "pullStartedAt", "pullStoppedAt", "startedAt", "connectivityAt"):
        detail[moment] = now  # the sample's own times would be stale
    return {
        **{k: v for k, v in base.items() if k != "detail"},
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": ECS_DETAIL_TYPE,
        "source": "aws.ecs",
        "account": account_id,
        "time": now,
        "region": region,
        "resources": [task["taskArn"]],
        "detail": detail,
    }


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value if isinstance(value, str) else None


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether EventBridge would deliver `event` to a rule with `pattern` (moto's matcher, plus arrays).

    EventBridge matches a pattern object against an array of objects when any one element matches all of
    it (aws/event-ruler's array consistency: `detail.containers[]`, the trainer container among the task's
    containers); moto's matcher does not look inside arrays of objects, so each choice of one element per
    such array is tried on its own.
    """
    compiled = EventPattern.load(json.dumps(pattern))
    return any(compiled.matches_event(choice) for choice in _element_choices(pattern, dict(event)))


def _element_choices(pattern: Any, event: Any) -> list[Any]:
    """`event` with every array of objects that `pattern` matches with an object replaced by one element."""
    if not isinstance(pattern, Mapping) or not isinstance(event, Mapping):
        return [event]
    choices: list[dict[str, Any]] = [dict(event)]
    for key, sub in pattern.items():
        value = event.get(key)
        if (
            isinstance(sub, Mapping)
            and isinstance(value, list)
            and value
            and all(isinstance(v, Mapping) for v in value)
        ):
            options = [option for element in value for option in _element_choices(sub, element)]
        elif isinstance(sub, Mapping) and isinstance(value, Mapping):
            options = _element_choices(sub, value)
        else:
            continue
        choices = [{**choice, key: option} for choice in choices for option in options]
    return choices
