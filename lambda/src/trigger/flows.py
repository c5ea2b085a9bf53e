"""What the trigger does for each input: start a run exactly once, resume an interrupted one,
answer a retrain request, reconcile the repository and repair stuck runs. The AWS calls happen here,
through the clients passed in; the decisions are the pure functions of `records` (claims), `stops`
(stopped tasks), `images` (what may train) and `runs` / `ecs` / `taskdef` (the requests).

Exactly once, by our own record: a start is claimed in `runs/<run_id>/status.json` before RunTask
(the create with If-None-Match, or a compare-and-swap that takes over a released or expired claim),
and only the claimant calls RunTask. A claimant that takes over an earlier claim first looks for a
task the earlier one may have started (ListTasks by startedBy) before it calls RunTask with the same
clientToken; ECS's token is the second line, not the first.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from trigger import stops
from trigger.aws import Clients
from trigger.compute import CPU, GPU, task_family
from trigger.config import Config
from trigger.ecs import Sleep, describe_tasks, find_task, start_task, task_environment
from trigger.errors import (
    AttemptsExhaustedError,
    ImageNotFoundError,
    InvalidEventError,
    NotAnImageError,
    RecordConflictError,
    StartInFlightError,
    TriggerError,
)
from trigger.events import (
    CUDA_SUFFIX,
    DIGEST,
    TAG,
    PushEvent,
    RetrainRequest,
    TaskStopEvent,
    git_sha_of_tag,
    tag_compute,
)
from trigger.images import ImageFacts, describe_image, facts_of, not_runnable
from trigger.keep import is_keep_tag, keep_image
from trigger.records import (
    CLAIMABLE,
    IN_FLIGHT,
    STARTED,
    Clock,
    Record,
    append_history,
    create_record,
    new_record,
    read_record,
    record_key,
    spec_of,
    start_state,
    timestamp,
    update_record,
    utc_now,
)
from trigger.runs import RunSpec, push_run_id, retrain_run_id
from trigger.taskdef import ensure_pinned_revision

BATCH_COMPUTE = "batch"  # a run record's `compute` for an AWS Batch multi-node run (trigger.batch)
# Images kept (tagged in ECR) by one reconcile at most: each costs a few ECR calls of the function's
# 60 s; the rest are kept by the next schedule (logged `keep-deferred`).
MAX_KEEPS_PER_RECONCILE = 10
_RECORD_KEY = re.compile(r"runs/(?P<run_id>[A-Za-z0-9][A-Za-z0-9._-]{0,127})/status\.json", re.ASCII)


@dataclass(frozen=True)
class Outcome:
    """One decision about one run: what was decided and what it led to (logged as one JSON line)."""

    decision: str  # start | skip | reconcile | repair, or a stop decision (trigger.stops.DECISIONS)
    outcome: str  # started | retried-start | recovered | duplicate | no-restart | marked-failed | ignored | …
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


# --- claiming and starting an attempt exactly once -------------------------------------------------


def set_task_arn(spec: RunSpec, task_arn: str, provider: str | None = None) -> Callable[[Record], Record | None]:
    """Record the attempt's task, and the capacity it got (FARGATE_SPOT, or FARGATE after a Spot refusal)."""

    def change(record: Record) -> Record | None:
        if record.get("attempt") != spec.attempt:
            raise RecordConflictError(
                f"run {spec.run_id} record is at attempt {record.get('attempt')}, "
                f"task {task_arn} was attempt {spec.attempt}"
            )
        if record.get("task_arn") == task_arn:
            if provider is None or record.get("capacity_provider") == provider:
                return None
            record["capacity_provider"] = provider
            return record
        if record.get("task_arn") is not None:
            raise RecordConflictError(
                f"run {spec.run_id} attempt {spec.attempt} already has task {record['task_arn']}, "
                f"RunTask gave {task_arn}"
            )
        record["task_arn"] = task_arn
        if provider is not None:  # a recovered task's capacity is unknown here
            record["capacity_provider"] = provider
        return record

    return change


