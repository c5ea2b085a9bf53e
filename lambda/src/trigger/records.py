"""The run record, `runs/<run_id>/status.json` in the artifacts bucket (docs/contracts.md).

It is what makes a start exactly-once beyond ECS's 24-hour clientToken window: the trigger creates
it (`queued`, no task ARN) with `If-None-Match: *` before RunTask and sets `task_arn` after, with
`If-Match` on the ETag it read. Every update is a read-modify-write retried on a lost race, because
the trainer writes the same object (running, interrupted, succeeded, failed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from trigger.compute import BATCH_COMPUTE, MAX_NODES
from trigger.errors import RecordConflictError
from trigger.runs import RunSpec
from trigger.s3json import Sleep, get_json, put_json, update_json

SCHEMA = 1
STATES = ("queued", "running", "interrupted", "succeeded", "failed", "stopped-early")
FINAL_STATES = frozenset({"succeeded", "failed", "stopped-early"})  # no attempt follows; stopped-early: ASHA
SOURCES = ("push", "retrain", "spot-resume", "reconcile")

Record = dict[str, Any]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_key(run_id: str) -> str:
    return f"runs/{run_id}/status.json"


def new_record(spec: RunSpec, source: str, now: datetime) -> Record:
    """A `queued` record for the first attempt of a run, before any task exists."""
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {SOURCES}")
    at = timestamp(now)
    nodes = {"nodes": spec.nodes} if spec.compute == BATCH_COMPUTE else {}
    return nodes | {
        "schema": SCHEMA,
        "run_id": spec.run_id,
        "state": "queued",
        "attempt": spec.attempt,
        "source": source,
        "image_digest": spec.digest,
        "git_sha": spec.git_sha,
        "params": dict(spec.params),
        "compute": spec.compute,
        "on_demand": spec.on_demand,
        "task_arn": None,
        "claimed_at": at,
        "reason": None,
        "version": None,
        "created_at": at,
        "updated_at": at,
        "history": [{"at": at, "state": "queued", "attempt": spec.attempt, "reason": None}],
    }


def is_started(record: Record) -> bool:
    """A record with a task ARN, or past `queued`, is a run that was started: duplicates start nothing."""
    return record.get("task_arn") is not None or record.get("state") != "queued"


STARTED, IN_FLIGHT, CLAIMABLE = "started", "in-flight", "claimable"


def parse_timestamp(text: object) -> datetime | None:
    """A record timestamp ("2026-11-25T19:00:00Z") as a datetime, or None when absent or unreadable."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def start_state(record: Record, now: datetime, claim: timedelta, *, age: timedelta | None = None) -> str:
    """Where the start of the record's attempt stands. Pure.

    - `started`: it has a task, or the trainer moved it past `queued`: nothing more to start;
    - `in-flight`: claimed less than `claim` ago (`claimed_at`) and no task yet: another invocation is
      starting it right now, so this one must not call RunTask (it raises a retryable error instead);
    - `claimable`: the claim was released after a failed start (`claimed_at` null) or is older than
      `claim` (its invocation died): whoever wins the compare-and-swap on the record may start it.

    A record written before claims existed has no `claimed_at`; its `updated_at` stands in.
    `age`: how long ago S3 says the record was last written (trigger.s3json.Found.age). The claim is the
    last write of a queued record without a task, so this is the claim's age by S3's clock, the same for
    every reader; only without it (a stubbed S3) is `now` minus `claimed_at` used.
    """
    if is_started(record):
        return STARTED
    if "claimed_at" in record and record["claimed_at"] is None:
        return CLAIMABLE  # released after a failed start
    if age is not None:
        return IN_FLIGHT if age < claim else CLAIMABLE
    claimed = parse_timestamp(record["claimed_at"] if "claimed_at" in record else record.get("updated_at"))
    if claimed is not None and now - claimed < claim:
        return IN_FLIGHT
    return CLAIMABLE


def spec_of(record: Record) -> RunSpec:
    """The run as the record describes it (a retried start repeats exactly the first request).

    A record whose attempt or digest is missing or of the wrong type raises RecordConflictError
    naming the field (reconcile reports that run and goes on with the others).
    """
    attempt, digest = record.get("attempt"), record.get("image_digest")
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise RecordConflictError(
            f"run record {record.get('run_id')!r}: attempt={attempt!r:.40} is not a positive integer"
        )
    if not isinstance(digest, str):
        raise RecordConflictError(f"run record {record.get('run_id')!r}: image_digest={digest!r:.80} is not a string")
    compute = str(record.get("compute") or "cpu")  # a record written before GPU runs existed is a Fargate run
    return RunSpec(
        run_id=record["run_id"],
        attempt=attempt,
        digest=digest,
        git_sha=record.get("git_sha"),
        params=dict(record.get("params") or {}),
        compute=compute,
        on_demand=record.get("on_demand") is True,
        nodes=record_nodes(record) if compute == BATCH_COMPUTE else 1,
    )


def record_nodes(record: Record) -> int:
    """The node count a multi-node run record holds; RecordConflictError naming it when it is not one."""
    nodes = record.get("nodes")
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 2 <= nodes <= MAX_NODES:
        raise RecordConflictError(
            f"run record {record.get('run_id')!r}: nodes={nodes!r:.40} is not a node count from 2 to {MAX_NODES}"
        )
    return nodes


def create_record(s3: Any, bucket: str, record: Record, *, sleep: Sleep = time.sleep) -> str | None:
    """Create the record unless one exists; return its ETag, or None when it already existed."""
    return put_json(s3, bucket, record_key(record["run_id"]), record, etag=None, sleep=sleep)


def read_record(s3: Any, bucket: str, run_id: str) -> tuple[Record, str] | None:
    """The record and its ETag (a trigger.s3json.Found: with S3's `age` of it), or None when there is none."""
    found = get_json(s3, bucket, record_key(run_id))
    if found is None:
        return None
    record = found[0]
    if not isinstance(record, dict) or record.get("run_id") != run_id:
        raise RecordConflictError(
            f"s3://{bucket}/{record_key(run_id)} is not a run record for {run_id!r}: {record!r:.200}"
        )
    return found


def update_record(
    s3: Any,
    bucket: str,
    run_id: str,
    change: Callable[[Record], Record | None],
    *,
    now: datetime,
    known: tuple[Record, str] | None = None,
    sleep: Sleep = time.sleep,
) -> tuple[Record, str] | None:
    """Compare-and-swap the record (trigger.s3json.update_json), stamping `updated_at`.

    `change` returns the new record, or None to leave it as it is; on a lost race it is applied
    again to the fresh copy. Returns what was written and its new ETag, or None when unchanged.
    """

    def stamped(record: Record) -> Record | None:
        changed = change(record)
        if changed is not None:
            changed["updated_at"] = timestamp(now)
        return changed

    return update_json(
        s3,
        bucket,
        record_key(run_id),
        stamped,
        read=lambda: read_record(s3, bucket, run_id),
        known=known,
        sleep=sleep,
    )


def append_history(record: Record, now: datetime, reason: str | None) -> None:
    record.setdefault("history", []).append(
        {"at": timestamp(now), "state": record["state"], "attempt": record["attempt"], "reason": reason}
    )
