"""`ci.retrain`, the steps of the retrain workflow, against recording fakes of `aws` and `gh`.

GIVEN a trigger, a run record and a report as the fakes answer them, WHEN a step runs as the
workflow runs it (`python3 -m ci.retrain …` with PYTHONPATH=scripts), THEN the AWS and GitHub calls,
$GITHUB_OUTPUT, $GITHUB_STEP_SUMMARY and the exit status follow docs/contracts.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ci.github import CIError
from ci.retrain import build_request
from ci.runs import GITHUB_COMMENT_LIMIT, render, report_key
from fakebin import FakeBin, github_outputs

REPO = Path(__file__).resolve().parent.parent
SHA = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "cd" * 32
RUN_ID = "retrain-9876543210-1a2b3c4d"
STATUS_KEY = f"runs/{RUN_ID}/status.json"
BUCKET = "pushtrain-artifacts-123456789012-eu-west-1"


def status(state: str, **extra: Any) -> str:
    record = {
        "schema": 1,
        "run_id": RUN_ID,
        "state": state,
        "attempt": 1,
        "source": "retrain",
        "image_digest": DIGEST,
        "git_sha": SHA,
        "params": {"epochs": 12, "lr": 0.2},
        "task_arn": "arn:aws:ecs:eu-west-1:123456789012:task/pushtrain/abc",
        "reason": None,
        "version": None,
        **extra,
    }
    return json.dumps(record)


def retrain(tmp_path: Path, fakes: FakeBin, *args: str) -> subprocess.CompletedProcess[str]:
    return retrain_with_env(tmp_path, fakes, {}, *args)


def retrain_with_env(
    tmp_path: Path, fakes: FakeBin, extra_env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    for name in ("github_output", "step_summary"):
        (tmp_path / name).touch()
    env = fakes.env(
        PYTHONPATH=str(REPO / "scripts"),
        GITHUB_OUTPUT=str(tmp_path / "github_output"),
        GITHUB_STEP_SUMMARY=str(tmp_path / "step_summary"),
        RUNNER_TEMP=str(tmp_path),
        **extra_env,
    )
    return subprocess.run(
        [sys.executable, "-m", "ci.retrain", *args], env=env, capture_output=True, text=True, check=False, timeout=60
    )


def outputs(tmp_path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (tmp_path / "github_output").read_text().splitlines())


# --- invoke ---------------------------------------------------------------------------------------

INVOKE = ["invoke", "--function", "pushtrain-trigger", "--request-id", "9876543210", "--image", SHA, "--git-sha", SHA]


def test_invoke_sends_the_contract_request_and_exports_the_answer(tmp_path: Path) -> None:
    # GIVEN a trigger that starts the run
    fakes = FakeBin(tmp_path)
    answer = {"run_id": RUN_ID, "task_arn": "arn:aws:ecs:…:task/x", "image_digest": DIGEST, "status_key": STATUS_KEY}
    fakes.add(
        "aws",
        ["lambda", "invoke"],
        stdout='{"StatusCode": 200, "ExecutedVersion": "$LATEST"}',
        writes={"{last}": json.dumps(answer)},
    )
    # WHEN the invoke step runs with epochs, lr and model
    result = retrain(tmp_path, fakes, *INVOKE, "--epochs", "12", "--lr", "0.2", "--model", "airbench")
    # THEN the trigger is invoked synchronously with the request of docs/contracts.md
    assert result.returncode == 0, result.stdout + result.stderr
    call = fakes.calls("aws")[0]
    assert call[call.index("--function-name") + 1] == "pushtrain-trigger"
    assert call[call.index("--invocation-type") + 1] == "RequestResponse"
    sent = json.loads(result.stdout.split("retrain request: ", 1)[1].splitlines()[0])
    assert sent == {
        "action": "retrain",
        "request_id": "9876543210",
        "image": SHA,
        "params": {"epochs": 12, "lr": 0.2, "model": "airbench"},
        "git_sha": SHA,
    }
    # AND the answer reaches the next steps
    assert outputs(tmp_path) == {
        "run-id": RUN_ID,
        "status-key": STATUS_KEY,
        "task-arn": "arn:aws:ecs:…:task/x",
        "image-digest": DIGEST,
    }
    assert RUN_ID in (tmp_path / "step_summary").read_text()
    # AND it says how to follow the run from a terminal
    assert f"pushtrain runs show {RUN_ID} --store s3://" in result.stdout


def test_invoke_error_from_the_function_fails_with_its_message(tmp_path: Path) -> None:
    # GIVEN the trigger raises (e.g. the tag is not in ECR)
    fakes = FakeBin(tmp_path)
    error = {"errorType": "ImageNotFound", "errorMessage": f"image '{SHA}' is not in repository 'pushtrain-trainer'"}
    fakes.add(
        "aws",
        ["lambda", "invoke"],
        stdout='{"StatusCode": 200, "FunctionError": "Unhandled"}',
        writes={"{last}": json.dumps(error)},
    )
    # WHEN the invoke step runs
    result = retrain(tmp_path, fakes, *INVOKE)
    # THEN it fails showing the trigger's own message, and exports nothing
    assert result.returncode == 1
    assert "rejected the request (Unhandled)" in result.stdout
    assert "is not in repository 'pushtrain-trainer'" in result.stdout
    assert (tmp_path / "github_output").read_text() == ""


def test_invoke_answer_without_the_contract_keys_fails(tmp_path: Path) -> None:
    # GIVEN a trigger answering something else
    fakes = FakeBin(tmp_path)
    fakes.add("aws", ["lambda", "invoke"], stdout='{"StatusCode": 200}', writes={"{last}": '{"ok": true}'})
    # WHEN the invoke step runs
    result = retrain(tmp_path, fakes, *INVOKE)
    # THEN it fails naming what is missing
    assert result.returncode == 1
    assert "lacks ['image_digest', 'run_id', 'status_key']" in result.stdout


def test_zero_epochs_and_lr_mean_the_recipe_and_are_not_sent() -> None:
    # GIVEN the workflow's defaults (0 and empty)  WHEN the request is built  THEN params is empty
    request = build_request(request_id="1", image=SHA, git_sha=None, epochs=0, lr=0.0, model=None)
    assert request == {"action": "retrain", "request_id": "1", "image": SHA, "params": {}}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image": "latest"}, "image 'latest' is refused"),
        ({"image": "bad image"}, "image 'bad image' is neither an image tag nor"),
        ({"request_id": "12345678901234567890"}, "request id '12345678901234567890' must match"),
        ({"epochs": -1}, "epochs must be positive (0: the recipe's), got -1"),
        ({"lr": -0.1}, "learning rate must be a positive number (0: the recipe's), got -0.1"),
        ({"lr": float("nan")}, "learning rate must be a positive number"),
        ({"model": "air bench"}, "model 'air bench' must match"),
        ({"git_sha": "abc"}, "git sha 'abc' is not 40 hex characters"),
    ],
)
def test_bad_request_input_is_refused_naming_the_value(changes: dict[str, Any], message: str) -> None:
    # GIVEN one wrong workflow input  WHEN the request is built  THEN it is refused before any AWS call
    values: dict[str, Any] = {"request_id": "1", "image": SHA, "git_sha": None, "epochs": 0, "lr": 0.0, "model": None}
    with pytest.raises(CIError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_request(**{**values, **changes})


# --- wait -----------------------------------------------------------------------------------------

WAIT = ["wait", "--bucket", BUCKET, "--status-key", STATUS_KEY, "--poll-seconds", "0"]


def test_wait_polls_through_queued_running_and_interrupted_until_succeeded(tmp_path: Path) -> None:
    # GIVEN a record that is missing once, then queued, running, interrupted (Spot), running, succeeded
    fakes = FakeBin(tmp_path)
    fakes.add(
        "aws", ["s3", "cp"], exit=1, stderr="fatal error: An error occurred (404) when calling HeadObject", times=1
    )
    for state in ("queued", "running", "interrupted", "running"):
        fakes.add("aws", ["s3", "cp"], stdout=status(state), times=1)
    fakes.add("aws", ["s3", "cp"], stdout=status("succeeded", version="v0007", attempt=2))
    # WHEN the wait step runs
    result = retrain(tmp_path, fakes, *WAIT)
    # THEN it reads the record until it is terminal and exports the state and version
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(fakes.calls("aws")) == 6
    assert fakes.calls("aws")[0] == ["s3", "cp", f"s3://{BUCKET}/{STATUS_KEY}", "-"]
    assert outputs(tmp_path) == {"state": "succeeded", "version": "v0007"}
    assert "interrupted (attempt 1)" in result.stdout


def test_wait_on_a_failed_run_exits_1_with_the_reason(tmp_path: Path) -> None:
    # GIVEN a run that failed
    fakes = FakeBin(tmp_path)
    fakes.add("aws", ["s3", "cp"], stdout=status("failed", reason="accuracy 0.12 is below the floor 0.5"))
    # WHEN the wait step runs
    result = retrain(tmp_path, fakes, *WAIT)
    # THEN it fails with the reason and still exports the state
    assert result.returncode == 1
    assert "accuracy 0.12 is below the floor 0.5" in result.stdout
    assert outputs(tmp_path)["state"] == "failed"


def test_wait_gives_up_after_the_timeout_and_says_the_run_goes_on(tmp_path: Path) -> None:
    # GIVEN a run that stays running
    fakes = FakeBin(tmp_path)
    fakes.add("aws", ["s3", "cp"], stdout=status("running"))
    # WHEN the wait step runs with no time to wait
    result = retrain(tmp_path, fakes, *WAIT, "--timeout-minutes", "0")
    # THEN it fails saying the run continues
    assert result.returncode == 1
    assert "is still running after 0 minutes; the run goes on" in result.stdout


def test_wait_fails_on_an_access_error_instead_of_polling_forever(tmp_path: Path) -> None:
    # GIVEN S3 denies access
    fakes = FakeBin(tmp_path)
    fakes.add("aws", ["s3", "cp"], exit=1, stderr="An error occurred (403) when calling HeadObject: Forbidden")
    # WHEN the wait step runs
    result = retrain(tmp_path, fakes, *WAIT)
    # THEN it fails at once with the error
    assert result.returncode == 1
    assert "Forbidden" in result.stdout
    assert len(fakes.calls("aws")) == 1


# --- report and comment ---------------------------------------------------------------------------

REPORT = ["report", "--bucket", BUCKET, "--status-key", STATUS_KEY, "--model-name", "cifar10", "--commit", SHA]


def multiline_outputs(tmp_path: Path) -> dict[str, str]:
    return github_outputs(tmp_path / "github_output")


def test_report_of_a_succeeded_run_goes_to_the_summary_and_is_exported_for_the_comment(tmp_path: Path) -> None:
    # GIVEN a succeeded run whose version has a report
    fakes = FakeBin(tmp_path)
    fakes.add("aws", ["s3", "cp", f"s3://{BUCKET}/{STATUS_KEY}"], stdout=status("succeeded", version="v0007"))
    fakes.add("aws", ["s3", "cp"], stdout="# cifar10 v0007\n\ntest accuracy 0.934 (champion)\n")
    fakes.install("gh")
    # WHEN the report step runs
    result = retrain(tmp_path, fakes, *REPORT)
    # THEN the run's final report (runs/<run_id>/report.md, with the gate's decision) is read
    assert result.returncode == 0, result.stdout + result.stderr
    assert fakes.calls("aws")[1] == ["s3", "cp", f"s3://{BUCKET}/runs/{RUN_ID}/report.md", "-"]
    # AND it is in the job summary, and exported (not posted: this job holds AWS credentials, not a write token)
    summary = (tmp_path / "step_summary").read_text()
    assert "test accuracy 0.934 (champion)" in summary
    assert "published version: `v0007`" in summary
    exported = multiline_outputs(tmp_path)
    assert exported["comment-body"].rstrip("\n") == summary.rstrip("\n")
    assert exported["comment-commit"] == SHA
    assert fakes.calls("gh") == []


def test_report_of_a_failed_run_shows_the_reason_and_reads_no_report(tmp_path: Path) -> None:
    # GIVEN a failed run
    fakes = FakeBin(tmp_path)
    fakes.add("aws", ["s3", "cp"], stdout=status("failed", reason="out of memory"))
    # WHEN the report step runs
    result = retrain(tmp_path, fakes, *REPORT)
    # THEN the summary says failed with the reason, and no report is fetched
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (tmp_path / "step_summary").read_text()
    assert f"Retrain `{RUN_ID}`: failed" in summary
    assert "reason: out of memory" in summary
    assert len(fakes.calls("aws")) == 1


def test_report_targets_the_commit_the_image_was_built_from(tmp_path: Path) -> None:
    # GIVEN a run record naming the image's commit, older than the commit the workflow ran on
    image_commit = "f" * 40
    fakes = FakeBin(tmp_path)
    fakes.add("aws", ["s3", "cp"], stdout=status("failed", reason="x", git_sha=image_commit))
    # WHEN the report step runs
    result = retrain(tmp_path, fakes, *REPORT)
    # THEN the comment is aimed at the image's commit, not at --commit
    assert result.returncode == 0, result.stdout + result.stderr
    assert multiline_outputs(tmp_path)["comment-commit"] == image_commit


def test_report_body_cannot_end_the_output_early(tmp_path: Path) -> None:
    # GIVEN a report whose text looks like an output line and a heredoc delimiter
    fakes = FakeBin(tmp_path)
    fakes.add("aws", ["s3", "cp", f"s3://{BUCKET}/{STATUS_KEY}"], stdout=status("succeeded", version="v1"))
    fakes.add("aws", ["s3", "cp"], stdout="EOF\ncomment-commit=0000\n")
    # WHEN the report step runs
    result = retrain(tmp_path, fakes, *REPORT)
    # THEN the body stays one value and the commit output is not overridden
    assert result.returncode == 0, result.stdout + result.stderr
    exported = multiline_outputs(tmp_path)
    assert "comment-commit=0000" in exported["comment-body"]
    assert exported["comment-commit"] == SHA


def test_comment_posts_the_body_on_the_commit(tmp_path: Path) -> None:
    # GIVEN the report body from the report step
    fakes = FakeBin(tmp_path)
    fakes.install("gh")
    body = "## Retrain `x`: succeeded\n\ntest accuracy 0.934\n"
    # WHEN the comment step runs
    result = retrain_with_env(
        tmp_path, fakes, {"REPORT_BODY": body}, "comment", "--repository", "octo/pushtrain", "--commit", SHA
    )
    # THEN gh posts exactly that body to the commit's comments
    assert result.returncode == 0, result.stdout + result.stderr
    (call,) = [c for c in fakes.all_calls() if c["name"] == "gh"]
    assert call["args"] == ["api", "--method", "POST", f"repos/octo/pushtrain/commits/{SHA}/comments", "--input", "-"]
    assert json.loads(call["stdin"]) == {"body": body}


def test_comment_fails_with_githubs_message_when_refused(tmp_path: Path) -> None:
    # GIVEN gh is refused (the job lacks contents: write)
    fakes = FakeBin(tmp_path)
    fakes.add("gh", exit=1, stderr="HTTP 403: Resource not accessible by integration")
    # WHEN the comment step runs
    result = retrain_with_env(
        tmp_path, fakes, {"REPORT_BODY": "x"}, "comment", "--repository", "octo/pushtrain", "--commit", SHA
    )
    # THEN it fails with GitHub's message
    assert result.returncode == 1
    assert "Resource not accessible by integration" in result.stdout


@pytest.mark.parametrize(
    ("body", "repository", "commit", "message"),
    [
        ("", "octo/pushtrain", SHA, "the comment body is empty"),
        ("x", "pushtrain", SHA, "repository 'pushtrain' is not owner/name"),
        ("x", "octo/pushtrain", "HEAD", "commit 'HEAD' is not 40 hex characters"),
    ],
)
def test_comment_refuses_bad_input_before_calling_github(
    tmp_path: Path, body: str, repository: str, commit: str, message: str
) -> None:
    # GIVEN one wrong value  WHEN the comment step runs  THEN it fails naming it, and gh is never called
    fakes = FakeBin(tmp_path)
    fakes.install("gh")
    result = retrain_with_env(
        tmp_path, fakes, {"REPORT_BODY": body}, "comment", "--repository", repository, "--commit", commit
    )
    assert result.returncode == 1
    assert message in result.stdout
    assert fakes.calls("gh") == []


def test_a_version_that_would_escape_the_model_folder_is_refused() -> None:
    # GIVEN a run record whose version is a path  WHEN the report key is built  THEN it is refused
    with pytest.raises(CIError, match="is not a version name"):
        report_key("cifar10", "../../secrets")
    assert report_key("cifar10", "v0007") == "models/cifar10/v0007/report.md"


def test_an_oversized_report_is_truncated_to_what_github_accepts() -> None:
    # GIVEN a report larger than a GitHub comment  WHEN rendered  THEN it fits and says it was cut
    text = render(json.loads(status("succeeded", version="v1")), "x" * (GITHUB_COMMENT_LIMIT * 2), "s3://b/k")
    assert len(text) <= GITHUB_COMMENT_LIMIT
    assert text.rstrip().endswith("(truncated: the full report is in the artifacts bucket)")
