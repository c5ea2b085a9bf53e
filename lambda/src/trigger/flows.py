"""What the trigger does for each input: start a run exactly once, resume an interrupted one,
answer a retrain request, reconcile the repository. The AWS calls happen here, through the clients
passed in; the requests are built by the pure functions of `runs`, `taskdef`, `ecs` and `records`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from trigger import stops
from trigger.aws import Clients
from trigger.config import Config
from trigger.ecs import Sleep, start_task
from trigger.errors import (
    AttemptsExhaustedError,
    ImageNotFoundError,
    InvalidEventError,
    RecordConflictError,
    TriggerError,
)
from trigger.events import DIGEST, GIT_SHA, PushEvent, RetrainRequest, TaskStopEvent
from trigger.records import (
    Clock,
    Record,
    append_history,
    create_record,
    is_started,
    new_record,
    read_record,
    record_key,
    spec_of,
    update_record,
    utc_now,
)
from trigger.runs import RunSpec, push_run_id, retrain_run_id
from trigger.s3json import error_code
from trigger.taskdef import ensure_pinned_revision


@dataclass(frozen=True)
class Outcome:
    """One decision about one run: what was decided and what it led to (logged as one JSON line)."""

    decision: str  # start | reconcile, or a stop decision (trigger.stops.DECISIONS)
    outcome: str  # started | retried-start | duplicate | no-restart | marked-failed | ignored | would-start
    run_id: str | None = None
    digest: str | None = None
    attempt: int | None = None
    task_arn: str | None = None
    capacity_provider: str | None = None
    task_definition_arn: str | None = None
    registered_task_definition: bool | None = None
    reason: str | None = None

    def fields(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


# --- starting a run exactly once ----------------------------------------------------------------


def _set_task_arn(spec: RunSpec, task_arn: str) -> Callable[[Record], Record | None]:
    def change(record: Record) -> Record | None:
        if record.get("attempt") != spec.attempt:
            raise RecordConflictError(
                f"run {spec.run_id} record is at attempt {record.get('attempt')}, "
                f"task {task_arn} was attempt {spec.attempt}"
            )
        if record.get("task_arn") == task_arn:
            return None
        if record.get("task_arn") is not None:
            raise RecordConflictError(
                f"run {spec.run_id} attempt {spec.attempt} already has task {record['task_arn']}, "
                f"RunTask gave {task_arn}"
            )
        record["task_arn"] = task_arn
        return record

    return change


def _launched(
    clients: Clients,
    config: Config,
    decision: str,
    outcome: str,
    known: tuple[Record, str],
    *,
    now: datetime,
    sleep: Sleep,
) -> Outcome:
    """Start the attempt the record holds: pin, RunTask, record the task ARN; the Outcome that says so."""
    spec = spec_of(known[0])  # a retry repeats the first request exactly (same clientToken, same overrides)
    task_definition_arn, registered = ensure_pinned_revision(
        clients.ecs, clients.s3, config, spec.digest, now, sleep=sleep
    )
    started = start_task(clients.ecs, spec, config, task_definition_arn, sleep)
    update_record(
        clients.s3, config.bucket, spec.run_id, _set_task_arn(spec, started.task_arn), now=now, known=known, sleep=sleep
    )
    return Outcome(
        decision,
        outcome,
        run_id=spec.run_id,
        digest=spec.digest,
        attempt=spec.attempt,
        task_arn=started.task_arn,
        capacity_provider=started.capacity_provider,
        task_definition_arn=task_definition_arn,
        registered_task_definition=registered,
        reason=known[0].get("reason"),
    )


def start_run(
    clients: Clients,
    config: Config,
    spec: RunSpec,
    source: str,
    *,
    clock: Clock = utc_now,
    sleep: Sleep = time.sleep,
) -> Outcome:
    """Start attempt 1 of a run unless its record says it was started; retry a start that failed."""
    now = clock()
    record = new_record(spec, source, now)
    etag = create_record(clients.s3, config.bucket, record, sleep=sleep)
    if etag is not None:
        return _launched(clients, config, "start", "started", (record, etag), now=now, sleep=sleep)
    existing = read_record(clients.s3, config.bucket, spec.run_id)
    if existing is None:
        raise RecordConflictError(f"s3://{config.bucket}/{record_key(spec.run_id)} exists for writes, not for reads")
    record = existing[0]
    if is_started(record):
        return Outcome(
            "start",
            "duplicate",
            run_id=spec.run_id,
            digest=record.get("image_digest"),
            attempt=record.get("attempt"),
            task_arn=record.get("task_arn"),
            reason=f"already started: record is {record.get('state')} with task {record.get('task_arn')}",
        )
    return _launched(clients, config, "start", "retried-start", existing, now=now, sleep=sleep)


def push_spec(digest: str, git_sha: str | None) -> RunSpec:
    """A push trains the image with the trainer's default parameters."""
    return RunSpec(run_id=push_run_id(digest, {}), attempt=1, digest=digest, git_sha=git_sha, params={})


