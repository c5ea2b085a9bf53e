"""The sweep's decisions, pure: random search spaces, slots (max_parallel), the cost cap, selection on
validation counts and the one refit (trigger.sweeps.step). The flow that runs them is test_sweeps.py."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from mermaid_grammar import mermaid_xychart_errors
from trigger.errors import InvalidEventError
from trigger.sweeps import (
    EPOCH_COST_USD,
    MAX_SETS,
    Observed,
    expand,
    new_sweep_record,
    parse_sweep_request,
    select,
    step,
)

DIGEST = "sha256:" + "ab" * 32
BASE: dict[str, Any] = {"action": "retrain", "request_id": "777", "image": DIGEST, "params": {"epochs": 4}}
SPACE = {
    "lr": {"loguniform": [0.01, 10.0]},
    "label_smoothing": {"uniform": [0.0, 0.3]},
    "seed": {"int": [0, 3]},
    "batch_size": {"choice": [128, 256, 512]},
}


# --- random search spaces ------------------------------------------------------------------------


def test_random_sampling_is_reproducible_within_bounds_and_distinct() -> None:
    sets = expand({"random": {"space": SPACE, "max_runs": MAX_SETS, "seed": 7}}, {"epochs": 4})
    assert sets == expand({"random": {"space": SPACE, "max_runs": MAX_SETS, "seed": 7}}, {"epochs": 4})
    assert sets != expand({"random": {"space": SPACE, "max_runs": MAX_SETS, "seed": 8}}, {"epochs": 4})
    assert len(sets) == MAX_SETS and len({tuple(sorted(s.items())) for s in sets}) == MAX_SETS
    for params in sets:
        assert 0.01 <= params["lr"] <= 10.0 and 0.0 <= params["label_smoothing"] <= 0.3
        assert params["seed"] in {0, 1, 2, 3} and type(params["seed"]) is int
        assert params["batch_size"] in {128, 256, 512} and params["epochs"] == 4
    assert {params["seed"] for params in sets} == {0, 1, 2, 3}  # both ends of int are reached
    # loguniform: about as many draws below the geometric middle (0.316) as above it
    below = sum(params["lr"] < math.sqrt(0.1) for params in sets)
    assert 8 <= below <= 24


def test_random_sampling_gives_the_same_sets_for_a_seed_on_every_python() -> None:
    # Random(1).random() draws 0.134364..., 0.847434..., 0.763775... (guaranteed across Python versions);
    # loguniform [0.1, 10] maps u to 0.1 * 100**u, kept to 6 significant digits
    sets = expand({"random": {"space": {"lr": {"loguniform": [0.1, 10.0]}}, "max_runs": 3, "seed": 1}}, {})
    assert sets == ({"lr": 0.185664}, {"lr": 4.95299}, {"lr": 3.36937})


@pytest.mark.parametrize(
    ("random", "message"),
    [
        ({"space": SPACE, "max_runs": 33}, "max_runs must be an integer from 1 to 32"),
        ({"space": SPACE}, "max_runs must be an integer from 1 to 32"),
        ({"space": {"seed": {"int": [0, 1]}}, "max_runs": 3}, "fewer than 3 distinct sets (found 2)"),
        ({"space": {"lr": {"loguniform": [0, 1]}}, "max_runs": 2}, "needs 0 < low"),
        ({"space": {"lr": {"uniform": [1, 1]}}, "max_runs": 2}, "low < high"),
        ({"space": {"lr": {"uniform": [0.1, float("nan")]}}, "max_runs": 2}, "low < high"),
        ({"space": {"seed": {"int": [0.5, 3]}}, "max_runs": 2}, "two integers"),
        ({"space": {"lr": {"normal": [0, 1]}}, "max_runs": 2}, "must be one of"),
        ({"space": {"lr": {"choice": []}}, "max_runs": 2}, "list of 1 to 32"),
        ({"space": {"optimizer": {"choice": ["adam"]}}, "max_runs": 1}, "params.optimizer is not a parameter"),
        ({"space": {"lr": {"uniform": [0.1, 1]}}, "max_runs": 2, "seed": -1}, "seed must be"),
        ({"space": {}, "max_runs": 2}, "must map parameter names"),
    ],
)
def test_a_bad_random_space_is_refused_naming_the_problem(random: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        expand({"random": random}, {})
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_parallel": 0}, "max_parallel must be an integer from 1 to 32"),
        ({"max_parallel": True}, "max_parallel must be"),
        ({"early_stop": {"eta": 1}}, "eta must be an integer from 2 to 16"),
        ({"early_stop": {"eta": 3, "grace": 1}}, "sweep.early_stop must be"),
        ({"max_cost_usd": -1}, "positive number"),
        ({"max_cost_usd": float("inf")}, "positive number"),
        ({"max_cost_usd": 0.001}, "does not cover one run and the refit"),
        ({"val_images": 0}, "val_images must be"),
        ({"budget": 3}, "sweep must be"),
    ],
)
def test_bad_sweep_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_sweep_request({**BASE, "sweep": {"grid": {"lr": [0.1, 0.2]}, **settings}})
    assert message in str(caught.value)


def test_early_stopping_refuses_sets_with_different_epochs() -> None:
    with pytest.raises(InvalidEventError, match="same epochs in every set"):
        parse_sweep_request({**BASE, "sweep": {"grid": {"epochs": [2, 4]}, "early_stop": {"eta": 2}}})


# --- step: slots, the cost cap, the refit ---------------------------------------------------------


def record_of(n: int, **settings: Any) -> dict[str, Any]:
    request = parse_sweep_request({**BASE, "sweep": {"list": [{"lr": 0.1 * (i + 1)} for i in range(n)], **settings}})
    return new_sweep_record(request, DIGEST, None, "2026-12-07T00:00:00Z")


def started(record: dict[str, Any]) -> list[int]:
    return [run["index"] for run in record["runs"] if run["started"]]


def ends(record: dict[str, Any], index: int, state: str, correct: int = 0, epoch: int | None = None) -> Observed:
    return Observed(state, stopped_at_epoch=epoch, validation=(correct, 100), version=f"v{index}")


def test_max_parallel_claims_the_next_sets_only_as_runs_end() -> None:
    record = record_of(5, max_parallel=2)
    assert [run["index"] for run in step(record, {})] == [0, 1]
    assert step(copy.deepcopy(record), {}) == step(record, {}) and started(record) == [0, 1]  # nothing more
    run0 = record["runs"][0]["run_id"]
    step(record, {run0: ends(record, 0, "succeeded", 50)})
    assert started(record) == [0, 1, 2]
    assert step(record, {run0: Observed("running")}) and started(record) == [0, 1, 2]  # an ended run stays ended


def test_the_cost_cap_holds_back_sets_and_an_early_stop_frees_budget() -> None:
    record = record_of(4, max_cost_usd=13 * EPOCH_COST_USD)  # 13 epochs: two runs of 4 + the refit's 4 + 1
    step(record, {})
    assert started(record) == [0, 1] and "set 2 not started" in record["budget"]
    run0, run1 = record["runs"][0]["run_id"], record["runs"][1]["run_id"]
    step(record, {run0: ends(record, 0, "stopped-early", 10, epoch=1)})  # ran 1 of 4 epochs: 1 + 4 + 4 + 4
    assert started(record) == [0, 1, 2]
    step(record, {run1: ends(record, 1, "succeeded", 40)})
    assert started(record) == [0, 1, 2]  # 1 + 4 + 4 spent or running, + 4 reserved: no room for set 3
    run2 = record["runs"][2]["run_id"]
    todo = step(record, {run2: ends(record, 2, "failed")})
    # nothing runs and nothing fits: the last set never starts, and the refit of the best goes ahead
    assert record["runs"][3]["ended"] == "not-started"
    assert record["state"] == "refitting" and record["refit"]["index"] == 1 and todo == [record["refit"]]


def test_selection_is_by_validation_counts_with_ties_to_the_lower_index() -> None:
    runs = [
        {"index": 0, "ended": "succeeded", "validation": [40, 100]},
        {"index": 1, "ended": "succeeded", "validation": [2, 4]},  # 50 %
        {"index": 2, "ended": "succeeded", "validation": [50, 100]},  # 50 %: a tie, the lower index wins
        {"index": 3, "ended": "stopped-early", "validation": [99, 100]},  # measured at a rung only
        {"index": 4, "ended": "failed", "validation": None},
        {"index": 5, "ended": "succeeded", "validation": None},  # its final counts were never written
    ]
    best = select(runs)
    assert best is not None and best["index"] == 1
    assert select(runs[3:5]) is None


def test_when_every_run_ended_one_refit_is_claimed_and_it_alone_finishes_the_sweep() -> None:
    record = record_of(3, early_stop={"eta": 2})
    step(record, {})
    ids = [run["run_id"] for run in record["runs"]]
    seen = {
        ids[0]: Observed("succeeded", validation=(61, 100), version="v0"),
        ids[1]: Observed("stopped-early", stopped_at_epoch=1, validation=(70, 100)),
        ids[2]: Observed("succeeded", validation=(62, 100), version="v2"),
    }
    todo = step(record, seen)
    refit = record["refit"]
    assert (record["state"], refit["index"], todo) == ("refitting", 2, [refit])
    assert refit["params"] == record["runs"][2]["params"] and refit["run_id"] not in ids
    assert [row["index"] for row in record["ranking"]] == [2, 0, 1]
    assert record["ranking"][2]["stopped_at_epoch"] == 1
    again = copy.deepcopy(record)
    step(again, seen)  # a second stop event, or the workflow: the same refit, not another
    assert again["refit"] == refit
    refit["task_arn"] = "arn:task/refit"
    gate = {"outcome": "promoted", "reason": "beats the champion"}
    step(record, {**seen, refit["run_id"]: Observed("succeeded", version="vr", gate=gate)})
    assert record["state"] == "finished" and record["refit"]["gate"] == gate
    assert record["outcome"] == "refit succeeded; gate: promoted"


def test_a_sweep_without_a_succeeded_run_finishes_without_a_refit() -> None:
    record = record_of(2)
    step(record, {})
    step(record, {run["run_id"]: Observed("failed") for run in record["runs"]})
    assert (record["state"], record["refit"]) == ("finished", None)
    assert "nothing to refit" in record["outcome"]


def test_the_summary_charts_validation_accuracy_against_each_swept_parameter() -> None:
    request = parse_sweep_request({**BASE, "sweep": {"grid": {"lr": [0.5, 0.1], "seed": [0, 1]}}})
    record = new_sweep_record(request, DIGEST, None, "2026-12-07T00:00:00Z")
    step(record, {})
    seen = {run["run_id"]: Observed("succeeded", validation=(60 + run["index"], 100)) for run in record["runs"]}
    seen[record["runs"][3]["run_id"]] = Observed("stopped-early", stopped_at_epoch=1, validation=(1, 3))
    step(record, seen)
    summary = record["summary_markdown"]
    blocks = [f"```mermaid{part.split('```')[0]}```" for part in summary.split("```mermaid")[1:]]
    assert len(blocks) == 2  # lr and seed vary; epochs does not
    assert all(mermaid_xychart_errors(block) == [] for block in blocks)
    lr_chart = blocks[0]
    # the grid's sets: 0 (0.5, 0), 1 (0.5, 1), 2 (0.1, 0), 3 (0.1, 1); sorted by lr, then by set
    assert '["0.1 #2", "0.1 #3 @e1", "0.5 #0", "0.5 #1"]' in lr_chart and "bar [62.00, 33.33, 60.00, 61.00]" in lr_chart
    assert "| 1 | 2 |" in summary and "stopped-early at epoch 1 | 1/3 (33.33 %)" in summary
    assert "Refit of set 2 on the whole training set" in summary