def claim_start(
    clients: Clients, config: Config, known: tuple[Record, str], *, now: datetime, sleep: Sleep
) -> tuple[Record, str] | None:
    """Take over a start whose claim was released or expired (compare-and-swap on `claimed_at`).

    Returns the record as claimed, or None when it turned out started meanwhile; raises
    StartInFlightError when another invocation holds a fresh claim (Lambda retries the event later).
    """
    claim = timedelta(seconds=config.claim_seconds)

    def take(current: Record) -> Record | None:
        state = start_state(current, now, claim)
        if state == STARTED:
            return None
        if state == IN_FLIGHT:
            raise StartInFlightError(
                f"run {current.get('run_id')} attempt {current.get('attempt')}: a start claimed at "
                f"{current.get('claimed_at')} is in flight (claims expire after {config.claim_seconds} s); retry"
            )
        current["claimed_at"] = timestamp(now)
        return current

    return update_record(clients.s3, config.bucket, known[0]["run_id"], take, now=now, known=known, sleep=sleep)


def release_claim(clients: Clients, config: Config, spec: RunSpec, *, now: datetime, sleep: Sleep) -> None:
    """After a start that raised: clear our claim, so the retry need not wait for it to expire.

    The retry still looks for a task before RunTask (a timed-out RunTask may have started one).
    """

    def clear(current: Record) -> Record | None:
        ours = current.get("attempt") == spec.attempt and current.get("state") == "queued"
        if not ours or current.get("task_arn") is not None or current.get("claimed_at") is None:
            return None
        current["claimed_at"] = None
        return current

    with contextlib.suppress(TriggerError, ClientError):  # the original error is the one to raise
        update_record(clients.s3, config.bucket, spec.run_id, clear, now=now, sleep=sleep)


def _launched(
    clients: Clients,
    config: Config,
    decision: str,
    outcome: str,
    claimed: tuple[Record, str],
    *,
    now: datetime,
    sleep: Sleep,
    look_first: bool,
) -> Outcome:
    """Start the attempt the claimed record holds: (look for its task,) pin, RunTask, record the task ARN."""
    spec = spec_of(claimed[0])  # a retry repeats the first request exactly (same clientToken, same overrides)
    try:
        found = find_task(clients.ecs, config, spec) if look_first else None
        if found is not None:
            task_definition_arn, registered, provider = None, None, None
            task_arn, outcome = found, "recovered"
        else:
            family = task_family(config, spec.compute)
            task_definition_arn, registered = ensure_pinned_revision(
                clients.ecs, clients.s3, config, spec.digest, now, family=family, sleep=sleep
            )
            started = start_task(clients.ecs, spec, config, task_definition_arn, sleep)
            task_arn, provider = started.task_arn, started.capacity_provider
    except Exception:
        release_claim(clients, config, spec, now=now, sleep=sleep)
        raise
    # From here a task exists: a failure to record it keeps the claim, and the next claimant finds the task.
    record_task = set_task_arn(spec, task_arn, provider)
    update_record(clients.s3, config.bucket, spec.run_id, record_task, now=now, known=claimed, sleep=sleep)
    return Outcome(
        decision,
        outcome,
        run_id=spec.run_id,
        digest=spec.digest,
        attempt=spec.attempt,
        task_arn=task_arn,
        capacity_provider=provider,
        task_definition_arn=task_definition_arn,
        registered_task_definition=registered,
        reason=claimed[0].get("reason") if found is None else "a start whose answer was lost had started this task",
    )


