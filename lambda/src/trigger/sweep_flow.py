"""What the trigger does for a sweep: start its runs as slots free, refit the best, finish. One function,
`advance`, does it for every caller, so the decisions are made in one place:

- the retrain workflow's invocations with the sweep request (`handle_sweep`): the first creates
  `sweeps/<request_id>.json` (If-None-Match); a request id reused with another image or other sets is
  refused (InvalidEventError): a sweep is immutable. Each later one answers the state and the summary;
- each stop event of a sweep run's task (its overrides carry TRAINER_SWEEP_ID) or of the refit's task
  (`sweep_task_stopped`, from trigger.handler): the refit's end finishes the sweep, with the gate's decision.

`advance` reads the records of the runs that have not ended (and, for a run that succeeded, its final
validation counts, sweeps/<id>/final/<run_id>.json; for one stopped early, its rung's counts: never a
test metric), then applies trigger.sweeps.step to the sweep record by compare-and-swap: whoever writes
first claims the free slots, the budget and the refit; a concurrent caller's write fails, it reads
the winner's record and applies `step` again, claiming nothing twice. Then it starts what is claimed
and not launched yet, at most STARTS_PER_INVOCATION per call, each through trigger.starts.start_run
(exactly once per run id, so a start repeated after a crash or by a concurrent caller is a duplicate
or in flight, never a second task), and records each task on the sweep record.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from trigger.aws import Clients
from trigger.config import Config
from trigger.ecs import Sleep
from trigger.errors import InvalidEventError, RecordConflictError, StartInFlightError
from trigger.events import REQUEST_ID
from trigger.flows import git_sha_of, resolve_image
from trigger.records import Clock, read_record, record_key, timestamp, utc_now
from trigger.runs import RunSpec
from trigger.s3json import Found, get_json, put_json, update_json
from trigger.starts import Outcome, start_run
from trigger.sweeps import (
    FINAL_STATES,
    Observed,
    SweepRequest,
    final_key,
    new_sweep_record,
    rung_key,
    same_sweep,
    step,
    sweep_key,
    trainer_params,
)

# Each start is a RunTask (with, on a Spot capacity failure, an on-demand retry after a backoff), a record
# create and a record update: ~1-3 s. Four keep an invocation far inside the trigger's 60 s timeout.
STARTS_PER_INVOCATION = 4
_CREATE_TRIES = 4
# trigger.runs.retrain_run_id: the request id is what lies between "retrain-" and the last 9 characters.
_RETRAIN_RUN_ID = re.compile(r"retrain-(?P<request_id>[A-Za-z0-9_-]{1,19})-[0-9a-f]{8}", re.ASCII)

SweepRecord = dict[str, Any]


def _create_or_read(s3: Any, bucket: str, record: SweepRecord, *, sleep: Sleep) -> Found:
    """The sweep record: created (If-None-Match, trigger.s3json) or, when another request made it, read."""
    key = sweep_key(record["request_id"])
    for _ in range(_CREATE_TRIES):
        etag = put_json(s3, bucket, key, record, etag=None, sleep=sleep)
        if etag is not None:
            return record, etag
        found = get_json(s3, bucket, key)
        if found is not None:
            return found
    raise RecordConflictError(f"s3://{bucket}/{key} could be neither created nor read")


def _update(
    s3: Any,
    bucket: str,
    key: str,
    change: Callable[[SweepRecord], None],
    *,
    known: Found,
    now: str,
    sleep: Sleep,
) -> Found:
    """Compare-and-swap `change` onto the sweep record (trigger.s3json.update_json), stamping `updated_at`.

    A change that changes nothing writes nothing (the record as last read is returned): concurrent stop
    events that find nothing to claim do not contend for the record.
    """

    def stamped(record: SweepRecord) -> SweepRecord | None:
        before = json.dumps(record, sort_keys=True)
        change(record)
        if json.dumps(record, sort_keys=True) == before:
            return None
        record["updated_at"] = now
        return record

    def read() -> Found | None:
        return get_json(s3, bucket, key)

    written = update_json(s3, bucket, key, stamped, read=read, known=known, sleep=sleep)
    if written is not None:
        return written
    fresh = read()  # unchanged: the record as it is now, with its ETag for the next compare-and-swap
    if fresh is None:
        raise RecordConflictError(f"s3://{bucket}/{key} disappeared while being updated")
    return fresh


def _counts(s3: Any, bucket: str, key: str, run_id: str) -> tuple[int, int] | None:
    """(correct, total) from a trainer's validation file, or None when it is missing or not counts."""
    found = get_json(s3, bucket, key)
    if found is None:
        return None
    doc = found[0]
    correct, total = doc.get("correct"), doc.get("total")
    if doc.get("run_id") != run_id or type(correct) is not int or type(total) is not int or not 0 <= correct <= total:
        return None
    return (correct, total) if total > 0 else None