def handle_push(
    clients: Clients, config: Config, event: PushEvent, *, clock: Clock = utc_now, sleep: Sleep = time.sleep
) -> Outcome:
    if event.tag is None:
        # buildx pushes the manifests inside an image index (platforms, attestations) untagged, then
        # the index under its tag: the tagged push is the one to train.
        return Outcome("start", "ignored", digest=event.digest, reason="untagged push: the tagged push trains")
    return start_run(clients, config, push_spec(event.digest, event.git_sha), "push", clock=clock, sleep=sleep)


# --- stopped tasks: resume after a Spot interruption, record a failure ------------------------------

_STOP_OUTCOMES = {
    stops.IGNORE: "ignored",
    stops.NO_OP: "no-restart",
    stops.DUPLICATE: "duplicate",
    stops.FAIL: "marked-failed",
}


def handle_task_stop(
    clients: Clients, config: Config, stop: TaskStopEvent, *, clock: Clock = utc_now, sleep: Sleep = time.sleep
) -> Outcome:
    """Carry out `stops.decide_stop` for a stopped task: the record read and written here, RunTask."""
    now = clock()
    run_id = stop.environment.get("TRAINER_RUN_ID") or None
    existing = read_record(clients.s3, config.bucket, run_id) if run_id and stop.last_status == "STOPPED" else None
    decision = stops.decide_stop(existing[0] if existing else None, stop, config.max_attempts)

    if decision.action in {stops.RESUME, stops.FAIL, stops.EXHAUSTED}:
        assert existing is not None  # noqa: S101 (decide_stop resumes or fails only a run with a record)
        decision, written = _write_stop_decision(clients, config, stop, decision, existing, now=now, sleep=sleep)
        if decision.action == stops.RESUME:
            assert written is not None  # noqa: S101 (a resume is carried out only when its claim was written)
            return _launched(clients, config, "resume", "started", written, now=now, sleep=sleep)
        if decision.action == stops.EXHAUSTED:
            raise AttemptsExhaustedError(decision.reason)
    if decision.action == stops.RETRY_RESUME:
        assert existing is not None  # noqa: S101
        return _launched(clients, config, "resume", "retried-start", existing, now=now, sleep=sleep)
    if decision.action == stops.INVALID:
        raise InvalidEventError(decision.reason)
    if decision.action == stops.CONFLICT:
        raise RecordConflictError(decision.reason)
    return Outcome(
        decision.action,
        _STOP_OUTCOMES[decision.action],
        run_id=decision.run_id,
        attempt=decision.attempt,
        task_arn=decision.task_arn if decision.action == stops.DUPLICATE else stop.task_arn,
        reason=decision.reason,
    )


def _write_stop_decision(
    clients: Clients,
    config: Config,
    stop: TaskStopEvent,
    decision: stops.StopDecision,
    known: tuple[Record, str],
    *,
    now: datetime,
    sleep: Sleep,
) -> tuple[stops.StopDecision, tuple[Record, str] | None]:
    """Write what a resume, failure or exhaustion changes, deciding again on every compare-and-swap round.

    Returns the decision that held when the write landed (or, when a concurrent writer made the write
    unnecessary, the decision for the record as it now is) and what was written.
    """
    held = [decision]

    def change(current: Record) -> Record | None:
        again = stops.decide_stop(current, stop, config.max_attempts)
        held[0] = again
        if again.action == stops.RESUME:
            current.update(
                attempt=again.attempt, state="queued", task_arn=None, source="spot-resume", reason=again.reason
            )
        elif again.action in {stops.FAIL, stops.EXHAUSTED}:
            current.update(state="failed", reason=again.reason)
        else:
            return None
        append_history(current, now, again.reason)
        return current

    written = update_record(clients.s3, config.bucket, known[0]["run_id"], change, now=now, known=known, sleep=sleep)
    return held[0], written


