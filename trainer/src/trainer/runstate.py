"""The run status record, `runs/<run_id>/status.json` (schema in docs/contracts.md).

The trigger creates the record (`queued`) and the trainer moves it through `running`, then
`interrupted`, `succeeded` or `failed`. Both write the same object, so every update is a
read-modify-write: read with the ETag, change only the fields the caller owns, write with
`If-Match` (or `If-None-Match: *` when creating), and on a lost race start over. Fields this
module does not set (`task_arn`, `source`, `params` set by the trigger) are kept as they are.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from trainer.store import NotFound, Store

SCHEMA = 1
STATES = ("queued", "running", "interrupted", "succeeded", "failed", "stopped-early")
MAX_UPDATE_ATTEMPTS = 16
# A reason is for people reading the record or the console; a traceback belongs in the logs.
MAX_REASON_CHARS = 2000


class RunStateError(Exception):
    """The status record is malformed or could not be updated."""


# Lease: one trainer per run. A trainer takes the lease when it starts (`running`), renews it each
# epoch and gives it up when it stops; a second trainer of the same run finds a live lease and
# refuses. A lease whose heartbeat is older than LEASE_TTL_S belongs to a trainer that died without
# letting go (SIGKILL); and a higher attempt from the trigger supersedes any lease, because the
# trigger starts attempt n + 1 only after it saw attempt n's task stop.
#
# AWS Batch retries a job (a lost host, exit 75) with the same overrides, so every retry carries the
# trigger's attempt number again. A Batch trainer's owner names its job and Batch's attempt
# (AWS_BATCH_JOB_ID without the `#<node>` suffix of a multi-node job, AWS_BATCH_JOB_ATTEMPT, 1 first):
# Batch runs the attempts of one job one after another (a new attempt starts only after the previous
# one ended, docs.aws.amazon.com/batch/latest/userguide/job_retries.html), so a later attempt of the
# same job takes over the lease of an earlier one at once instead of waiting out LEASE_TTL_S.
LEASE_TTL_S = 20 * 60
BATCH_JOB_ID = "AWS_BATCH_JOB_ID"
BATCH_JOB_ATTEMPT = "AWS_BATCH_JOB_ATTEMPT"
BATCH_OWNER_MARK = ":batch-job="


class LeaseHeldError(RunStateError):
    """Another live trainer holds the run's lease."""


class LeaseLostError(RunStateError):
    """This trainer's lease was taken over (it was presumed dead); it must stop without writing."""


def lease_owner(environ: Mapping[str, str] | None = None) -> str:
    """Who this trainer is: host, process and a random part (two containers can both be pid 1).

    Under AWS Batch, `:batch-job=<job id>/<attempt>` follows (the attempt empty when Batch gave none).
    """
    environ = os.environ if environ is None else environ
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    job = environ.get(BATCH_JOB_ID, "").partition("#")[0]
    if not job:
        return owner
    attempt = environ.get(BATCH_JOB_ATTEMPT, "")
    return f"{owner}{BATCH_OWNER_MARK}{job}/{attempt if attempt.isascii() and attempt.isdecimal() else ''}"


def _batch_attempt(owner: str) -> tuple[str, int | None] | None:
    """(job id, Batch attempt or None) of a Batch trainer's owner; None for any other owner."""
    _, mark, job = owner.partition(BATCH_OWNER_MARK)
    if not mark:
        return None
    job_id, _, attempt = job.rpartition("/")
    return (job_id, int(attempt)) if attempt.isdecimal() else (job_id or job, None)


def _earlier_attempt_of_our_job(holder: str, owner: str) -> bool:
    """Whether `holder` is an earlier attempt of the Batch job `owner` belongs to (so it has ended).

    Without Batch's attempt numbers, the same job id is enough: one attempt of a job runs at a time,
    and within an attempt only the main node's rank 0 takes the lease.
    """
    theirs, mine = _batch_attempt(holder), _batch_attempt(owner)
    if theirs is None or mine is None or theirs[0] != mine[0] or not mine[0]:
        return False
    if theirs[1] is None or mine[1] is None:
        return True
    return mine[1] > theirs[1]


