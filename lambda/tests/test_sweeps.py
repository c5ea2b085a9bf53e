"""Sweeps: one retrain request, N runs, started a few per invocation exactly once, then ranked.

Pure expansion and ranking first; then the handler against moto (behaviour across invocations matters:
the sweep record and the run records carry the progress from one invocation to the next)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from trigger.errors import InvalidEventError, StartInFlightError
from trigger.handler import handle
from trigger.records import new_record, record_key
from trigger.runs import RunSpec
from trigger.sweep_flow import STARTS_PER_INVOCATION
from trigger.sweeps import MAX_SETS, RunResult, expand, markdown_table, parse_sweep_request, rank, run_ids
from trigger_testkit import BUCKET, DIGEST, GIT_SHA, Emulated, clock, env_of, no_sleep

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
        ({"random": {"lr": [0.1]}}, "sweep must be"),
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


def test_ranking_puts_the_best_first_runs_without_accuracy_last_and_names_the_champion() -> None:
    results = [
        RunResult("r-a", {"lr": 0.5}, "succeeded", "v-a", 0.91),
        RunResult("r-b", {"lr": 1.0}, "failed", None, None),
        RunResult("r-c", {"lr": 1.5}, "succeeded", "v-c", 0.93),
    ]
    summary = rank(results, champion_version="v-c")
    assert [row["run_id"] for row in summary["ranking"]] == ["r-c", "r-a", "r-b"]
    assert [row["rank"] for row in summary["ranking"]] == [1, 2, 3]
    assert (summary["champion"], summary["champion_version"]) == ("r-c", "v-c")
    assert "| 1 | `r-c` (champion) |" in markdown_table(summary)
    # an earlier champion that no sweep run beat is not a sweep run
    assert rank(results, champion_version="v-older")["champion"] is None


# --- the handler, across invocations (moto) --------------------------------------------------------


@pytest.fixture
def pushed(aws: Emulated) -> Emulated:
    return aws


def sweep_record(aws: Emulated) -> dict[str, Any]:
    return dict(json.loads(aws.s3.get_object(Bucket=BUCKET, Key="sweeps/5550001.json")["Body"].read()))


def invoke(aws: Emulated, request: dict[str, Any] | None = None) -> dict[str, Any]:
    return handle(request or REQUEST, aws.config, aws.clients, clock=clock, sleep=no_sleep)


def test_a_sweep_starts_a_bounded_number_of_runs_per_invocation_until_all_are_started(pushed: Emulated) -> None:
    # WHEN the retrain workflow invokes a six-run sweep
    first = invoke(pushed)
    # THEN the first invocation starts STARTS_PER_INVOCATION runs and says how many remain
    assert STARTS_PER_INVOCATION == 4
    assert (first["remaining"], first["state"], len(pushed.tasks())) == (2, "starting", 4)
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
    for run in second["runs"]:
        assert pushed.record(run["run_id"])["params"] == run["params"]
    # WHEN it invokes once more THEN nothing more starts; the answer reports the runs' states
    third = invoke(pushed)
    assert len(pushed.tasks()) == 6
    assert set(third["states"].values()) == {"queued"}


def test_a_sweep_run_whose_start_another_invocation_claimed_raises_in_flight_and_starts_nothing(
    pushed: Emulated,
) -> None:
    # GIVEN the first run of the sweep has a fresh start claim in its run record (another invocation is
    # starting it right now: the ordinary exactly-once claim, not the sweep record, guards the start)
    request = REQUEST | {"request_id": "5550002", "sweep": {"list": [{"lr": 0.5}]}}
    planned = parse_sweep_request(request)
    run_id = run_ids(planned, DIGEST)[0]
    spec = RunSpec(run_id=run_id, attempt=1, digest=DIGEST, git_sha=GIT_SHA, params=dict(planned.sets[0]))
    claimed = new_record(spec, "retrain", clock() - timedelta(seconds=5))
    pushed.s3.put_object(Bucket=BUCKET, Key=record_key(run_id), Body=json.dumps(claimed).encode())
    # WHEN the workflow invokes the sweep THEN the claim's StartInFlightError surfaces (Lambda retries),
    # no task starts, and the sweep record does not mark the run started
    with pytest.raises(StartInFlightError, match="is in flight"):
        invoke(pushed, request)
    assert pushed.tasks() == []
    stored = json.loads(pushed.s3.get_object(Bucket=BUCKET, Key="sweeps/5550002.json")["Body"].read())
    assert [run["started"] for run in stored["runs"]] == [False]


def test_a_start_whose_mark_was_lost_is_not_started_twice(pushed: Emulated) -> None:
    # GIVEN an invocation started four runs, then (as if it died before its compare-and-swap) one of them
    # is not marked started in the sweep record
    invoke(pushed)
    record = sweep_record(pushed)
    lost = record["runs"][0]
    lost["started"] = False
    pushed.s3.put_object(Bucket=BUCKET, Key="sweeps/5550001.json", Body=json.dumps(record).encode())
    # WHEN the workflow invokes again
    answer = invoke(pushed)
    # THEN that run's record answers "duplicate": no second task for it; the two remaining runs start
    assert len(pushed.tasks()) == 6
    assert [env_of(t)["TRAINER_RUN_ID"] for t in pushed.tasks()].count(lost["run_id"]) == 1
    assert answer["remaining"] == 0
    assert all(run["started"] for run in sweep_record(pushed)["runs"])


def test_a_request_id_reused_for_other_parameter_sets_is_refused(pushed: Emulated) -> None:
    invoke(pushed)
    other = {**REQUEST, "sweep": {"grid": {"lr": [0.5, 2.0]}}}
    with pytest.raises(InvalidEventError, match="already names another sweep"):
        invoke(pushed, other)
    assert len(pushed.tasks()) == 4


def finish_run(aws: Emulated, run_id: str, accuracy: float | None) -> None:
    """What the trainer writes when a run ends (RUNS.md): its record, and for a success the version's metrics."""
    record = aws.record(run_id)
    version = f"20261125T190000Z-{run_id}" if accuracy is not None else None
    record.update(state="succeeded" if version else "failed", version=version)
    aws.s3.put_object(Bucket=BUCKET, Key=f"runs/{run_id}/status.json", Body=json.dumps(record).encode())
    if version:
        metrics = {"accuracy": accuracy, "loss": 0.5}
        aws.s3.put_object(
            Bucket=BUCKET, Key=f"models/cifar10/{version}/metrics.json", Body=json.dumps(metrics).encode()
        )


