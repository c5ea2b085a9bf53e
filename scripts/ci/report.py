"""After a push to main built the trainer image: wait for its training run and post the report.

The steps of the `report` workflow (`.github/workflows/report.yml`, called by trainer-image after
the push), one subcommand each (with `PYTHONPATH=scripts`):

    python3 -m ci.report wait --bucket pushtrain-artifacts-… --repository-name pushtrain-trainer \\
        --commit 0123abc… --model-name cifar10 --curves-dir "$RUNNER_TEMP/pushtrain-curves"
    python3 -m ci.report summary --bucket pushtrain-artifacts-… --status-key runs/<run_id>/status.json \\
        --model-name cifar10 --commit 0123abc… --curves-url https://github.com/…/artifacts/…
    REPORT_BODY=… python3 -m ci.report comment --repository owner/repo --commit 0123abc… --run-id push-…

`wait` finds the image the commit was built into (`aws ecr describe-images`, tag = the git sha),
derives the run id the trigger gives a push of that digest (docs/contracts.md: "push-" +
sha256(digest + "{}")[:20]), prints it with the command to follow the run, polls
`runs/<run_id>/status.json` through the read-only report role (bounded: `--timeout-minutes`, one
small GET per `--poll-seconds`) and downloads the version's `curves.png` (checked against its
manifest) into `--curves-dir`, exporting `run-id`, `status-key`, the final `state` and `curves` (its
path; empty when the run has none); a failed run exits 1 after that. The workflow keeps the PNG as an unzipped
artifact, and `summary` writes the report, its curves linked to that artifact (`--curves-url`),
to the job summary and exports it (`comment-body`, `comment-commit`). `comment` posts it on the
commit and on the merged pull request(s) that brought the commit in, each as one comment edited in
place on a re-run (ci.comments), from a job that holds no AWS credentials.

No GitHub credential ever reaches AWS: the workflow reads S3 and posts to GitHub itself.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ci.comments import pull_requests_of_commit, upsert_comment, upsert_commit_comment
from ci.github import (
    CIError,
    annotate_error,
    append_summary,
    run_tool,
    write_multiline_output,
    write_output,
)
from ci.runs import fetch_curves, read_report, read_status, render, wait_for_run

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_GIT_SHA = re.compile(r"[0-9a-f]{40}")
_RUN_ID = re.compile(r"(?:push|retrain)-[A-Za-z0-9_-]{1,60}")
_ECR_REPOSITORY = re.compile(r"[a-z0-9][a-z0-9._/-]{1,255}")
_STATUS_KEY = re.compile(r"runs/(?:push|retrain)-[A-Za-z0-9_-]{1,60}/status\.json")


def push_run_id(digest: str) -> str:
    """The run id the trigger gives a push of this digest (default parameters: `{}`)."""
    if not _DIGEST.fullmatch(digest):
        raise CIError(f"image digest {digest!r} is not sha256:<64 hex>")
    return "push-" + hashlib.sha256((digest + "{}").encode()).hexdigest()[:20]


def marker(run_id: str) -> str:
    return f"<!-- pushtrain:report:{run_id} -->"


def image_digest(repository_name: str, commit: str) -> str:
    """The digest of the image tagged with the commit's sha in the ECR repository."""
    if not _ECR_REPOSITORY.fullmatch(repository_name):
        raise CIError(f"ECR repository {repository_name!r} is not a repository name")
    if not _GIT_SHA.fullmatch(commit):
        raise CIError(f"commit {commit!r} is not 40 hex characters")
    out = run_tool(
        [
            "aws", "ecr", "describe-images", "--repository-name", repository_name,
            "--image-ids", f"imageTag={commit}", "--query", "imageDetails[0].imageDigest", "--output", "text",
        ]
    )  # fmt: skip
    digest = out.strip()
    if not _DIGEST.fullmatch(digest):
        raise CIError(f"ECR has no image {repository_name}:{commit} (describe-images answered {digest!r})")
    return digest


def wait_for_push_run(
    bucket: str,
    repository_name: str,
    commit: str,
    model_name: str,
    curves_dir: Path | None,
    *,
    timeout_s: float,
    poll_s: float,
) -> tuple[dict[str, Any], Path | None]:
    """Find the run, wait for it, fetch its curves.png; (status, the PNG's path or None)."""  # fmt: skip
    digest = image_digest(repository_name, commit)
    run_id = push_run_id(digest)
    status_key = f"runs/{run_id}/status.json"
    write_output("run-id", run_id)
    write_output("status-key", status_key)
    print(f"image {digest} -> run {run_id}", flush=True)
    print(f"follow it with: pushtrain runs show {run_id} --store s3://{bucket}", flush=True)
    append_summary(
        f"Training run `{run_id}` for image `{digest}`; follow it with "
        f"`pushtrain runs show {run_id} --store s3://{bucket}`."
    )
    status = wait_for_run(bucket, status_key, timeout_s=timeout_s, poll_s=poll_s, sleep=time.sleep)
    write_output("state", str(status["state"]))  # only a finished run gets a report (the summary step's `if:`)
    curves = fetch_curves(bucket, status, model_name, curves_dir) if curves_dir is not None else None
    write_output("curves", str(curves or ""))
    return status, curves