def _dead_here(owner: str) -> bool:
    """Whether `owner` (from lease_owner) is a process of this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdecimal():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


def _parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


# How a trainer came to hold the lease (check_lease). Only the first four prove that the previous holder
# has stopped, so only then may the new holder replace files that holder left (trainer.publish).
TAKEOVER_ENDED = ("free", "own", "superseded", "dead")
TAKEOVER_AGED = "aged"  # the holder stopped renewing: presumed dead, not proven (it may be stalled, not gone)


def _token(lease: dict[str, Any] | None) -> dict[str, Any] | None:
    """The previous holder's fencing token (owner, attempt, last heartbeat), for the record's `lease.from`."""
    return {key: lease.get(key) for key in ("owner", "attempt", "heartbeat_at")} if lease else None


def check_lease(record: dict[str, Any], owner: str, attempt: int, now: datetime) -> str:
    """How `owner` (starting `attempt`) may take the record's lease (TAKEOVER_*); LeaseHeldError when it may not."""
    lease = record.get("lease")
    if not isinstance(lease, dict) or lease.get("owner") is None:
        return "free"  # nobody holds it: the last holder let go when it stopped
    if lease.get("owner") == owner:
        return "own"
    if attempt > int(lease.get("attempt") or 0):
        return "superseded"  # the trigger started a newer attempt: the holder's task has stopped
    if _dead_here(str(lease.get("owner"))):
        return "dead"  # the holder ran on this host and its process is gone (killed; restarted by hand)
    if _earlier_attempt_of_our_job(str(lease.get("owner")), owner):
        return "superseded"  # AWS Batch retried our job (a lost host): the earlier attempt has ended
    try:
        age = (now - _parse_time(str(lease.get("heartbeat_at")))).total_seconds()
    except ValueError:
        age = float("inf")  # an unreadable heartbeat cannot keep a run locked
    if age <= LEASE_TTL_S:
        raise LeaseHeldError(
            f"run {record.get('run_id')} is being trained by {lease['owner']} (attempt {lease.get('attempt')}, "
            f"heartbeat {age:.0f} s ago); not starting a second trainer"
        )
    return TAKEOVER_AGED


# A record's created_at names the run's version; a time after now (plus this much clock skew between the
# trigger and the trainer) or before the project existed is a damaged record, not a time to name it by.
CREATED_AT_SKEW_S = 5 * 60
EARLIEST_CREATED_AT = datetime(2020, 1, 1, tzinfo=UTC)


class RecordFieldError(ValueError):
    """A field of the run record cannot mean what it must (the message names the record and the field)."""


def parse_created_at(value: object, *, where: str, now: datetime | None = None) -> datetime:
    """The record's `created_at` as a UTC time; RecordFieldError naming `where` when it cannot be one."""
    text = value if isinstance(value, str) else ""
    try:
        created = datetime.fromisoformat(text)
    except ValueError:
        raise RecordFieldError(f"{where}: created_at {value!r} is not a time like 2026-11-25T19:00:00Z") from None
    if created.tzinfo is None or created.utcoffset() != timedelta(0):
        raise RecordFieldError(f"{where}: created_at {value!r} is not in UTC (want a trailing Z)")
    now = now or datetime.now(UTC)
    if not EARLIEST_CREATED_AT <= created <= now + timedelta(seconds=CREATED_AT_SKEW_S):
        raise RecordFieldError(
            f"{where}: created_at {value!r} is not a time this run can have been created at "
            f"(now {now:%Y-%m-%dT%H:%M:%SZ})"
        )
    return created.astimezone(UTC)


def status_key(run_id: str) -> str:
    return f"runs/{run_id}/status.json"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_status(store: Store, run_id: str) -> dict[str, Any] | None:
    """The run's status record, or None when the run has no record yet."""
    try:
        data = store.get(status_key(run_id))
    except NotFound:
        return None
    return _parse(store, run_id, data)


def _parse(store: Store, run_id: str, data: bytes) -> dict[str, Any]:
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise RunStateError(f"{store.uri_of(status_key(run_id))} is not JSON: {exc}") from exc
    if not isinstance(record, dict) or record.get("state") not in STATES:
        state = record.get("state") if isinstance(record, dict) else record
        raise RunStateError(
            f"{store.uri_of(status_key(run_id))} has no valid state (got {state!r}; want one of {STATES})"
        )
    return record


def new_record(run_id: str, *, now: str, source: str, **fields: Any) -> dict[str, Any]:
    """A fresh record in the contract's shape, for a run the trigger did not create."""
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "run_id": run_id,
        "state": "queued",
        "attempt": 1,
        "source": source,
        "image_digest": None,
        "git_sha": None,
        "params": {},
        "task_arn": None,
        "reason": None,
        "version": None,
        "created_at": now,
        "updated_at": now,
        "history": [],
    }
    record.update(fields)
    return record


