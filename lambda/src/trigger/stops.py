"""What to do about a stopped training task: a pure decision over (run record, stop event, attempts).

`decide_stop` makes no AWS call; `trigger.flows.handle_task_stop` reads the record, asks here, and
carries the decision out (and, for a write, asks again on each compare-and-swap round, so a
concurrent writer's change is judged by the same table). Every decision is named, and a stop that is
not resumed is never logged as "resume":

- `ignore`: the task is not STOPPED yet (a Spot notice while checkpointing): nothing.
- `no-op`: the trainer's own ending (exit 0/75), a task we did not start (no run id, no record), a
  record that moved on, or (decided in flows) an event ECS contradicts: nothing.
- `duplicate`: this interruption was already resumed: nothing.
- `resume`: a Spot interruption of the record's current attempt with attempts left: the next attempt
  is claimed in the record, then RunTask. A GPU run's task on the Spot GPU provider that never started
  for lack of capacity is resumed the same way (its next attempt goes to the on-demand GPU provider):
  an EC2 capacity provider does not refuse RunTask, its task waits and then stops. So is a task the
  trigger itself stopped on an EC2 Spot notice for its instance (trigger.notices: the record's
  `spot_notice` names the task): the trainer checkpointed and exited 75 on the trigger's StopTask.
- `retry-resume`: the next attempt was claimed but has no task: take over the claim, RunTask.
- `keep`: the trainer's exit 0 of a run recorded `succeeded` with a `version` whose image is not kept
  yet (`image_kept_at`): tag its digest `keep-<run_id>` in ECR (trigger.keep), then record it.
- `fail`: a failure stop of the record's current attempt and task: record `failed`.
- `exhausted`: a Spot interruption of the last allowed attempt: record `failed`, then raise.
- `conflict`: the record contradicts the event (another digest, an attempt ahead of it): raise.
- `invalid`: the event lacks what the decision needs (its attempt): raise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trigger.ecs import task_environment
from trigger.events import DIGEST, BatchJobEvent, TaskStopEvent, shown
from trigger.records import FINAL_STATES, Record, is_started, record_key
from trigger.runs import RUN_ID, TAG_PREFIX

IGNORE, NO_OP, DUPLICATE = "ignore", "no-op", "duplicate"
RESUME, RETRY_RESUME, FAIL, EXHAUSTED = "resume", "retry-resume", "fail", "exhausted"
KEEP, CONFLICT, INVALID = "keep", "conflict", "invalid"
DECISIONS = (IGNORE, NO_OP, DUPLICATE, RESUME, RETRY_RESUME, FAIL, EXHAUSTED, KEEP, CONFLICT, INVALID)

# ASCII decimal, 1..99 (str.isdigit() accepts "²", which int() then refuses); see config.MAX_ATTEMPTS_LIMIT.
_ATTEMPT = re.compile(r"[1-9][0-9]?", re.ASCII)
RESUMABLE_STATES = frozenset({"queued", "running", "interrupted"})
# Exit codes of a stop that is not a failure: 0 the trainer finished (it wrote `succeeded`), 73 a
# duplicate trainer found the run's lease held by a live one and did nothing (the live one owns the
# record), 75 it was stopped and checkpointed (it wrote `interrupted`; without a Spot stop code a
# person stopped it, and a retrain request trains it again). docs/contracts.md, trainer exit codes.
NOT_FAILURE_EXIT_CODES = frozenset({0, 73, 75})
DUPLICATE_TRAINER_EXIT = 73
# A task that never started because no instance came for it. ECS stops such a task with stopCode
# TaskFailedToStart (ECS API Task.stopCode; "Amazon ECS stopped tasks error messages",
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/stopped-task-error-codes.html) and a
# stoppedReason naming the capacity or the resource no instance had ("RESOURCE:GPU" and the like,
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/api_failures_messages.html; "EMPTY
# CAPACITY PROVIDER" when the provider has no instance). The wording is not an API contract, so this
# matches the words, not a whole sentence; a TaskFailedToStart for any other reason (an image that
# cannot be pulled, a missing role) stays a failure.
FAILED_TO_START = "TaskFailedToStart"
_NO_CAPACITY = re.compile(
    r".*(?:capacity|RESOURCE:(?:GPU|CPU|MEMORY|ENI)|no container instances?|insufficient).*",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class StopDecision:
    """One named decision about one stop; `attempt` is the attempt it acts on (the next one for a resume)."""

    action: str
    reason: str
    run_id: str | None = None
    attempt: int | None = None
    task_arn: str | None = None  # for a duplicate: the task of the attempt that was already resumed


def stop_attempt(stop: TaskStopEvent) -> int | None:
    """The stopped task's TRAINER_ATTEMPT override, or None when it is missing or not a positive number."""
    raw = stop.environment.get("TRAINER_ATTEMPT")
    if raw is None or not _ATTEMPT.fullmatch(raw):
        return None
    return int(raw)


