"""Sweeps: one retrain request, N runs, started a few per invocation exactly once, ranked by validation, refit.

Pure expansion and ranking first; then the handler against moto (behaviour across invocations matters:
the sweep record and the run records carry the progress from one invocation to the next)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from trigger.errors import InvalidEventError
from trigger.handler import handle
from trigger.records import new_record, record_key
from trigger.runs import RunSpec
from trigger.sweep_flow import STARTS_PER_INVOCATION
from trigger.sweeps import MAX_SETS, expand, parse_sweep_request, run_ids
from trigger_testkit import BUCKET, DIGEST, GIT_SHA, Emulated, clock, env_of, load_event, no_sleep, stop_event_for

REQUEST: dict[str, Any] = {
    "action": "retrain",
    "request_id": "5550001",
    "image": GIT_SHA,
    "params": {"epochs": 10, "model": "airbench"},
    "sweep": {"grid": {"lr": [0.5, 1.0, 1.5], "seed": [0, 1]}},
}


# --- expansion (pure) ------------------------------------------------------------------------------


def test_a_grid_expands_to_every_combination_over_the_base_parameters() -> None:
    sets = parse_sweep_request(REQUEST).sets
    assert len(sets) == 6
    assert sets[0] == {"epochs": 10, "model": "airbench", "lr": 0.5, "seed": 0}
    assert {(s["lr"], s["seed"]) for s in sets} == {(lr, seed) for lr in (0.5, 1.0, 1.5) for seed in (0, 1)}


def test_a_list_gives_exactly_its_sets_in_order() -> None:
    sets = expand({"list": [{"lr": 2}, {"seed": 3, "lr": 0.1}]}, {"epochs": 4})
    assert sets == ({"epochs": 4, "lr": 2.0}, {"epochs": 4, "lr": 0.1, "seed": 3})


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"grid": {"lr": [0.1] * 2, "seed": list(range(17))}}, "34 parameter sets"),
        ({"list": []}, "0 parameter sets"),
        ({"grid": {"lr": [True]}}, "params.lr=True must be float"),
        ({"grid": {"optimizer": ["adam"]}}, "params.optimizer is not a parameter"),
        ({"list": [{"lr": 0.1}, {"lr": 0.1}]}, "sweep sets 0 and 1 are the same parameters"),
        ({"grid": {"lr": [0.1]}, "list": [{}]}, "sweep must be"),
        ({"random": {"lr": [0.1]}}, "sweep.random must be"),
        ({"grid": {"lr": 0.1}}, "sweep.grid.lr must be a list"),
    ],
)
def test_a_bad_sweep_is_refused_naming_the_problem(sweep: object, message: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_sweep_request({**REQUEST, "sweep": sweep})
    assert message in str(caught.value)


def test_a_grid_too_large_is_refused_before_it_is_built() -> None:
    huge = {name: list(range(32)) for name in ("lr", "seed", "epochs", "batch_size", "weight_decay")}
    with pytest.raises(InvalidEventError, match=f"makes {32**5} parameter sets; a sweep has 1 to {MAX_SETS}"):
        expand({"grid": huge}, {})


# --- the handler, across invocations (moto) --------------------------------------------------------


@pytest.fixture
def pushed(aws: Emulated) -> Emulated:
    return aws


def sweep_record(aws: Emulated) -> dict[str, Any]:
    return dict(json.loads(aws.s3.get_object(Bucket=BUCKET, Key="sweeps/5550001.json")["Body"].read()))


def invoke(aws: Emulated, request: dict[str, Any] | None = None) -> dict[str, Any]:
    return handle(request or REQUEST, aws.config, aws.clients, clock=clock, sleep=no_sleep)


def test_a_sweep_starts_a_bounded_number_of_runs_per_invocation_until_all_are_started(pushed: Emulated) -> None:
    # WHEN the retrain workflow invokes a six-run sweep (max_parallel: all of them)
    first = invoke(pushed)
    # THEN the first invocation starts STARTS_PER_INVOCATION runs and says how many remain
    assert STARTS_PER_INVOCATION == 4
    assert (first["remaining"], first["waiting"], first["state"], len(pushed.tasks())) == (2, 0, "running", 4)
    # WHEN it invokes again THEN the rest start, each its own retrain run with its own parameters
    second = invoke(pushed)
    assert (second["remaining"], second["state"]) == (0, "running")
    tasks = pushed.tasks()
    assert len(tasks) == 6
    envs = [env_of(task) for task in tasks]
    assert sorted(env["TRAINER_RUN_ID"] for env in envs) == sorted(run["run_id"] for run in second["runs"])
    assert all(
        len(env["TRAINER_RUN_ID"]) <= 36 and env["TRAINER_RUN_ID"].startswith("retrain-5550001-") for env in envs
    )
    assert {(env["TRAINER_LR"], env["TRAINER_SEED"]) for env in envs} == {
        (lr, seed) for lr in ("0.5", "1.0", "1.5") for seed in ("0", "1")
    }
    # every sweep run holds out the validation set and is one of the sweep's (never promoted)
    assert {(env["TRAINER_SWEEP_ID"], env["TRAINER_VAL_IMAGES"]) for env in envs} == {("5550001", "5000")}
    assert not any("TRAINER_EARLY_STOP_ETA" in env for env in envs)
    for run in second["runs"]:
        assert pushed.record(run["run_id"])["params"]["sweep_id"] == "5550001"
    # WHEN it invokes once more THEN nothing more starts; the answer reports the runs
    third = invoke(pushed)
    assert len(pushed.tasks()) == 6
    assert {row["state"] for row in third["ranking"]} == {"running"}


def test_a_sweep_run_whose_start_another_invocation_claimed_starts_nothing_and_remains(pushed: Emulated) -> None:
    # GIVEN the first run of the sweep has a fresh start claim in its run record (another invocation is
    # starting it right now: the ordinary exactly-once claim, not the sweep record, guards the start)
    request = REQUEST | {"request_id": "5550002", "sweep": {"list": [{"lr": 0.5}]}}
    planned = parse_sweep_request(request)
    run_id = run_ids(planned, DIGEST)[0]
    spec = RunSpec(run_id=run_id, attempt=1, digest=DIGEST, git_sha=GIT_SHA, params=dict(planned.sets[0]))
    claimed = new_record(spec, "retrain", clock() - timedelta(seconds=5))
    pushed.s3.put_object(Bucket=BUCKET, Key=record_key(run_id), Body=json.dumps(claimed).encode())
    # WHEN the workflow invokes the sweep THEN no task starts, and the answer says one start remains
    answer = invoke(pushed, request)
    assert pushed.tasks() == []
    assert answer["remaining"] == 1
    stored = json.loads(pushed.s3.get_object(Bucket=BUCKET, Key="sweeps/5550002.json")["Body"].read())
    assert [run.get("task_arn") for run in stored["runs"]] == [None]


def test_a_start_whose_task_was_not_recorded_is_not_started_twice(pushed: Emulated) -> None:
    # GIVEN an invocation started four runs, then (as if it died before its compare-and-swap) one of them
    # has no task in the sweep record
    invoke(pushed)
    record = sweep_record(pushed)
    lost = record["runs"][0]
    del lost["task_arn"]
    pushed.s3.put_object(Bucket=BUCKET, Key="sweeps/5550001.json", Body=json.dumps(record).encode())
    # WHEN the workflow invokes again
    answer = invoke(pushed)
    # THEN that run's record answers "duplicate": no second task for it; the two remaining runs start
    assert len(pushed.tasks()) == 6
    assert [env_of(t)["TRAINER_RUN_ID"] for t in pushed.tasks()].count(lost["run_id"]) == 1
    assert answer["remaining"] == 0
    assert all(run.get("task_arn") for run in sweep_record(pushed)["runs"])


def test_a_request_id_reused_for_other_parameter_sets_is_refused(pushed: Emulated) -> None:
    invoke(pushed)
    for other in (
        {**REQUEST, "sweep": {"grid": {"lr": [0.5, 2.0]}}},
        {**REQUEST, "sweep": {**REQUEST["sweep"], "max_parallel": 2}},
    ):
        with pytest.raises(InvalidEventError, match="already names another sweep"):
            invoke(pushed, other)
    assert len(pushed.tasks()) == 4


def finish_run(aws: Emulated, run_id: str, state: str, correct: int | None = None, test_accuracy: float = 0.5) -> None:
    """What the trainer writes when a sweep run ends: its record, its final validation counts (a success),
    and the version's test metrics, which the sweep must never read."""
    record = aws.record(run_id)
    version = f"20261125T190000Z-{run_id}" if state == "succeeded" else None
    record.update(state=state, version=version)
    if state == "stopped-early":
        record["stopped_at_epoch"] = 1
    aws.s3.put_object(Bucket=BUCKET, Key=f"runs/{run_id}/status.json", Body=json.dumps(record).encode())
    if correct is not None:
        final = {"run_id": run_id, "epochs": 10, "correct": correct, "total": 5000}
        key = f"sweeps/5550001/final/{run_id}.json" if state == "succeeded" else f"sweeps/5550001/rungs/1/{run_id}.json"
        aws.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(final).encode())
    if version:
        metrics = {"accuracy": test_accuracy, "loss": 0.5}
        aws.s3.put_object(
            Bucket=BUCKET, Key=f"models/cifar10/{version}/metrics.json", Body=json.dumps(metrics).encode()
        )


