"""Retrain from GitHub Actions: invoke the trigger, wait for the run, publish its report.

The steps of `.github/workflows/retrain.yml`, one subcommand each (with `PYTHONPATH=scripts`):

    python3 -m ci.retrain invoke --function pushtrain-trigger --request-id 9876543210 \\
        --image 0123abc… --git-sha 0123abc… --epochs 12 --lr 0.2 --model airbench
    python3 -m ci.retrain wait --bucket pushtrain-artifacts-… --status-key runs/<run_id>/status.json \\
        --model-name cifar10 --curves-dir "$RUNNER_TEMP/pushtrain-curves"
    python3 -m ci.retrain report --bucket pushtrain-artifacts-… --status-key runs/<run_id>/status.json \\
        --model-name cifar10 --commit 0123abc… --curves-url https://github.com/…/artifacts/…
    REPORT_BODY=… python3 -m ci.retrain comment --repository owner/repo --commit 0123abc…

`invoke` sends the retrain request of docs/contracts.md with `aws lambda invoke` (RequestResponse)
and exports the answer (`run-id`, `status-key`, `task-arn`, `image-digest`) to $GITHUB_OUTPUT.
`wait` polls `runs/<run_id>/status.json` until the run succeeds (exit 0) or fails (exit 1), or
gives up after `--timeout-minutes` (exit 1; the run itself goes on); with `--curves-dir` it
downloads the version's `curves.png` there (checked against its manifest) and exports its path
(`curves`) for the workflow to keep as an unzipped artifact. `report` writes the run's outcome and
its report (curves linked to that artifact, `--curves-url`) to $GITHUB_STEP_SUMMARY and exports the same
text (`comment-body`) and the commit the image was built from (`comment-commit`: the run record's
`git_sha`, else `--commit`). `comment` posts it there with `gh api`, from a separate job: the
`contents: write` token it needs never shares a job with AWS credentials or third-party actions.

Only the standard library: the runner's own python3 runs this before anything is installed.
AWS and GitHub are reached through the `aws` and `gh` command-line tools (ci.github's runner);
the run record is read and waited on by ci.runs, shared with ci.report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ci.github import (
    CIError,
    annotate_error,
    append_summary,
    json_object,
    run_tool,
    write_multiline_output,
    write_output,
)
from ci.runs import fetch_curves, read_report, read_status, render, wait_for_run

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_GIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,19}$")  # the trigger's limit (it becomes part of the run id)
_MODEL = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# The parameters the trainer accepts (types, intervals, choices), generated from its configuration
# (scripts/gen_param_schema.py); the trigger reads the same file, so a value refused here is one the
# trigger would refuse too, said before anything is invoked.
PARAM_SCHEMA = Path(__file__).resolve().parents[2] / "lambda" / "src" / "trigger" / "params.schema.json"
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_STATUS_KEY = re.compile(r"^runs/[A-Za-z0-9_-]+/status\.json$")


# --- invoke ---------------------------------------------------------------------------------------


def build_request(
    *,
    request_id: str,
    image: str,
    git_sha: str | None,
    epochs: int | None,
    lr: float | None,
    model: str | None,
) -> dict[str, Any]:
    """The retrain request of docs/contracts.md. A zero or empty parameter means the model's recipe."""
    if not _REQUEST_ID.match(request_id):
        raise CIError(f"request id {request_id!r} must match {_REQUEST_ID.pattern}")
    if not (_TAG.match(image) or _DIGEST.match(image)):
        raise CIError(f"image {image!r} is neither an image tag nor a sha256:<64 hex> digest")
    if image == "latest":
        raise CIError("image 'latest' is refused: give the git sha the image was built from, or its digest")
    if git_sha and not _GIT_SHA.match(git_sha):
        raise CIError(f"git sha {git_sha!r} is not 40 hex characters")
    params: dict[str, Any] = {}
    if epochs is not None and epochs != 0:
        if epochs < 0:
            raise CIError(f"epochs must be positive (0: the recipe's), got {epochs}")
        params["epochs"] = epochs
    if lr is not None and lr != 0:
        if not math.isfinite(lr) or lr < 0:
            raise CIError(f"learning rate must be a positive number (0: the recipe's), got {lr}")
        params["lr"] = lr
    if model:
        if not _MODEL.match(model):
            raise CIError(f"model {model!r} must match {_MODEL.pattern}")
        params["model"] = model
    check_params(params)
    request: dict[str, Any] = {"action": "retrain", "request_id": request_id, "image": image, "params": params}
    if git_sha:
        request["git_sha"] = git_sha
    return request


