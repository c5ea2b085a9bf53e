"""Parse and validate the trigger's inputs. Pure: no AWS calls, no configuration beyond `Config`.

Three inputs (see ../../../shared/ARCHITECTURE.md), plus the reconcile schedule:

1. EventBridge "ECR Image Action" from aws.ecr: action-type PUSH, result SUCCESS, our repository.
2. EventBridge "ECS Task State Change" from aws.ecs for a task of our cluster and one of our task
   families (the Fargate trainer family, or the GPU one when deployed).
3. A retrain request invoked directly: {"action": "retrain", "request_id", "image", "params", "git_sha"?}.
4. EventBridge "Scheduled Event" from aws.events: reconcile the repository.

Anything else raises InvalidEventError naming the first thing that is wrong.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trigger.config import Config
from trigger.errors import InvalidEventError

DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
# Docker's tag grammar: 1-128 characters, not starting with "." or "-".
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
# A moving tag names no particular image: a run must say which one it trains (and its run id must
# not depend on when the tag was last moved).
REFUSED_TAGS = frozenset({"latest"})
# The trigger adds "keep-<run_id>" to a published run's image (trigger.keep); ECR announces it as a PUSH.
KEEP_TAG_PREFIX = "keep-"
GIT_SHA = re.compile(r"[0-9a-f]{40}", re.ASCII)
# The trainer-image workflow pushes the CPU image tagged "<git sha>" and its CUDA variant tagged
# "<git sha>-cuda" (docs/contracts.md, image variants): a tag ending in -cuda names a CUDA image.
CUDA_SUFFIX = "-cuda"
CUDA_TAG = re.compile(r"(?P<base>[A-Za-z0-9_][A-Za-z0-9_.-]{0,122})-cuda", re.ASCII)
# A request id becomes part of the run id, the clientToken and startedBy (36 characters at most),
# so "retrain-<request id>-<8 hex>" must fit in 36: at most 19 characters.
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,19}", re.ASCII)
_EVENT_ID = re.compile(r"[A-Za-z0-9-]{1,64}", re.ASCII)
_TASK_DEFINITION_ARN = re.compile(
    r"arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:task-definition/(?P<family>[A-Za-z0-9_-]{1,255}):[0-9]{1,9}", re.ASCII
)
_CLUSTER_ARN = re.compile(r"arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:cluster/(?P<name>[A-Za-z0-9_-]{1,255})", re.ASCII)
_JOB_QUEUE_ARN = re.compile(
    r"arn:aws[a-z-]*:batch:[a-z0-9-]+:\d{12}:job-queue/(?P<name>[A-Za-z0-9_-]{1,128})", re.ASCII
)
_JOB_ARN = re.compile(r"arn:aws[a-z-]*:batch:[a-z0-9-]+:\d{12}:job/[A-Za-z0-9:_-]+", re.ASCII)
RUN_ID_TAG = "pushtrain:run-id"  # trigger.runs.TAG_PREFIX + "run-id", on every job the trigger submits
_TASK_ARN = re.compile(r"arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:task/[A-Za-z0-9_/-]+", re.ASCII)

# Parameters a retrain request may set: their JSON types and the intervals (or choices) the trainer
# accepts, from the parameter schema generated from the trainer's own field metadata (params.schema.json,
# `python scripts/gen_param_schema.py`; docs/contracts.md). The trigger refuses what the trainer would
# refuse before anything is written or started: a paid task must not exit 2 on its first line.
SCHEMA_FILE = Path(__file__).with_name("params.schema.json")
PARAM_SCHEMA: dict[str, dict[str, Any]] = json.loads(SCHEMA_FILE.read_text())["params"]
_JSON_TYPES: dict[str, type] = {"string": str, "integer": int, "number": float}
PARAM_TYPES: dict[str, type] = {name: _JSON_TYPES[entry["type"]] for name, entry in PARAM_SCHEMA.items()}
# Parameters only a sweep sets on its runs (trigger.sweeps.trainer_params), never a request: a run of sweep
# <id> holding out val_images training images, with ASHA's eta (docs/contracts.md, "Sweeps").
SWEEP_PARAM_TYPES: dict[str, type] = {"sweep_id": str, "val_images": int, "early_stop_eta": int}
MAX_STR_PARAM = 64  # characters
MAX_INT_PARAM = 2**31 - 1
_STATUS = re.compile(r"[A-Z_]{1,32}", re.ASCII)  # PROVISIONING, RUNNING, STOPPED, …
_CAPACITY_PROVIDER = re.compile(r"[A-Za-z0-9_-]{1,255}", re.ASCII)
_STOP_CODE = re.compile(r"[A-Za-z]{1,64}", re.ASCII)  # TaskFailedToStart, SpotInterruption, …
MAX_STOPPED_REASON = 1024  # characters kept of ECS's stoppedReason (it goes into the run record)
_STR_PARAM = re.compile(r"[A-Za-z0-9_.:-]+", re.ASCII)

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
        """The git commit sha the tag names (the image workflow tags with it, `-cuda` for the CUDA variant)."""
        return git_sha_of_tag(self.tag) if self.tag else None


def tag_compute(tag: str) -> str:
    """The compute an image tag is built for: "gpu" for a `<tag>-cuda` (CUDA variant), else "cpu"."""
    return "gpu" if CUDA_TAG.fullmatch(tag) else "cpu"


def git_sha_of_tag(tag: str) -> str | None:
    """The git sha a tag names: "<sha>" or "<sha>-cuda"; None for any other tag."""
    cuda = CUDA_TAG.fullmatch(tag)
    base = cuda.group("base") if cuda else tag
    return base if GIT_SHA.fullmatch(base) else None


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
    capacity_provider: str | None = None  # detail.capacityProviderName: where the task was placed

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


@dataclass(frozen=True)
class SkippedEvent:
    """A well-formed event that is not for us (a DELETE, a failed push, another repository or cluster).

    It is logged with the reason and answered, never raised: a retry would change nothing, and the
    dead-letter queue and its alarm are kept for events that are malformed or failed.
    """

    event_id: str
    reason: str


Event = PushEvent | TaskStopEvent | RetrainRequest | ScheduledEvent | SkippedEvent
ECHO_CHARS = 200  # an echoed value is cut to this many characters (a log line once reached 200 KB)


def shown(value: object, limit: int = ECHO_CHARS) -> str:
    """repr(value), cut to `limit` characters and saying how long it was: safe to put in a log line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} characters)"


