"""The status record: the trainer moves the state and keeps what the trigger wrote."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from trainer.runstate import (
    LeaseHeldError,
    RunStateError,
    check_lease,
    lease_owner,
    new_record,
    read_status,
    set_state,
    status_key,
    update_status,
    utc_now,
)
from trainer.store import LocalStore, Store

RUN = "push-0123456789abcdef0123"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return LocalStore(tmp_path)


def create() -> dict[str, Any]:
    return new_record(RUN, now="2026-11-25T19:00:00Z", source="manual")


def test_record_is_created_in_the_contract_shape_when_the_trigger_wrote_none(store: Store) -> None:
    record = set_state(store, RUN, "running", attempt=1, create=create)
    assert set(record) == {
        "schema", "run_id", "state", "attempt", "source", "image_digest", "git_sha", "params",
        "task_arn", "reason", "version", "created_at", "updated_at", "history",
    }  # fmt: skip
    assert read_status(store, RUN) == record
    assert record["state"] == "running"
    assert [h["state"] for h in record["history"]] == ["running"]


def test_update_keeps_the_fields_the_trigger_owns(store: Store) -> None:
    # GIVEN a record the trigger created and started
    trigger_record = new_record(
        RUN, now="2026-11-25T19:00:00Z", source="push", task_arn="arn:aws:ecs:us-east-1:1:task/c/abc",
        image_digest="sha256:" + "a" * 64, params={"epochs": 3},
        history=[{"at": "2026-11-25T19:00:00Z", "state": "queued", "attempt": 1, "reason": None}],
    )  # fmt: skip
    store.put(status_key(RUN), json.dumps(trigger_record).encode())
    # WHEN the trainer fails the run
    set_state(store, RUN, "failed", attempt=1, reason="RuntimeError: boom", create=create)
    # THEN its fields are kept and the history grows
    record = read_status(store, RUN)
    assert record is not None
    assert record["task_arn"] == "arn:aws:ecs:us-east-1:1:task/c/abc"
    assert record["source"] == "push"
    assert record["params"] == {"epochs": 3}
    assert (record["state"], record["reason"]) == ("failed", "RuntimeError: boom")
    assert [h["state"] for h in record["history"]] == ["queued", "failed"]


def test_concurrent_updates_are_all_applied(store: Store) -> None:
    # GIVEN eight writers appending to the same record at the same time (trigger and trainer race)
    set_state(store, RUN, "running", attempt=1, create=create)
    start = threading.Barrier(8)

    def add(i: int) -> None:
        start.wait()
        update_status(store, RUN, lambda r: r.setdefault("marks", []).append(i), create=create)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(8)))
    record = read_status(store, RUN)
    assert record is not None
    assert sorted(record["marks"]) == list(range(8))


def test_malformed_record_is_reported_not_overwritten(store: Store) -> None:
    store.put(status_key(RUN), b'{"state": "exploded"}')
    with pytest.raises(RunStateError, match="exploded"):
        set_state(store, RUN, "running", attempt=1, create=create)
    assert store.get(status_key(RUN)) == b'{"state": "exploded"}'


def test_unknown_state_is_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="'done'"):
        set_state(store, RUN, "done", attempt=1, create=create)


# --- the lease across AWS Batch attempts ------------------------------------------------------------

JOB = "4c1c2b6e-0d7f-4f4e-9a55-000000000001"


def batch_owner(job: str, attempt: str | None, host: str = "ip-10-0-1-23") -> str:
    """A Batch trainer's lease owner as runstate.lease_owner builds it, on another host."""
    environ = {"AWS_BATCH_JOB_ID": f"{job}#0"} | ({"AWS_BATCH_JOB_ATTEMPT": attempt} if attempt else {})
    return host + lease_owner(environ)[lease_owner(environ).index(":") :]


@pytest.mark.parametrize(
    ("holder", "starter", "takes_over"),
    [
        (("job", "1"), ("job", "2"), True),  # Batch retried the job after a lost host
        (("job", None), ("job", None), True),  # no attempt numbers: the same job id is an earlier attempt
        (("job", "2"), ("job", "2"), False),  # the same attempt: never two trainers of it
        (("job", "3"), ("job", "2"), False),  # a later attempt holds it
        (("job", "1"), ("other", "2"), False),  # another job of the same run: the TTL decides
        (None, ("job", "2"), False),  # a Fargate trainer holds it
    ],
)
def test_a_later_attempt_of_the_same_batch_job_takes_over_a_fresh_lease_and_nothing_else_does(
    holder: tuple[str, str | None] | None, starter: tuple[str, str | None], takes_over: bool
) -> None:
    # GIVEN a lease renewed just now by a trainer on another host
    owner = "ip-10-0-9-9:1:0badcafe" if holder is None else batch_owner(JOB if holder[0] == "job" else "x", holder[1])
    record = create() | {"lease": {"owner": owner, "attempt": 1, "heartbeat_at": utc_now()}}
    mine = lease_owner(
        {"AWS_BATCH_JOB_ID": f"{JOB if starter[0] == 'job' else 'y'}#0", "AWS_BATCH_JOB_ATTEMPT": starter[1] or ""}
    )
    # WHEN a trainer with the trigger's same attempt number starts THEN only a retry of the holder's own job takes over
    if takes_over:
        check_lease(record, mine, 1, datetime.now(UTC))
    else:
        with pytest.raises(LeaseHeldError):
            check_lease(record, mine, 1, datetime.now(UTC))


def test_a_batch_owner_names_the_job_without_its_node_and_the_attempt() -> None:
    owner = lease_owner({"AWS_BATCH_JOB_ID": f"{JOB}#3", "AWS_BATCH_JOB_ATTEMPT": "2"})
    assert owner.endswith(f":batch-job={JOB}/2")
    assert ":batch-job=" not in lease_owner({})
