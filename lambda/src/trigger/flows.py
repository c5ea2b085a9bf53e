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

RESUMABLE_STATES = frozenset({"queued", "running", "interrupted"})
FINAL_STATES = frozenset({"succeeded", "failed"})
# Exit codes of a stop that is not a failure: 0 the trainer finished (it wrote `succeeded`), 75 it
# was stopped and checkpointed (it wrote `interrupted`; without a Spot stop code a person stopped it,
# and a retrain request trains it again).
NOT_FAILURE_EXIT_CODES = frozenset({0, 75})


@dataclass(frozen=True)
class Outcome:
    """One decision about one run: what was decided and what it led to (logged as one JSON line)."""

    decision: str  # start | resume | reconcile
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


def _launch(
    clients: Clients, config: Config, spec: RunSpec, *, known: tuple[Record, str], now: datetime, sleep: Sleep
) -> tuple[str, bool, str, str]:
    """Pin, RunTask, record the task ARN: (revision ARN, registered, task ARN, capacity provider)."""
    task_definition_arn, registered = ensure_pinned_revision(
        clients.ecs, clients.s3, config, spec.digest, now, sleep=sleep
    )
    started = start_task(clients.ecs, spec, config, task_definition_arn, sleep)
    update_record(clients.s3, config.bucket, spec.run_id, _set_task_arn(spec, started.task_arn), now=now, known=known)
    return task_definition_arn, registered, started.task_arn, started.capacity_provider


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
    outcome = "started"
    if etag is None:
        existing = read_record(clients.s3, config.bucket, spec.run_id)
        if existing is None:
            raise RecordConflictError(
                f"s3://{config.bucket}/{record_key(spec.run_id)} exists for writes, not for reads"
            )
        record, etag = existing
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
        spec = spec_of(record)  # a retry repeats the first request exactly (same clientToken, same overrides)
        outcome = "retried-start"
    td_arn, registered, task_arn, provider = _launch(clients, config, spec, known=(record, etag), now=now, sleep=sleep)
    return Outcome(
        "start",
        outcome,
        run_id=spec.run_id,
        digest=spec.digest,
        attempt=spec.attempt,
        task_arn=task_arn,
        capacity_provider=provider,
        task_definition_arn=td_arn,
        registered_task_definition=registered,
    )


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


# --- resuming after a Spot interruption ----------------------------------------------------------


def _env_int(stop: TaskStopEvent, name: str) -> int:
    raw = stop.environment.get(name)
    if raw is None or not raw.isdigit() or int(raw) < 1:
        raise InvalidEventError(f"task {stop.task_arn} has no valid {name} container override (got {raw!r})")
    return int(raw)


def handle_task_stop(
    clients: Clients, config: Config, stop: TaskStopEvent, *, clock: Clock = utc_now, sleep: Sleep = time.sleep
) -> Outcome:
    """Start the next attempt of a run whose task lost its Spot capacity; record any other failed stop."""
    if stop.last_status != "STOPPED":
        return Outcome("resume", "ignored", task_arn=stop.task_arn, reason=f"lastStatus {stop.last_status}")
    if not stop.resumable:
        return _record_failure(clients, config, stop, now=clock())
    run_id = stop.environment.get("TRAINER_RUN_ID")
    if not run_id:
        raise InvalidEventError(f"task {stop.task_arn} was interrupted but has no TRAINER_RUN_ID override to resume")
    attempt = _env_int(stop, "TRAINER_ATTEMPT")
    next_attempt = attempt + 1
    now = clock()
    existing = read_record(clients.s3, config.bucket, run_id)
    if existing is None:
        raise RecordConflictError(
            f"run {run_id} was interrupted but s3://{config.bucket}/{record_key(run_id)} is missing"
        )
    record = existing[0]
    digest = stop.environment.get("TRAINER_IMAGE_DIGEST")
    if digest and digest != record.get("image_digest"):
        raise RecordConflictError(
            f"run {run_id}: the stopped task ran {digest}, the record says {record.get('image_digest')}"
        )

    def duplicate(current: Record) -> Outcome:
        return Outcome(
            "resume",
            "duplicate",
            run_id=run_id,
            attempt=current.get("attempt"),
            task_arn=current.get("task_arn"),
            reason=f"attempt {attempt} was already resumed",
        )

    if record.get("attempt", 0) > next_attempt or (record.get("attempt") == next_attempt and is_started(record)):
        return duplicate(record)
    if record.get("attempt") == next_attempt:  # the resume was recorded but its RunTask failed: retry it
        known, outcome = existing, "retried-start"
    elif record.get("attempt") == attempt:
        if record.get("state") not in RESUMABLE_STATES:
            return Outcome(
                "resume",
                "no-restart",
                run_id=run_id,
                attempt=attempt,
                reason=f"run is {record.get('state')}; nothing to resume",
            )
        if next_attempt > config.max_attempts:
            message = (
                f"run {run_id} attempt {attempt} was interrupted ({stop.stop_code}); "
                f"PUSHTRAIN_MAX_ATTEMPTS={config.max_attempts} allows no attempt {next_attempt}"
            )
            # The run can never finish now: say so in its record (so a later push of the digest is not a
            # duplicate of a run that looks alive), then raise for the DLQ and its alarm.
            _mark_failed(clients, config, run_id, attempt, message, now=now, known=existing)
            raise AttemptsExhaustedError(message)
        reason = f"{stop.stop_code}: {stop.stopped_reason or 'no reason given'}"

        def next_attempt_record(current: Record) -> Record | None:
            if current.get("attempt") != attempt:
                return None  # a concurrent delivery of this stop event got there first
            current.update(attempt=next_attempt, state="queued", task_arn=None, source="spot-resume", reason=reason)
            append_history(current, now, reason)
            return current

        written = update_record(clients.s3, config.bucket, run_id, next_attempt_record, now=now, known=existing)
        if written is None:
            fresh = read_record(clients.s3, config.bucket, run_id)
            return duplicate(fresh[0] if fresh else record)
        known, outcome = written, "started"
    else:
        raise RecordConflictError(
            f"run {run_id} record is at attempt {record.get('attempt')}, older than stopped {attempt}"
        )

    spec = spec_of(known[0])
    td_arn, registered, task_arn, provider = _launch(clients, config, spec, known=known, now=now, sleep=sleep)
    return Outcome(
        "resume",
        outcome,
        run_id=run_id,
        digest=spec.digest,
        attempt=spec.attempt,
        task_arn=task_arn,
        capacity_provider=provider,
        task_definition_arn=td_arn,
        registered_task_definition=registered,
        reason=known[0].get("reason"),
    )


