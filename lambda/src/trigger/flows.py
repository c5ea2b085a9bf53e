"""What the trigger does for each input: start a push's run, resume an interrupted one, answer a
retrain request (on Fargate, a GPU or a multi-node Batch job), mark a run failed that Batch gave up on,
and keep the image of a published run. The AWS calls happen here, through the clients passed in; the
decisions are the pure functions of `records` (claims), `stops` (stopped tasks and failed jobs), `images`
(what may train) and `runs` / `ecs` / `batch` / `taskdef` (the requests).

Every start goes through one protocol, trigger.starts (claim in the run record, find an existing launch,
launch, record it), whatever the compute. Repairs of stuck runs are trigger.reconcile's.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from trigger import stops, trained
from trigger.aws import Clients
from trigger.compute import BATCH_COMPUTE, CPU, GPU, task_family
from trigger.config import Config
from trigger.ecs import Sleep, describe_tasks
from trigger.errors import (
    AttemptsExhaustedError,
    ImageNotFoundError,
    InvalidEventError,
    NotAnImageError,
    RecordConflictError,
)
from trigger.events import (
    CUDA_SUFFIX,
    DIGEST,
    TAG,
    BatchJobEvent,
    PushEvent,
    RetrainRequest,
    TaskStopEvent,
    git_sha_of_tag,
    tag_compute,
)
from trigger.images import ImageFacts, describe_image, not_runnable
from trigger.keep import keep_image
from trigger.records import (
    Clock,
    Record,
    append_history,
    read_record,
    record_key,
    timestamp,
    update_record,
    utc_now,
)
from trigger.runs import TAG_PREFIX, RunSpec, push_run_id, retrain_run_id
from trigger.starts import Outcome, claim_start, start_claimed, start_run

# --- pushes: only images that exist and can run --------------------------------------------------------


def push_spec(digest: str, git_sha: str | None, compute: str = CPU) -> RunSpec:
    """A push trains the image with the trainer's default parameters, on the default compute."""
    return RunSpec(
        run_id=push_run_id(digest, {}), attempt=1, digest=digest, git_sha=git_sha, params={}, compute=compute
    )


def refuse_image(clients: Clients, config: Config, facts: ImageFacts) -> str | None:
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
    refusal = refuse_image(clients, config, facts)
    if refusal is not None:
        return Outcome("skip", "not-an-image", digest=event.digest, reason=refusal)
    # parse_push_event skipped a tag of the other variant: this push is one for the default compute
    spec = push_spec(event.digest, event.git_sha, config.default_compute)
    return start_push_run(clients, config, spec, "push", clock=clock, sleep=sleep)


def start_push_run(
    clients: Clients, config: Config, spec: RunSpec, source: str, *, clock: Clock, sleep: Sleep
) -> Outcome:
    """Start a pushed digest's run (a push, or reconcile for a push never seen), unless the per-digest index
    (trigger.trained) says it was trained by a run whose record has since expired. A young entry without a
    record is a start in flight (or one that died before its record): the start protocol decides it."""
    earlier = trained.remembered(clients.s3, config.bucket, spec.digest)
    if (
        earlier is not None
        and earlier.could_have_expired(clock())
        and read_record(clients.s3, config.bucket, earlier.run_id) is None
    ):
        index = trained.digest_key(spec.digest)
        reason = f"digest {spec.digest} was trained by run {earlier.run_id} ({index}); its run record expired"
        return Outcome("skip", "already-trained", run_id=earlier.run_id, digest=spec.digest, reason=reason)
    if earlier is None:
        trained.remember(clients.s3, config.bucket, spec, clock(), sleep=sleep)
    return start_run(clients, config, spec, source, clock=clock, sleep=sleep)


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
    return carry_out(clients, config, stop, decision, existing, now=now, sleep=sleep)