def test_when_every_run_ended_the_sweep_record_ranks_them_and_names_the_champion(pushed: Emulated) -> None:
    # GIVEN all six runs started, five succeeded with different accuracies, one failed, and the best one
    # is the champion
    invoke(pushed)
    runs = invoke(pushed)["runs"]
    accuracies = [0.90, 0.93, None, 0.91, 0.94, 0.92]
    for run, accuracy in zip(runs, accuracies, strict=True):
        finish_run(pushed, run["run_id"], accuracy)
    best = runs[4]["run_id"]
    champion = {"version": f"20261125T190000Z-{best}", "accuracy": 0.94}
    pushed.s3.put_object(Bucket=BUCKET, Key="models/cifar10/champion.json", Body=json.dumps(champion).encode())
    # WHEN the workflow invokes the sweep once more
    answer = invoke(pushed)
    # THEN the answer and the sweep record rank the runs by test accuracy and name the champion
    expected = [runs[i]["run_id"] for i in (4, 1, 5, 3, 0, 2)]
    assert [row["run_id"] for row in answer["ranking"]] == expected
    assert (answer["state"], answer["champion"]) == ("finished", best)
    stored = sweep_record(pushed)
    assert (stored["state"], stored["champion"]) == ("finished", best)
    assert [row["run_id"] for row in stored["ranking"]] == expected
    assert stored["ranking"][-1]["state"] == "failed"
    # AND asking again answers the stored summary without starting anything
    assert invoke(pushed)["ranking"] == answer["ranking"]
    assert len(pushed.tasks()) == 6