def duplicate_outcome(decision: str, record: Record) -> Outcome:
    return Outcome(
        decision,
        "duplicate",
        run_id=record.get("run_id"),
        digest=record.get("image_digest"),
        attempt=record.get("attempt"),
        task_arn=record.get("task_arn"),
        reason=f"already started: record is {record.get('state')} with task {record.get('task_arn')}",
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
    """Start attempt 1 of a run unless its record says it was started (or is being started)."""
    now = clock()
    record = new_record(spec, source, now)
    etag = create_record(clients.s3, config.bucket, record, sleep=sleep)
    if etag is not None:
        return _launched(clients, config, "start", "started", (record, etag), now=now, sleep=sleep, look_first=False)
    existing = read_record(clients.s3, config.bucket, spec.run_id)
    if existing is None:
        raise RecordConflictError(f"s3://{config.bucket}/{record_key(spec.run_id)} exists for writes, not for reads")
    if start_state(existing[0], now, timedelta(seconds=config.claim_seconds)) == STARTED:
        return duplicate_outcome("start", existing[0])
    claimed = claim_start(clients, config, existing, now=now, sleep=sleep)
    if claimed is None:
        fresh = read_record(clients.s3, config.bucket, spec.run_id)
        return duplicate_outcome("start", fresh[0] if fresh else existing[0])
    return _launched(clients, config, "start", "retried-start", claimed, now=now, sleep=sleep, look_first=True)


# --- pushes: only images that exist and can run --------------------------------------------------------


def push_spec(digest: str, git_sha: str | None, compute: str = CPU) -> RunSpec:
    """A push trains the image with the trainer's default parameters, on the default compute."""
    return RunSpec(
        run_id=push_run_id(digest, {}), attempt=1, digest=digest, git_sha=git_sha, params={}, compute=compute
    )


def _refuse_image(clients: Clients, config: Config, facts: ImageFacts) -> str | None:
    refusal = not_runnable(clients.ecr, config.repository_name, facts)
    return None if refusal is None else f"not a runnable container image: {refusal}"


def handle_push(
    clients: Clients, config: Config, event: PushEvent, *, clock: Clock = utc_now, sleep: Sleep = time.sleep
) -> Outcome:
    """Train a pushed digest, after checking in ECR that it exists and is a runnable image."""
    if event.tag is None:
        # buildx pushes the manifests inside an image index (platforms, attestations) untagged, then
        # the index under its tag: the tagged push is the one to train.
        return Outcome("start", "ignored", digest=event.digest, reason="untagged push: the tagged push trains")
    try:
        facts = describe_image(clients.ecr, config.repository_name, event.digest, by_digest=True)
    except ImageNotFoundError as error:
        # an event for a digest ECR does not hold (deleted since, or a forged event): nothing can run it
        return Outcome("skip", "not-in-repository", digest=event.digest, reason=str(error))
    refusal = _refuse_image(clients, config, facts)
    if refusal is not None:
        return Outcome("skip", "not-an-image", digest=event.digest, reason=refusal)
    # parse_push_event skipped a tag of the other variant: this push is one for the default compute
    spec = push_spec(event.digest, event.git_sha, config.default_compute)
    return start_run(clients, config, spec, "push", clock=clock, sleep=sleep)


# --- stopped tasks: resume after a Spot interruption, record a failure ------------------------------


def decide(config: Config, record: Record | None, stop: TaskStopEvent) -> stops.StopDecision:
    """`stops.decide_stop` with this deployment's limits: the attempts, and the Spot GPU provider whose
    unplaced tasks resume on the on-demand GPU provider (when one is deployed)."""
    spot_gpu = config.gpu_capacity_provider if config.gpu_on_demand_capacity_provider else None
    return stops.decide_stop(record, stop, config.max_attempts, spot_gpu_provider=spot_gpu)


_STOP_OUTCOMES = {
    stops.IGNORE: "ignored",
    stops.NO_OP: "no-restart",
    stops.DUPLICATE: "duplicate",
    stops.FAIL: "marked-failed",
}
_ACTING = frozenset({stops.RESUME, stops.RETRY_RESUME, stops.FAIL, stops.EXHAUSTED, stops.KEEP})


def handle_task_stop(
    clients: Clients, config: Config, stop: TaskStopEvent, *, clock: Clock = utc_now, sleep: Sleep = time.sleep
) -> Outcome:
    """Carry out `stops.decide_stop` for a stopped task, once ECS has confirmed what the event claims."""
    now = clock()
    run_id = stop.environment.get("TRAINER_RUN_ID") or None
    existing = read_record(clients.s3, config.bucket, run_id) if run_id and stops.needs_record(stop) else None
    decision = decide(config, existing[0] if existing else None, stop)
    if decision.action in _ACTING:
        described = describe_tasks(clients.ecs, config, [stop.task_arn]).get(stop.task_arn)
        refusal = stops.unverified(stop, described, config.container_name)
        if refusal is not None:
            return Outcome(stops.NO_OP, "unverified", run_id=run_id, task_arn=stop.task_arn, reason=refusal)
    return _carry_out(clients, config, stop, decision, existing, now=now, sleep=sleep)


def _carry_out(
    clients: Clients,
    config: Config,
    stop: TaskStopEvent,
    decision: stops.StopDecision,
    existing: tuple[Record, str] | None,
    *,
    now: datetime,
    sleep: Sleep,
) -> Outcome:
    if decision.action in {stops.RESUME, stops.FAIL, stops.EXHAUSTED}:
        assert existing is not None  # noqa: S101 (decide_stop resumes or fails only a run with a record)
        decision, written = _write_stop_decision(clients, config, stop, decision, existing, now=now, sleep=sleep)
        if decision.action == stops.RESUME and written is not None:
            return _launched(clients, config, "resume", "started", written, now=now, sleep=sleep, look_first=False)
        if decision.action == stops.EXHAUSTED:
            raise AttemptsExhaustedError(decision.reason)
    elif decision.action == stops.RETRY_RESUME:
        assert existing is not None  # noqa: S101
        claimed = claim_start(clients, config, existing, now=now, sleep=sleep)
        if claimed is not None:
            return _launched(clients, config, "resume", "retried-start", claimed, now=now, sleep=sleep, look_first=True)
        fresh = read_record(clients.s3, config.bucket, existing[0]["run_id"])
        decision = decide(config, fresh[0] if fresh else None, stop)
    elif decision.action == stops.KEEP:
        assert existing is not None  # noqa: S101 (decide_stop keeps only a run with a record)
        return _keep(clients, config, existing, decision.reason, now=now, sleep=sleep)
    elif decision.action == stops.INVALID:
        raise InvalidEventError(decision.reason)
    elif decision.action == stops.CONFLICT:
        raise RecordConflictError(decision.reason)
    return Outcome(
        decision.action,
        _STOP_OUTCOMES.get(decision.action, decision.action),
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
    unnecessary, the decision for the record as it now is) and what was written. A resume claims the
    next attempt in the same write (`claimed_at`), so only this invocation calls RunTask for it.
    """
    held = [decision]

    def change(current: Record) -> Record | None:
        again = decide(config, current, stop)
        held[0] = again
        if again.action == stops.RESUME:
            current.update(attempt=again.attempt, state="queued", task_arn=None, source="spot-resume")
            current.update(reason=again.reason, claimed_at=timestamp(now))
            if current.get("compute") == GPU and config.gpu_on_demand_capacity_provider:
                # a GPU Spot interruption or a GPU task never placed: the next attempt goes on-demand
                current["on_demand"] = True
        elif again.action in {stops.FAIL, stops.EXHAUSTED}:
            current.update(state="failed", reason=again.reason)
        else:
            return None
        append_history(current, now, again.reason)
        return current

    written = update_record(clients.s3, config.bucket, known[0]["run_id"], change, now=now, known=known, sleep=sleep)
    return held[0], written


def _keep(
    clients: Clients, config: Config, known: tuple[Record, str], reason: str, *, now: datetime, sleep: Sleep
) -> Outcome:
    """Tag the run's digest (and its index's manifests) keep-<run_id> in ECR, then record `image_kept_at`.

    The tags come first: a record saying kept must be true. A failure after them is repaired by the
    next delivery or reconcile, for which the tags already there count as added.
    """
    record = known[0]
    run_id, digest = record["run_id"], record["image_digest"]
    tags = keep_image(clients.ecr, config.repository_name, digest, run_id)

    def kept(current: Record) -> Record | None:
        if current.get("image_kept_at") is not None or current.get("image_digest") != digest:
            return None
        current["image_kept_at"] = timestamp(now)
        return current

    update_record(clients.s3, config.bucket, run_id, kept, now=now, known=known, sleep=sleep)
    return Outcome(
        stops.KEEP,
        "kept",
        run_id=run_id,
        digest=digest,
        attempt=record.get("attempt"),
        reason=f"{reason}; tagged {', '.join(tags)}",
    )


# --- retrain requests -----------------------------------------------------------------------------


def _git_sha_from_tags(tags: tuple[str, ...] | list[str]) -> str | None:
    return next((sha for sha in map(git_sha_of_tag, sorted(tags)) if sha is not None), None)


def image_compute(facts: ImageFacts) -> str:
    """The compute an image is built for: "gpu" when any of its tags is a `<tag>-cuda`, else "cpu"."""
    return GPU if any(tag_compute(tag) == GPU for tag in facts.tags) else CPU


def resolve_image(clients: Clients, config: Config, image: str, compute: str) -> ImageFacts:
    """The image a run of `compute` trains for a requested tag or digest (docs/contracts.md, variants).

    GPU trains the CUDA variant: a plain tag means `<tag>-cuda`; a digest must carry a `-cuda` tag.
    CPU refuses the CUDA variant (a `-cuda` tag, or a digest carrying one): it would train on Fargate
    an image built for a GPU. InvalidEventError or ImageNotFoundError names the image.
    """
    by_digest = DIGEST.fullmatch(image) is not None
    if not by_digest and compute == GPU and tag_compute(image) != GPU:
        cuda = image + CUDA_SUFFIX
        if not TAG.fullmatch(cuda):
            raise InvalidEventError(f"compute='gpu' trains {cuda!r:.160}, which is not a valid image tag")
        try:
            return verified_image(clients, config, cuda)
        except ImageNotFoundError as error:
            raise ImageNotFoundError(
                f"compute='gpu' trains the CUDA variant of {image!r}, tagged {cuda!r}: {error}"
            ) from error
    if not by_digest and compute == CPU and tag_compute(image) == GPU:
        raise InvalidEventError(
            f"compute='cpu' with image {image!r}: a -cuda tag is the CUDA variant; ask for compute 'gpu', "
            f"or name the CPU image {image.removesuffix(CUDA_SUFFIX)!r}"
        )
    facts = verified_image(clients, config, image)
    if by_digest and image_compute(facts) != compute:
        have = "carries a -cuda tag (the CUDA variant)" if compute == CPU else "carries no -cuda tag"
        raise InvalidEventError(
            f"compute={compute!r} with digest {image}: it {have} (tags {sorted(facts.tags)}); a GPU run trains "
            "the digest of a `<tag>-cuda` image, a CPU run the digest of a plain tag"
        )
    return facts


def verified_image(clients: Clients, config: Config, image: str) -> ImageFacts:
    """A requested image (tag or digest) as ECR describes it, refused unless it is a runnable image.

    Every request that names an image (retrain, sweep, multi-node) goes through here: ImageNotFoundError
    or NotAnImageError name the image.
    """
    by_digest = DIGEST.fullmatch(image) is not None
    facts = describe_image(clients.ecr, config.repository_name, image, by_digest=by_digest)
    refusal = _refuse_image(clients, config, facts)
    if refusal is not None:
        raise NotAnImageError(f"image {image!r} ({facts.digest}) is {refusal}")
    return facts


def git_sha_of(request: RetrainRequest, facts: ImageFacts) -> str | None:
    """The request's git SHA, else the image's git-SHA tag (the first in sorted order)."""
    return request.git_sha or _git_sha_from_tags(facts.tags)


def handle_retrain(
    clients: Clients,
    config: Config,
    request: RetrainRequest,
    *,
    compute: str | None = None,
    clock: Clock = utc_now,
    sleep: Sleep = time.sleep,
) -> tuple[Outcome, dict[str, Any]]:
    """Start a retrain run on `compute` (None: PUSHTRAIN_DEFAULT_COMPUTE); the answer is what the
    retrain workflow reads (docs/contracts.md)."""
    compute = compute or config.default_compute
    task_family(config, compute)  # refuses GPU before anything is read when it is not deployed
    facts = resolve_image(clients, config, request.image, compute)
    git_sha = git_sha_of(request, facts)
    run_id = retrain_run_id(request.request_id, facts.digest, request.params)
    spec = RunSpec(
        run_id=run_id, attempt=1, digest=facts.digest, git_sha=git_sha, params=request.params, compute=compute
    )
    outcome = start_run(clients, config, spec, "retrain", clock=clock, sleep=sleep)
    answer = {
        "run_id": run_id,
        "task_arn": outcome.task_arn,
        "image_digest": facts.digest,
        "status_key": record_key(run_id),
        "compute": compute,
    }
    return outcome, answer


# --- reconcile: repair every stuck run, start every image that never trained -------------------------


def list_images(clients: Clients, config: Config) -> Iterator[ImageFacts]:
    """Every image of the repository (DescribeImages, page by page)."""
    token: str | None = None
    while True:
        page = clients.ecr.describe_images(
            repositoryName=config.repository_name, maxResults=100, **({"nextToken": token} if token else {})
        )
        for detail in page.get("imageDetails") or []:
            yield facts_of(detail)
        token = page.get("nextToken")
        if not token:
            return


def list_run_records(clients: Clients, config: Config) -> Iterator[tuple[str, datetime]]:
    """(run id, last written) of every run record under runs/ (ListObjectsV2, page by page)."""
    token: str | None = None
    while True:
        page = clients.s3.list_objects_v2(
            Bucket=config.bucket, Prefix="runs/", **({"ContinuationToken": token} if token else {})
        )
        for item in page.get("Contents") or []:
            key = _RECORD_KEY.fullmatch(str(item.get("Key", "")))
            if key is not None:
                yield key.group("run_id"), item["LastModified"]
        token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
        if not token:
            return


def stop_of(task: dict[str, Any], container_name: str) -> TaskStopEvent:
    """A stop event made of what ECS says about a stopped task (for a stop whose event never arrived)."""
    exit_code = next((c.get("exitCode") for c in task.get("containers") or [] if c.get("name") == container_name), None)
    return TaskStopEvent(
        event_id="reconcile",
        task_arn=str(task["taskArn"]),
        task_definition_arn=str(task.get("taskDefinitionArn", "")),
        last_status=str(task.get("lastStatus", "")),
        stop_code=task.get("stopCode"),
        stopped_reason=task.get("stoppedReason"),
        exit_code=exit_code if isinstance(exit_code, int) else None,
        environment=task_environment(task, container_name),
        capacity_provider=task.get("capacityProviderName"),
    )


def repair_run(
    clients: Clients, config: Config, run_id: str, *, now: datetime, dry_run: bool, sleep: Sleep, keep: bool = True
) -> Outcome | None:
    """Move one non-final run on: start a start that never happened, act on a stop never seen.

    - `queued` without a task (a start or Spot resume whose RunTask failed, a retrain left queued):
      take over the claim once it is released or expired, look for its task, else RunTask;
    - a task that stopped (its stop event lost): the stop decision table, as if the event had come;
    - a task ECS no longer knows, of a run still `queued`/`running`/`interrupted`: recorded `failed`
      (it cannot end any other way now; a retrain request trains it again);
    - a run that succeeded with a version whose image is not kept yet (its success stop was lost, or the
      tagging failed): keep it (trigger.keep), unless `keep` is false (the invocation's quota is spent);
    - a multi-node run (`compute` "batch"): the same repairs through AWS Batch (trigger.batch.repair_batch_run).
    Returns None when the run needs nothing (alive, final, or being started right now).
    """
    existing = read_record(clients.s3, config.bucket, run_id)
    if existing is None or existing[0].get("source") == "manual":
        return None  # gone since listed, or a run started by hand (not the trigger's)
    if existing[0].get("state") in stops.FINAL_STATES:
        return _repair_keep(clients, config, existing, now=now, dry_run=dry_run, sleep=sleep, keep=keep)
    if existing[0].get("compute") == BATCH_COMPUTE:  # a multi-node job: Batch's calls, never ECS's
        from trigger.batch import repair_batch_run  # here, not above: trigger.batch imports this module

        return repair_batch_run(clients, config, existing, now=now, dry_run=dry_run, sleep=sleep)
    state = start_state(existing[0], now, timedelta(seconds=config.claim_seconds))
    if state == CLAIMABLE:
        return _repair_start(clients, config, existing, now=now, dry_run=dry_run, sleep=sleep)
    task_arn = existing[0].get("task_arn")
    if state == IN_FLIGHT or not isinstance(task_arn, str):
        return None  # being started right now, or moved on by the trainer before the task was recorded
    return _repair_stop(clients, config, existing, task_arn, now=now, dry_run=dry_run, sleep=sleep)


def _repair_keep(
    clients: Clients,
    config: Config,
    existing: tuple[Record, str],
    *,
    now: datetime,
    dry_run: bool,
    sleep: Sleep,
    keep: bool,
) -> Outcome | None:
    why = stops.keep_pending(existing[0])
    if why is None:
        return None  # finished, and nothing (more) to keep
    if dry_run or not keep:
        outcome = "would-keep" if dry_run else "keep-deferred"
        return Outcome("repair", outcome, run_id=existing[0]["run_id"], digest=existing[0]["image_digest"], reason=why)
    return replace(_keep(clients, config, existing, why, now=now, sleep=sleep), decision="repair")


def _repair_start(
    clients: Clients, config: Config, existing: tuple[Record, str], *, now: datetime, dry_run: bool, sleep: Sleep
) -> Outcome | None:
    record = existing[0]
    if dry_run:
        return Outcome("repair", "would-start", run_id=record["run_id"], attempt=record.get("attempt"))
    try:
        claimed = claim_start(clients, config, existing, now=now, sleep=sleep)
    except StartInFlightError:
        return None
    if claimed is None:
        return None
    return _launched(clients, config, "repair", "retried-start", claimed, now=now, sleep=sleep, look_first=True)


def _repair_stop(
    clients: Clients,
    config: Config,
    existing: tuple[Record, str],
    task_arn: str,
    *,
    now: datetime,
    dry_run: bool,
    sleep: Sleep,
) -> Outcome | None:
    record = existing[0]
    task = describe_tasks(clients.ecs, config, [task_arn]).get(task_arn)
    if task is not None and task.get("lastStatus") != "STOPPED":
        return None  # alive
    if task is None:
        reason = f"task {task_arn} no longer exists and its stop was never seen (record {record.get('state')})"
        if dry_run:
            return Outcome("repair", "would-fail", run_id=record["run_id"], reason=reason)
        return fail_vanished(clients, config, existing, task_arn, reason, now=now, sleep=sleep)
    stop = stop_of(task, config.container_name)
    decision = decide(config, record, stop)
    if decision.action in {stops.IGNORE, stops.NO_OP, stops.DUPLICATE}:
        return None
    if dry_run:
        return Outcome("repair", f"would-{decision.action}", run_id=record["run_id"], reason=decision.reason)
    return replace(_carry_out(clients, config, stop, decision, existing, now=now, sleep=sleep), decision="repair")


def fail_vanished(
    clients: Clients,
    config: Config,
    known: tuple[Record, str],
    task_arn: str,
    reason: str,
    *,
    now: datetime,
    sleep: Sleep,
) -> Outcome | None:
    attempt = known[0].get("attempt")

    def failed(current: Record) -> Record | None:
        if current.get("task_arn") != task_arn or current.get("attempt") != attempt:
            return None
        if current.get("state") in stops.FINAL_STATES:
            return None
        current.update(state="failed", reason=reason)
        append_history(current, now, reason)
        return current

    written = update_record(clients.s3, config.bucket, known[0]["run_id"], failed, now=now, known=known, sleep=sleep)
    if written is None:
        return None
    return Outcome(
        "repair", "marked-failed", run_id=known[0]["run_id"], attempt=attempt, task_arn=task_arn, reason=reason
    )


def _start_unseen(
    clients: Clients, config: Config, image: ImageFacts, *, dry_run: bool, clock: Clock, sleep: Sleep
) -> Outcome | None:
    """Start a pushed image that has no run record, as its push would have (same run id, same compute).

    An image of the other variant (a `-cuda` image while pushes train on CPU, or the reverse) is
    skipped without a word, as its push was: it would be logged on every schedule otherwise.
    """
    if image_compute(image) != config.default_compute:
        return None
    spec = push_spec(image.digest, _git_sha_from_tags(image.tags), config.default_compute)
    if read_record(clients.s3, config.bucket, spec.run_id) is not None:
        return None  # started, or repaired above
    refusal = _refuse_image(clients, config, image)
    if refusal is not None:
        return Outcome("reconcile", "not-an-image", digest=image.digest, reason=refusal)
    if dry_run:
        return Outcome("reconcile", "would-start", run_id=spec.run_id, digest=spec.digest)
    try:
        return replace(start_run(clients, config, spec, "reconcile", clock=clock, sleep=sleep), decision="reconcile")
    except StartInFlightError:
        return None  # a push event is starting it right now


def reconcile(
    clients: Clients,
    config: Config,
    *,
    since: timedelta | None,
    dry_run: bool = False,
    clock: Clock = utc_now,
    sleep: Sleep = time.sleep,
) -> list[Outcome]:
    """Repair every non-final run written within `since`, then start every runnable tagged image
    pushed within `since` that has no run record (ECR events are best effort).

    Untagged images are the manifests inside an image index; the index is tagged and trained. Every
    run and image is tried; the failures are raised together at the end.
    """
    now = clock()
    outcomes: list[Outcome] = []
    failures: list[str] = []
    oldest = None if since is None else now - since
    kept = 0
    for run_id, written_at in list_run_records(clients, config):
        if oldest is not None and written_at < oldest:
            continue
        try:
            repaired = repair_run(
                clients, config, run_id, now=now, dry_run=dry_run, sleep=sleep, keep=kept < MAX_KEEPS_PER_RECONCILE
            )
        except (TriggerError, ClientError) as error:
            failures.append(f"{run_id}: {type(error).__name__}: {error}")
            continue
        if repaired is not None:
            kept += repaired.outcome == "kept"
            outcomes.append(repaired)
    seen: set[str] = set()
    for image in list_images(clients, config):
        # a digest tagged only keep-* is a kept index's manifest (or a kept image already trained)
        if not any(not is_keep_tag(tag) for tag in image.tags) or image.digest in seen:
            continue
        if oldest is not None and image.pushed_at is not None and image.pushed_at < oldest:
            continue
        seen.add(image.digest)
        try:
            started = _start_unseen(clients, config, image, dry_run=dry_run, clock=clock, sleep=sleep)
        except (TriggerError, ClientError) as error:
            failures.append(f"{image.digest}: {type(error).__name__}: {error}")
            continue
        if started is not None:
            outcomes.append(started)
    if failures:
        raise TriggerError(f"reconcile could not repair or start {len(failures)} run(s) or image(s): {failures}")
    return outcomes