def test_the_best_run_by_validation_is_refit_once_and_only_its_gate_finishes_the_sweep(pushed: Emulated) -> None:
    # GIVEN all six runs started and ended: validation counts rank them one way, test accuracy the other
    invoke(pushed)
    runs = invoke(pushed)["runs"]
    endings = [("succeeded", 4000), ("succeeded", 4400), ("failed", None), ("stopped-early", 1000),
               ("succeeded", 4400), ("succeeded", 4100)]  # fmt: skip
    for n, (run, (state, correct)) in enumerate(zip(runs, endings, strict=True)):
        finish_run(pushed, run["run_id"], state, correct, test_accuracy=0.99 - n / 100)
    read: list[str] = []
    hook = lambda params, **_: read.append(params["Key"])  # noqa: E731
    pushed.s3.meta.events.register("before-parameter-build.s3.GetObject", hook)
    # WHEN the workflow invokes the sweep again
    answer = invoke(pushed)
    pushed.s3.meta.events.unregister("before-parameter-build.s3.GetObject", hook)
    # THEN set 1 (4400/5000, tied with set 4: the lower index) is refit on the whole training set, and
    # nothing under models/ (no test metric) was read to choose it
    assert not [key for key in read if key.startswith("models/")], read
    refit = answer["refit"]
    assert (answer["state"], refit["index"]) == ("refitting", 1)
    assert [row["index"] for row in answer["ranking"]] == [1, 4, 5, 0, 3, 2]
    (task,) = [t for t in pushed.tasks() if env_of(t)["TRAINER_RUN_ID"] == refit["run_id"]]
    env = env_of(task)
    assert (
        (env["TRAINER_LR"], env["TRAINER_SEED"])
        == ("0.5", "1")
        == tuple(str(runs[1]["params"][name]) for name in ("lr", "seed"))
    )
    assert not {"TRAINER_SWEEP_ID", "TRAINER_VAL_IMAGES"} & set(env)  # gated, on all the training images
    # AND asking again starts no second refit
    invoke(pushed)
    assert len(pushed.tasks()) == 7
    # WHEN the refit's trainer records its gate THEN the sweep finishes with it
    pushed.put_record(
        refit["run_id"], state="succeeded", version="v-refit", gate={"outcome": "promoted", "reason": "r"}
    )
    done = invoke(pushed)
    assert (done["state"], done["refit"]["gate"]["outcome"]) == ("finished", "promoted")
    assert "gate: **promoted**" in done["summary_markdown"]
    assert sweep_record(pushed)["state"] == "finished" and len(pushed.tasks()) == 7


