"""What the trigger does for a sweep request: start its runs a few per invocation, then rank them.

Every invocation with the same request continues where the last one stopped:

1. Resolve the image; create `sweeps/<request_id>.json` (If-None-Match) or read it. A request id reused
   with another image or other parameter sets is refused (InvalidEventError): a sweep is immutable.
2. Start at most STARTS_PER_INVOCATION runs not yet marked started, each through `starts.start_run` (the
   run record makes a start exactly-once, so a retry after a crash between RunTask and step 3 answers
   "duplicate" and starts nothing), and mark each started in the sweep record by compare-and-swap.
3. The answer says how many runs are `remaining`; the caller (the retrain workflow) invokes again until
   none are. A 60 s function therefore never starts 32 tasks in one go and never starts one twice.
4. Once every run is started, an invocation reads the run records; when all have ended it ranks them by
   test accuracy (`models/<model>/<version>/metrics.json`), names the one the champion pointer names,
   and writes that summary into the sweep record (`state: finished`). Until then it answers the states.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from trigger.aws import Clients
from trigger.config import Config
from trigger.ecs import Sleep
from trigger.errors import InvalidEventError, RecordConflictError
from trigger.flows import git_sha_of, resolve_image
from trigger.records import Clock, read_record, record_key, timestamp, utc_now
from trigger.runs import RunSpec
from trigger.s3json import Found, get_json, put_json, update_json
from trigger.starts import Outcome, start_run
from trigger.sweeps import (
    RunResult,
    SweepRequest,
    all_ended,
    new_sweep_record,
    rank,
    same_sweep,
    sweep_key,
)

# Each start is a RunTask (with, on a Spot capacity failure, an on-demand retry after a backoff), a record
# create and a record update: ~1-3 s. Four keep an invocation far inside the trigger's 60 s timeout.
STARTS_PER_INVOCATION = 4
_CREATE_TRIES = 4

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

    The sweep record holds only the fan-out's progress; each run's start is claimed in its run record.
    """

    def stamped(record: SweepRecord) -> SweepRecord:
        change(record)
        record["updated_at"] = now
        return record

    written = update_json(s3, bucket, key, stamped, read=lambda: get_json(s3, bucket, key), known=known, sleep=sleep)
    if written is None:  # not reached: `stamped` always returns the record
        raise RecordConflictError(f"s3://{bucket}/{key} was not updated")
    return written


def _mark_started(run_id: str, task_arn: str | None) -> Callable[[SweepRecord], None]:
    def change(record: SweepRecord) -> None:
        for run in record["runs"]:
            if run["run_id"] == run_id:
                run["started"] = True
                run["task_arn"] = run.get("task_arn") or task_arn
        if all(run["started"] for run in record["runs"]) and record["state"] == "starting":
            record["state"] = "running"

    return change


def _result(clients: Clients, config: Config, run: dict[str, Any]) -> RunResult:
    found = read_record(clients.s3, config.bucket, run["run_id"])
    state = found[0].get("state") if found else None
    version = found[0].get("version") if found else None
    accuracy = None
    if state == "succeeded" and isinstance(version, str):
        metrics = get_json(clients.s3, config.bucket, f"models/{config.model_name}/{version}/metrics.json")
        if metrics is not None and isinstance(metrics[0].get("accuracy"), int | float):
            accuracy = float(metrics[0]["accuracy"])
    return RunResult(run["run_id"], run["params"], state, version, accuracy)


def handle_sweep(
    clients: Clients, config: Config, request: SweepRequest, *, clock: Clock = utc_now, sleep: Sleep = time.sleep
) -> tuple[list[Outcome], dict[str, Any]]:
    """Start the next runs of a sweep (or rank them when all ended); see the module docstring."""
    # A sweep runs on the default compute (PUSHTRAIN_DEFAULT_COMPUTE): on GPU, the CUDA variant.
    compute = config.default_compute
    facts = resolve_image(clients, config, request.base.image, compute)
    digest, git_sha = facts.digest, git_sha_of(request.base, facts)
    now = clock()
    key = sweep_key(request.request_id)
    known = _create_or_read(
        clients.s3, config.bucket, new_sweep_record(request, digest, git_sha, timestamp(now)), sleep=sleep
    )
    if not same_sweep(known[0], request, digest):
        raise InvalidEventError(
            f"request_id {request.request_id!r} already names another sweep (s3://{config.bucket}/{key}); "
            "a new sweep needs a new request id"
        )
    git_sha = known[0].get("git_sha")  # a retry repeats the first invocation's provenance exactly

    outcomes: list[Outcome] = []
    for run in [run for run in known[0]["runs"] if not run["started"]][:STARTS_PER_INVOCATION]:
        spec = RunSpec(
            run_id=run["run_id"], attempt=1, digest=digest, git_sha=git_sha, params=run["params"], compute=compute
        )
        outcome = start_run(clients, config, spec, "retrain", clock=clock, sleep=sleep)
        outcomes.append(replace(outcome, decision="sweep"))
        known = _update(
            clients.s3,
            config.bucket,
            key,
            _mark_started(run["run_id"], outcome.task_arn),
            known=known,
            now=timestamp(now),
            sleep=sleep,
        )

    record = known[0]
    remaining = sum(1 for run in record["runs"] if not run["started"])
    summary: dict[str, Any] = {}
    if remaining == 0 and not outcomes:  # a later invocation: how did the runs end?
        if record["state"] == "finished":
            summary = {name: record[name] for name in ("ranking", "champion", "champion_version")}
        else:
            results = [_result(clients, config, run) for run in record["runs"]]
            if all_ended(results):
                champion = get_json(clients.s3, config.bucket, f"models/{config.model_name}/champion.json")
                summary = rank(results, champion[0].get("version") if champion else None)

                def finish(current: SweepRecord) -> None:
                    current.update(summary, state="finished")

                record, _ = _update(
                    clients.s3, config.bucket, key, finish, known=known, now=timestamp(now), sleep=sleep
                )
            else:
                summary = {"states": {result.run_id: result.state for result in results}}
    answer = {
        "request_id": request.request_id,
        "sweep_key": key,
        "image_digest": digest,
        "state": record["state"],
        "remaining": remaining,
        "runs": [
            {
                "run_id": run["run_id"],
                "params": run["params"],
                "status_key": record_key(run["run_id"]),
                "started": run["started"],
            }
            for run in record["runs"]
        ],
        **summary,
    }
    return outcomes, answer
