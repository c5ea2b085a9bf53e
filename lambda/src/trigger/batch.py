"""Multi-node runs on AWS Batch: requests with `nodes > 1` (trigger.compute), and their failures.

Exactly once without a client token. RunTask takes a clientToken; Batch's SubmitJob takes none, so two
SubmitJob calls start two jobs. What keeps a run to one job is the run record, as for ECS:

1. the record is created (`If-None-Match: *`) before anything is submitted, holding the start's claim
   (`claimed_at`, trigger.flows as for ECS); a duplicate request finds it started (`task_arn` holds the
   job ARN) and submits nothing, or in flight (StartInFlightError: retried later);
2. a start whose claim was released (a failed submit) or expired is taken over by compare-and-swap, and
   first ListJobs looks in the queue for a job named `<run_id>-a<attempt>` (every status): a job found
   is adopted, not doubled;
3. the job ARN is recorded by compare-and-swap.

Pinning: like the ECS task definitions, one job definition revision per image digest, a copy of the
revision Terraform made (`base-revision-not-run`) with every node's image set to repo@sha256:...

Spot and lost hosts: Batch runs no multi-node job on Spot. A lost host fails the attempt and the job
definition's retry strategy (terraform/batch.tf) starts the whole job again, which resumes from the
checkpoint; the trainer counts the attempts in the record. When Batch gives up (a failed trainer, or the
last attempt), its "Batch Job State Change" FAILED event reaches the trigger, which marks the run
`failed` unless the trainer already wrote a final state.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeGuard

from trigger.aws import Clients
from trigger.compute import MAX_NODES
from trigger.config import Config
from trigger.ecs import Sleep
from trigger.errors import InvalidEventError, RecordConflictError, StartInFlightError, TriggerError
from trigger.events import RetrainRequest
from trigger.flows import (
    BATCH_COMPUTE,
    Outcome,
    claim_start,
    duplicate_outcome,
    fail_vanished,
    git_sha_of,
    release_claim,
    set_task_arn,
    verified_image,
)
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
    update_record,
    utc_now,
)
from trigger.runs import TAG_PREFIX, RunSpec, container_environment, resource_tags, retrain_run_id
from trigger.stops import FINAL_STATES
from trigger.taskdef import pinned_image

BASE_TAG = ":base-revision-not-run"  # the image of the revision Terraform manages (never run)
EVENT_SOURCE, EVENT_DETAIL_TYPE = "aws.batch", "Batch Job State Change"
_JOB_QUEUE_ARN = re.compile(
    r"arn:aws[a-z-]*:batch:[a-z0-9-]+:\d{12}:job-queue/(?P<name>[A-Za-z0-9_-]{1,128})", re.ASCII
)
_JOB_ARN = re.compile(r"arn:aws[a-z-]*:batch:[a-z0-9-]+:\d{12}:job/[A-Za-z0-9:_-]+", re.ASCII)
# A duplicate trainer's exit (one of trigger.stops.NOT_FAILURE_EXIT_CODES; docs/contracts.md): it left
# the run to the live trainer that holds its lease.
DUPLICATE_TRAINER_EXIT = 73
_EVENT_ID = re.compile(r"[A-Za-z0-9-]{1,64}", re.ASCII)


def job_name(spec: RunSpec) -> str:
    """`<run_id>-a<attempt>`: what a retried start looks for in the queue (Batch allows 128 characters)."""
    return f"{spec.run_id}-a{spec.attempt}"


def node_images(definition: Mapping[str, Any]) -> set[str]:
    ranges = definition.get("nodeProperties", {}).get("nodeRangeProperties", [])
    return {str(r.get("container", {}).get("image")) for r in ranges}


def pinned_job_definition(base: Mapping[str, Any], image: str, digest: str) -> dict[str, Any]:
    """The RegisterJobDefinition request: `base` (a DescribeJobDefinitions entry) with every node's image pinned."""
    node_properties = copy.deepcopy(dict(base["nodeProperties"]))
    for node_range in node_properties["nodeRangeProperties"]:
        node_range["container"]["image"] = image
    request: dict[str, Any] = {
        "jobDefinitionName": base["jobDefinitionName"],
        "type": "multinode",
        "nodeProperties": node_properties,
        "tags": {f"{TAG_PREFIX}image-digest": digest},
    }
    for key in ("parameters", "retryStrategy", "timeout", "propagateTags", "platformCapabilities"):
        if key in base:
            request[key] = copy.deepcopy(base[key])
    return request


