"""The start protocol: one home for starting an attempt of a run exactly once, on any launcher.

Every start (a push, a retrain request on Fargate, a GPU or a multi-node Batch job, a sweep's runs, a
Spot resume, a reconcile repair) goes through here; what differs per compute is behind the launcher seam
(trigger.launcher: `find_existing`, `launch`), implemented by trigger.ecs.EcsLauncher and
trigger.batch.BatchLauncher.

1. Create the run record `runs/<run_id>/status.json` (If-None-Match: *) holding the start's claim
   (`claimed_at`); a record that exists is a duplicate (it has a task or job), a start in flight
   (StartInFlightError: Lambda retries the event), or a start whose claim was released or expired,
   which is taken over by compare-and-swap.
2. A claimant that took a claim over first asks the launcher for an existing launch (`find_existing`):
   the earlier claimant may have launched and died before recording it.
3. `launch`. If anything raises, the launcher is asked again (`find_existing`): a launch whose answer
   was lost (a 5xx or a read timeout after the work was done; the launch calls make one attempt, see
   trigger.aws) is adopted; only when there is none is the claim released and the error raised, so
   Lambda's first retry starts at once.
4. Record the task or job ARN by compare-and-swap. A failure here keeps the claim: the next claimant
   finds the launch in step 2.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from trigger.aws import Clients
from trigger.batch import BatchLauncher
from trigger.compute import BATCH_COMPUTE
from trigger.config import Config
from trigger.ecs import EcsLauncher
from trigger.errors import ImageNotFoundError, RecordConflictError, StartInFlightError, TriggerError
from trigger.images import describe_image
from trigger.launcher import Launched, Launcher
from trigger.records import (
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
from trigger.runs import RunSpec
from trigger.s3json import Sleep


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


def launcher_for(clients: Clients, config: Config, spec: RunSpec, *, now: datetime, sleep: Sleep) -> Launcher:
    """The launcher of the run's compute: Batch for a multi-node run, ECS for a CPU or GPU task."""
    if spec.compute == BATCH_COMPUTE:
        return BatchLauncher(clients.batch, clients.launch_client("batch"), clients.s3, config, now, sleep)
    return EcsLauncher(clients.ecs, clients.launch_client("ecs"), clients.s3, config, now, sleep)


def set_task_arn(spec: RunSpec, task_arn: str, provider: str | None = None) -> Callable[[Record], Record | None]:
    """Record the attempt's task or job, and the capacity it got (FARGATE_SPOT, or FARGATE after a Spot refusal)."""

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
                f"the launch gave {task_arn}"
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
    known_age = getattr(known, "age", None)

    def take(current: Record) -> Record | None:
        # the record as read (its S3 age known), or written since by another invocation: a fresh write
        age = known_age if current == known[0] else timedelta(0)
        state = start_state(current, now, claim, age=age)
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
    """After a start that raised and launched nothing: clear our claim, so the retry need not wait for it
    to expire. The retry still looks for a launch first (a lost answer may have launched one)."""

    def clear(current: Record) -> Record | None:
        ours = current.get("attempt") == spec.attempt and current.get("state") == "queued"
        if not ours or current.get("task_arn") is not None or current.get("claimed_at") is None:
            return None
        current["claimed_at"] = None
        return current

    with contextlib.suppress(TriggerError, ClientError):  # the original error is the one to raise
        update_record(clients.s3, config.bucket, spec.run_id, clear, now=now, sleep=sleep)


def existing_age(found: tuple[Record, str]) -> timedelta | None:
    """S3's age of a record as read (trigger.s3json.Found), None for one made here."""
    return getattr(found, "age", None)


def _adopt(launcher: Launcher, spec: RunSpec) -> str | None:
    """After a launch raised: the launch it may have made anyway (a lost answer), or None."""
    with contextlib.suppress(Exception):  # a failed look finds nothing; the launch's error is raised
        return launcher.find_existing(spec)
    return None