def observe(clients: Clients, config: Config, record: SweepRecord) -> dict[str, Observed]:
    """What the records of the started, not yet ended runs (and the refit) say now."""
    tracked = [*record["runs"], *([record["refit"]] if record.get("refit") else [])]
    observed: dict[str, Observed] = {}
    for run in tracked:
        if not run["started"] or run.get("ended"):
            continue
        found = read_record(clients.s3, config.bucket, run["run_id"])
        current = found[0] if found else {}
        state = current.get("state")
        if state not in FINAL_STATES:
            observed[run["run_id"]] = Observed(state)
            continue
        epoch = current.get("stopped_at_epoch") if state == "stopped-early" else None
        validation = None
        if run is not record.get("refit"):  # the refit holds out nothing: it is judged by the gate alone
            if state == "succeeded":
                validation = _counts(
                    clients.s3, config.bucket, final_key(record["request_id"], run["run_id"]), run["run_id"]
                )
            elif state == "stopped-early" and isinstance(epoch, int):
                key = rung_key(record["request_id"], epoch, run["run_id"])
                validation = _counts(clients.s3, config.bucket, key, run["run_id"])
        gate = current.get("gate") if isinstance(current.get("gate"), dict) else None
        observed[run["run_id"]] = Observed(
            state,
            version=current.get("version"),
            stopped_at_epoch=epoch if isinstance(epoch, int) else None,
            validation=validation,
            gate=gate,
        )
    return observed


def _mark_launched(run_id: str, task_arn: str | None) -> Callable[[SweepRecord], None]:
    def change(record: SweepRecord) -> None:
        for run in [*record["runs"], *([record["refit"]] if record.get("refit") else [])]:
            if run["run_id"] == run_id:
                run["task_arn"] = run.get("task_arn") or task_arn

    return change


def advance(
    clients: Clients,
    config: Config,
    request_id: str,
    *,
    known: Found | None = None,
    clock: Clock = utc_now,
    sleep: Sleep = time.sleep,
) -> tuple[list[Outcome], SweepRecord, int]:
    """Apply trigger.sweeps.step to the sweep record and start what it claimed: (starts, record, left).

    `left`: claimed runs not launched yet (beyond this call's STARTS_PER_INVOCATION, or in flight elsewhere).
    """
    key = sweep_key(request_id)
    now = timestamp(clock())
    if known is None:
        known = get_json(clients.s3, config.bucket, key)
        if known is None:
            raise InvalidEventError(f"no sweep {request_id}: s3://{config.bucket}/{key} does not exist")
    observed = observe(clients, config, known[0])
    todo: list[dict[str, Any]] = []

    def change(record: SweepRecord) -> None:
        todo[:] = step(record, observed)

    known = _update(clients.s3, config.bucket, key, change, known=known, now=now, sleep=sleep)
    record = known[0]
    outcomes: list[Outcome] = []
    left = 0
    for run in todo:
        if len(outcomes) == STARTS_PER_INVOCATION:
            left += 1
            continue
        is_refit = run is record.get("refit") or run["run_id"] == (record.get("refit") or {}).get("run_id")
        params = dict(run["params"]) if is_refit else trainer_params(record, run)
        spec = RunSpec(
            run_id=run["run_id"],
            attempt=1,
            digest=record["image_digest"],
            git_sha=record.get("git_sha"),
            params=params,
            compute=config.default_compute,
        )
        try:
            outcome = start_run(clients, config, spec, "retrain", clock=clock, sleep=sleep)
        except StartInFlightError:
            left += 1  # a concurrent caller is starting it; its record says how that went
            continue
        outcomes.append(replace(outcome, decision="refit" if is_refit else "sweep"))
        if outcome.task_arn:
            known = _update(
                clients.s3, config.bucket, key, _mark_launched(run["run_id"], outcome.task_arn),
                known=known, now=now, sleep=sleep,
            )  # fmt: skip
    return outcomes, known[0], left


