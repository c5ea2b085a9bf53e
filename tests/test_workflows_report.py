"""`ci.report` and `ci.comments`: the report workflow's steps against recording fakes of `aws` and `gh`.

GIVEN ECR, the run record and the reports as the fakes answer them, WHEN a step runs as the workflow
runs it (`python3 -m ci.report …` with PYTHONPATH=scripts), THEN it finds the push's run from the
image digest, waits, exports the report, and posts it once per commit and pull request (edited in
place on a re-run, never duplicated).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ci.report import marker, push_run_id
from fakebin import FakeBin, github_outputs

REPO = Path(__file__).resolve().parent.parent
SHA = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ef" * 32
BUCKET = "pushtrain-artifacts-123456789012-eu-west-1"
RUN_ID = push_run_id(DIGEST)
WAIT = ["wait", "--bucket", BUCKET, "--repository-name", "pushtrain-trainer", "--commit", SHA, "--poll-seconds", "0"]
SUMMARY = ["summary", "--bucket", BUCKET, "--status-key", f"runs/{RUN_ID}/status.json", "--commit", SHA]
COMMENT = ["comment", "--repository", "octo/pushtrain", "--commit", SHA, "--run-id", RUN_ID]


def status(state: str, **extra: Any) -> str:
    return json.dumps({"schema": 1, "run_id": RUN_ID, "state": state, "attempt": 1, "source": "push",
                       "image_digest": DIGEST, "git_sha": SHA, "params": {}, "reason": None, "version": None,
                       **extra})  # fmt: skip


def step(
    tmp_path: Path, fakes: FakeBin, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    for name in ("github_output", "step_summary"):
        (tmp_path / name).touch()
    return subprocess.run(
        [sys.executable, "-m", "ci.report", *args],
        env=fakes.env(PYTHONPATH=str(REPO / "scripts"), GITHUB_OUTPUT=str(tmp_path / "github_output"),
                      GITHUB_STEP_SUMMARY=str(tmp_path / "step_summary"), **(env or {})),
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def outputs(tmp_path: Path) -> dict[str, str]:
    return github_outputs(tmp_path / "github_output")


def ecr(fakes: FakeBin) -> None:
    fakes.add("aws", ["ecr", "describe-images"], stdout=DIGEST + "\n")


def test_the_push_run_id_is_the_one_the_trigger_gives_the_digest() -> None:
    from trigger.runs import push_run_id as trigger_push_run_id

    assert push_run_id(DIGEST) == trigger_push_run_id(DIGEST, {})


def test_wait_finds_the_run_of_the_commits_image_waits_and_summary_exports_the_final_report(tmp_path: Path) -> None:
    # GIVEN the commit's image in ECR, a run that is queued, then running, then succeeded, and its report
    fakes = FakeBin(tmp_path)
    ecr(fakes)
    status_uri = f"s3://{BUCKET}/runs/{RUN_ID}/status.json"
    for state in ("queued", "running"):
        fakes.add("aws", ["s3", "cp", status_uri], stdout=status(state), times=1)
    fakes.add("aws", ["s3", "cp", status_uri], stdout=status("succeeded", version="v9"))
    fakes.add("aws", ["s3", "cp", f"s3://{BUCKET}/runs/{RUN_ID}/report.md"], stdout="**Gate: promoted to champion**\n")
    # WHEN the wait step runs
    result = step(tmp_path, fakes, *WAIT)
    # THEN it looked the image up by its tag, said how to follow the run, and exported where its record is
    assert result.returncode == 0, result.stdout + result.stderr
    assert fakes.calls("aws")[0][:6] == ["ecr", "describe-images", "--repository-name", "pushtrain-trainer",
                                         "--image-ids", f"imageTag={SHA}"]  # fmt: skip
    assert f"pushtrain runs show {RUN_ID} --store s3://{BUCKET}" in result.stdout
    out = outputs(tmp_path)
    assert out["run-id"] == RUN_ID and out["status-key"] == f"runs/{RUN_ID}/status.json"
    # AND WHEN the summary step runs, THEN it exports the report with its marker, and writes it to the summary
    result = step(tmp_path, fakes, *SUMMARY)
    assert result.returncode == 0, result.stdout + result.stderr
    out = outputs(tmp_path)
    assert out["comment-commit"] == SHA
    assert out["comment-body"].startswith(marker(RUN_ID) + "\n## Training")
    assert "**Gate: promoted to champion**" in out["comment-body"]
    assert "**Gate: promoted to champion**" in (tmp_path / "step_summary").read_text()


def test_summary_falls_back_to_the_versions_report_when_the_run_has_none(tmp_path: Path) -> None:
    fakes = FakeBin(tmp_path)
    fakes.add("aws", ["s3", "cp", f"s3://{BUCKET}/runs/{RUN_ID}/status.json"], stdout=status("succeeded", version="v9"))
    missing = "fatal error: An error occurred (404) when calling the HeadObject operation: Not Found"
    fakes.add("aws", ["s3", "cp", f"s3://{BUCKET}/runs/{RUN_ID}/report.md"], exit=1, stderr=missing)
    fakes.add("aws", ["s3", "cp", f"s3://{BUCKET}/models/cifar10/v9/report.md"], stdout="version report\n")
    result = step(tmp_path, fakes, *SUMMARY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "version report" in outputs(tmp_path)["comment-body"]


def test_a_failed_run_fails_the_wait_step_and_its_summary_exports_the_reason(tmp_path: Path) -> None:
    fakes = FakeBin(tmp_path)
    ecr(fakes)
    fakes.add("aws", ["s3", "cp"], stdout=status("failed", reason="loss is NaN at epoch 2"))
    result = step(tmp_path, fakes, *WAIT, "--curves-dir", str(tmp_path / "curves"))
    assert result.returncode == 1
    assert "::error title=training::run failed: loss is NaN at epoch 2" in result.stdout
    assert outputs(tmp_path)["curves"] == ""  # nothing to show, nothing uploaded
    result = step(tmp_path, fakes, *SUMMARY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reason: loss is NaN at epoch 2" in outputs(tmp_path)["comment-body"]


def test_a_run_still_going_after_the_timeout_exports_no_state_so_no_report_is_posted(tmp_path: Path) -> None:
    fakes = FakeBin(tmp_path)
    ecr(fakes)
    fakes.add("aws", ["s3", "cp"], stdout=status("running"))
    result = step(tmp_path, fakes, *WAIT, "--timeout-minutes", "0")
    assert result.returncode == 1
    assert "is still running after 0 minutes; the run goes on" in result.stdout
    out = outputs(tmp_path)
    assert out["run-id"] == RUN_ID and "state" not in out  # report.yml's summary step runs only with a state
    steps = yaml.safe_load((REPO / ".github" / "workflows" / "report.yml").read_text())["jobs"]["wait"]["steps"]
    (summary,) = [s for s in steps if "ci.report summary" in str(s.get("run", ""))]
    assert summary["if"] == "always() && steps.wait.outputs.state != ''"


def test_wait_without_the_image_in_ecr_fails_in_one_line(tmp_path: Path) -> None:
    fakes = FakeBin(tmp_path)
    refused = "An error occurred (ImageNotFoundException) when calling the DescribeImages operation"
    fakes.add("aws", ["ecr", "describe-images"], exit=254, stderr=refused)
    result = step(tmp_path, fakes, *WAIT)
    assert result.returncode == 1
    assert "ImageNotFoundException" in result.stdout
    assert fakes.calls("aws") == [fakes.calls("aws")[0]]  # nothing polled


def test_comment_posts_on_the_commit_and_its_merged_pull_request(tmp_path: Path) -> None:
    # GIVEN no earlier report comment anywhere, and one merged pull request that brought the commit in
    fakes = FakeBin(tmp_path)
    fakes.add("gh", ["api", f"repos/octo/pushtrain/commits/{SHA}/pulls"], stdout="42\n")
    body = f"{marker(RUN_ID)}\n## Training `{RUN_ID}`: succeeded\n"
    # WHEN the comment step runs
    result = step(tmp_path, fakes, *COMMENT, env={"REPORT_BODY": body})
    # THEN one comment is created on each, with the body as exported
    assert result.returncode == 0, result.stdout + result.stderr
    writes = [c for c in fakes.all_calls() if c["name"] == "gh" and "--method" in c["args"]]
    assert [c["args"][2:4] for c in writes] == [
        ["POST", f"repos/octo/pushtrain/commits/{SHA}/comments"],
        ["POST", "repos/octo/pushtrain/issues/42/comments"],
    ]
    assert all(json.loads(c["stdin"]) == {"body": body} for c in writes)


def test_a_rerun_edits_the_comments_it_made_instead_of_adding_more(tmp_path: Path) -> None:
    # GIVEN the bot's earlier report comments (ids 7 on the commit, 987 on the pull request)
    fakes = FakeBin(tmp_path)
    fakes.add("gh", ["api", f"repos/octo/pushtrain/commits/{SHA}/pulls"], stdout="42\n")
    fakes.add("gh", ["api", "--paginate", f"repos/octo/pushtrain/commits/{SHA}/comments"], stdout="7\n")
    fakes.add("gh", ["api", "--paginate", "repos/octo/pushtrain/issues/42/comments"], stdout="987\n")
    # WHEN the step runs again
    result = step(tmp_path, fakes, *COMMENT, env={"REPORT_BODY": f"{marker(RUN_ID)}\nnew text\n"})
    # THEN both are edited in place and nothing is created
    assert result.returncode == 0, result.stdout + result.stderr
    writes = [c["args"][2:4] for c in fakes.all_calls() if c["name"] == "gh" and "--method" in c["args"]]
    assert writes == [
        ["PATCH", "repos/octo/pushtrain/comments/7"],
        ["PATCH", "repos/octo/pushtrain/issues/comments/987"],
    ]
    lookups = [c for c in fakes.calls("gh") if "--jq" in c and c[1] == "--paginate"]
    assert all('"github-actions[bot]"' in c[-1] and marker(RUN_ID) in c[-1] for c in lookups)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (COMMENT, {"REPORT_BODY": ""}, "the comment body is empty"),
        (
            ["comment", "--repository", "octo", "--commit", SHA, "--run-id", RUN_ID],
            {"REPORT_BODY": "x"},
            "not owner/name",
        ),
        (
            ["comment", "--repository", "octo/p", "--commit", SHA, "--run-id", "../x"],
            {"REPORT_BODY": "x"},
            "not a pushtrain run id",
        ),
    ],
)
def test_comment_refuses_bad_input_before_calling_github(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    fakes = FakeBin(tmp_path)
    fakes.install("gh")
    result = step(tmp_path, fakes, *args, env=env)
    assert result.returncode == 1
    assert message in result.stdout
    assert fakes.calls("gh") == []
