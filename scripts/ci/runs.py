"""Reading pushtrain runs from the artifacts bucket: the run record, waiting on it, its report.

    from ci.runs import wait_for_run, read_report, render
    status = wait_for_run(bucket, "runs/<run_id>/status.json", timeout_s=3600, poll_s=30)
    markdown = render(status, read_report(bucket, status, "cifar10"), f"s3://{bucket}/runs/<run_id>/status.json")

The record and the reports follow docs/contracts.md (artifact layout, run record states). S3 is read
with `aws s3 cp` through the read-only role of the workflow; nothing here writes to S3. Used by
ci.retrain (a run it started) and ci.report (the run a push started); imports only ci.github.

The report names its `curves.png` by its S3 path, which nobody on GitHub can open. The workflows
download it (`fetch_curves`, checked against the version's manifest), keep it as an unzipped
workflow artifact (actions/upload-artifact v7 `archive: false`: GitHub opens a single-file artifact
in the browser instead of handing out a zip) and `render(..., curves_url=)` links the report there.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ci.github import CIError, json_object

TERMINAL_STATES = frozenset({"succeeded", "failed", "stopped-early"})
WAITING_STATES = frozenset({"queued", "running", "interrupted"})  # interrupted: the trigger resumes it
GITHUB_COMMENT_LIMIT = 65_536  # characters GitHub accepts in one comment body
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_RUN_ID = re.compile(r"(?:push|retrain)-[A-Za-z0-9_-]{1,60}")
CURVES_FILE = "curves.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The line trainer.report writes under the chart (a test renders a real report and rewrites it here).
_CURVES_LINE = re.compile(r"^Curves as an image: `(?P<uri>s3://\S+/curves\.png)`$", re.MULTILINE)
# upload-artifact's `artifact-url`: <server>/<owner>/<repo>/actions/runs/<run id>/artifacts/<artifact id>
_ARTIFACT_URL = re.compile(
    r"https://[A-Za-z0-9.-]+(?::\d+)?/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/actions/runs/\d+/artifacts/\d+"
)


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


def curves_key(model_name: str, version: str) -> str:
    """Where the trainer publishes a version's curves.png (beside its report.md)."""
    return report_key(model_name, version).removesuffix("report.md") + CURVES_FILE


def _manifest_sha256(bucket: str, model_name: str, version: str) -> str:
    """curves.png's SHA-256 as the version's manifest lists it (docs/contracts.md: every reader verifies)."""
    key = report_key(model_name, version).removesuffix("report.md") + "manifest.json"
    text = read_text(bucket, key)
    if text is None:
        raise CIError(f"s3://{bucket}/{key} does not exist: the version is not published")
    files = json_object(text, f"s3://{bucket}/{key}").get("files")
    entry = files.get(CURVES_FILE) if isinstance(files, dict) else None
    want = entry.get("sha256") if isinstance(entry, dict) else entry
    if not isinstance(want, str) or not re.fullmatch(r"[0-9a-f]{64}", want):
        raise CIError(f"s3://{bucket}/{key} lists no sha256 for {CURVES_FILE} (got {entry!r})")
    return want


def fetch_curves(bucket: str, status: Mapping[str, Any], model_name: str, dest_dir: Path) -> Path | None:
    """A succeeded run's curves.png in dest_dir, verified against its manifest; None when the run has none.

    A file that is not what the manifest says (damaged, replaced) is a CIError naming both hashes:
    the workflow never shows a picture that is not the version's.
    """
    version = status.get("version")
    if status.get("state") != "succeeded" or not version:
        return None
    key = curves_key(model_name, str(version))
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / CURVES_FILE
    result = subprocess.run(
        ["aws", "s3", "cp", "--only-show-errors", f"s3://{bucket}/{key}", str(target)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        if "404" in result.stderr or "NoSuchKey" in result.stderr or "Not Found" in result.stderr:
            return None
        raise CIError(f"cannot read s3://{bucket}/{key} (exit {result.returncode}): {result.stderr.strip()}")
    want = _manifest_sha256(bucket, model_name, str(version))
    data = target.read_bytes() if target.is_file() else b""
    got = hashlib.sha256(data).hexdigest()
    if got != want or not data.startswith(PNG_SIGNATURE):
        target.unlink(missing_ok=True)
        raise CIError(f"s3://{bucket}/{key} has sha256 {got}, its manifest says {want}: not shown")
    return target


def link_curves(report: str, curves_url: str) -> str:
    """The report with its curves line linking the workflow artifact (the S3 copy named after it).

    A report without the line (written before it existed) gets the link appended.
    """
    if not _ARTIFACT_URL.fullmatch(curves_url):
        raise CIError(f"curves url {curves_url!r} is not a workflow artifact url (…/actions/runs/<id>/artifacts/<id>)")

    def line(uri: str | None) -> str:
        kept = f"; the version's copy: `{uri}`" if uri else ""
        return f"Curves as an image: [{CURVES_FILE}]({curves_url}) (this workflow run's artifact{kept})"

    linked, count = _CURVES_LINE.subn(lambda m: line(m["uri"]), report, count=1)
    return linked if count else f"{report.rstrip()}\n\n{line(None)}\n"


def render(
    status: Mapping[str, Any],
    report: str | None,
    status_uri: str,
    *,
    title: str = "Retrain",
    curves_url: str | None = None,
) -> str:
    """The markdown for the job summary and the comment: the run's outcome, then its report.

    With `curves_url` (the upload step's artifact url) the report links curves.png there.
    """
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
        lines += [(link_curves(report, curves_url) if curves_url else report).strip(), ""]
    text = "\n".join(lines)
    if len(text) > GITHUB_COMMENT_LIMIT:
        cut = "\n\n… (truncated: the full report is in the artifacts bucket)\n"
        text = text[: GITHUB_COMMENT_LIMIT - len(cut)] + cut
    return text
