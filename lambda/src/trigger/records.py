"""The run record, `runs/<run_id>/status.json` in the artifacts bucket (docs/contracts.md).

It is what makes a start exactly-once beyond ECS's 24-hour clientToken window: the trigger creates
it (`queued`, no task ARN) with `If-None-Match: *` before RunTask and sets `task_arn` after, with
`If-Match` on the ETag it read. Every update is a read-modify-write retried on a lost race, because
the trainer writes the same object (running, interrupted, succeeded, failed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from trigger.errors import RecordConflictError, StoreAccessError
from trigger.runs import RunSpec

SCHEMA = 1
STATES = ("queued", "running", "interrupted", "succeeded", "failed")
SOURCES = ("push", "retrain", "spot-resume", "reconcile")
_PRECONDITION_FAILED = {"PreconditionFailed", "412"}
# S3 may answer a conditional write racing another one with 409 instead of 412: the outcome of the
# other write is not known yet, so an update re-reads, and a create backs off and looks again.
CONDITIONAL_CONFLICT = {"ConditionalRequestConflict", "409"}
_LOST_RACE = _PRECONDITION_FAILED | CONDITIONAL_CONFLICT
_CREATE_TRIES = 4
CONFLICT_BACKOFF_S = 0.2  # seconds, doubled per try: 0.2 + 0.4 + 0.8 at most
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}  # NotFound: what a HEAD would say
_UPDATE_TRIES = 4

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
    return {
        "schema": SCHEMA,
        "run_id": spec.run_id,
        "state": "queued",
        "attempt": spec.attempt,
        "source": source,
        "image_digest": spec.digest,
        "git_sha": spec.git_sha,
        "params": dict(spec.params),
        "task_arn": None,
        "reason": None,
        "version": None,
        "created_at": at,
        "updated_at": at,
        "history": [{"at": at, "state": "queued", "attempt": spec.attempt, "reason": None}],
    }


def is_started(record: Record) -> bool:
    """A record with a task ARN, or past `queued`, is a run that was started: duplicates start nothing."""
    return record.get("task_arn") is not None or record.get("state") != "queued"


def spec_of(record: Record) -> RunSpec:
    """The run as the record describes it (a retried start repeats exactly the first request)."""
    return RunSpec(
        run_id=record["run_id"],
        attempt=int(record["attempt"]),
        digest=record["image_digest"],
        git_sha=record.get("git_sha"),
        params=dict(record.get("params") or {}),
    )


def error_code(error: ClientError) -> str:
    """The code of an AWS error ("PreconditionFailed", "409", ...)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def _body(record: Record) -> bytes:
    return json.dumps(record, indent=2, sort_keys=True).encode()


def create_record(s3: Any, bucket: str, record: Record, *, sleep: Callable[[float], None] = time.sleep) -> str | None:
    """Create the record unless one exists; return its ETag, or None when it already existed.

    A 409 (a concurrent conditional write in flight) backs off and reads: a record there now is a
    duplicate (None); none means the other write did not land, so the create is tried again.
    """
    key = record_key(record["run_id"])
    for attempt in range(_CREATE_TRIES):
        try:
            response = s3.put_object(
                Bucket=bucket, Key=key, Body=_body(record), ContentType="application/json", IfNoneMatch="*"
            )
        except ClientError as error:
            code = error_code(error)
            if code in _PRECONDITION_FAILED:
                return None
            if code not in CONDITIONAL_CONFLICT:
                raise
            sleep(CONFLICT_BACKOFF_S * 2**attempt)
            if get_json(s3, bucket, key) is not None:
                return None
            continue
        return str(response["ETag"])
    raise RecordConflictError(f"s3://{bucket}/{key}: {_CREATE_TRIES} creates answered 409 ConditionalRequestConflict")


def get_json(s3: Any, bucket: str, key: str) -> tuple[Any, str] | None:
    """(parsed JSON, ETag) of an object, or None when it does not exist.

    S3 answers a missing key with 403, not 404, to a caller without s3:ListBucket on the bucket; the
    trigger needs 404 to tell "never started" from "forbidden", so a 403 raises naming the grant.
    """
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        code = error_code(error)
        if code in _NOT_FOUND:
            return None
        if code in {"AccessDenied", "403"}:
            raise StoreAccessError(
                f"s3:GetObject on s3://{bucket}/{key} was denied; if the key does not exist, S3 says so only "
                "to a role that also has s3:ListBucket on the bucket (with no s3:prefix condition)"
            ) from error
        raise
    return json.loads(response["Body"].read()), str(response["ETag"])


def read_record(s3: Any, bucket: str, run_id: str) -> tuple[Record, str] | None:
    """The record and its ETag, or None when there is none."""
    found = get_json(s3, bucket, record_key(run_id))
    if found is None:
        return None
    record, etag = found
    if not isinstance(record, dict) or record.get("run_id") != run_id:
        raise RecordConflictError(
            f"s3://{bucket}/{record_key(run_id)} is not a run record for {run_id!r}: {record!r:.200}"
        )
    return record, etag


def update_record(
    s3: Any,
    bucket: str,
    run_id: str,
    change: Callable[[Record], Record | None],
    *,
    now: datetime,
    known: tuple[Record, str] | None = None,
) -> tuple[Record, str] | None:
    """Compare-and-swap: apply `change` to the current record and write it with If-Match.

    `change` returns the new record, or None to leave it as it is. On a lost race (412 or 409) the record is
    read again and `change` applied to the fresh copy. Returns what was written and its new ETag, or
    None when `change` left the record as it was.
    """
    current = known
    for _ in range(_UPDATE_TRIES):
        if current is None:
            current = read_record(s3, bucket, run_id)
            if current is None:
                raise RecordConflictError(f"s3://{bucket}/{record_key(run_id)} disappeared while being updated")
        record, etag = current
        changed = change(json.loads(json.dumps(record)))  # the callback works on a copy
        if changed is None:
            return None
        changed["updated_at"] = timestamp(now)
        try:
            response = s3.put_object(
                Bucket=bucket,
                Key=record_key(run_id),
                Body=_body(changed),
                ContentType="application/json",
                IfMatch=etag,
            )
        except ClientError as error:
            if error_code(error) not in _LOST_RACE:
                raise
            current = None  # someone else wrote in between (412) or is writing (409): read again and re-apply
            continue
        return changed, str(response["ETag"])
    raise RecordConflictError(f"s3://{bucket}/{record_key(run_id)} changed {_UPDATE_TRIES} times while being updated")


def append_history(record: Record, now: datetime, reason: str | None) -> None:
    record.setdefault("history", []).append(
        {"at": timestamp(now), "state": record["state"], "attempt": record["attempt"], "reason": reason}
    )