def update_status(
    store: Store,
    run_id: str,
    change: Callable[[dict[str, Any]], None],
    *,
    create: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Apply change to the current record (or to create() when none exists) and write it back.

    change mutates the record in place; it may run more than once when another writer wins a
    race, always on the freshest record.
    """

    def changed(current: dict[str, Any] | None) -> dict[str, Any]:
        record = create() if current is None else current
        change(record)
        return record

    record = store.update_json(
        status_key(run_id), changed, decode=lambda data: _parse(store, run_id, data), max_attempts=MAX_UPDATE_ATTEMPTS
    )
    return cast("dict[str, Any]", record)  # never None: changed() always returns a record


def set_state(
    store: Store,
    run_id: str,
    state: str,
    *,
    attempt: int | None,
    reason: str | None = None,
    version: str | None = None,
    create: Callable[[], dict[str, Any]],
    lease: tuple[str, int] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Move the run to state (appending to its history), keeping every field the trainer does not own.

    attempt None keeps the record's attempt (1 for a new record). `lease` (owner, attempt as started)
    makes the change a lease operation: `running` takes the lease (LeaseHeldError when another live trainer
    has it) or renews it; any other state gives it up (LeaseLostError when another trainer took it over, and
    then nothing is written). `extra` sets further top-level fields (the gate's outcome).

    Each call is one change with its own id: when a write committed but its response was lost, the
    retry finds the id in the history and does not append the entry a second time.
    """
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}; want one of {STATES}")
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    update = uuid.uuid4().hex

    def change(record: dict[str, Any]) -> None:
        now = utc_now()
        if lease is not None:
            owner, started_attempt = lease
            held = record.get("lease") if isinstance(record.get("lease"), dict) else None
            takeover = None
            if state == "running" and (held is None or held.get("owner") != owner):
                takeover = check_lease(record, owner, started_attempt, datetime.now(UTC))
            elif state != "running" and held is not None and held.get("owner") != owner:
                raise LeaseLostError(
                    f"run {run_id} was taken over by {held.get('owner')} (attempt {held.get('attempt')}); "
                    f"this trainer stops without recording {state!r}"
                )
            if state != "running":
                record["lease"] = None
            elif takeover is not None:  # taken now: say how, and over whom (publish reads it before replacing files)
                record["lease"] = {"owner": owner, "attempt": started_attempt, "heartbeat_at": now,
                                   "took_over": takeover, "from": _token(held)}  # fmt: skip
            else:
                record["lease"] = {**(held or {}), "owner": owner, "attempt": started_attempt, "heartbeat_at": now}
        number = attempt if attempt is not None else int(record.get("attempt") or 1)
        record["state"] = state
        record["attempt"] = number
        record["reason"] = reason
        if version is not None:
            record["version"] = version
        record.update(extra or {})
        record["updated_at"] = now
        history = record.setdefault("history", [])
        if not any(isinstance(entry, dict) and entry.get("update") == update for entry in history):
            history.append({"at": now, "state": state, "attempt": number, "reason": reason, "update": update})

    return update_status(store, run_id, change, create=create)


def heartbeat(
    store: Store,
    run_id: str,
    owner: str,
    *,
    create: Callable[[], dict[str, Any]],
    attempt: int | None = None,
    step: str | None = None,
) -> dict[str, Any]:
    """Renew this trainer's lease; LeaseLostError (nothing written) when another trainer has taken the run over.

    The fence: a conditional write (`If-Match`) on the record that succeeds only while the lease still holds
    this trainer's token, its `owner` (a random id per process) and the `attempt` it started as. Called each
    epoch and, with `step`, immediately before every irreversible step (the manifest PUT, the gate, the
    champion move): a trainer whose lease was taken over learns it there and writes nothing more.
    """

    def change(record: dict[str, Any]) -> None:
        held = record.get("lease") if isinstance(record.get("lease"), dict) else None
        if held is None or held.get("owner") != owner or (attempt is not None and held.get("attempt") != attempt):
            holder = f"{held.get('owner')} (attempt {held.get('attempt')})" if held else "nobody"
            doing = f"before {step}" if step else "renewing its lease"
            raise LeaseLostError(
                f"run {run_id}: lease now held by {holder}; this trainer stops {doing} and writes nothing more"
            )
        held["heartbeat_at"] = utc_now()
        if step is not None:
            held["step"] = step

    return update_status(store, run_id, change, create=create)
