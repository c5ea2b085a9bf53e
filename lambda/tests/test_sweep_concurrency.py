"""A sweep's slots, budget and refit under real concurrency: the stop events of its runs delivered at the
same moment from separate processes (and each twice: EventBridge delivers at least once) to one emulated
AWS (moto's ThreadedMotoServer, S3's conditional writes made atomic as S3's are; see
test_concurrent_deliveries). Every delivery runs trigger.sweep_flow.advance; the sweep record's
compare-and-swap must let exactly the allowed starts through, and exactly one refit.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import delivery_worker
import pytest
from test_concurrent_deliveries import account, deliver_at_once, endpoint  # noqa: F401 (fixtures)
from trigger.handler import handle
from trigger.sweeps import EPOCH_COST_USD
from trigger_testkit import BUCKET, GIT_SHA, Emulated, env_of, load_event, stop_event_for

REQUEST: dict[str, Any] = {
    "action": "retrain",
    "request_id": "880088",
    "image": GIT_SHA,
    "params": {"epochs": 4, "model": "airbench"},
    "sweep": {"list": [{"lr": 0.1 * (n + 1)} for n in range(6)]},
}


def sweep_record(aws: Emulated) -> dict[str, Any]:
    return dict(json.loads(aws.s3.get_object(Bucket=BUCKET, Key="sweeps/880088.json")["Body"].read()))


def end_run(aws: Emulated, run_id: str, state: str, correct: int) -> None:
    """What the trainer leaves when a sweep run ends: its record and its validation counts."""
    fields: dict[str, Any] = {"state": state}
    if state == "succeeded":
        fields["version"] = f"20261125T190000Z-{run_id}"
        key = f"sweeps/880088/final/{run_id}.json"
    else:
        fields["stopped_at_epoch"] = 1
        key = f"sweeps/880088/rungs/1/{run_id}.json"
    aws.put_record(run_id, **fields)
    counts = {"run_id": run_id, "correct": correct, "total": 1000}
    aws.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(counts).encode())


def stop_events(aws: Emulated, run_ids: list[str]) -> list[dict[str, Any]]:
    sample = load_event("ecs_task_stopped_spot.json")
    return [
        stop_event_for(aws, sample, aws.record(run_id)["task_arn"], "EssentialContainerExited", 0) for run_id in run_ids
    ]


def deliver_and_retry(url: str, aws: Emulated, events: list[dict[str, Any]]) -> None:
    """Deliver together; then, as Lambda retries a failed invocation, deliver each failed one again."""
    outcomes = deliver_at_once(url, aws, events)
    retry = [
        event for event, outcome in zip(events, outcomes, strict=True) if outcome["outcome"] in {"error", "in-flight"}
    ]
    errors = {o.get("error", "").split(":")[0] for o in outcomes if o["outcome"] == "error"}
    assert errors <= {"RecordConflictError"}, outcomes  # a lost compare-and-swap race, nothing else
    clients = delivery_worker.clients_at(url)
    for event in retry:
        handle(event, aws.config, clients)


def tasks_by_run(aws: Emulated) -> Counter[str]:
    return Counter(env_of(task)["TRAINER_RUN_ID"] for task in aws.tasks())


@pytest.mark.parametrize(
    ("settings", "endings", "expected_started"),
    [
        # two at a time: two runs end together, so the next two sets start, not more
        ({"max_parallel": 2}, [("succeeded", 600), ("succeeded", 700)], 4),
        # a cap of 16 epochs: three runs of 4 + the refit's 4 reserved. Two runs stopped early after
        # 1 epoch free 6: set 3 fits (1 + 1 + 4 + 4 + 4 reserved = 14), set 4 does not (18)
        ({"max_cost_usd": 16 * EPOCH_COST_USD}, [("stopped-early", 300), ("stopped-early", 200)], 4),
    ],
)
def test_simultaneous_stop_events_start_only_what_the_slots_and_the_budget_allow(
    endpoint: str,  # noqa: F811 (the fixture)
    account: Emulated,  # noqa: F811
    settings: dict[str, Any],
    endings: list[tuple[str, int]],
    expected_started: int,
) -> None:
    clients = delivery_worker.clients_at(endpoint)
    request = {**REQUEST, "sweep": {**REQUEST["sweep"], **settings}}
    first = handle(request, account.config, clients)
    running = [run["run_id"] for run in first["runs"] if run["started"]]
    assert len(running) == len(endings) + (1 if "max_cost_usd" in settings else 0)
    ended = running[: len(endings)]
    for run_id, (state, correct) in zip(ended, endings, strict=True):
        end_run(account, run_id, state, correct)
    # WHEN the ended runs' stop events arrive together, each delivered twice
    deliver_and_retry(endpoint, account, stop_events(account, ended) * 2)
    # THEN exactly the allowed sets started, each once
    record = sweep_record(account)
    assert [run["started"] for run in record["runs"]].count(True) == expected_started
    assert [run["ended"] for run in record["runs"]][: len(endings)] == [state for state, _ in endings]
    counts = tasks_by_run(account)
    assert set(counts.values()) == {1} and len(counts) == expected_started
    assert set(counts) == {run["run_id"] for run in record["runs"] if run["started"]}


def test_simultaneous_last_stop_events_start_exactly_one_refit(
    endpoint: str,  # noqa: F811 (the fixture)
    account: Emulated,  # noqa: F811
) -> None:
    # GIVEN every set of a sweep started, then ended: four succeeded, two stopped early
    clients = delivery_worker.clients_at(endpoint)
    handle(REQUEST, account.config, clients)
    runs = handle(REQUEST, account.config, clients)["runs"]
    endings = [("succeeded", 600), ("stopped-early", 900), ("succeeded", 720), ("succeeded", 720),
               ("stopped-early", 100), ("succeeded", 500)]  # fmt: skip
    for run, (state, correct) in zip(runs, endings, strict=True):
        end_run(account, run["run_id"], state, correct)
    # WHEN all six stop events arrive together
    deliver_and_retry(endpoint, account, stop_events(account, [run["run_id"] for run in runs]))
    # THEN one refit of set 2 (720/1000, tied with set 3: the lower index; 900 was a rung, not a final) started
    record = sweep_record(account)
    assert (record["state"], record["refit"]["index"]) == ("refitting", 2)
    counts = tasks_by_run(account)
    assert len(counts) == 7 and set(counts.values()) == {1}
    assert counts[record["refit"]["run_id"]] == 1
    # AND the workflow asking afterwards starts nothing more
    answer = handle(REQUEST, account.config, clients)
    assert answer["refit"]["run_id"] == record["refit"]["run_id"] and len(account.tasks()) == 7
