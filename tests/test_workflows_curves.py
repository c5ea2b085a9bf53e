"""The report's curves.png where GitHub shows it, on both workflow paths (report after a push, retrain).

GIVEN a succeeded run whose version has curves.png and a manifest listing its sha256, WHEN the
wait step runs with `--curves-dir`, THEN the PNG is downloaded, checked against the manifest and
its path exported for upload-artifact (`archive: false`); WHEN the report step then gets the
artifact's url, THEN the report links curves.png there (the S3 copy still named) instead of showing
only an s3:// path nobody on GitHub can open. A PNG that differs from its manifest is never shown;
a url that is not a workflow artifact's is refused in one line. Both workflows upload between the
two steps and pass the url on, and the trainer's real report line is the one that gets rewritten.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from ci.report import push_run_id
from ci.runs import link_curves
from fakebin import FakeBin, github_outputs

REPO = Path(__file__).resolve().parent.parent
SHA = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32
BUCKET = "pushtrain-artifacts-123456789012-eu-west-1"
VERSION = "20261207T010000Z-push-0123"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
URL = "https://github.com/octo/pushtrain/actions/runs/123456/artifacts/987654"
S3_CURVES = f"s3://{BUCKET}/models/cifar10/{VERSION}/curves.png"
TRAINER_LINE = f"Curves as an image: `{S3_CURVES}`"
UPLOAD = "actions/upload-artifact@bbbca2ddaa5d8feaa63e36b76fdaad77386f024f"


@dataclass(frozen=True)
class Flow:
    """One workflow's two steps around the upload: its module, wait arguments, report arguments."""

    module: str
    run_id: str
    wait: tuple[str, ...]
    report: tuple[str, ...]
    workflow: str


def _paths() -> list[Flow]:
    push = push_run_id(DIGEST)
    retrain = "retrain-9876543210-1a2b3c4d"
    return [
        Flow("ci.report", push,
              ("wait", "--bucket", BUCKET, "--repository-name", "pushtrain-trainer", "--commit", SHA,
               "--poll-seconds", "0"),
              ("summary", "--bucket", BUCKET, "--status-key", f"runs/{push}/status.json", "--commit", SHA),
              "report.yml"),
        Flow("ci.retrain", retrain,
              ("wait", "--bucket", BUCKET, "--status-key", f"runs/{retrain}/status.json", "--poll-seconds", "0"),
              ("report", "--bucket", BUCKET, "--status-key", f"runs/{retrain}/status.json", "--model-name",
               "cifar10", "--commit", SHA),
              "retrain.yml"),
    ]  # fmt: skip


PATHS = _paths()


def status(run_id: str, state: str = "succeeded", **extra: Any) -> str:
    return json.dumps({"schema": 1, "run_id": run_id, "state": state, "attempt": 1, "image_digest": DIGEST,
                       "git_sha": SHA, "params": {}, "reason": None, "version": VERSION, **extra})  # fmt: skip


def published(tmp_path: Path, path: Flow, png: bytes = PNG) -> FakeBin:
    """Fakes: the commit's image, the succeeded run, its report with the trainer's curves line, the PNG."""
    fakes = FakeBin(tmp_path)
    fakes.add("aws", ["ecr", "describe-images"], stdout=DIGEST + "\n")
    fakes.add("aws", ["s3", "cp", f"s3://{BUCKET}/runs/{path.run_id}/status.json"], stdout=status(path.run_id))
    report = f"### cifar10 `{VERSION}`\n\n{TRAINER_LINE}\n\n<details></details>\n"
    fakes.add("aws", ["s3", "cp", f"s3://{BUCKET}/runs/{path.run_id}/report.md"], stdout=report)
    manifest = {"files": {"curves.png": {"sha256": hashlib.sha256(PNG).hexdigest()}}}
    fakes.add("aws", ["s3", "cp", f"s3://{BUCKET}/models/cifar10/{VERSION}/manifest.json"], stdout=json.dumps(manifest))
    source = tmp_path / "stored-curves.png"
    source.write_bytes(png)
    fakes.add("aws", ["s3", "cp", "--only-show-errors", S3_CURVES],
              copies={str(source): str(tmp_path / "curves" / "curves.png")})  # fmt: skip
    return fakes