def needs_record(stop: TaskStopEvent) -> bool:
    """Whether the decision for `stop` depends on the run record (else: decide without reading it)."""
    run_id = stop.environment.get("TRAINER_RUN_ID")
    if stop.last_status != "STOPPED" or not run_id or not RUN_ID.fullmatch(run_id) or stop_attempt(stop) is None:
        return False
    # exit 0: the record says whether the run published a version whose image must be kept; exit 75:
    # whether the trigger stopped the task on a Spot notice (its `spot_notice`), to resume it
    return stop.resumable or stop.exit_code not in {DUPLICATE_TRAINER_EXIT}


def keep_pending(record: Record) -> str | None:
    """Why the record's image must be kept now (a trigger's run that succeeded with a version, its image
    not kept yet), or None when there is nothing to keep. Pure."""
    if record.get("source") == "manual" or record.get("state") != "succeeded" or not record.get("version"):
        return None
    if record.get("image_kept_at") is not None or not DIGEST.fullmatch(str(record.get("image_digest"))):
        return None
    return f"run succeeded with version {record['version']}: its image {record['image_digest']} must stay pullable"


def _ours(run_id: str | None) -> bool:
    return run_id is not None and RUN_ID.fullmatch(run_id) is not None


def _no_attempt(stop: TaskStopEvent) -> StopDecision:
    raw = stop.environment.get("TRAINER_ATTEMPT")
    return StopDecision(
        INVALID, f"task {stop.task_arn} has no valid TRAINER_ATTEMPT container override (got {shown(raw)})"
    )


def never_placed_on(record: Record | None, stop: TaskStopEvent, spot_gpu_provider: str | None) -> bool:
    """Whether `stop` is a GPU run's task on the Spot GPU provider that never started for lack of
    capacity (so its run resumes on the on-demand GPU provider). Pure.

    Where the task was placed: the event's capacityProviderName, else (an event without it) what the
    record says of the attempt's task.
    """
    if spot_gpu_provider is None or record is None or record.get("compute") != "gpu":
        return False
    placed = stop.capacity_provider
    if placed is None and record.get("task_arn") == stop.task_arn:
        placed = record.get("capacity_provider")
    return (
        placed == spot_gpu_provider
        and stop.last_status == "STOPPED"
        and stop.stop_code == FAILED_TO_START
        and _NO_CAPACITY.fullmatch(stop.stopped_reason or "") is not None
    )


def stopped_on_notice(record: Record | None, stop: TaskStopEvent) -> bool:
    """Whether `stop` ends a task the trigger stopped for an EC2 Spot notice of its instance
    (trigger.notices): the record's `spot_notice` names this task, and the trainer neither finished
    (exit 0) nor stood down for a live one (73). Whatever else it did after that StopTask (75 after its
    checkpoint, killed at the stop timeout) follows from the notice, so the run resumes. Pure."""
    marked = record.get("spot_notice") if record is not None else None
    return (
        isinstance(marked, Mapping)
        and marked.get("task_arn") == stop.task_arn
        and stop.last_status == "STOPPED"
        and stop.exit_code not in {0, DUPLICATE_TRAINER_EXIT}
    )


