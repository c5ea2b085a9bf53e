"""`python -m trigger.reconcile`: repair stuck runs and start the pushed images that never trained.

What the scheduled event does (`reconcile` below), from a laptop: every run record written
within the look-back that is not final is moved on (a start or Spot resume that never got its task,
a task whose stop event was lost, a task that no longer exists), and every tagged, runnable image
pushed within it that has no run record is started exactly as its push would have (the same run id,
so a late push event afterwards is a duplicate), and every run that succeeded with a version whose image
is not kept yet is tagged keep-<run_id> in ECR (trigger.keep). ECR and ECS events are best effort. Reads the same
PUSHTRAIN_* variables as the Lambda function (the look-back is PUSHTRAIN_RECONCILE_LOOKBACK_DAYS)
and uses the caller's AWS credentials.

    python -m trigger.reconcile --dry-run              # what would be repaired or started
    python -m trigger.reconcile --since-hours 48       # repair / start, looking 48 hours back
    python -m trigger.reconcile --all                  # every run and image, however old
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from trigger import flows, stops
from trigger.aws import Clients, default_clients
from trigger.compute import BATCH_COMPUTE
from trigger.config import Config, load_config
from trigger.ecs import Sleep, describe_tasks, task_environment
from trigger.errors import StartInFlightError, TriggerError
from trigger.events import BatchJobEvent, TaskStopEvent
from trigger.images import ImageFacts, facts_of
from trigger.keep import is_keep_tag
from trigger.log import log_decision
from trigger.records import (
    CLAIMABLE,
    IN_FLIGHT,
    Clock,
    Record,
    append_history,
    read_record,
    spec_of,
    start_state,
    update_record,
    utc_now,
)
from trigger.starts import Outcome, claim_start, existing_age, start_claimed
from trigger.sweep_flow import advance_open_sweeps

# Images kept (tagged in ECR) by one reconcile at most: each costs a few ECR calls of the function's
# 60 s; the rest are kept by the next schedule (logged `keep-deferred`).
MAX_KEEPS_PER_RECONCILE = 10
_RECORD_KEY = re.compile(r"runs/(?P<run_id>[A-Za-z0-9][A-Za-z0-9._-]{0,127})/status\.json", re.ASCII)


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
    - a multi-node run (`compute` "batch"): the same repairs through AWS Batch (`repair_batch_run`).
    Returns None when the run needs nothing (alive, final, or being started right now).
    """
    existing = read_record(clients.s3, config.bucket, run_id)
    if existing is None or existing[0].get("source") == "manual":
        return None  # gone since listed, or a run started by hand (not the trigger's)
    if existing[0].get("state") in stops.FINAL_STATES:
        return _repair_keep(clients, config, existing, now=now, dry_run=dry_run, sleep=sleep, keep=keep)
    if existing[0].get("compute") == BATCH_COMPUTE:  # a multi-node job: Batch's calls, never ECS's
        return repair_batch_run(clients, config, existing, now=now, dry_run=dry_run, sleep=sleep)
    state = start_state(existing[0], now, timedelta(seconds=config.claim_seconds), age=existing_age(existing))
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
    return replace(flows.keep(clients, config, existing, why, now=now, sleep=sleep), decision="repair")


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
    return start_claimed(
        clients, config, "repair", "retried-start", claimed, now=now, sleep=sleep, look_first=True, check_image=True
    )


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
    decision = flows.decide(config, record, stop)
    if decision.action in {stops.IGNORE, stops.NO_OP, stops.DUPLICATE}:
        return None
    if dry_run:
        return Outcome("repair", f"would-{decision.action}", run_id=record["run_id"], reason=decision.reason)
    return replace(flows.carry_out(clients, config, stop, decision, existing, now=now, sleep=sleep), decision="repair")


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
    if flows.image_compute(image) != config.default_compute:
        return None
    spec = flows.push_spec(image.digest, flows.git_sha_from_tags(image.tags), config.default_compute)
    if read_record(clients.s3, config.bucket, spec.run_id) is not None:
        return None  # started, or repaired above
    refusal = flows.refuse_image(clients, config, image)
    if refusal is not None:
        return Outcome("reconcile", "not-an-image", digest=image.digest, reason=refusal)
    if dry_run:
        return Outcome("reconcile", "would-start", run_id=spec.run_id, digest=spec.digest)
    try:
        started = flows.start_push_run(clients, config, spec, "reconcile", clock=clock, sleep=sleep)
        return None if started.outcome == "already-trained" else replace(started, decision="reconcile")
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
    if not dry_run:  # a sweep whose run's (or refit's) stop event was lost: its next sets, refit or end
        outcomes += _advance_sweeps(clients, config, oldest, failures, clock=clock, sleep=sleep)
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


