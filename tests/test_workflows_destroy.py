"""destroy.yml's confirmation gate, run as the runner runs it (bash -e on the step's script).

GIVEN the typed confirmation, the repository name and the branch, WHEN the `confirm` job's script
runs, THEN only the exact repository name, on main, lets the plan and destroy jobs (which `needs:`
it) start.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

WORKFLOW = Path(__file__).resolve().parent.parent / ".github" / "workflows" / "destroy.yml"


def confirm_script() -> str:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert (jobs["plan"]["needs"], jobs["destroy"]["needs"]) == ("confirm", "plan")
    (step,) = [s for s in jobs["confirm"]["steps"] if "run" in s]
    return str(step["run"])


def run_confirm(typed: str, ref: str = "refs/heads/main", attempt: str = "1") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONFIRM": typed, "EXPECTED": "octo/pushtrain", "REF": ref, "ATTEMPT": attempt}
    # GitHub runs `shell: bash` steps as `bash --noprofile --norc -eo pipefail {0}`.
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", confirm_script()],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_exact_repository_name_confirms() -> None:
    # GIVEN the repository's full name typed  WHEN checked  THEN the gate opens
    assert run_confirm("octo/pushtrain").returncode == 0


@pytest.mark.parametrize("typed", ["", "pushtrain", "Octo/pushtrain", "octo/pushtrain ", "octo/*"])
def test_anything_else_refuses_and_says_nothing_was_destroyed(typed: str) -> None:
    # GIVEN a near miss (empty, no owner, other case, trailing space, a glob)
    result = run_confirm(typed)
    # THEN the gate stays shut and says why
    assert result.returncode == 1
    assert f"typed '{typed}', expected 'octo/pushtrain': nothing destroyed" in result.stdout


def test_the_right_name_on_another_branch_refuses() -> None:
    # GIVEN the exact name typed, but the workflow started from a branch other than main
    result = run_confirm("octo/pushtrain", ref="refs/heads/feature")
    # THEN the gate stays shut: only main's plan is trusted by the plan role and admitted to production
    assert result.returncode == 1
    assert "run from refs/heads/feature, but only main may destroy" in result.stdout


@pytest.mark.parametrize("attempt", ["2", "3"])
def test_a_re_run_asks_for_the_confirmation_again(attempt: str) -> None:
    # GIVEN a re-run: GitHub hands it the inputs typed for the first attempt
    (step,) = [s for s in yaml.safe_load(WORKFLOW.read_text())["jobs"]["confirm"]["steps"] if "run" in s]
    assert step["env"]["ATTEMPT"] == "${{ github.run_attempt }}"
    # WHEN the gate checks the exact name on main  THEN it refuses: the name must be typed for this run
    result = run_confirm("octo/pushtrain", attempt=attempt)
    assert result.returncode == 1
    assert f"this is attempt {attempt} of the run, and a re-run reuses the confirmation" in result.stdout