# --- what each input looks like: the front door (trigger.handler.INPUTS) matches on these ---------------


def is_retrain_request(event: Mapping[str, Any]) -> bool:
    """Anything with an `action` is a request (parse_retrain_request refuses an unknown action)."""
    return "action" in event


def is_push_event(event: Mapping[str, Any]) -> bool:
    return event.get("source") == "aws.ecr" and event.get("detail-type") == "ECR Image Action"


def is_task_state_change(event: Mapping[str, Any]) -> bool:
    return event.get("source") == "aws.ecs" and event.get("detail-type") == "ECS Task State Change"


def is_batch_event(event: Mapping[str, Any]) -> bool:
    return event.get("source") == "aws.batch" and event.get("detail-type") == "Batch Job State Change"


def is_scheduled_event(event: Mapping[str, Any]) -> bool:
    return event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"


def parse_scheduled_event(event: Mapping[str, Any], config: Config) -> ScheduledEvent:
    return ScheduledEvent(event_id=_event_id(event))


def unsupported(event: object) -> InvalidEventError:
    """The one refusal of an input no kind matches (trigger.handler)."""
    if not isinstance(event, Mapping):
        return InvalidEventError(f"event must be a JSON object, got {type(event).__name__}")
    source, detail_type = event.get("source"), event.get("detail-type")
    return InvalidEventError(
        f"unsupported event: source={shown(source)} detail-type={shown(detail_type)} "
        f"(keys {shown(sorted(map(str, event))[:10])}); expected an ECR push, an ECS task state change, "
        "a Batch job state change, an EC2 Spot notice, a scheduled event or a retrain request"
    )


