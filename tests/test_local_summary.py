"""The demo's closing summary: PASS or FAIL per scenario, the notifications seen, the kept store's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pushtrain_local.pipeline import TaskRun
from pushtrain_local.scenarios import Outcome
from pushtrain_local.summary import Verdict, closing, failed, judge, pushtrain_command


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


KEPT = {"outcome": "kept", "reason": "accuracy 98/1000 (9.80 %) is below the floor 0.5"}


def test_a_gate_fail_kept_for_its_accuracy_passes() -> None:
    outcome = Outcome("gate-fail", runs=[run("r", 0)], champion_before={"version": "good"},
                      champion_after={"version": "good"})  # fmt: skip
    verdict = judge(Records(r={"state": "succeeded", "version": "weak", "gate": KEPT}), outcome)  # type: ignore[arg-type]
    assert verdict.passed, verdict.detail


def test_a_gate_fail_without_any_champion_fails_instead_of_passing_on_nothing() -> None:
    # GIVEN the first push never became champion (the float32 gate refused 0.9 at a 0.9 floor): before = after = None
    outcome = Outcome("gate-fail", runs=[run("r", 0)])
    verdict = judge(Records(r={"state": "succeeded", "version": "weak", "gate": KEPT}), outcome)  # type: ignore[arg-type]
    assert verdict == Verdict(
        "gate-fail", False, "there was no champion to keep: the first model never passed the gate"
    )


def test_a_gate_fail_whose_gate_did_not_judge_the_accuracy_fails_naming_the_reason() -> None:
    outcome = Outcome("gate-fail", runs=[run("r", 0)], champion_before={"version": "good"},
                      champion_after={"version": "good"})  # fmt: skip
    pending = {"outcome": "pending", "reason": "the gate could not run: GateError: damaged"}
    verdict = judge(Records(r={"state": "succeeded", "version": "weak", "gate": pending}), outcome)  # type: ignore[arg-type]
    assert not verdict.passed
    assert "'pending' (the gate could not run: GateError: damaged)" in verdict.detail


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
        command=".venv/bin/pushtrain",
    )
    assert "=== summary: FAIL" in text
    assert "  FAIL  spot       RuntimeError: no second attempt" in text
    assert "success notifications on the topic: 1 (pushtrain: cifar10 99.60% promoted to champion)" in text
    assert "    .venv/bin/pushtrain runs list --store .pushtrain/demo/store" in text
    assert "source .venv/bin/activate" in text


def test_the_commands_to_paste_name_the_venv_script_or_its_python(tmp_path: Path) -> None:
    # GIVEN a venv under the repository, before and after its `pushtrain` script is installed
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    python = str(tmp_path / ".venv" / "bin" / "python")
    # THEN the command works pasted here: never a bare `python` (the system one has no trainer)
    assert pushtrain_command(python, cwd=tmp_path) == ".venv/bin/python -m trainer"
    (tmp_path / ".venv" / "bin" / "pushtrain").write_text("#!/bin/sh\n")
    assert pushtrain_command(python, cwd=tmp_path) == ".venv/bin/pushtrain"
    assert pushtrain_command(python, cwd=tmp_path / "elsewhere") == str(tmp_path / ".venv" / "bin" / "pushtrain")


def _sweep(states: list[str], champion: str | None) -> tuple[Records, Outcome]:
    """A sweep demo's outcome: one run per set in `states`, then the refit (version "refit")."""
    records = {f"s{i}": {"state": state} for i, state in enumerate(states)}
    records["refit"] = {"state": "succeeded", "version": "refit"}
    runs = [run(name, 0) for name in records]
    return Records(**records), Outcome("sweep", runs=runs, champion_after={"version": champion} if champion else None)


def test_a_sweep_passes_only_with_six_sets_early_stopping_and_the_refit_as_champion() -> None:
    six = ["succeeded", *["stopped-early"] * 5]
    records, outcome = _sweep(six, "refit")
    assert judge(records, outcome).passed  # type: ignore[arg-type]

    # each missing part fails the demo, naming it
    for states, champion, reason in [
        (six[:5], "refit", "ran 5 sets, fewer than 6"),
        (["succeeded"] * 6, "refit", "no set of the sweep stopped early"),
        (six, "s0", "the champion is s0, not the refit's version refit"),
        (six, None, "the champion is None"),
    ]:
        records, outcome = _sweep(states, champion)
        verdict = judge(records, outcome)  # type: ignore[arg-type]
        assert not verdict.passed and reason in verdict.detail
