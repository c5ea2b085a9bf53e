"""The demo's closing lines: for each scenario, PASS or FAIL and what it showed, then where the store is kept."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pushtrain_local.pipeline import Pipeline
from pushtrain_local.scenarios import Outcome

# What each scenario demonstrates when it passes (the checks are in `judge`).
PROVES = {
    "push": "a push became one run that trained, published a version and passed the gate",
    "duplicate": "a second delivery of the same push event started nothing new",
    "spot": "a Spot interruption checkpointed and the trigger's second attempt resumed to success",
    "retrain": "a retrain request trained the pushed image again with its parameters",
    "gate-fail": "a weak model was published but the champion stayed",
    "sweep": "a sweep of six sets or more stopped the weak ones early and promoted only the refit of the best",
}
MIN_SWEEP_SETS = 6  # issue 27: the sweep demo shows at least six sets


@dataclass(frozen=True)
class Verdict:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"  {'PASS' if self.passed else 'FAIL'}  {self.name:<10} {self.detail}"


def _version(champion: dict[str, Any] | None) -> str | None:
    return champion.get("version") if champion else None


# What the weak run's gate must say: it was judged and kept for its accuracy (trainer.gate.judge's words),
# not pending, and not kept for some other reason (an unreadable champion, "already judged").
GATE_FAIL_REASON = re.compile(r"accuracy \d+/\d+ \([0-9.]+ %\) is below (the floor|champion) ")


def _gate_fail_problem(before: str | None, after: str | None, record: dict[str, Any]) -> str | None:
    """Why a gate-fail scenario did not show what it should, or None when it did."""
    if before is None:
        return "there was no champion to keep: the first model never passed the gate"
    if before != after:
        return f"the weak model replaced the champion {before} with {after}"
    gate = record.get("gate") if isinstance(record.get("gate"), dict) else {}
    reason = str(gate.get("reason", ""))
    if gate.get("outcome") != "kept" or not GATE_FAIL_REASON.match(reason):
        return f"the weak run's gate was {gate.get('outcome')!r} ({reason or 'no reason'}), not kept for its accuracy"
    return None


def _sweep_problem(pipeline: Pipeline, outcome: Outcome, after: str | None, refit: Mapping[str, Any]) -> str | None:
    """What the sweep demo must show (issue 27): six sets or more, early stopping, and the refit (the last
    run) as the one promotion; None when it showed all three."""
    sets = outcome.runs[:-1]
    if len(sets) < MIN_SWEEP_SETS:
        return f"the sweep ran {len(sets)} sets, fewer than {MIN_SWEEP_SETS}"
    if not any((pipeline.status(run.run_id) or {}).get("state") == "stopped-early" for run in sets):
        return "no set of the sweep stopped early"
    if after is None or after != refit.get("version"):
        return f"the champion is {after}, not the refit's version {refit.get('version')}"
    return None


def judge(pipeline: Pipeline, outcome: Outcome) -> Verdict:
    """PASS when the scenario's last run succeeded and the champion moved (or, for gate-fail, stayed)."""
    if not outcome.runs:
        return Verdict(outcome.name, True, PROVES.get(outcome.name, "ran"))
    last = outcome.runs[-1]
    record = pipeline.status(last.run_id) or {}
    if last.exit_code != 0 or record.get("state") != "succeeded":
        return Verdict(outcome.name, False, f"run {last.run_id} ended {record.get('state')} (exit {last.exit_code})")
    before, after = _version(outcome.champion_before), _version(outcome.champion_after)
    if outcome.name == "gate-fail":
        problem = _gate_fail_problem(before, after, record)
        if problem:
            return Verdict(outcome.name, False, problem)
    if outcome.name == "sweep":
        problem = _sweep_problem(pipeline, outcome, after, record)
        if problem:
            return Verdict(outcome.name, False, problem)
    if outcome.name == "spot" and int(record.get("attempt") or 0) < 2:
        return Verdict(outcome.name, False, f"run {last.run_id} finished in attempt {record.get('attempt')}")
    return Verdict(outcome.name, True, f"{PROVES.get(outcome.name, 'ran')} (version {record.get('version')})")


def failed(name: str, error: BaseException) -> Verdict:
    return Verdict(name, False, f"{type(error).__name__}: {error}")


def pushtrain_command(executable: str = sys.executable, cwd: Path | None = None) -> str:
    """The trainer's CLI as a command that works when pasted here: the venv's `pushtrain` entry point
    (relative to cwd when inside it), else that venv's python with `-m trainer` (the system python has
    no trainer package)."""
    bin_dir = Path(executable).parent
    script = bin_dir / "pushtrain"
    target, suffix = (script, "") if script.is_file() else (Path(executable), " -m trainer")
    here = cwd or Path.cwd()
    absolute = target if target.is_absolute() else here / target  # not resolve(): .venv may be a symlink
    shown = absolute.relative_to(here).as_posix() if absolute.is_relative_to(here) else str(absolute)
    return shown + suffix


def closing(verdicts: list[Verdict], notified: list[str], store: str | None, *, command: str | None = None) -> str:
    """The closing summary: a line per scenario, the notifications seen, and the commands for the kept store."""
    passed = all(v.passed for v in verdicts)
    lines = ["", f"=== summary: {'PASS' if passed else 'FAIL'} " + "=" * 50, *(v.line() for v in verdicts)]
    lines.append(f"  success notifications on the topic: {len(notified)}" + (f" ({notified[-1]})" if notified else ""))
    if store:
        cli = command or pushtrain_command()
        lines += [
            f"  the store (runs and models) is kept in {store}; look at it with (after `source .venv/bin/activate`,"
            " `pushtrain` alone):",
            f"    {cli} runs list --store {store}",
            f"    {cli} models list --store {store}",
            f"    {cli} models rollback --store {store} --reason 'try it'",
        ]
    return "\n".join(lines)