def start_claimed(
    clients: Clients,
    config: Config,
    decision: str,
    outcome: str,
    claimed: tuple[Record, str],
    *,
    now: datetime,
    sleep: Sleep,
    look_first: bool,
    check_image: bool = False,
) -> Outcome:
    """Start the attempt the claimed record holds: (find an existing launch,) launch, record it.

    `check_image`: a start long after the image was checked (a Spot resume, a reconcile repair) first asks
    ECR whether the digest is still there; when it is gone, the run is recorded failed with that reason
    and nothing is launched (on AWS the pull would fail and the run be marked failed much later).
    """
    spec = spec_of(claimed[0])  # a retry repeats the first request exactly (same names, same overrides)
    launcher = launcher_for(clients, config, spec, now=now, sleep=sleep)
    launched: Launched | None = None
    try:
        found = launcher.find_existing(spec) if look_first else None
        gone = image_gone(clients, config, spec) if found is None and check_image else None
        if gone is not None:
            return fail_start(clients, config, decision, claimed, gone, now=now, sleep=sleep)
        if found is None:
            launched = launcher.launch(spec)
    except Exception:
        found = _adopt(launcher, spec)
        if found is None:
            release_claim(clients, config, spec, now=now, sleep=sleep)
            raise
    arn = launched.arn if launched else found
    assert arn is not None  # noqa: S101 (launched, or found)
    # From here a launch exists: a failure to record it keeps the claim, and the next claimant finds it.
    provider = launched.capacity_provider if launched else None
    update_record(
        clients.s3, config.bucket, spec.run_id, set_task_arn(spec, arn, provider), now=now, known=claimed, sleep=sleep
    )
    return Outcome(
        decision,
        outcome if launched else "recovered",
        run_id=spec.run_id,
        digest=spec.digest,
        attempt=spec.attempt,
        task_arn=arn,
        capacity_provider=provider,
        task_definition_arn=launched.definition_arn if launched else None,
        registered_task_definition=launched.registered if launched else None,
        reason=claimed[0].get("reason") if launched else "a start whose answer was lost had launched this",
    )


def image_gone(clients: Clients, config: Config, spec: RunSpec) -> str | None:
    """Why the run's image cannot be launched any more (its digest left the repository), or None."""
    try:
        describe_image(clients.ecr, config.repository_name, spec.digest, by_digest=True)
    except ImageNotFoundError as error:
        return f"image {spec.digest} is no longer in repository {config.repository_name!r} ({error}); nothing launched"
    return None


def fail_start(
    clients: Clients,
    config: Config,
    decision: str,
    claimed: tuple[Record, str],
    reason: str,
    *,
    now: datetime,
    sleep: Sleep,
) -> Outcome:
    """Record the claimed attempt `failed` with `reason` (nothing was launched), by compare-and-swap."""
    spec = spec_of(claimed[0])

    def failed(current: Record) -> Record | None:
        if current.get("attempt") != spec.attempt or current.get("task_arn") is not None:
            return None  # moved on, or launched by another invocation meanwhile
        if current.get("state") != "queued":
            return None
        current.update(state="failed", reason=reason, claimed_at=None)
        append_history(current, now, reason)
        return current

    update_record(clients.s3, config.bucket, spec.run_id, failed, now=now, known=claimed, sleep=sleep)
    return Outcome(
        decision, "marked-failed", run_id=spec.run_id, digest=spec.digest, attempt=spec.attempt, reason=reason
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
        created = (record, etag)
        return start_claimed(clients, config, "start", "started", created, now=now, sleep=sleep, look_first=False)
    existing = read_record(clients.s3, config.bucket, spec.run_id)
    if existing is None:
        raise RecordConflictError(f"s3://{config.bucket}/{record_key(spec.run_id)} exists for writes, not for reads")
    if start_state(existing[0], now, timedelta(seconds=config.claim_seconds), age=existing_age(existing)) == STARTED:
        return duplicate_outcome("start", existing[0])
    claimed = claim_start(clients, config, existing, now=now, sleep=sleep)
    if claimed is None:
        fresh = read_record(clients.s3, config.bucket, spec.run_id)
        return duplicate_outcome("start", fresh[0] if fresh else existing[0])
    return start_claimed(clients, config, "start", "retried-start", claimed, now=now, sleep=sleep, look_first=True)