def _active_definitions(batch: Any, family: str) -> list[dict[str, Any]]:
    definitions: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = batch.describe_job_definitions(
            jobDefinitionName=family, status="ACTIVE", **({"nextToken": token} if token else {})
        )
        definitions += page.get("jobDefinitions") or []
        token = page.get("nextToken")
        if not token:
            return definitions


def ensure_job_definition(batch: Any, config: Config, digest: str) -> tuple[str, bool]:
    """The ARN of the revision that runs `digest`, registering it on first sight: (arn, registered).

    Two starts of a new digest at once may both register; both revisions pin the same image, so either
    is right and later starts take the first they find.
    """
    image = pinned_image(config.repository_uri, digest)
    definitions = _active_definitions(batch, config.batch_job_definition)
    for definition in sorted(definitions, key=lambda d: int(d.get("revision", 0))):
        if node_images(definition) == {image}:
            return str(definition["jobDefinitionArn"]), False
    bases = [d for d in definitions if all(i.endswith(BASE_TAG) for i in node_images(d))]
    if not bases:
        raise TriggerError(
            f"job definition {config.batch_job_definition!r} has no active base revision (image …{BASE_TAG}); "
            "terraform/batch.tf creates it"
        )
    base = max(bases, key=lambda d: int(d.get("revision", 0)))
    registered = batch.register_job_definition(**pinned_job_definition(base, image, digest))
    return str(registered["jobDefinitionArn"]), True


def submit_job_request(spec: RunSpec, nodes: int, config: Config, job_definition_arn: str) -> dict[str, Any]:
    """The SubmitJob request for one run on `nodes` nodes (pure): TRAINER_* on every node, tags on the job."""
    return {
        "jobName": job_name(spec),
        "jobQueue": config.batch_job_queue,
        "jobDefinition": job_definition_arn,
        "nodeOverrides": {
            "numNodes": nodes,
            "nodePropertyOverrides": [
                {"targetNodes": "0:", "containerOverrides": {"environment": container_environment(spec)}}
            ],
        },
        "tags": {tag["key"]: tag["value"] for tag in resource_tags(spec)},
        "propagateTags": True,
    }


def find_job(batch: Any, config: Config, name: str) -> str | None:
    """The ARN of a job of that name in our queue, in any status (a JOB_NAME filter lists them all)."""
    token: str | None = None
    while True:
        page = batch.list_jobs(
            jobQueue=config.batch_job_queue,
            filters=[{"name": "JOB_NAME", "values": [name]}],
            **({"nextToken": token} if token else {}),
        )
        for job in page.get("jobSummaryList") or []:
            if job.get("jobName") == name and job.get("jobArn"):
                return str(job["jobArn"])
        token = page.get("nextToken")
        if not token:
            return None


def record_nodes(record: Record) -> int:
    """The node count a multi-node run record holds; RecordConflictError naming it when it is not one."""
    nodes = record.get("nodes")
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 2 <= nodes <= MAX_NODES:
        raise RecordConflictError(
            f"run record {record.get('run_id')!r}: nodes={nodes!r:.40} is not a node count from 2 to {MAX_NODES}"
        )
    return nodes


def start_batch_run(
    clients: Clients,
    config: Config,
    spec: RunSpec,
    nodes: int,
    source: str,
    *,
    clock: Clock = utc_now,
    sleep: Sleep = time.sleep,
) -> Outcome:
    """Submit the run's multi-node job unless its record says it was started (see the module docstring).

    The claim is the ECS starts' (trigger.flows): created with the record, or taken over by
    compare-and-swap on `claimed_at` when released or expired; a fresh claim raises StartInFlightError.
    """
    now = clock()
    record = new_record(spec, source, now) | {"compute": BATCH_COMPUTE, "nodes": nodes}
    etag = create_record(clients.s3, config.bucket, record, sleep=sleep)
    outcome, job_arn = "started", None
    claimed: tuple[Record, str] | None = (record, etag) if etag is not None else None
    if claimed is None:
        existing = read_record(clients.s3, config.bucket, spec.run_id)
        if existing is None:
            raise RecordConflictError(f"s3://{config.bucket}/{record_key(spec.run_id)} exists for writes, not reads")
        if start_state(existing[0], now, timedelta(seconds=config.claim_seconds)) == STARTED:
            return duplicate_outcome("start", existing[0])
        claimed = claim_start(clients, config, existing, now=now, sleep=sleep)
        if claimed is None:
            fresh = read_record(clients.s3, config.bucket, spec.run_id)
            return duplicate_outcome("start", fresh[0] if fresh else existing[0])
        outcome = "retried-start"
    spec, nodes = spec_of(claimed[0]), record_nodes(claimed[0])
    definition, registered = None, None
    try:
        if outcome == "retried-start":  # a lost SubmitJob answer may have started the job: adopt it
            job_arn = find_job(clients.batch, config, job_name(spec))
        if job_arn is None:
            definition, registered = ensure_job_definition(clients.batch, config, spec.digest)
            job_arn = str(clients.batch.submit_job(**submit_job_request(spec, nodes, config, definition))["jobArn"])
    except Exception:
        release_claim(clients, config, spec, now=now, sleep=sleep)
        raise
    # From here a job exists: a failure to record it keeps the claim, and the next claimant finds the job.
    update_record(
        clients.s3, config.bucket, spec.run_id, set_task_arn(spec, job_arn), now=now, known=claimed, sleep=sleep
    )
    return Outcome(
        "start",
        outcome,
        run_id=spec.run_id,
        digest=spec.digest,
        attempt=spec.attempt,
        task_arn=job_arn,
        capacity_provider=f"batch:{nodes}-nodes",
        task_definition_arn=definition,
        registered_task_definition=registered,
        reason=None if definition else "adopted the job a failed start had submitted",
    )