def parse_push_event(event: Mapping[str, Any], config: Config) -> PushEvent | SkippedEvent:
    """An "ECR Image Action" event: a successful PUSH to our repository, or a well-formed one to skip."""
    event_id = _event_id(event)
    detail = _mapping(event, "detail", "event")
    action = _str(detail, "action-type", "detail")
    result = _str(detail, "result", "detail")
    repository = _str(detail, "repository-name", "detail")
    if action != "PUSH":
        return SkippedEvent(event_id, f"detail.action-type={shown(action)} is not PUSH: only pushes start training")
    if result != "SUCCESS":
        return SkippedEvent(event_id, f"detail.result={shown(result)} is not SUCCESS: a failed push has no image")
    if repository != config.repository_name:
        return SkippedEvent(
            event_id, f"detail.repository-name={shown(repository)} is not our repository {config.repository_name!r}"
        )
    digest = _str(detail, "image-digest", "detail")
    if not DIGEST.fullmatch(digest):
        raise InvalidEventError(f"detail.image-digest={shown(digest)} is not a sha256:<64 hex> digest")
    tag = detail.get("image-tag")
    if tag is not None and not (isinstance(tag, str) and TAG.fullmatch(tag)):
        raise InvalidEventError(f"detail.image-tag={shown(tag)} is not a valid image tag")
    if isinstance(tag, str) and tag.startswith(KEEP_TAG_PREFIX):
        return SkippedEvent(
            event_id, f"detail.image-tag={shown(tag)}: a tag the trigger adds to keep an image, not a push"
        )
    if isinstance(tag, str) and tag and tag_compute(tag) != config.default_compute:
        variant = "the CUDA variant" if tag_compute(tag) == "gpu" else "the CPU image"
        return SkippedEvent(
            event_id,
            f"detail.image-tag={shown(tag)} is {variant}; pushes train on PUSHTRAIN_DEFAULT_COMPUTE="
            f"{config.default_compute!r} (Terraform var.default_compute), so only "
            + ("`<tag>-cuda` pushes" if config.default_compute == "gpu" else "plain-tag pushes")
            + " train; a retrain request with compute may train this one",
        )
    return PushEvent(event_id=event_id, digest=digest, tag=tag or None)


def parse_task_stop_event(event: Mapping[str, Any], config: Config) -> TaskStopEvent | SkippedEvent:
    """An "ECS Task State Change" event for a task of our cluster and task family (else skipped)."""
    event_id = _event_id(event)
    detail = _mapping(event, "detail", "event")
    cluster_arn = _str(detail, "clusterArn", "detail")
    cluster = _CLUSTER_ARN.fullmatch(cluster_arn)
    if not cluster:
        raise InvalidEventError(f"detail.clusterArn={shown(cluster_arn)} is not an ECS cluster ARN")
    task_definition_arn = _str(detail, "taskDefinitionArn", "detail")
    family = _TASK_DEFINITION_ARN.fullmatch(task_definition_arn)
    if not family:
        raise InvalidEventError(f"detail.taskDefinitionArn={shown(task_definition_arn)} is not a task definition ARN")
    task_arn = _str(detail, "taskArn", "detail")
    if not _TASK_ARN.fullmatch(task_arn):
        raise InvalidEventError(f"detail.taskArn={shown(task_arn)} is not an ECS task ARN")
    last_status = _str(detail, "lastStatus", "detail")
    if not _STATUS.fullmatch(last_status):
        raise InvalidEventError(f"detail.lastStatus={shown(last_status)} is not an ECS task status")
    stop_code = _optional_str(detail, "stopCode", "detail")
    stopped_reason = _optional_str(detail, "stoppedReason", "detail")
    if cluster.group("name") != config.cluster:
        return SkippedEvent(event_id, f"detail.clusterArn={shown(cluster_arn)} is not our cluster {config.cluster!r}")
    families = [name for name in (config.task_family, config.gpu_task_family) if name]
    if family.group("family") not in families:
        ours = " or ".join(map(repr, families))
        return SkippedEvent(
            event_id, f"detail.taskDefinitionArn={shown(task_definition_arn)} is not a revision of {ours}"
        )
    if stop_code is not None and not _STOP_CODE.fullmatch(stop_code):
        raise InvalidEventError(f"detail.stopCode={shown(stop_code)} is not an ECS stop code")
    if stopped_reason is not None:
        stopped_reason = stopped_reason[:MAX_STOPPED_REASON]
    capacity_provider = _optional_str(detail, "capacityProviderName", "detail")
    if capacity_provider is not None and not _CAPACITY_PROVIDER.fullmatch(capacity_provider):
        raise InvalidEventError(f"detail.capacityProviderName={shown(capacity_provider)} is not a capacity provider")

    return TaskStopEvent(
        event_id=event_id,
        task_arn=task_arn,
        task_definition_arn=task_definition_arn,
        last_status=last_status,
        stop_code=stop_code,
        stopped_reason=stopped_reason,
        exit_code=_exit_code(detail, config.container_name),
        environment=_override_environment(detail, config.container_name),
        capacity_provider=capacity_provider,
    )


