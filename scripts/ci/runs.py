"""Reading pushtrain runs from the artifacts bucket: the run record, waiting on it, its report.

    from ci.runs import wait_for_run, read_report, render
    status = wait_for_run(bucket, "runs/<run_id>/status.json", timeout_s=3600, poll_s=30)
    markdown = render(status, read_report(bucket, status, "cifar10"), f"s3://{bucket}/runs/<run_id>/status.json")

The record and the reports follow docs/contracts.md (artifact layout, run record states). S3 is read
with `aws s3 cp … -` through the read-only role of the workflow; nothing here writes. Used by
ci.retrain (a run it started) and ci.report (the run a push started); imports only ci.github.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any

from ci.github import CIError, json_object

TERMINAL_STATES = frozenset({"succeeded", "failed", "stopped-early"})
WAITING_STATES = frozenset({"queued", "running", "interrupted"})  # interrupted: the trigger resumes it
GITHUB_COMMENT_LIMIT = 65_536  # characters GitHub accepts in one comment body
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_RUN_ID = re.compile(r"(?:push|retrain)-[A-Za-z0-9_-]{1,60}")


def read_text(bucket: str, key: str) -> str | None:
    """An object's text, or None when it does not exist."""
    result = subprocess.run(
        ["aws", "s3", "cp", f"s3://{bucket}/{key}", "-"], capture_output=True, text=True, check=False
    )
    if result.returncode == 0:
        return result.stdout
    if "404" in result.stderr or "NoSuchKey" in result.stderr or "Not Found" in result.stderr:
        return None
    raise CIError(f"cannot read s3://{bucket}/{key} (exit {result.returncode}): {result.stderr.strip()}")


def read_status(bucket: str, status_key: str) -> dict[str, Any] | None:
    """The run record, or None while it does not exist yet."""
    text = read_text(bucket, status_key)
    return None if text is None else json_object(text, f"s3://{bucket}/{status_key}")


def wait_for_run(
    bucket: str,
    status_key: str,
    *,
    timeout_s: float,
    poll_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll the run record until the run succeeds or fails; CIError on timeout or an unknown state."""
    deadline = clock() + timeout_s
    last_state = None
    while True:
        status = read_status(bucket, status_key)
        state = None if status is None else status.get("state")
        if state != last_state:
            attempt = "" if status is None else f" (attempt {status.get('attempt')})"
            print(f"run record {status_key}: {state or 'not written yet'}{attempt}", flush=True)
            last_state = state
        if status is not None and state in TERMINAL_STATES:
            return status
        if status is not None and state not in WAITING_STATES:
            raise CIError(f"{status_key} has an unknown state {state!r}")
        if clock() >= deadline:
            raise CIError(
                f"{status_key} is still {state or 'missing'} after {timeout_s / 60:.0f} minutes; the run goes on "
                "in ECS: read the record later, or re-run this workflow to wait again "
                "(the same request starts nothing new)"
            )
        sleep(poll_s)


def report_key(model_name: str, version: str) -> str:
    """Where the trainer publishes a version's report (docs/contracts.md artifact layout)."""
    if not _MODEL_NAME.match(model_name):
        raise CIError(f"model name {model_name!r} must match {_MODEL_NAME.pattern}")
    if not version or "/" in version or version in {".", ".."}:
        raise CIError(f"version {version!r} from the run record is not a version name")
    return f"models/{model_name}/{version}/report.md"


def read_report(bucket: str, status: Mapping[str, Any], model_name: str) -> str | None:
    """The run's final report (runs/<run_id>/report.md, with the gate's decision), else the version's."""
    run_id = str(status.get("run_id", ""))
    if status.get("state") != "succeeded" or not status.get("version"):
        return None
    if _RUN_ID.fullmatch(run_id):
        text = read_text(bucket, f"runs/{run_id}/report.md")
        if text is not None:
            return text
    return read_text(bucket, report_key(model_name, str(status["version"])))


def render(status: Mapping[str, Any], report: str | None, status_uri: str, *, title: str = "Retrain") -> str:
    """The markdown for the job summary and the comment: the run's outcome, then its report."""
    run_id = status.get("run_id", "?")
    state = status.get("state", "?")
    lines = [f"## {title} `{run_id}`: {state}", ""]
    params = status.get("params") or {}
    shown = ", ".join(f"`{k}={v}`" for k, v in sorted(params.items())) or "the model's recipe"
    lines += [
        f"- image: `{status.get('image_digest', '?')}`",
        f"- parameters: {shown}",
        f"- attempts: {status.get('attempt', '?')}",
        f"- run record: `{status_uri}`",
    ]
    if state == "succeeded":
        lines.append(f"- published version: `{status.get('version')}`")
    elif status.get("reason"):
        lines.append(f"- reason: {status['reason']}")
    lines.append("")
    if report:
        lines += [report.strip(), ""]
    text = "\n".join(lines)
    if len(text) > GITHUB_COMMENT_LIMIT:
        cut = "\n\n… (truncated: the full report is in the artifacts bucket)\n"
        text = text[: GITHUB_COMMENT_LIMIT - len(cut)] + cut
    return text