def test_a_sweep_runs_stop_event_starts_the_next_set_within_max_parallel(pushed: Emulated) -> None:
    # GIVEN a six-run sweep that runs two at a time
    request = {**REQUEST, "sweep": {**REQUEST["sweep"], "max_parallel": 2}}
    answer = invoke(pushed, request)
    assert (len(pushed.tasks()), answer["waiting"]) == (2, 4)
    first = answer["runs"][0]["run_id"]
    # WHEN its first run succeeds and its task's stop event arrives
    finish_run(pushed, first, "succeeded", 4000)
    sample = load_event("ecs_task_stopped_spot.json")
    task_arn = pushed.record(first)["task_arn"]
    handle(stop_event_for(pushed, sample, task_arn, "EssentialContainerExited", 0), pushed.config, pushed.clients,
           clock=clock, sleep=no_sleep)  # fmt: skip
    # THEN the third set starts: two run at once again
    assert len(pushed.tasks()) == 3
    assert [run["started"] for run in sweep_record(pushed)["runs"]] == [True, True, True, False, False, False]


def refitting(aws: Emulated) -> dict[str, Any]:
    """A sweep whose six runs ended (set 1 best by validation) and whose refit was started: its refit."""
    invoke(aws)
    runs = invoke(aws)["runs"]
    for run, correct in zip(runs, (4000, 4400, 4100, 4200, 4300, 4350), strict=True):
        finish_run(aws, run["run_id"], "succeeded", correct)
    answer = invoke(aws)
    assert (answer["state"], answer["refit"]["index"]) == ("refitting", 1)
    return dict(answer["refit"])