def handle_batch_retrain(
    clients: Clients,
    config: Config,
    request: RetrainRequest,
    nodes: int,
    *,
    clock: Clock = utc_now,
    sleep: Sleep = time.sleep,
) -> tuple[Outcome, dict[str, Any]]:
    """A retrain request with `nodes > 1`: the same run identity as any retrain, submitted to Batch."""
    facts = verified_image(clients, config, request.image)
    digest, git_sha = facts.digest, git_sha_of(request, facts)
    run_id = retrain_run_id(request.request_id, digest, request.params)
    spec = RunSpec(run_id=run_id, attempt=1, digest=digest, git_sha=git_sha, params=request.params)
    outcome = start_batch_run(clients, config, spec, nodes, "retrain", clock=clock, sleep=sleep)
    answer = {
        "run_id": run_id,
        "task_arn": outcome.task_arn,
        "job_arn": outcome.task_arn,
        "image_digest": digest,
        "status_key": record_key(run_id),
    }
    return outcome, answer


# --- a multi-node job that failed for good ------------------------------------------------------------


@dataclass(frozen=True)
class BatchJobEvent:
    """A "Batch Job State Change" of a job in our queue."""

    event_id: str
    job_arn: str
    status: str
    status_reason: str | None
    run_id: str | None


def is_batch_event(event: object) -> TypeGuard[Mapping[str, Any]]:
    return (
        isinstance(event, Mapping)
        and event.get("source") == EVENT_SOURCE
        and event.get("detail-type") == EVENT_DETAIL_TYPE
    )


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
    run_id = tags.get(f"{TAG_PREFIX}run-id")
    reason = detail.get("statusReason")
    return BatchJobEvent(
        event_id=event_id,
        job_arn=job_arn,
        status=status,
        status_reason=reason if isinstance(reason, str) else None,
        run_id=run_id if isinstance(run_id, str) and run_id else None,
    )


def unverified_failure(event: BatchJobEvent, job: Mapping[str, Any] | None) -> str | None:
    """Why Batch's description of the job does not back a failure the event claims, or None when it does. Pure.

    As for ECS stops (trigger.stops.unverified): anyone allowed to invoke the function could send the
    event, so before a run is marked failed DescribeJobs must show that job FAILED with the event's run
    id. A job whose trainer exited 73 (a duplicate trainer stood down, docs/contracts.md) is no failure
    of the run: the live trainer carries it on.
    """
    if job is None:
        return f"Batch does not know job {event.job_arn} (finished jobs fade after about a day); reconcile repairs it"
    tags = job.get("tags") or {}
    claims = [
        ("status", event.status, job.get("status")),
        (f"{TAG_PREFIX}run-id", event.run_id, tags.get(f"{TAG_PREFIX}run-id")),
    ]
    wrong = [f"{name}: event {said!r}, Batch {known!r}" for name, said, known in claims if said != known]
    if wrong:
        return f"Batch contradicts the event about job {event.job_arn}: {'; '.join(wrong)}"
    attempts = job.get("attempts") or []
    exit_code = (attempts[-1].get("container") or {}).get("exitCode") if attempts else None
    if exit_code == DUPLICATE_TRAINER_EXIT:
        return f"job {event.job_arn} exited {exit_code}: a duplicate trainer stood down; the run is another's to finish"
    return None


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
    if existing[0].get("state") in FINAL_STATES:
        return no_op(f"the record is already {existing[0].get('state')}; left as it is")
    described = clients.batch.describe_jobs(jobs=[event.job_arn]).get("jobs") or []
    refusal = unverified_failure(event, described[0] if described else None)
    if refusal is not None:
        return Outcome("resume", "unverified", run_id=event.run_id, task_arn=event.job_arn, reason=refusal)
    reason = f"Batch job FAILED: {event.status_reason or 'no reason given'}"
    now: datetime = clock()

    def failed(current: Record) -> Record | None:
        if current.get("state") in FINAL_STATES or current.get("task_arn") != event.job_arn:
            return None
        current.update(state="failed", reason=reason)
        append_history(current, now, reason)
        return current

    written = update_record(clients.s3, config.bucket, event.run_id, failed, now=now, known=existing)
    if written is None:
        return no_op("the record is final or names another job; left as it is")
    return Outcome("resume", "marked-failed", run_id=event.run_id, task_arn=event.job_arn, reason=reason)