def summary(
    bucket: str, status_key: str, model_name: str, commit: str, curves_url: str | None
) -> tuple[dict[str, Any], str]:
    """The finished run's report (curves linked to the artifact) in the job summary; (status, comment body)."""
    if not _STATUS_KEY.fullmatch(status_key):
        raise CIError(f"status key {status_key!r} is not runs/<run_id>/status.json")
    if not _GIT_SHA.fullmatch(commit):
        raise CIError(f"commit {commit!r} is not 40 hex characters")
    status = read_status(bucket, status_key)
    if status is None:
        raise CIError(f"s3://{bucket}/{status_key} does not exist: the run was never started")
    run_id = status_key.split("/")[1]
    report = read_report(bucket, status, model_name)
    body = render(status, report, f"s3://{bucket}/{status_key}", title="Training", curves_url=curves_url)
    body = with_footer(body, run_id, bucket)
    append_summary(body)
    return status, body


def with_footer(body: str, run_id: str, bucket: str) -> str:
    return (
        f"{marker(run_id)}\n{body.rstrip()}\n\n"
        f"<sub>`pushtrain runs show {run_id} --store s3://{bucket}` · posted by the report workflow</sub>\n"
    )


def post(repository: str, commit: str, run_id: str, body: str) -> list[str]:
    """Post (or update) the report on the commit and its merged pull requests; what was done, in words."""
    if not body.strip():
        raise CIError("the comment body is empty: the summary step produced nothing")
    if not _RUN_ID.fullmatch(run_id):
        raise CIError(f"run id {run_id!r} is not a pushtrain run id")
    done = [f"commit {commit[:12]}: {upsert_commit_comment(repository, commit, marker(run_id), body)}"]
    for number in pull_requests_of_commit(repository, commit):
        done.append(f"pull request #{number}: {upsert_comment(repository, number, marker(run_id), body)}")
    return done


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m ci.report", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    wait = sub.add_parser("wait", help="find the commit's run, wait for it, fetch its curves.png")
    wait.add_argument("--bucket", required=True, help="artifacts bucket")
    wait.add_argument("--repository-name", required=True, help="ECR repository of the trainer image")
    wait.add_argument("--commit", required=True, help="the pushed commit (the image's tag)")
    wait.add_argument("--model-name", default="cifar10", help="the trainer's model_name")
    wait.add_argument("--timeout-minutes", type=float, default=100.0)
    wait.add_argument("--poll-seconds", type=float, default=30.0)
    wait.add_argument("--curves-dir", type=Path, help="download the version's curves.png here (for the artifact)")
    report = sub.add_parser("summary", help="write the finished run's report to the summary and export it")
    report.add_argument("--bucket", required=True, help="artifacts bucket")
    report.add_argument("--status-key", required=True, help="runs/<run_id>/status.json (the wait step's output)")
    report.add_argument("--model-name", default="cifar10", help="the trainer's model_name")
    report.add_argument("--commit", required=True, help="the pushed commit (commented on when the record names none)")
    report.add_argument("--curves-url", default="", help="the curves.png artifact's url (upload-artifact's output)")
    comment = sub.add_parser("comment", help="post the report (env REPORT_BODY) on the commit and its PRs")
    comment.add_argument("--repository", required=True, help="owner/name")
    comment.add_argument("--commit", required=True, help="the commit to comment on")
    comment.add_argument("--run-id", required=True, help="the run (from the wait step), for the sticky marker")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "wait":
            status, _ = wait_for_push_run(
                args.bucket, args.repository_name, args.commit, args.model_name, args.curves_dir,
                timeout_s=args.timeout_minutes * 60, poll_s=args.poll_seconds,
            )  # fmt: skip
            if status["state"] != "succeeded":
                print(f"::error title=training::run failed: {status.get('reason')}")
                return 1
        elif args.command == "summary":
            status, body = summary(args.bucket, args.status_key, args.model_name, args.commit, args.curves_url or None)
            write_multiline_output("comment-body", body)
            recorded = status.get("git_sha")
            write_output(
                "comment-commit",
                recorded if isinstance(recorded, str) and _GIT_SHA.fullmatch(recorded) else args.commit,
            )
        else:
            for line in post(args.repository, args.commit, args.run_id, os.environ.get("REPORT_BODY", "")):
                print(line)
    except CIError as error:
        return annotate_error("report", error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