def _advance_sweeps(
    clients: Clients, config: Config, oldest: datetime | None, failures: list[str], *, clock: Clock, sleep: Sleep
) -> list[Outcome]:
    """trigger.sweep_flow.advance_open_sweeps, each sweep's state logged; a failure is added to `failures`."""
    outcomes: list[Outcome] = []
    try:
        for request_id, started, record in advance_open_sweeps(clients, config, since=oldest, clock=clock, sleep=sleep):
            outcomes += started
            log_decision("sweep", record["state"], event_id="reconcile", request_id=request_id)
    except (TriggerError, ClientError) as error:
        failures.append(f"sweeps: {type(error).__name__}: {error}")
    return outcomes


# --- a multi-node run whose start or end was lost: repaired through Batch, never ECS -------------------


def repair_batch_run(
    clients: Clients, config: Config, existing: tuple[Record, str], *, now: datetime, dry_run: bool, sleep: Sleep
) -> Outcome | None:
    """Reconcile's repair of a non-final multi-node run (`repair_run`), through Batch only.

    - a start that never got its job (its claim released or expired): taken over as any start is
      (trigger.starts: ListJobs by name first, then SubmitJob);
    - a job Batch describes as FAILED (its event lost): marked failed by the event's own checks;
    - a job Batch no longer knows, of a run that is not final: marked failed (it cannot end otherwise).
    None while the job is alive or has succeeded (the trainer writes that ending itself), or while
    another invocation is starting it.
    """
    record = existing[0]
    state = start_state(record, now, timedelta(seconds=config.claim_seconds), age=existing_age(existing))
    if state == CLAIMABLE:
        return _repair_batch_start(clients, config, existing, now=now, dry_run=dry_run, sleep=sleep)
    job_arn = record.get("task_arn")
    if state == IN_FLIGHT or not isinstance(job_arn, str):
        return None
    return _repair_batch_job(clients, config, existing, job_arn, now=now, dry_run=dry_run, sleep=sleep)


def _repair_batch_start(
    clients: Clients, config: Config, existing: tuple[Record, str], *, now: datetime, dry_run: bool, sleep: Sleep
) -> Outcome | None:
    record = existing[0]
    run_id = str(record["run_id"])
    if dry_run:
        return Outcome("repair", "would-start", run_id=run_id, attempt=record.get("attempt"))
    if not config.batch_job_queue:
        reason = "a multi-node run, but this stack no longer deploys Batch (var.batch.enabled)"
        return Outcome("repair", "skipped", run_id=run_id, reason=reason)
    spec_of(record)  # a damaged record (its node count) is named before anything is called
    return _repair_start(clients, config, existing, now=now, dry_run=False, sleep=sleep)


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
    return replace(flows.handle_batch_job_event(clients, config, event, clock=lambda: now), decision="repair")


# --- the command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trigger.reconcile", description=__doc__.split("\n\n")[0])
    window = parser.add_mutually_exclusive_group()
    window.add_argument(
        "--since-hours", type=float, help="only runs written and images pushed this recently (default: the look-back)"
    )
    window.add_argument("--all", action="store_true", help="every run and image, however old")
    parser.add_argument("--dry-run", action="store_true", help="list what would start; start nothing")
    args = parser.parse_args(argv)
    if args.since_hours is not None and args.since_hours <= 0:
        parser.error(f"--since-hours must be positive, got {args.since_hours}")

    try:
        config = load_config()
        since = None if args.all else timedelta(days=config.reconcile_lookback_days)
        if args.since_hours is not None:
            since = timedelta(hours=args.since_hours)
        outcomes = reconcile(default_clients(), config, since=since, dry_run=args.dry_run)
    except (TriggerError, BotoCoreError, ClientError) as error:  # no credentials, expired token, denied…
        log_decision("reconcile", "failed", error=f"{type(error).__name__}: {error}")
        return 1
    for outcome in outcomes:
        log_decision(**outcome.fields())
    started = sum(o.outcome in {"started", "retried-start"} for o in outcomes)
    log_decision("reconcile", "done", started=started, decisions=len(outcomes), dry_run=args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