def carry_out(
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
            return start_claimed(
                clients, config, "resume", "started", written, now=now, sleep=sleep, look_first=False, check_image=True
            )
        if decision.action == stops.EXHAUSTED:
            raise AttemptsExhaustedError(decision.reason)
    elif decision.action == stops.RETRY_RESUME:
        assert existing is not None  # noqa: S101
        claimed = claim_start(clients, config, existing, now=now, sleep=sleep)
        if claimed is not None:
            return start_claimed(
                clients,
                config,
                "resume",
                "retried-start",
                claimed,
                now=now,
                sleep=sleep,
                look_first=True,
                check_image=True,
            )
        fresh = read_record(clients.s3, config.bucket, existing[0]["run_id"])
        decision = decide(config, fresh[0] if fresh else None, stop)
    elif decision.action == stops.KEEP:
        assert existing is not None  # noqa: S101 (decide_stop keeps only a run with a record)
        return keep(clients, config, existing, decision.reason, now=now, sleep=sleep)
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


def keep(
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


def git_sha_from_tags(tags: tuple[str, ...] | list[str]) -> str | None:
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
    refusal = refuse_image(clients, config, facts)
    if refusal is not None:
        raise NotAnImageError(f"image {image!r} ({facts.digest}) is {refusal}")
    return facts


def git_sha_of(request: RetrainRequest, facts: ImageFacts) -> str | None:
    """The request's git SHA, else the image's git-SHA tag (the first in sorted order)."""
    return request.git_sha or git_sha_from_tags(facts.tags)


def handle_retrain(
    clients: Clients,
    config: Config,
    request: RetrainRequest,
    *,
    compute: str | None = None,
    nodes: int = 1,
    clock: Clock = utc_now,
    sleep: Sleep = time.sleep,
) -> tuple[Outcome, dict[str, Any]]:
    """Start a retrain run on `compute` (None: PUSHTRAIN_DEFAULT_COMPUTE), or on `nodes` > 1 machines as a
    Batch multi-node job; the answer is what the retrain workflow reads (docs/contracts.md)."""
    if nodes > 1:
        facts, compute = verified_image(clients, config, request.image), BATCH_COMPUTE
    else:
        compute = compute or config.default_compute
        task_family(config, compute)  # refuses GPU before anything is read when it is not deployed
        facts = resolve_image(clients, config, request.image, compute)
    git_sha = git_sha_of(request, facts)
    run_id = retrain_run_id(request.request_id, facts.digest, request.params)
    spec = RunSpec(
        run_id=run_id,
        attempt=1,
        digest=facts.digest,
        git_sha=git_sha,
        params=request.params,
        compute=compute,
        nodes=nodes,
    )
    outcome = start_run(clients, config, spec, "retrain", clock=clock, sleep=sleep)
    answer = {
        "run_id": run_id,
        "task_arn": outcome.task_arn,
        "image_digest": facts.digest,
        "status_key": record_key(run_id),
    }
    if compute == BATCH_COMPUTE:
        answer["job_arn"] = outcome.task_arn
    else:
        answer["compute"] = compute
    return outcome, answer


# --- a multi-node job Batch gave up on ---------------------------------------------------------------


def handle_batch_job_event(  # noqa: PLR0911 (a decision table: one return per row)
    clients: Clients, config: Config, event: BatchJobEvent, *, clock: Clock = utc_now
) -> Outcome:
    """Mark the job's run `failed` when Batch gave up on it (as DescribeJobs confirms), unless the record is
    final or names another job."""

    def no_op(why: str) -> Outcome:
        return Outcome("resume", "no-restart", run_id=event.run_id, task_arn=event.job_arn, reason=why)

    if event.status != "FAILED":
        return no_op(f"status {event.status}: only FAILED is acted on")
    if event.run_id is None:
        return no_op(f"job has no {TAG_PREFIX}run-id tag: not a run the trigger started")
    existing = read_record(clients.s3, config.bucket, event.run_id)
    if existing is None:
        return no_op(f"s3://{config.bucket}/{record_key(event.run_id)} is missing: nothing to mark failed")
    if existing[0].get("task_arn") != event.job_arn:
        return no_op(f"the record names {existing[0].get('task_arn')}, not this job")
    if existing[0].get("state") in stops.FINAL_STATES:
        return no_op(f"the record is already {existing[0].get('state')}; left as it is")
    described = clients.batch.describe_jobs(jobs=[event.job_arn]).get("jobs") or []
    refusal = stops.unverified_job_failure(event, described[0] if described else None)
    if refusal is not None:
        return Outcome("resume", "unverified", run_id=event.run_id, task_arn=event.job_arn, reason=refusal)
    reason = f"Batch job FAILED: {event.status_reason or 'no reason given'}"
    now: datetime = clock()

    def failed(current: Record) -> Record | None:
        if current.get("state") in stops.FINAL_STATES or current.get("task_arn") != event.job_arn:
            return None
        current.update(state="failed", reason=reason)
        append_history(current, now, reason)
        return current

    written = update_record(clients.s3, config.bucket, event.run_id, failed, now=now, known=existing)
    if written is None:
        return no_op("the record is final or names another job; left as it is")
    return Outcome("resume", "marked-failed", run_id=event.run_id, task_arn=event.job_arn, reason=reason)