def decide_stop(
    record: Record | None, stop: TaskStopEvent, max_attempts: int, *, spot_gpu_provider: str | None = None
) -> StopDecision:
    """The decision for `stop` given the run's record (None when there is none). Pure.

    `spot_gpu_provider`: the GPU Spot capacity provider when an on-demand GPU provider stands behind it
    (PUSHTRAIN_GPU_ON_DEMAND_CAPACITY_PROVIDER); its tasks that never started for lack of capacity are
    resumed like a Spot interruption. None: no such fallback is deployed.
    """
    run_id = stop.environment.get("TRAINER_RUN_ID") or None
    if stop.last_status != "STOPPED":
        return StopDecision(IGNORE, f"lastStatus {stop.last_status}", run_id if _ours(run_id) else None)
    if run_id is not None and not _ours(run_id):
        return StopDecision(NO_OP, f"TRAINER_RUN_ID={shown(run_id)} is not a run id the trigger makes: not its task")
    if stop.resumable or never_placed_on(record, stop, spot_gpu_provider) or stopped_on_notice(record, stop):
        return _decide_interruption(record, stop, run_id, max_attempts)
    return _decide_failure(record, stop, run_id)


def _decide_interruption(  # noqa: PLR0911 (a decision table: one return per row)
    record: Record | None, stop: TaskStopEvent, run_id: str | None, limit: int
) -> StopDecision:
    what = f"stopCode {stop.stop_code}"
    if not run_id:
        return StopDecision(NO_OP, f"{what}: no TRAINER_RUN_ID override: not a run the trigger started")
    attempt = stop_attempt(stop)
    if attempt is None:
        return _no_attempt(stop)
    if record is None:
        return StopDecision(NO_OP, f"{what}: {record_key(run_id)} is missing: not a run the trigger started", run_id)
    digest = stop.environment.get("TRAINER_IMAGE_DIGEST")
    if digest and digest != record.get("image_digest"):
        return StopDecision(
            CONFLICT,
            f"run {run_id}: the stopped task ran {shown(digest)}, the record says {record.get('image_digest')}",
        )
    at, following = record.get("attempt", 0), attempt + 1
    if at > following or (at == following and is_started(record)):
        return StopDecision(DUPLICATE, f"attempt {attempt} was already resumed", run_id, at, record.get("task_arn"))
    if at == following:
        return StopDecision(RETRY_RESUME, f"attempt {following} was claimed but has no task", run_id, following)
    if at != attempt:
        return StopDecision(
            CONFLICT, f"run {run_id} record is at attempt {at}, older than stopped {attempt}", run_id, attempt
        )
    if record.get("state") not in RESUMABLE_STATES:
        return StopDecision(NO_OP, f"run is {record.get('state')}; nothing to resume", run_id, attempt)
    if following > limit:
        return StopDecision(
            EXHAUSTED,
            f"run {run_id} attempt {attempt} was interrupted ({stop.stop_code}); "
            f"PUSHTRAIN_MAX_ATTEMPTS={limit} allows no attempt {following}",
            run_id,
            attempt,
        )
    return StopDecision(RESUME, f"{stop.stop_code}: {stop.stopped_reason or 'no reason given'}", run_id, following)


