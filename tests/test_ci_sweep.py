"""ci.sweep: the retrain workflow's sweep step, against a fake trigger that answers like trigger.sweep_flow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from ci.github import CIError
from ci.retrain import build_request
from ci.sweep import parse_values, ranking_table, start_all, sweep_request, verdict, wait_finished

BASE = build_request(request_id="4242", image="0123abc", git_sha=None, epochs=10, lr=None, model="airbench")


def test_lrs_and_seeds_become_a_grid_over_the_base_parameters() -> None:
    request = sweep_request(BASE, parse_values("0.5, 1.5", "lrs", float), parse_values("0,1", "seeds", int))
    assert request["sweep"] == {"grid": {"lr": [0.5, 1.5], "seed": [0, 1]}}
    assert request["params"] == {"epochs": 10, "model": "airbench"}
    assert request["request_id"] == "4242"


@pytest.mark.parametrize(
    ("lrs", "seeds", "message"),
    [
        ("", "", "needs learning rates or seeds"),
        ("0.5, x", "", "'x' is not a float"),
        ("0.5, 0.5", "", "given twice"),
        ("-1", "", "out of range"),
        (",".join(str(0.1 * i) for i in range(1, 12)), "0,1,2", "makes 33 runs"),
    ],
)
def test_a_bad_sweep_input_fails_with_one_line(lrs: str, seeds: str, message: str) -> None:
    with pytest.raises(CIError, match=message):
        sweep_request(BASE, parse_values(lrs, "lrs", float), parse_values(seeds, "seeds", int))


class FakeTrigger:
    """Answers as trigger.sweep_flow does: 4 starts per invocation, then the states, then the summary."""

    def __init__(self, runs: int, polls_until_finished: int, refit_ended: str = "succeeded") -> None:
        self.runs, self.started, self.polls, self.calls = runs, 0, polls_until_finished, 0
        self.refit_ended = refit_ended

    def __call__(self, request: Mapping[str, Any]) -> dict[str, Any]:
        self.calls += 1
        runs = [
            {"run_id": f"retrain-4242-{i:08x}", "params": {"lr": i}, "started": i < self.started}
            for i in range(self.runs)
        ]
        ranking = [{"rank": i + 1, "index": i, "state": "running"} for i in range(self.runs)]
        answer: dict[str, Any] = {"request_id": "4242", "sweep_key": "sweeps/4242.json", "runs": runs}
        if self.started < self.runs:
            self.started = min(self.runs, self.started + 4)
            return answer | {"remaining": self.runs - self.started, "state": "running", "ranking": ranking}
        if self.polls:
            self.polls -= 1
            return answer | {"remaining": 0, "state": "running", "ranking": ranking}
        refit = {"index": 1, "run_id": "retrain-4242-ffffffff", "ended": self.refit_ended}
        summary = "| rank | set | run |\n|---:|---:|---|\n| 1 | 1 | `retrain-4242-00000001` |"
        return answer | {"remaining": 0, "state": "finished", "refit": refit, "summary_markdown": summary}


def test_the_step_invokes_until_every_run_started_then_waits_for_the_refit() -> None:
    trigger = FakeTrigger(runs=10, polls_until_finished=2)
    request = sweep_request(BASE, [0.5, 1.0], [0, 1, 2, 3, 4], max_parallel=3, early_stop_eta=2)
    assert request["sweep"] == {"grid": {"lr": [0.5, 1.0], "seed": [0, 1, 2, 3, 4]}, "max_parallel": 3,
                                "early_stop": {"eta": 2}}  # fmt: skip
    started = start_all(trigger, request)
    assert (started["remaining"], trigger.calls) == (0, 3)  # 4 + 4 + 2 runs
    slept: list[float] = []
    finished = wait_finished(trigger, request, timeout_s=3600, poll_s=60, sleep=slept.append, clock=lambda: 0.0)
    assert finished["state"] == "finished"
    assert slept == [60, 60]
    table = ranking_table(finished)
    assert table.startswith("### Sweep 4242: 0 sets on")
    assert finished["summary_markdown"] in table
    assert verdict(finished) is None
    assert "ended failed" in str(verdict({**finished, "refit": {"run_id": "r", "ended": "failed"}}))
    assert verdict({"state": "finished", "refit": None, "outcome": "nothing to refit"}) == "nothing to refit"


def test_waiting_past_the_timeout_fails_and_says_the_runs_go_on() -> None:
    trigger = FakeTrigger(runs=1, polls_until_finished=100)
    request = sweep_request(BASE, [0.5], [])
    start_all(trigger, request)
    now = {"t": 0.0}

    def sleep(seconds: float) -> None:
        now["t"] += seconds

    with pytest.raises(CIError, match="did not finish within 5 minutes; its runs go on"):
        wait_finished(trigger, request, timeout_s=300, poll_s=60, sleep=sleep, clock=lambda: now["t"])