def _override_environment(detail: Mapping[str, Any], container_name: str) -> dict[str, str]:
    """The trainer container's environment overrides in a task state change (TRAINER_*)."""
    environment: dict[str, str] = {}
    overrides = detail.get("overrides", {})
    if not isinstance(overrides, Mapping):
        raise InvalidEventError(f"detail.overrides must be an object, got {type(overrides).__name__}")
    for override in _list(overrides, "containerOverrides", "detail.overrides", default=[]):
        if isinstance(override, Mapping) and override.get("name") == container_name:
            for pair in _list(override, "environment", "detail.overrides.containerOverrides[]", default=[]):
                if not (isinstance(pair, Mapping) and isinstance(pair.get("name"), str)):
                    raise InvalidEventError(f"container override environment entry {shown(pair)} has no string name")
                value = pair.get("value", "")
                if not isinstance(value, str):
                    name = shown(pair["name"])
                    raise InvalidEventError(f"container override {name} has a non-string value {shown(value)}")
                environment[pair["name"]] = value
    return environment


def _exit_code(detail: Mapping[str, Any], container_name: str) -> int | None:
    exit_code: int | None = None
    for container in _list(detail, "containers", "detail", default=[]):
        if isinstance(container, Mapping) and container.get("name") == container_name:
            code = container.get("exitCode")
            if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
                raise InvalidEventError(f"container {container_name!r} exitCode={shown(code)} is not an integer")
            exit_code = code
    return exit_code


def parse_retrain_request(event: Mapping[str, Any]) -> RetrainRequest:
    """{"action": "retrain", "request_id", "image", "params", "git_sha"?} (docs/contracts.md)."""
    allowed = {"action", "request_id", "image", "params", "git_sha"}
    unknown = sorted(str(key) for key in event if key not in allowed)
    if unknown:
        raise InvalidEventError(f"retrain request has unknown keys {shown(unknown)}; allowed: {sorted(allowed)}")
    action = event.get("action")
    if action != "retrain":
        raise InvalidEventError(f"action={shown(action)} is unknown; the only action is 'retrain'")
    request_id = _str(event, "request_id", "retrain request")
    if not REQUEST_ID.fullmatch(request_id):
        raise InvalidEventError(f"request_id={shown(request_id)} must match {REQUEST_ID.pattern}")
    image = _str(event, "image", "retrain request")
    if not (DIGEST.fullmatch(image) or TAG.fullmatch(image)):
        raise InvalidEventError(f"image={shown(image)} is neither an image tag nor a sha256:<64 hex> digest")
    if image in REFUSED_TAGS:
        raise InvalidEventError(
            f"image={image!r} is refused: it names whatever was pushed last; give the git sha the image was "
            "built from, or its digest"
        )
    git_sha = event.get("git_sha")
    if git_sha is not None and not (isinstance(git_sha, str) and GIT_SHA.fullmatch(git_sha)):
        raise InvalidEventError(f"git_sha={shown(git_sha)} is not a 40-character hex commit sha")
    params = event.get("params", {})
    if not isinstance(params, Mapping):
        raise InvalidEventError(f"params must be an object, got {type(params).__name__}: {shown(params)}")
    return RetrainRequest(request_id=request_id, image=image, params=validate_params(params), git_sha=git_sha)


def validate_params(params: Mapping[str, Any]) -> Params:
    """Check names, JSON types and sizes of retrain parameters; ints are accepted where floats are."""
    checked: Params = {}
    for name, value in params.items():
        expected = PARAM_TYPES.get(name)
        if expected is None:
            raise InvalidEventError(
                f"params.{str(name)[:ECHO_CHARS]} is not a parameter; allowed: {sorted(PARAM_TYPES)}"
            )
        if isinstance(value, bool):  # bool is an int in Python, never in our contract
            raise InvalidEventError(f"params.{name}={value!r} must be {expected.__name__}, got bool")
        checked[name] = _check_param(name, value, expected)
    return checked