# --- recording a run that stopped for good ------------------------------------------------------


def _mark_failed(
    clients: Clients,
    config: Config,
    run_id: str,
    attempt: int,
    reason: str,
    *,
    now: datetime,
    known: tuple[Record, str] | None = None,
) -> tuple[Record, str] | None:
    """Compare-and-swap the record to `failed`, only while it is at `attempt` and not final."""

    def failed(current: Record) -> Record | None:
        if current.get("attempt") != attempt or current.get("state") in FINAL_STATES:
            return None  # a later attempt, or the trainer (or another delivery) already wrote the end
        current.update(state="failed", reason=reason)
        append_history(current, now, reason)
        return current

    return update_record(clients.s3, config.bucket, run_id, failed, now=now, known=known)


def _record_failure(clients: Clients, config: Config, stop: TaskStopEvent, *, now: datetime) -> Outcome:
    """A stop that is not a Spot interruption: mark the run `failed` unless it ended on its own.

    The training-failed rule delivers these (never started, OOM kill, failure exit); a task that never
    ran the trainer, or was killed, cannot write `failed` itself, and a run left `queued`/`running`
    makes every later push of its digest a duplicate. Exit 0 and 75 are the trainer's own endings.
    """
    exit_note = f"exit code {stop.exit_code}" if stop.exit_code is not None else "no exit code"
    run_id = stop.environment.get("TRAINER_RUN_ID")
    what = f"stopCode {stop.stop_code}, {exit_note}"

    def no_op(why: str, attempt: int | None = None) -> Outcome:
        return Outcome(
            "resume", "no-restart", run_id=run_id, attempt=attempt, task_arn=stop.task_arn, reason=f"{what}: {why}"
        )

    if stop.exit_code in NOT_FAILURE_EXIT_CODES:
        ending = "the trainer recorded its result" if stop.exit_code == 0 else "the run stays interrupted"
        return no_op(f"not a Spot interruption; {ending}")
    if not run_id:
        return no_op("no TRAINER_RUN_ID override: not a run the trigger started")
    attempt = _env_int(stop, "TRAINER_ATTEMPT")
    existing = read_record(clients.s3, config.bucket, run_id)
    if existing is None:
        return no_op(f"s3://{config.bucket}/{record_key(run_id)} is missing: nothing to mark failed", attempt)
    record = existing[0]
    if record.get("task_arn") not in (None, stop.task_arn):
        return no_op(f"the record names task {record.get('task_arn')}, not this one", attempt)
    reason = f"{what}: {stop.stopped_reason or 'no reason given'}"
    written = _mark_failed(clients, config, run_id, attempt, reason, now=now, known=existing)
    if written is None:
        fresh = read_record(clients.s3, config.bucket, run_id)
        current = fresh[0] if fresh else record
        return no_op(f"record is {current.get('state')} at attempt {current.get('attempt')}; left as it is", attempt)
    return Outcome("resume", "marked-failed", run_id=run_id, attempt=attempt, task_arn=stop.task_arn, reason=reason)


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
