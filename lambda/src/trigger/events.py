"""Parse and validate the trigger's inputs. Pure: no AWS calls, no configuration beyond `Config`.

Three inputs (see ../../../shared/ARCHITECTURE.md), plus the reconcile schedule:

1. EventBridge "ECR Image Action" from aws.ecr: action-type PUSH, result SUCCESS, our repository.
2. EventBridge "ECS Task State Change" from aws.ecs for a task of our cluster and task family.
3. A retrain request invoked directly: {"action": "retrain", "request_id", "image", "params", "git_sha"?}.
4. EventBridge "Scheduled Event" from aws.events: reconcile the repository.

Anything else raises InvalidEventError naming the first thing that is wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trigger.config import Config
from trigger.errors import InvalidEventError

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Docker's tag grammar: 1-128 characters, not starting with "." or "-".
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# A moving tag names no particular image: a run must say which one it trains (and its run id must
# not depend on when the tag was last moved).
REFUSED_TAGS = frozenset({"latest"})
GIT_SHA = re.compile(r"^[0-9a-f]{40}$")
# A request id becomes part of the run id, the clientToken and startedBy (36 characters at most),
# so "retrain-<request id>-<8 hex>" must fit in 36: at most 19 characters.
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,19}$")
_EVENT_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_TASK_DEFINITION_ARN = re.compile(r"^arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:task-definition/(?P<family>[^:/]+):\d+$")
_CLUSTER_ARN = re.compile(r"^arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:cluster/(?P<name>[^/]+)$")
_TASK_ARN = re.compile(r"^arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:task/[A-Za-z0-9_/-]+$")

# Parameters a retrain request may set, and their JSON types (docs/contracts.md). The trainer checks
# the values; the trigger checks names, types and sizes so nothing odd reaches a paid task.
PARAM_TYPES: dict[str, type] = {
    "model": str,
    "epochs": int,
    "lr": float,
    "batch_size": int,
    "seed": int,
    "label_smoothing": float,
    "weight_decay": float,
}
MAX_STR_PARAM = 64  # characters
MAX_INT_PARAM = 2**31 - 1
_STR_PARAM = re.compile(r"^[A-Za-z0-9_.:-]+$")

# ECS stop codes that mean "the capacity went away", not "the trainer finished or failed".
RESUMABLE_STOP_CODES = frozenset({"SpotInterruption", "TerminationNotice"})

Params = dict[str, str | int | float]


@dataclass(frozen=True)
class PushEvent:
    """A successful push of an image to our repository."""

    event_id: str
    digest: str
    tag: str | None

    @property
    def git_sha(self) -> str | None:
        """The image tag when it is a full git commit sha (the image workflow tags with it)."""
        return self.tag if self.tag and GIT_SHA.match(self.tag) else None


@dataclass(frozen=True)
class TaskStopEvent:
    """A state change of one of our training tasks; only STOPPED ones may lead to a restart."""

    event_id: str
    task_arn: str
    task_definition_arn: str
    last_status: str
    stop_code: str | None
    stopped_reason: str | None
    exit_code: int | None
    environment: dict[str, str]  # the container's environment overrides (TRAINER_*)

    @property
    def resumable(self) -> bool:
        return self.last_status == "STOPPED" and self.stop_code in RESUMABLE_STOP_CODES


@dataclass(frozen=True)
class RetrainRequest:
    """A request to train an image (tag or digest) with parameters, from the retrain workflow."""

    request_id: str
    image: str
    params: Params
    git_sha: str | None

    @property
    def event_id(self) -> str:
        return f"retrain-{self.request_id}"


@dataclass(frozen=True)
class ScheduledEvent:
    """The reconcile schedule fired."""

    event_id: str


Event = PushEvent | TaskStopEvent | RetrainRequest | ScheduledEvent


def parse_event(event: object, config: Config) -> Event:
    """Classify and validate an invocation payload; raise InvalidEventError naming the problem."""
    if not isinstance(event, Mapping):
        raise InvalidEventError(f"event must be a JSON object, got {type(event).__name__}")
    if "action" in event:
        return parse_retrain_request(event)
    source, detail_type = event.get("source"), event.get("detail-type")
    if source == "aws.ecr" and detail_type == "ECR Image Action":
        return parse_push_event(event, config)
    if source == "aws.ecs" and detail_type == "ECS Task State Change":
        return parse_task_stop_event(event, config)
    if source == "aws.events" and detail_type == "Scheduled Event":
        return ScheduledEvent(event_id=_event_id(event))
    raise InvalidEventError(
        f"unsupported event: source={source!r} detail-type={detail_type!r} (keys {sorted(map(str, event))[:10]}); "
        "expected an ECR push, an ECS task state change, a scheduled event or a retrain request"
    )


def parse_push_event(event: Mapping[str, Any], config: Config) -> PushEvent:
    """An "ECR Image Action" event; only a successful PUSH to our repository is accepted."""
    event_id = _event_id(event)
    detail = _mapping(event, "detail", "event")
    action = _str(detail, "action-type", "detail")
    if action != "PUSH":
        raise InvalidEventError(f"detail.action-type={action!r} is not PUSH: only pushes start training")
    result = _str(detail, "result", "detail")
    if result != "SUCCESS":
        raise InvalidEventError(f"detail.result={result!r} is not SUCCESS: a failed push has no image to train")
    repository = _str(detail, "repository-name", "detail")
    if repository != config.repository_name:
        raise InvalidEventError(
            f"detail.repository-name={repository!r} is not our repository {config.repository_name!r}"
        )
    digest = _str(detail, "image-digest", "detail")
    if not DIGEST.match(digest):
        raise InvalidEventError(f"detail.image-digest={digest!r} is not a sha256 digest")
    tag = detail.get("image-tag")
    if tag is not None and not (isinstance(tag, str) and TAG.match(tag)):
        raise InvalidEventError(f"detail.image-tag={tag!r} is not a valid image tag")
    return PushEvent(event_id=event_id, digest=digest, tag=tag or None)


def parse_task_stop_event(event: Mapping[str, Any], config: Config) -> TaskStopEvent:
    """An "ECS Task State Change" event for a task of our cluster and task family."""
    event_id = _event_id(event)
    detail = _mapping(event, "detail", "event")
    cluster_arn = _str(detail, "clusterArn", "detail")
    cluster = _CLUSTER_ARN.match(cluster_arn)
    if not cluster or cluster.group("name") != config.cluster:
        raise InvalidEventError(f"detail.clusterArn={cluster_arn!r} is not our cluster {config.cluster!r}")
    task_definition_arn = _str(detail, "taskDefinitionArn", "detail")
    family = _TASK_DEFINITION_ARN.match(task_definition_arn)
    if not family or family.group("family") != config.task_family:
        raise InvalidEventError(
            f"detail.taskDefinitionArn={task_definition_arn!r} is not a revision of {config.task_family!r}"
        )
    task_arn = _str(detail, "taskArn", "detail")
    if not _TASK_ARN.match(task_arn):
        raise InvalidEventError(f"detail.taskArn={task_arn!r} is not an ECS task ARN")
    last_status = _str(detail, "lastStatus", "detail")
    stop_code = _optional_str(detail, "stopCode", "detail")
    stopped_reason = _optional_str(detail, "stoppedReason", "detail")

    environment: dict[str, str] = {}
    exit_code: int | None = None
    overrides = detail.get("overrides", {})
    if not isinstance(overrides, Mapping):
        raise InvalidEventError(f"detail.overrides must be an object, got {type(overrides).__name__}")
    for override in _list(overrides, "containerOverrides", "detail.overrides", default=[]):
        if isinstance(override, Mapping) and override.get("name") == config.container_name:
            for pair in _list(override, "environment", "detail.overrides.containerOverrides[]", default=[]):
                if not (isinstance(pair, Mapping) and isinstance(pair.get("name"), str)):
                    raise InvalidEventError(f"container override environment entry {pair!r} has no string name")
                value = pair.get("value", "")
                if not isinstance(value, str):
                    raise InvalidEventError(f"container override {pair['name']} has a non-string value {value!r}")
                environment[pair["name"]] = value
    for container in _list(detail, "containers", "detail", default=[]):
        if isinstance(container, Mapping) and container.get("name") == config.container_name:
            code = container.get("exitCode")
            if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
                raise InvalidEventError(f"container {config.container_name!r} exitCode={code!r} is not an integer")
            exit_code = code
    return TaskStopEvent(
        event_id=event_id,
        task_arn=task_arn,
        task_definition_arn=task_definition_arn,
        last_status=last_status,
        stop_code=stop_code,
        stopped_reason=stopped_reason,
        exit_code=exit_code,
        environment=environment,
    )


def parse_retrain_request(event: Mapping[str, Any]) -> RetrainRequest:
    """{"action": "retrain", "request_id", "image", "params", "git_sha"?} (docs/contracts.md)."""
    allowed = {"action", "request_id", "image", "params", "git_sha"}
    unknown = sorted(str(key) for key in event if key not in allowed)
    if unknown:
        raise InvalidEventError(f"retrain request has unknown keys {unknown}; allowed: {sorted(allowed)}")
    action = event.get("action")
    if action != "retrain":
        raise InvalidEventError(f"action={action!r} is unknown; the only action is 'retrain'")
    request_id = _str(event, "request_id", "retrain request")
    if not REQUEST_ID.match(request_id):
        raise InvalidEventError(f"request_id={request_id!r} must match {REQUEST_ID.pattern}")
    image = _str(event, "image", "retrain request")
    if not (DIGEST.match(image) or TAG.match(image)):
        raise InvalidEventError(f"image={image!r} is neither an image tag nor a sha256:<64 hex> digest")
    if image in REFUSED_TAGS:
        raise InvalidEventError(
            f"image={image!r} is refused: it names whatever was pushed last; give the git sha the image was "
            "built from, or its digest"
        )
    git_sha = event.get("git_sha")
    if git_sha is not None and not (isinstance(git_sha, str) and GIT_SHA.match(git_sha)):
        raise InvalidEventError(f"git_sha={git_sha!r} is not a 40-character hex commit sha")
    params = event.get("params", {})
    if not isinstance(params, Mapping):
        raise InvalidEventError(f"params must be an object, got {type(params).__name__}: {params!r}")
    return RetrainRequest(request_id=request_id, image=image, params=validate_params(params), git_sha=git_sha)


def validate_params(params: Mapping[str, Any]) -> Params:
    """Check names, JSON types and sizes of retrain parameters; ints are accepted where floats are."""
    checked: Params = {}
    for name, value in params.items():
        expected = PARAM_TYPES.get(name)
        if expected is None:
            raise InvalidEventError(f"params.{name} is not a parameter; allowed: {sorted(PARAM_TYPES)}")
        if isinstance(value, bool):  # bool is an int in Python, never in our contract
            raise InvalidEventError(f"params.{name}={value!r} must be {expected.__name__}, got bool")
        checked[name] = _check_param(name, value, expected)
    return checked


def _check_param(name: str, value: object, expected: type) -> str | int | float:
    accepted = (int, float) if expected is float else (expected,)
    if not isinstance(value, accepted):
        raise InvalidEventError(f"params.{name}={value!r:.80} must be {expected.__name__}, got {type(value).__name__}")
    if isinstance(value, str):
        if not 1 <= len(value) <= MAX_STR_PARAM or not _STR_PARAM.match(value):
            raise InvalidEventError(
                f"params.{name}={value[:80]!r} must be 1-{MAX_STR_PARAM} characters of {_STR_PARAM.pattern}"
            )
        return value
    if isinstance(value, int) and abs(value) > MAX_INT_PARAM:
        raise InvalidEventError(f"params.{name}={value} is outside ±{MAX_INT_PARAM}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidEventError(f"params.{name}={value!r} must be a finite number")
    return float(value) if expected is float else value


# --- small typed accessors: each names the field and the value that is wrong -----------------------


def _event_id(event: Mapping[str, Any]) -> str:
    event_id = _str(event, "id", "event")
    if not _EVENT_ID.match(event_id):
        raise InvalidEventError(f"event id={event_id[:80]!r} must match {_EVENT_ID.pattern}")
    return event_id


def _mapping(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if not isinstance(value, Mapping):
        raise InvalidEventError(f"{where}.{key} must be an object, got {_describe(value)}")
    return value


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidEventError(f"{where}.{key} must be a non-empty string, got {_describe(value)}")
    return value


def _optional_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidEventError(f"{where}.{key} must be a string, got {_describe(value)}")
    return value


def _list(obj: Mapping[str, Any], key: str, where: str, default: list[Any]) -> list[Any]:
    value = obj.get(key, default)
    if not isinstance(value, list):
        raise InvalidEventError(f"{where}.{key} must be a list, got {_describe(value)}")
    return value


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'…' if len(text) > 80 else ''}"