def _check_param(name: str, value: object, expected: type) -> str | int | float:
    accepted = (int, float) if expected is float else (expected,)
    if not isinstance(value, accepted):
        raise InvalidEventError(f"params.{name}={shown(value)} must be {expected.__name__}, got {type(value).__name__}")
    if isinstance(value, str) and (not 1 <= len(value) <= MAX_STR_PARAM or not _STR_PARAM.fullmatch(value)):
        raise InvalidEventError(
            f"params.{name}={shown(value)} must be 1-{MAX_STR_PARAM} characters of {_STR_PARAM.pattern}"
        )
    if isinstance(value, int) and abs(value) > MAX_INT_PARAM:
        raise InvalidEventError(f"params.{name}={shown(value)} is outside ±{MAX_INT_PARAM}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidEventError(f"params.{name}={value!r} must be a finite number")
    refusal = _outside(PARAM_SCHEMA.get(name, {}), value)  # after the type: a string's choices, a number's interval
    if refusal:
        raise InvalidEventError(f"params.{name}={shown(value)} is outside what the trainer accepts: {refusal}")
    return float(value) if expected is float else value


def _outside(entry: Mapping[str, Any], value: str | int | float) -> str | None:
    """Why `value` breaks its schema entry (choices, interval), or None. Pure."""
    if "enum" in entry and value not in entry["enum"]:
        return f"one of {entry['enum']}"
    if isinstance(value, str):
        return None
    low, high = entry.get("minimum", entry.get("exclusiveMinimum")), entry.get("maximum", entry.get("exclusiveMaximum"))
    too_low = low is not None and (value <= low if "exclusiveMinimum" in entry else value < low)
    too_high = high is not None and (value >= high if "exclusiveMaximum" in entry else value > high)
    if too_low or too_high:
        left, right = ("(" if "exclusiveMinimum" in entry else "["), (")" if "exclusiveMaximum" in entry else "]")
        return f"{left}{low}, {high}{right}"
    return None


# --- small typed accessors: each names the field and the value that is wrong -----------------------


def _event_id(event: Mapping[str, Any]) -> str:
    event_id = _str(event, "id", "event")
    if not _EVENT_ID.fullmatch(event_id):
        raise InvalidEventError(f"event id={shown(event_id)} must match {_EVENT_ID.pattern}")
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
    return f"{type(value).__name__} {shown(value, 80)}"


# --- AWS Batch job state changes (multi-node runs, trigger.batch) ---------------------------------------


@dataclass(frozen=True)
class BatchJobEvent:
    """A "Batch Job State Change" of a job in our queue."""

    event_id: str
    job_arn: str
    status: str
    status_reason: str | None
    run_id: str | None


def parse_batch_job_event(event: Mapping[str, Any], config: Config) -> BatchJobEvent:
    """Validate the event: our queue, a job ARN, a status; the run id from the job's tags."""
    event_id = event.get("id")
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise InvalidEventError(f"event id={event_id!r:.80} must match {_EVENT_ID.pattern}")
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise InvalidEventError(f"event.detail must be an object, got {type(detail).__name__}")
    queue = detail.get("jobQueue")
    matched = _JOB_QUEUE_ARN.fullmatch(queue) if isinstance(queue, str) else None
    if not matched or not config.batch_job_queue or matched.group("name") != config.batch_job_queue:
        raise InvalidEventError(f"detail.jobQueue={queue!r:.120} is not our queue {config.batch_job_queue!r}")
    job_arn, status = detail.get("jobArn"), detail.get("status")
    if not isinstance(job_arn, str) or not _JOB_ARN.fullmatch(job_arn):
        raise InvalidEventError(f"detail.jobArn={job_arn!r:.120} is not a Batch job ARN")
    if not isinstance(status, str) or not status:
        raise InvalidEventError(f"detail.status={status!r:.40} must be a non-empty string")
    tags = detail.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise InvalidEventError(f"detail.tags must be an object, got {type(tags).__name__}")
    run_id = tags.get(RUN_ID_TAG)
    reason = detail.get("statusReason")
    return BatchJobEvent(
        event_id=event_id,
        job_arn=job_arn,
        status=status,
        status_reason=reason if isinstance(reason, str) else None,
        run_id=run_id if isinstance(run_id, str) and run_id else None,
    )