def check_params(params: Mapping[str, Any], schema_path: Path = PARAM_SCHEMA) -> None:
    """CIError naming the first parameter the trainer would refuse (lambda/src/trigger/params.schema.json)."""
    schema = json.loads(schema_path.read_text())["params"]
    for name, value in params.items():
        entry = schema.get(name)
        if entry is None:
            raise CIError(f"{name} is not a retrain parameter (one of {sorted(schema)})")
        if "enum" in entry and value not in entry["enum"]:
            raise CIError(f"{name} {value!r} is not one the trainer knows (one of {entry['enum']})")
        low = entry.get("minimum", entry.get("exclusiveMinimum"))
        high = entry.get("maximum", entry.get("exclusiveMaximum"))
        below = low is not None and (value <= low if "exclusiveMinimum" in entry else value < low)
        above = high is not None and (value >= high if "exclusiveMaximum" in entry else value > high)
        if below or above:
            left, right = "(" if "exclusiveMinimum" in entry else "[", ")" if "exclusiveMaximum" in entry else "]"
            raise CIError(f"{name} {value!r} is outside what the trainer accepts: {left}{low}, {high}{right}")


def invoke(function: str, request: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
    """Invoke the trigger synchronously with the request; its answer, or CIError with the function's error."""
    answer = call_trigger(function, request, workdir)
    missing = sorted({"run_id", "status_key", "image_digest"} - set(answer))
    if missing:
        raise CIError(f"the answer of {function!r} lacks {missing}: {json.dumps(answer)}")
    if not _STATUS_KEY.match(str(answer["status_key"])):
        raise CIError(f"the answer's status_key {answer['status_key']!r} is not runs/<run_id>/status.json")
    return answer


def call_trigger(function: str, request: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
    """The trigger's JSON answer to one synchronous invoke (ci.sweep reads its own answer shape)."""
    payload = workdir / "retrain-request.json"
    answer_file = workdir / "retrain-answer.json"
    payload.write_text(json.dumps(request))
    meta_text = run_tool(
        [
            "aws",
            "lambda",
            "invoke",
            "--function-name",
            function,
            "--invocation-type",
            "RequestResponse",
            "--cli-binary-format",
            "raw-in-base64-out",
            "--payload",
            f"file://{payload}",
            "--output",
            "json",
            str(answer_file),
        ]
    )
    meta = json_object(meta_text, "the invoke metadata")
    body = answer_file.read_text() if answer_file.exists() else ""
    if meta.get("FunctionError"):
        raise CIError(f"the trigger {function!r} rejected the request ({meta['FunctionError']}): {body.strip()}")
    return json_object(body, f"the answer of {function!r}")


# --- report ---------------------------------------------------------------------------------------


def publish_report(
    bucket: str, status_key: str, model_name: str, fallback_commit: str, curves_url: str | None = None
) -> tuple[str, str]:
    """Write a finished (or failed) run's outcome and report (curves linked to `curves_url`) to the job summary.

    Returns (markdown, commit to comment on): the commit the image was built from when the run
    record knows it, else `fallback_commit`.
    """
    if not _GIT_SHA.match(fallback_commit):
        raise CIError(f"commit {fallback_commit!r} is not 40 hex characters")
    status = read_status(bucket, status_key)
    if status is None:
        raise CIError(f"s3://{bucket}/{status_key} does not exist: the run was never started")
    report = read_report(bucket, status, model_name)
    text = render(status, report, f"s3://{bucket}/{status_key}", curves_url=curves_url)
    append_summary(text)
    recorded = status.get("git_sha")
    target = recorded if isinstance(recorded, str) and _GIT_SHA.match(recorded) else fallback_commit
    return text, target


def post_comment(repository: str, commit: str, body: str) -> None:
    """Post `body` as a comment on `commit` (`gh api`; the token needs `contents: write`)."""
    if not _REPOSITORY.match(repository):
        raise CIError(f"repository {repository!r} is not owner/name")
    if not _GIT_SHA.match(commit):
        raise CIError(f"commit {commit!r} is not 40 hex characters")
    if not body.strip():
        raise CIError("the comment body is empty: the report step produced nothing")
    run_tool(
        ["gh", "api", "--method", "POST", f"repos/{repository}/commits/{commit}/comments", "--input", "-"],
        stdin=json.dumps({"body": body}),
    )


# --- command line ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m ci.retrain", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_invoke = sub.add_parser("invoke", help="send the retrain request to the trigger")
    p_invoke.add_argument("--function", required=True, help="trigger Lambda function name")
    p_invoke.add_argument("--request-id", required=True, help="the workflow run id")
    p_invoke.add_argument("--image", required=True, help="image tag (the git sha) or sha256 digest")
    p_invoke.add_argument("--git-sha", default="", help="commit the image was built from, when known")
    p_invoke.add_argument("--epochs", type=int, default=0, help="0: the model's recipe")
    p_invoke.add_argument("--lr", type=float, default=0.0, help="peak learning rate; 0: the model's recipe")
    p_invoke.add_argument("--model", default="", help="model to train; empty: the trainer's default")

    for name, text in (("wait", "wait for the run to finish"), ("report", "publish the run's report")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--bucket", required=True, help="artifacts bucket")
        p.add_argument("--status-key", required=True, help="runs/<run_id>/status.json from the invoke step")
        if name == "wait":
            p.add_argument("--timeout-minutes", type=float, default=90.0)
            p.add_argument("--poll-seconds", type=float, default=30.0)
            p.add_argument("--model-name", default="cifar10", help="the trainer's model_name (models/<name>/…)")
            p.add_argument("--curves-dir", type=Path, help="download the version's curves.png here (the artifact)")
        else:
            p.add_argument("--model-name", required=True, help="the trainer's model_name (models/<name>/…)")
            p.add_argument("--commit", required=True, help="the commit to comment on when the record names none")
            p.add_argument("--curves-url", default="", help="the curves.png artifact's url (upload-artifact output)")

    p_comment = sub.add_parser("comment", help="post the report (env REPORT_BODY) as a commit comment")
    p_comment.add_argument("--repository", required=True, help="owner/name")
    p_comment.add_argument("--commit", required=True, help="the commit to comment on (the report step's output)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "invoke":
            request = build_request(
                request_id=args.request_id,
                image=args.image,
                git_sha=args.git_sha or None,
                epochs=args.epochs,
                lr=args.lr,
                model=args.model or None,
            )
            print(f"retrain request: {json.dumps(request)}", flush=True)
            with tempfile.TemporaryDirectory(dir=os.environ.get("RUNNER_TEMP")) as workdir:
                answer = invoke(args.function, request, Path(workdir))
            print(f"trigger answer: {json.dumps(answer)}", flush=True)
            write_output("run-id", str(answer["run_id"]))
            write_output("status-key", str(answer["status_key"]))
            write_output("task-arn", str(answer.get("task_arn") or ""))
            write_output("image-digest", str(answer["image_digest"]))
            store = f"s3://{os.environ.get('ARTIFACTS_BUCKET') or '<artifacts bucket>'}"
            follow = f"pushtrain runs show {answer['run_id']} --store {store}"
            print(f"follow the run with: {follow}", flush=True)
            append_summary(
                f"Started retrain run `{answer['run_id']}` on `{answer['image_digest']}`; follow it with `{follow}`."
            )
        elif args.command == "wait":
            status = wait_for_run(
                args.bucket, args.status_key, timeout_s=args.timeout_minutes * 60, poll_s=args.poll_seconds
            )
            write_output("state", str(status["state"]))
            write_output("version", str(status.get("version") or ""))
            if args.curves_dir is not None:
                curves = fetch_curves(args.bucket, status, args.model_name, args.curves_dir)
                write_output("curves", str(curves or ""))
            if status["state"] != "succeeded":
                print(f"::error title=retrain::run failed: {status.get('reason')}")
                return 1
        elif args.command == "report":
            text, commit = publish_report(
                args.bucket, args.status_key, args.model_name, args.commit, args.curves_url or None
            )
            write_multiline_output("comment-body", text)
            write_output("comment-commit", commit)
        else:
            post_comment(args.repository, args.commit, os.environ.get("REPORT_BODY", ""))
    except CIError as error:
        return annotate_error("retrain", error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
