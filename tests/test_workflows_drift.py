"""`ci.drift_issue`, the last step of the drift workflow, against a recording fake `gh`.

GIVEN the scheduled plan's exit code and the open drift issues as `gh` lists them, WHEN the step
runs, THEN exactly one issue is opened, updated or closed; a failed check (or one that never reached
the plan) is reported on the issue too, and the step still fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from ci.drift_issue import BODY_LIMIT, render_body
from fakebin import FakeBin

REPO = Path(__file__).resolve().parent.parent
RUN_URL = "https://github.com/octo/pushtrain/actions/runs/42"
PLAN = '  # aws_s3_bucket_versioning.this will be updated in-place\n  ~ status = "Suspended" -> "Enabled"\n'


def drift(
    tmp_path: Path, fakes: FakeBin, exit_code: int | str, *, plan: str | None = PLAN
) -> subprocess.CompletedProcess[str]:
    args = ["--exit-code", str(exit_code), "--repository", "octo/pushtrain", "--run-url", RUN_URL]
    if plan is not None:
        (tmp_path / "tfplan.txt").write_text(plan)
        args += ["--plan-text", str(tmp_path / "tfplan.txt")]
    env = fakes.env(PYTHONPATH=str(REPO / "scripts"))
    return subprocess.run(
        [sys.executable, "-m", "ci.drift_issue", *args], env=env, capture_output=True, text=True, check=False
    )


def gh_with_open_issues(tmp_path: Path, numbers: list[int]) -> FakeBin:
    fakes = FakeBin(tmp_path)
    fakes.add("gh", ["issue", "list"], stdout=json.dumps([{"number": n} for n in numbers]))
    fakes.add("gh", ["issue", "create"], stdout="https://github.com/octo/pushtrain/issues/7\n")
    return fakes


def test_drift_without_an_open_issue_opens_one_with_the_plan(tmp_path: Path) -> None:
    # GIVEN drift (exit 2) and no open drift issue
    fakes = gh_with_open_issues(tmp_path, [])
    # WHEN the step runs
    result = drift(tmp_path, fakes, 2)
    # THEN the label is ensured and one issue is created, labelled, with the plan in its body
    assert result.returncode == 0, result.stdout + result.stderr
    calls = [c for c in fakes.all_calls() if c["name"] == "gh"]
    assert [c["args"][:2] for c in calls] == [["issue", "list"], ["label", "create"], ["issue", "create"]]
    list_args = calls[0]["args"]
    assert list_args[list_args.index("--label") + 1] == "drift"
    assert list_args[list_args.index("--state") + 1] == "open"
    create = calls[2]
    assert create["args"][create["args"].index("--label") + 1] == "drift"
    assert "aws_s3_bucket_versioning.this will be updated in-place" in create["stdin"]
    assert RUN_URL in create["stdin"]
    assert "opened https://github.com/octo/pushtrain/issues/7" in result.stdout


def test_drift_with_an_open_issue_updates_it_and_opens_no_second(tmp_path: Path) -> None:
    # GIVEN drift and an open drift issue #5
    fakes = gh_with_open_issues(tmp_path, [5])
    # WHEN the step runs
    result = drift(tmp_path, fakes, 2)
    # THEN #5 gets the new plan as its body and a comment; nothing is created
    assert result.returncode == 0, result.stdout + result.stderr
    calls = [c for c in fakes.all_calls() if c["name"] == "gh"]
    assert [c["args"][:3] for c in calls] == [
        ["issue", "list", "--repo"],
        ["issue", "edit", "5"],
        ["issue", "comment", "5"],
    ]
    assert "Suspended" in calls[1]["stdin"]
    assert RUN_URL in calls[2]["args"][-1]


def test_clean_plan_closes_every_open_drift_issue(tmp_path: Path) -> None:
    # GIVEN no drift (exit 0) and open drift issues #5 and #9
    fakes = gh_with_open_issues(tmp_path, [9, 5])
    # WHEN the step runs
    result = drift(tmp_path, fakes, 0, plan=None)
    # THEN both are closed with a comment linking the run, oldest first
    assert result.returncode == 0, result.stdout + result.stderr
    closes = [c for c in fakes.calls("gh") if c[:2] == ["issue", "close"]]
    assert [c[2] for c in closes] == ["5", "9"]
    assert RUN_URL in closes[0][-1]
    assert "closed #5, #9" in result.stdout


def test_clean_plan_without_an_open_issue_only_looks(tmp_path: Path) -> None:
    # GIVEN no drift and no open issue
    fakes = gh_with_open_issues(tmp_path, [])
    # WHEN the step runs
    result = drift(tmp_path, fakes, 0, plan=None)
    # THEN the only call is the listing
    assert result.returncode == 0, result.stdout + result.stderr
    assert [c[:2] for c in fakes.calls("gh")] == [["issue", "list"]]


def test_failed_plan_with_an_open_issue_comments_there_and_fails(tmp_path: Path) -> None:
    # GIVEN the plan itself failed (exit 1) and drift issue #5 is open
    fakes = gh_with_open_issues(tmp_path, [5])
    # WHEN the step runs
    result = drift(tmp_path, fakes, 1, plan=None)
    # THEN #5 gets a comment saying the check failed (its body, the last known drift, stays), and the step fails
    assert result.returncode == 1
    calls = [c for c in fakes.all_calls() if c["name"] == "gh"]
    assert [c["args"][:3] for c in calls] == [["issue", "list", "--repo"], ["issue", "comment", "5"]]
    assert "failed: terraform plan exited 1" in calls[1]["stdin"]
    assert RUN_URL in calls[1]["stdin"]
    assert "the drift check failed (exit code 1), so it says nothing about drift; commented on #5" in result.stdout


def test_check_that_never_reached_the_plan_opens_an_issue_and_fails(tmp_path: Path) -> None:
    # GIVEN no exit code at all (login or init failed before the plan) and no open drift issue
    fakes = gh_with_open_issues(tmp_path, [])
    # WHEN the step runs
    result = drift(tmp_path, fakes, "", plan=None)
    # THEN an issue labelled drift is opened saying the check fails, and the step fails
    assert result.returncode == 1
    calls = [c for c in fakes.all_calls() if c["name"] == "gh"]
    assert [c["args"][:2] for c in calls] == [["issue", "list"], ["label", "create"], ["issue", "create"]]
    create = calls[2]["args"]
    assert create[create.index("--title") + 1] == "Drift check failing: cannot tell whether AWS matches terraform/"
    assert create[create.index("--label") + 1] == "drift"
    assert "ended before terraform plan ran" in calls[2]["stdin"]
    assert "(no exit code)" in result.stdout


def test_the_issue_step_runs_even_when_the_plan_step_failed() -> None:
    # GIVEN drift.yml  THEN its issue step is not skipped after a failed step (only when the run is cancelled)
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "drift.yml").read_text())
    (step,) = [s for s in workflow["jobs"]["drift"]["steps"] if "ci.drift_issue" in str(s.get("run", ""))]
    assert step["if"] == "${{ !cancelled() }}"
    assert step["env"]["EXIT_CODE"] == "${{ steps.plan.outputs.exit-code }}"


def test_drift_without_the_plan_text_fails_before_calling_github(tmp_path: Path) -> None:
    # GIVEN drift but no plan text file
    fakes = gh_with_open_issues(tmp_path, [])
    # WHEN the step runs
    result = drift(tmp_path, fakes, 2, plan=None)
    # THEN it fails naming the missing file
    assert result.returncode == 1
    assert "its text file None does not exist" in result.stdout
    assert fakes.calls("gh") == []


def test_gh_failure_fails_the_step_with_its_message(tmp_path: Path) -> None:
    # GIVEN gh cannot list issues (no issues: write / read)
    fakes = FakeBin(tmp_path)
    fakes.add("gh", exit=1, stderr="HTTP 403: Resource not accessible by integration")
    # WHEN the step runs
    result = drift(tmp_path, fakes, 2)
    # THEN it fails with GitHub's message
    assert result.returncode == 1
    assert "Resource not accessible by integration" in result.stdout


def test_a_huge_plan_is_truncated_to_fit_an_issue_body() -> None:
    # GIVEN a plan longer than an issue body allows  WHEN rendered  THEN it fits GitHub's 65,536 and says so
    body = render_body("x" * (BODY_LIMIT * 2), RUN_URL)
    assert len(body) < 65_536
    assert "(truncated: the whole plan is in the run's log)" in body