def step(tmp_path: Path, fakes: FakeBin, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    for name in ("github_output", "step_summary"):
        (tmp_path / name).touch()
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=fakes.env(PYTHONPATH=str(REPO / "scripts"), GITHUB_OUTPUT=str(tmp_path / "github_output"),
                      GITHUB_STEP_SUMMARY=str(tmp_path / "step_summary"), RUNNER_TEMP=str(tmp_path)),
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def outputs(tmp_path: Path) -> dict[str, str]:
    return github_outputs(tmp_path / "github_output")


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.module)
def test_the_report_links_curves_png_to_the_workflow_artifact_not_only_s3(tmp_path: Path, path: Flow) -> None:
    fakes = published(tmp_path, path)
    # WHEN the wait step fetches the curves
    result = step(tmp_path, fakes, path.module, *path.wait, "--curves-dir", str(tmp_path / "curves"))
    assert result.returncode == 0, result.stdout + result.stderr
    # THEN the verified PNG is where the upload step will look for it
    exported = Path(outputs(tmp_path)["curves"])
    assert exported == tmp_path / "curves" / "curves.png" and exported.read_bytes() == PNG
    # WHEN the report step gets the artifact's url
    result = step(tmp_path, fakes, path.module, *path.report, "--curves-url", URL)
    assert result.returncode == 0, result.stdout + result.stderr
    # THEN summary and comment link curves.png there, and the S3 copy is still named
    body = outputs(tmp_path)["comment-body"]
    assert f"[curves.png]({URL})" in body and S3_CURVES in body
    assert TRAINER_LINE not in body
    assert f"[curves.png]({URL})" in (tmp_path / "step_summary").read_text()


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.module)
def test_a_curves_png_that_differs_from_its_manifest_is_never_shown(tmp_path: Path, path: Flow) -> None:
    fakes = published(tmp_path, path, png=PNG[:-1] + b"\x00")
    result = step(tmp_path, fakes, path.module, *path.wait, "--curves-dir", str(tmp_path / "curves"))
    assert result.returncode == 1
    assert f"{S3_CURVES} has sha256 " in result.stdout and "its manifest says" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "curves" / "curves.png").exists()
    assert "curves" not in outputs(tmp_path)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.module)
@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "http://github.com/o/r/actions/runs/1/artifacts/2", f"{URL}) [x](https://evil.example"],
)
def test_a_curves_url_that_is_not_a_workflow_artifact_is_refused(tmp_path: Path, path: Flow, url: str) -> None:
    fakes = published(tmp_path, path)
    result = step(tmp_path, fakes, path.module, *path.report, "--curves-url", url)
    assert result.returncode == 1
    assert "is not a workflow artifact url" in result.stdout
    assert "comment-body" not in outputs(tmp_path)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.workflow)
def test_each_workflow_uploads_the_fetched_png_unzipped_and_passes_its_url_to_the_report(path: Flow) -> None:
    steps = next(iter(yaml.safe_load((REPO / ".github" / "workflows" / path.workflow).read_text())["jobs"].values()))
    steps = steps["steps"]
    wait = next(i for i, s in enumerate(steps) if f"-m {path.module} wait" in str(s.get("run", "")))
    upload = next(i for i, s in enumerate(steps) if str(s.get("uses", "")).startswith(UPLOAD))
    report = next(i for i, s in enumerate(steps) if f"-m {path.module} {path.report[0]}" in str(s.get("run", "")))
    assert wait < upload < report
    assert "--curves-dir" in steps[wait]["run"]
    assert steps[upload]["with"] == {
        "path": f"${{{{ steps.{steps[wait]['id']}.outputs.curves }}}}", "archive": False, "if-no-files-found": "error",
    }  # fmt: skip
    assert steps[upload]["if"].startswith("always() && ")
    assert steps[report]["env"]["CURVES_URL"] == f"${{{{ steps.{steps[upload]['id']}.outputs.artifact-url }}}}"
    assert '--curves-url "$CURVES_URL"' in steps[report]["run"]


def test_the_trainers_own_report_line_is_the_one_linked() -> None:
    # the golden report is exactly what trainer.report.render_report writes (trainer/tests/test_report_render.py)
    text = (REPO / "trainer" / "tests" / "golden" / "report.md").read_text()
    line = "Curves as an image: `s3://bucket/models/cifar10/v/curves.png`"
    assert line in text
    linked = link_curves(text, URL)
    assert line not in linked
    assert linked.count(f"[curves.png]({URL})") == 1 and "s3://bucket/models/cifar10/v/curves.png" in linked
    # a report without the line (older versions) gets the link appended, once
    assert link_curves("### old report\n", URL).count(f"[curves.png]({URL})") == 1