def sweep_task_stopped(
    clients: Clients,
    config: Config,
    environment: Mapping[str, str],
    *,
    clock: Clock = utc_now,
    sleep: Sleep = time.sleep,
) -> tuple[list[Outcome], SweepRecord] | None:
    """A training task stopped (trigger.handler): `advance` the sweep it belongs to, if any, so the next
    sets start as runs end, the last run's end claims the refit, and the refit's end finishes the sweep.

    Which sweep, from the stopped task's overrides:
    - a sweep run names it (TRAINER_SWEEP_ID);
    - the refit does not: it trains as an ordinary retrain run (a sweep id would make the trainer hold out
      the validation set and never promote it). Its run id is `retrain-<request_id>-<hash>`, so the sweep
      is `sweeps/<request_id>.json` when that record names this run as its refit: one S3 read for the stop
      of a retrain run, none for a push run's.
    Answered: (the starts, the sweep record as advanced), or None when the task is no sweep's. An id that
    names no sweep record (an override is not ours to trust) advances nothing; `advance` itself acts only
    on what the run records say, so a forged stop event can make it do nothing it would not do anyway.
    """
    sweep_id, refit_id = environment.get("TRAINER_SWEEP_ID"), None
    if not sweep_id:
        matched = _RETRAIN_RUN_ID.fullmatch(environment.get("TRAINER_RUN_ID", ""))
        if matched is None:
            return None
        sweep_id, refit_id = matched["request_id"], matched[0]
    if not REQUEST_ID.fullmatch(sweep_id):
        return None
    known = get_json(clients.s3, config.bucket, sweep_key(sweep_id))
    if known is None or (refit_id is not None and (known[0].get("refit") or {}).get("run_id") != refit_id):
        return None
    outcomes, record, _ = advance(clients, config, sweep_id, known=known, clock=clock, sleep=sleep)
    return outcomes, record


def open_sweeps(clients: Clients, config: Config) -> Iterator[tuple[str, datetime]]:
    """(request id, last written) of every sweep record, sweeps/<request_id>.json (ListObjectsV2 with a
    delimiter, page by page: the trainers' files under sweeps/<request_id>/ are not listed)."""
    token: str | None = None
    while True:
        page = clients.s3.list_objects_v2(
            Bucket=config.bucket, Prefix="sweeps/", Delimiter="/", **({"ContinuationToken": token} if token else {})
        )
        for item in page.get("Contents") or []:
            key = str(item.get("Key", ""))
            request_id = key.removeprefix("sweeps/").removesuffix(".json")
            if key == sweep_key(request_id) and REQUEST_ID.fullmatch(request_id):
                yield request_id, item["LastModified"]
        token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
        if not token:
            return


def advance_open_sweeps(
    clients: Clients,
    config: Config,
    *,
    since: datetime | None,
    clock: Clock = utc_now,
    sleep: Sleep = time.sleep,
) -> list[tuple[str, list[Outcome], SweepRecord]]:
    """Reconcile's part (trigger.reconcile): `advance` every sweep not finished, written since `since`, so a
    lost stop event (EventBridge delivers at least once, and rarely not at all) delays a sweep by one
    schedule instead of leaving it waiting for a workflow that may have stopped asking:
    [(request id, starts, record as advanced)]."""
    advanced = []
    for request_id, written_at in open_sweeps(clients, config):
        if since is not None and written_at < since:
            continue
        known = get_json(clients.s3, config.bucket, sweep_key(request_id))
        if known is None or known[0].get("state") == "finished":
            continue
        outcomes, record, _ = advance(clients, config, request_id, known=known, clock=clock, sleep=sleep)
        advanced.append((request_id, outcomes, record))
    return advanced


def handle_sweep(
    clients: Clients, config: Config, request: SweepRequest, *, clock: Clock = utc_now, sleep: Sleep = time.sleep
) -> tuple[list[Outcome], dict[str, Any]]:
    """The workflow's invocation: create (or check) the sweep record, `advance` it, answer its state."""
    # A sweep runs on the default compute (PUSHTRAIN_DEFAULT_COMPUTE): on GPU, the CUDA variant.
    facts = resolve_image(clients, config, request.base.image, config.default_compute)
    digest, git_sha = facts.digest, git_sha_of(request.base, facts)
    key = sweep_key(request.request_id)
    known = _create_or_read(
        clients.s3, config.bucket, new_sweep_record(request, digest, git_sha, timestamp(clock())), sleep=sleep
    )
    if not same_sweep(known[0], request, digest):
        raise InvalidEventError(
            f"request_id {request.request_id!r} already names another sweep (s3://{config.bucket}/{key}); "
            "a new sweep needs a new request id"
        )
    outcomes, record, left = advance(clients, config, request.request_id, known=known, clock=clock, sleep=sleep)
    refit = record.get("refit")
    answer = {
        "request_id": request.request_id,
        "sweep_key": key,
        "image_digest": digest,
        "state": record["state"],
        "remaining": left,  # claimed, not launched yet: invoke again
        "waiting": sum(1 for run in record["runs"] if not run["started"]),  # start as runs end
        "runs": [
            {
                "run_id": run["run_id"],
                "params": run["params"],
                "status_key": record_key(run["run_id"]),
                "started": run["started"],
                "ended": run.get("ended"),
            }
            for run in record["runs"]
        ],
        "ranking": record["ranking"],
        "refit": refit,
        "budget": record.get("budget"),
        "outcome": record.get("outcome"),
        "summary_markdown": record.get("summary_markdown", ""),
    }
    return outcomes, answer
