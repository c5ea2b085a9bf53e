"""Exactly once under real concurrency: N separate processes deliver the same event at the same moment
to one emulated AWS (moto's ThreadedMotoServer on 127.0.0.1), which, like the real ECS in this
respect only by luck, would start a task per RunTask: moto ignores clientToken. One task must start,
by the run record's claim alone; and a burst of runs on one digest registers one pinned revision.

Processes, not threads: each delivery has its own interpreter state and its own connections, as
Lambda's concurrent invocations do. They are forked from a fork server that loaded boto3 and the
trigger once (delivery_worker.py), so N = 32 costs seconds, not an interpreter start each.
"""

from __future__ import annotations

import copy
import functools
import json
import multiprocessing
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import delivery_worker
import pytest
from trigger.handler import handle
from trigger_testkit import DIGEST, PUSH_RUN_ID, Emulated, load_event


@pytest.fixture
def endpoint(moto_endpoint: str) -> str:
    """The session's emulated AWS (conftest.moto_endpoint: S3's conditional writes made atomic)."""
    return moto_endpoint


@pytest.fixture
def account(endpoint: str) -> Iterator[Emulated]:
    """A fresh emulated account behind the server: bucket, repository with the sample image, cluster, base."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))  # noqa: S310 (our server)
    clients = delivery_worker.clients_at(endpoint)
    session = delivery_worker.SESSION
    made = {
        "ecs": clients.ecs,
        "s3": clients.s3,
        "ecr": clients.ecr,
        "ec2": session.client("ec2", endpoint_url=endpoint),
    }
    emulated = Emulated(make=made.__getitem__)
    yield emulated
    emulated.close()


@functools.cache
def fork_server() -> Any:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["delivery_worker"])
    return context


def deliver_at_once(endpoint: str, account: Emulated, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deliver every event from its own process, all released together; the outcome of each."""
    context = fork_server()
    barrier = context.Barrier(len(events))
    results = context.Queue()
    environment = account.environment()
    processes = [
        context.Process(target=delivery_worker.deliver, args=(endpoint, environment, event, barrier, results))
        for event in events
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return outcomes


# The protocol under 2 and 32 processes, on every launcher, is test_launcher_conformance's; here the
# whole handler (parse, ECR checks, start) under one burst.
@pytest.mark.parametrize("deliveries", [8])
def test_simultaneous_deliveries_of_one_push_start_exactly_one_task(
    endpoint: str, account: Emulated, deliveries: int
) -> None:
    # GIVEN the push sample, delivered N times at the same moment from N processes
    push = load_event("ecr_image_push.json")

    # WHEN every delivery runs the handler
    outcomes = deliver_at_once(endpoint, account, [push] * deliveries)

    # THEN one started the task; the others saw a duplicate or a start in flight (Lambda retries those)
    counts = Counter(o["outcome"] for o in outcomes)
    assert counts["started"] == 1, outcomes
    assert set(counts) <= {"started", "duplicate", "in-flight"}, outcomes
    (task,) = account.tasks()
    assert account.record(PUSH_RUN_ID)["task_arn"] == task["taskArn"]
    # AND one pinned revision was registered beside the base: no orphans
    assert len(account.revisions()) == 2
    # AND the retry of a delivery that was refused as in flight is a duplicate of that task
    retried = handle(push, account.config, delivery_worker.clients_at(endpoint))
    assert (retried["outcome"], retried["task_arn"]) == ("duplicate", task["taskArn"])
    assert len(account.tasks()) == 1


def test_a_burst_of_runs_on_one_new_digest_registers_one_revision(endpoint: str, account: Emulated) -> None:
    # GIVEN eight different retrain requests for the same, never pinned, image, at the same moment
    sample = load_event("retrain_request.json")
    requests = [{**copy.deepcopy(sample), "request_id": f"{9000 + n}"} for n in range(8)]

    outcomes = deliver_at_once(endpoint, account, requests)

    # THEN each run started its one task, and all of them share one pinned revision
    assert [o for o in outcomes if o["outcome"] in {"error", "in-flight"}] == []
    tasks = account.tasks()
    assert len(tasks) == 8
    revisions = account.revisions()
    assert len(revisions) == 2, revisions  # the base and one copy: nobody registered a spare
    assert {t["taskDefinitionArn"] for t in tasks} == {revisions[-1]}
    index = account.s3.get_object(Bucket=account.config.bucket, Key=f"runs/_taskdefs/pushtrain-trainer/{DIGEST}.json")
    assert json.loads(index["Body"].read())["task_definition_arn"] == revisions[-1]
