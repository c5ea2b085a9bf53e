"""The demo's closing summary: PASS or FAIL per scenario, the notifications seen, the kept store's commands."""

from __future__ import annotations

from typing import Any

from pushtrain_local.pipeline import TaskRun
from pushtrain_local.scenarios import Outcome
from pushtrain_local.summary import Verdict, closing, failed, judge


class Records:
    """Stands in for the pipeline: only the run records `judge` reads."""

    def __init__(self, **records: dict[str, Any]) -> None:
        self.records = records

    def status(self, run_id: str) -> dict[str, Any] | None:
        return self.records.get(run_id)


def run(run_id: str, exit_code: int) -> TaskRun:
    return TaskRun(task_arn="arn", run_id=run_id, attempt=1, image="img", task_definition_arn="td", exit_code=exit_code)


def test_a_gate_fail_that_moved_the_champion_fails_with_both_versions() -> None:
    outcome = Outcome("gate-fail", runs=[run("r", 0)], champion_before={"version": "good"},
                      champion_after={"version": "weak"})  # fmt: skip
    verdict = judge(Records(r={"state": "succeeded", "version": "weak"}), outcome)  # type: ignore[arg-type]
    assert verdict == Verdict("gate-fail", False, "the weak model replaced the champion good with weak")


def test_a_spot_scenario_that_never_resumed_fails() -> None:
    outcome = Outcome("spot", runs=[run("r", 0)])
    verdict = judge(Records(r={"state": "succeeded", "attempt": 1, "version": "v"}), outcome)  # type: ignore[arg-type]
    assert not verdict.passed and "attempt 1" in verdict.detail


def test_a_failed_run_fails_its_scenario() -> None:
    verdict = judge(Records(r={"state": "failed"}), Outcome("push", runs=[run("r", 1)]))  # type: ignore[arg-type]
    assert verdict.line() == "  FAIL  push       run r ended failed (exit 1)"


def test_the_closing_summary_names_the_result_the_notifications_and_the_kept_store() -> None:
    text = closing(
        [Verdict("push", True, "trained"), failed("spot", RuntimeError("no second attempt"))],
        ["pushtrain: cifar10 99.60% promoted to champion"],
        ".pushtrain/demo/store",
    )
    assert "=== summary: FAIL" in text
    assert "  FAIL  spot       RuntimeError: no second attempt" in text
    assert "success notifications on the topic: 1 (pushtrain: cifar10 99.60% promoted to champion)" in text
    assert "python -m trainer runs list --store .pushtrain/demo/store" in text
