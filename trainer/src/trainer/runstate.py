"""The run status record, `runs/<run_id>/status.json` (schema in docs/contracts.md).

The trigger creates the record (`queued`) and the trainer moves it through `running`, then
`interrupted`, `succeeded` or `failed`. Both write the same object, so every update is a
read-modify-write: read with the ETag, change only the fields the caller owns, write with
`If-Match` (or `If-None-Match: *` when creating), and on a lost race start over. Fields this
module does not set (`task_arn`, `source`, `params` set by the trigger) are kept as they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from trainer.store import NotFound, Store

SCHEMA = 1
STATES = ("queued", "running", "interrupted", "succeeded", "failed")
MAX_UPDATE_ATTEMPTS = 16
# A reason is for people reading the record or the console; a traceback belongs in the logs.
MAX_REASON_CHARS = 2000


class RunStateError(Exception):
    """The status record is malformed or could not be updated."""


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
) -> dict[str, Any]:
    """Move the run to state (appending to its history), keeping every field the trainer does not own.

    attempt None keeps the record's attempt (1 for a new record).
    """
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}; want one of {STATES}")
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."

    def change(record: dict[str, Any]) -> None:
        now = utc_now()
        number = attempt if attempt is not None else int(record.get("attempt") or 1)
        record["state"] = state
        record["attempt"] = number
        record["reason"] = reason
        if version is not None:
            record["version"] = version
        record["updated_at"] = now
        record.setdefault("history", []).append({"at": now, "state": state, "attempt": number, "reason": reason})

    return update_status(store, run_id, change, create=create)