@pytest.mark.parametrize(
    ("exit_code", "trainer_wrote", "ended", "gate"),
    [
        # the refit trained, published and was gated: the trainer recorded the gate's decision
        (0, {"state": "succeeded", "version": "v-refit", "gate": {"outcome": "promoted", "reason": "beats 0.91"}},
         "succeeded", "promoted"),
        # the refit's trainer crashed (exit 1, no result): the stop marks the run failed, the sweep ends with it
        (1, {"state": "running"}, "failed", None),
    ],
)  # fmt: skip
def test_the_refits_stop_event_finishes_the_sweep_with_the_gates_decision(
    pushed: Emulated, exit_code: int, trainer_wrote: dict[str, Any], ended: str, gate: str | None
) -> None:
    # GIVEN a sweep refitting its best set, and the refit's trainer ended as `trainer_wrote` says
    refit = refitting(pushed)
    pushed.put_record(refit["run_id"], **trainer_wrote)
    (task,) = [t for t in pushed.tasks() if env_of(t)["TRAINER_RUN_ID"] == refit["run_id"]]
    assert "TRAINER_SWEEP_ID" not in env_of(task)  # its task does not name the sweep
    # WHEN the refit task's stop event arrives (through the handler, as EventBridge delivers it), and no
    # workflow invokes the sweep again
    sample = load_event("ecs_task_stopped_spot.json")
    event = stop_event_for(pushed, sample, task["taskArn"], "EssentialContainerExited", exit_code)
    handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    # THEN the sweep record is finished with the refit's end, version and the gate's decision
    record = sweep_record(pushed)
    assert (record["state"], record["refit"]["ended"]) == ("finished", ended)
    assert (record["refit"].get("gate") or {}).get("outcome") == gate
    assert record["outcome"] == f"refit {ended}; gate: {gate or 'none'}"
    assert f"Outcome: refit {ended}" in record["summary_markdown"]
    if gate:
        assert record["refit"]["version"] == "v-refit"
        assert "gate: **promoted** (beats 0.91)" in record["summary_markdown"]
    # AND nothing more started; the same event delivered again changes nothing
    assert len(pushed.tasks()) == 7
    handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    assert sweep_record(pushed) == record