# --- retrain requests -----------------------------------------------------------------------------


def resolve_image(clients: Clients, config: Config, image: str) -> tuple[str, list[str]]:
    """(digest, tags) of a tag or digest in our repository; ImageNotFoundError when it is not there."""
    image_id = {"imageDigest": image} if DIGEST.match(image) else {"imageTag": image}
    try:
        response = clients.ecr.describe_images(repositoryName=config.repository_name, imageIds=[image_id])
    except ClientError as error:
        if error_code(error) == "ImageNotFoundException":
            raise ImageNotFoundError(f"image {image!r} is not in repository {config.repository_name!r}") from error
        raise
    details = response.get("imageDetails") or []
    if len(details) != 1:
        raise ImageNotFoundError(f"image {image!r} matched {len(details)} images in {config.repository_name!r}")
    return str(details[0]["imageDigest"]), list(details[0].get("imageTags") or [])


def _git_sha_from_tags(tags: list[str]) -> str | None:
    return next((tag for tag in sorted(tags) if GIT_SHA.match(tag)), None)


def handle_retrain(
    clients: Clients, config: Config, request: RetrainRequest, *, clock: Clock = utc_now, sleep: Sleep = time.sleep
) -> tuple[Outcome, dict[str, Any]]:
    """Start a retrain run; the answer is what the retrain workflow reads (docs/contracts.md)."""
    digest, tags = resolve_image(clients, config, request.image)
    git_sha = request.git_sha or _git_sha_from_tags(tags)
    run_id = retrain_run_id(request.request_id, digest, request.params)
    spec = RunSpec(run_id=run_id, attempt=1, digest=digest, git_sha=git_sha, params=request.params)
    outcome = start_run(clients, config, spec, "retrain", clock=clock, sleep=sleep)
    answer = {
        "run_id": run_id,
        "task_arn": outcome.task_arn,
        "image_digest": digest,
        "status_key": record_key(run_id),
    }
    return outcome, answer


# --- reconcile ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime | None


def list_images(clients: Clients, config: Config) -> Iterator[Image]:
    """Every image of the repository (DescribeImages, page by page)."""
    token: str | None = None
    while True:
        page = clients.ecr.describe_images(
            repositoryName=config.repository_name, maxResults=100, **({"nextToken": token} if token else {})
        )
        for detail in page.get("imageDetails") or []:
            yield Image(
                digest=str(detail["imageDigest"]),
                tags=tuple(detail.get("imageTags") or ()),
                pushed_at=detail.get("imagePushedAt"),
            )
        token = page.get("nextToken")
        if not token:
            return


def reconcile(
    clients: Clients,
    config: Config,
    *,
    since: timedelta | None,
    dry_run: bool = False,
    clock: Clock = utc_now,
    sleep: Sleep = time.sleep,
) -> list[Outcome]:
    """Start every tagged image pushed within `since` that has no started run (ECR events are best effort).

    Untagged images are the manifests inside an image index; the index is tagged and trained. An
    image whose start failed (a `queued` record without a task) is started again. Every image is
    tried; the failures are raised together at the end.
    """
    now = clock()
    outcomes: list[Outcome] = []
    failures: list[str] = []
    seen: set[str] = set()
    for image in list_images(clients, config):
        if not image.tags or image.digest in seen:
            continue
        if since is not None and image.pushed_at is not None and image.pushed_at < now - since:
            continue
        seen.add(image.digest)
        spec = push_spec(image.digest, _git_sha_from_tags(list(image.tags)))
        existing = read_record(clients.s3, config.bucket, spec.run_id)
        if existing is not None and is_started(existing[0]):
            continue
        if dry_run:
            outcomes.append(Outcome("reconcile", "would-start", run_id=spec.run_id, digest=spec.digest))
            continue
        try:
            outcome = start_run(clients, config, spec, "reconcile", clock=clock, sleep=sleep)
        except (TriggerError, ClientError) as error:
            failures.append(f"{image.digest}: {type(error).__name__}: {error}")
            continue
        outcomes.append(replace(outcome, decision="reconcile"))
    if failures:
        raise TriggerError(f"reconcile could not start {len(failures)} image(s): {failures}")
    return outcomes