# --- reconcile: a multi-node run whose start or end was lost --------------------------------------------


def repair_batch_run(
    clients: Clients, config: Config, existing: tuple[Record, str], *, now: datetime, dry_run: bool, sleep: Sleep
) -> Outcome | None:
    """Reconcile's repair of a non-final multi-node run (trigger.flows.repair_run), through Batch only.

    - a start that never got its job (its claim released or expired): taken over as a redelivered request
      would (`start_batch_run`: ListJobs by name first, then SubmitJob);
    - a job Batch describes as FAILED (its event lost): marked failed by the event's own checks;
    - a job Batch no longer knows, of a run that is not final: marked failed (it cannot end otherwise).
    None while the job is alive or has succeeded (the trainer writes that ending itself), or while
    another invocation is starting it.
    """
    record = existing[0]
    state = start_state(record, now, timedelta(seconds=config.claim_seconds))
    if state == CLAIMABLE:
        return _repair_batch_start(clients, config, record, now=now, dry_run=dry_run, sleep=sleep)
    job_arn = record.get("task_arn")
    if state == IN_FLIGHT or not isinstance(job_arn, str):
        return None
    return _repair_batch_job(clients, config, existing, job_arn, now=now, dry_run=dry_run, sleep=sleep)


def _repair_batch_start(
    clients: Clients, config: Config, record: Record, *, now: datetime, dry_run: bool, sleep: Sleep
) -> Outcome | None:
    run_id = str(record["run_id"])
    if dry_run:
        return Outcome("repair", "would-start", run_id=run_id, attempt=record.get("attempt"))
    if not config.batch_job_queue:
        reason = "a multi-node run, but this stack no longer deploys Batch (var.batch.enabled)"
        return Outcome("repair", "skipped", run_id=run_id, reason=reason)
    nodes, source = record.get("nodes"), str(record.get("source") or "retrain")
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 2 <= nodes <= MAX_NODES:
        raise RecordConflictError(
            f"run record {run_id!r}: nodes={nodes!r:.40} is not a node count from 2 to {MAX_NODES}"
        )
    try:
        started = start_batch_run(clients, config, spec_of(record), nodes, source, clock=lambda: now, sleep=sleep)
    except StartInFlightError:
        return None
    return replace(started, decision="repair")


def _repair_batch_job(
    clients: Clients,
    config: Config,
    existing: tuple[Record, str],
    job_arn: str,
    *,
    now: datetime,
    dry_run: bool,
    sleep: Sleep,
) -> Outcome | None:
    run_id = str(existing[0]["run_id"])
    described = clients.batch.describe_jobs(jobs=[job_arn]).get("jobs") or []
    if not described:
        reason = f"Batch job {job_arn} no longer exists and its end was never seen (record {existing[0].get('state')})"
        if dry_run:
            return Outcome("repair", "would-fail", run_id=run_id, task_arn=job_arn, reason=reason)
        return fail_vanished(clients, config, existing, job_arn, reason, now=now, sleep=sleep)
    if described[0].get("status") != "FAILED":
        return None  # alive, or succeeded (the trainer wrote that)
    status_reason = described[0].get("statusReason")
    reason = status_reason if isinstance(status_reason, str) else None
    if dry_run:
        return Outcome("repair", "would-fail", run_id=run_id, task_arn=job_arn, reason=reason)
    event = BatchJobEvent("reconcile", job_arn=job_arn, status="FAILED", status_reason=reason, run_id=run_id)
    return replace(handle_batch_job_event(clients, config, event, clock=lambda: now), decision="repair")