def test_a_stop_event_that_writes_the_sweep_record_under_another_loses_neither_change(pushed: Emulated) -> None:
    # GIVEN a six-set sweep, two at a time: sets 0 and 1 running, and set 0 has just ended
    request = {**REQUEST, "sweep": {**REQUEST["sweep"], "max_parallel": 2}}
    first, second = (run["run_id"] for run in invoke(pushed, request)["runs"][:2])
    finish_run(pushed, first, "succeeded", 4000)
    sample = load_event("ecs_task_stopped_spot.json")
    stop_first, stop_second = (
        stop_event_for(pushed, sample, pushed.record(run_id)["task_arn"], "EssentialContainerExited", 0)
        for run_id in (first, second)
    )
    # AND, at the moment set 0's stop event writes the sweep record (it saw set 0 end, claimed set 2),
    # set 1 ends and its stop event runs to the end first (it saw both end: it claims sets 2 and 3)
    interleaved: list[str] = []

    def meanwhile(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") != "sweeps/5550001.json" or interleaved:
            return
        interleaved.append("set 1's stop event")
        finish_run(pushed, second, "succeeded", 4100)
        handle(stop_second, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    pushed.s3.meta.events.register("before-parameter-build.s3.PutObject", meanwhile)
    try:
        # WHEN set 0's stop event is handled
        handle(stop_first, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    finally:
        pushed.s3.meta.events.unregister("before-parameter-build.s3.PutObject", meanwhile)
    # THEN its write, made on a record that changed since it read it, did not undo set 1's stop event: the
    # record says what ECS runs (sets 2 and 3, each once, each with its task), two at a time
    assert interleaved
    record = sweep_record(pushed)
    assert [(run["started"], run["ended"]) for run in record["runs"]] == [
        (True, "succeeded"), (True, "succeeded"), (True, None), (True, None), (False, None), (False, None)
    ]  # fmt: skip
    running = {env_of(task)["TRAINER_RUN_ID"] for task in pushed.tasks()} - {first, second}
    assert running == {run["run_id"] for run in record["runs"][2:4]}
    assert all(run.get("task_arn") for run in record["runs"][:4]) and len(pushed.tasks()) == 4


def test_the_scheduled_reconcile_finishes_a_sweep_whose_refit_stop_event_was_lost(pushed: Emulated) -> None:
    # GIVEN a sweep refitting, whose refit ended and was gated, but whose stop event never arrived
    refit = refitting(pushed)
    gate = {"outcome": "promoted", "reason": "beats 0.91"}
    pushed.put_record(refit["run_id"], state="succeeded", version="v-refit", gate=gate)
    # WHEN the scheduled reconcile runs
    handle(load_event("scheduled_event.json"), pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    # THEN the sweep is finished with the gate's decision
    record = sweep_record(pushed)
    assert (record["state"], record["refit"]["ended"], record["refit"]["gate"]) == ("finished", "succeeded", gate)


def test_the_scheduled_reconcile_starts_the_next_set_when_a_runs_stop_event_was_lost(pushed: Emulated) -> None:
    # GIVEN a sweep two at a time whose first run ended without its stop event reaching the trigger
    request = {**REQUEST, "sweep": {**REQUEST["sweep"], "max_parallel": 2}}
    first = invoke(pushed, request)["runs"][0]["run_id"]
    finish_run(pushed, first, "succeeded", 4000)
    # WHEN the scheduled reconcile runs THEN the third set starts (two run at once again), once
    for _ in range(2):
        handle(load_event("scheduled_event.json"), pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    record = sweep_record(pushed)
    assert [run["started"] for run in record["runs"]] == [True, True, True, False, False, False]
    third = record["runs"][2]
    assert [env_of(task)["TRAINER_RUN_ID"] for task in pushed.tasks()].count(third["run_id"]) == 1
    assert third["task_arn"]