def _decide_failure(  # noqa: PLR0911 (a decision table: one return per row)
    record: Record | None, stop: TaskStopEvent, run_id: str | None
) -> StopDecision:
    """A stop that is not a Spot interruption: `fail` the run unless it ended on its own.

    The training-failed rule delivers these (never started, OOM kill, failure exit); a task that never
    ran the trainer, or was killed, cannot write `failed` itself, and a run left `queued`/`running`
    makes every later push of its digest a duplicate. Exit 0 and 75 are the trainer's own endings.
    """
    exit_note = f"exit code {stop.exit_code}" if stop.exit_code is not None else "no exit code"
    what = f"stopCode {stop.stop_code}, {exit_note}"
    if stop.exit_code == 0 and run_id and stop_attempt(stop) is not None:
        return _decide_success(record, what, run_id, stop_attempt(stop))
    if stop.exit_code in NOT_FAILURE_EXIT_CODES:
        ending = {
            0: "the trainer recorded its result",
            73: "a duplicate trainer stood down; the live one owns the run",
        }.get(stop.exit_code, "the run stays interrupted")
        return StopDecision(NO_OP, f"{what}: not a Spot interruption; {ending}", run_id)
    if not run_id:
        return StopDecision(NO_OP, f"{what}: no TRAINER_RUN_ID override: not a run the trigger started")
    attempt = stop_attempt(stop)
    if attempt is None:
        return _no_attempt(stop)
    if record is None:
        return StopDecision(NO_OP, f"{what}: {record_key(run_id)} is missing: nothing to mark failed", run_id, attempt)
    if record.get("task_arn") not in (None, stop.task_arn):
        return StopDecision(
            NO_OP, f"{what}: the record names task {record.get('task_arn')}, not this one", run_id, attempt
        )
    if record.get("attempt") != attempt or record.get("state") in FINAL_STATES:
        return StopDecision(
            NO_OP,
            f"{what}: record is {record.get('state')} at attempt {record.get('attempt')}; left as it is",
            run_id,
            attempt,
        )
    return StopDecision(FAIL, f"{what}: {stop.stopped_reason or 'no reason given'}", run_id, attempt)


def _decide_success(record: Record | None, what: str, run_id: str, attempt: int | None) -> StopDecision:
    """The trainer finished (it wrote its result): keep the image of a run that published a version."""
    if record is None:
        return StopDecision(NO_OP, f"{what}: {record_key(run_id)} is missing: no image to keep", run_id, attempt)
    why = keep_pending(record)
    if why is None:
        kept = record.get("image_kept_at")
        state = f"image kept at {kept}" if kept else f"record {record.get('state')}, version {record.get('version')}"
        return StopDecision(NO_OP, f"{what}: the trainer recorded its result; {state}: nothing to keep", run_id)
    return StopDecision(KEEP, f"{what}: {why}", run_id, attempt)


def unverified(stop: TaskStopEvent, task: Mapping[str, Any] | None, container_name: str) -> str | None:
    """Why ECS's description of the task does not back what the stop event claims, or None when it does.

    Anyone allowed to invoke the function could send a stop event; before a stop resumes or fails a
    run, DescribeTasks must show that task stopped, with the event's run id and attempt, stop code and
    exit code. A field ECS leaves out of its description is not counted as a contradiction.
    """
    if task is None:
        return f"ECS does not know task {stop.task_arn} (stopped tasks fade after about an hour); reconcile repairs it"
    claims: list[tuple[str, object, object]] = [("lastStatus", stop.last_status, task.get("lastStatus"))]
    env = task_environment(dict(task), container_name)
    for name in ("TRAINER_RUN_ID", "TRAINER_ATTEMPT"):
        claims.append((name, stop.environment.get(name), env.get(name)))
    if task.get("stopCode") is not None:
        claims.append(("stopCode", stop.stop_code, task.get("stopCode")))
    exit_codes = [c.get("exitCode") for c in task.get("containers") or [] if c.get("name") == container_name]
    if exit_codes and exit_codes[0] is not None:
        claims.append(("exitCode", stop.exit_code, exit_codes[0]))
    wrong = [f"{name}: event {said!r}, ECS {known!r}" for name, said, known in claims if said != known]
    return f"ECS contradicts the event about task {stop.task_arn}: {'; '.join(wrong)}" if wrong else None


# --- AWS Batch: a multi-node job Batch gave up on ------------------------------------------------------


def unverified_job_failure(event: BatchJobEvent, job: Mapping[str, Any] | None) -> str | None:
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
