"""The `terraform` composite action's scripts, run against recording fakes of terraform, tfcmt and curl's downloads.

run.sh: GIVEN a fake `terraform` whose `plan` exits 0, 2 or 1 (and a fake `tfcmt` that runs the
command after `--`, as the real one does), WHEN the script runs, THEN the calls, the outputs in
$GITHUB_OUTPUT, the summary and the script's own exit status follow the -detailed-exitcode contract.

install-tfcmt.sh: GIVEN a release folder served over file:// with a tarball and a goreleaser
checksums file, WHEN the script installs, THEN only a tarball that matches its checksum is installed.
"""

from __future__ import annotations

import hashlib
import io
import platform
import subprocess
import tarfile
from pathlib import Path

import pytest
from fakebin import FakeBin

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / ".github" / "actions" / "terraform" / "run.sh"
INSTALL = REPO / ".github" / "actions" / "terraform" / "install-tfcmt.sh"


def read_outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "work" / "terraform").mkdir(parents=True)
    return tmp_path


def run_action(workspace: Path, fakes: FakeBin, **env: str) -> subprocess.CompletedProcess[str]:
    outputs = workspace / "github_output"
    summary = workspace / "step_summary"
    outputs.touch()
    summary.touch()
    base = {
        "TF_COMMAND": "plan",
        "TF_WORKING_DIR": "terraform",
        "TF_COMMENT": "true",
        "TF_PLAN_FILE": str(workspace / "tfplan-abc123"),
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    return subprocess.run(
        [str(RUN)],
        cwd=workspace / "work",
        env=fakes.env(**{**base, **env}),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def fakes_with_plan_exit(workspace: Path, plan_exit: int) -> FakeBin:
    fakes = FakeBin(workspace)
    fakes.add("terraform", ["plan"], exit=plan_exit, stdout="Plan: 1 to add, 0 to change, 0 to destroy.\n")
    fakes.add("terraform", ["show"], stdout="# aws_s3_bucket.this will be created\n")
    fakes.add("tfcmt", run_after_dashdash=True)
    return fakes


def test_plan_without_changes_succeeds_and_reports_exit_code_0(workspace: Path) -> None:
    # GIVEN terraform plan reports no changes
    fakes = fakes_with_plan_exit(workspace, 0)
    # WHEN the action plans
    result = run_action(workspace, fakes)
    # THEN it succeeds, exports 0 / no changes, and runs init, fmt -check, validate, then the plan through tfcmt -patch
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = read_outputs(workspace / "github_output")
    assert outputs == {"exit-code": "0", "has-changes": "false", "plan-file": str(workspace / "tfplan-abc123")}
    subcommands = [args[0] for args in fakes.calls("terraform")]
    assert subcommands == ["init", "fmt", "validate", "plan"]
    assert "-check" in fakes.calls("terraform")[1]
    assert fakes.calls("tfcmt")[0][:4] == ["-var", "target:terraform", "plan", "-patch"]
    plan = fakes.calls("terraform")[3]
    assert "-detailed-exitcode" in plan
    assert "-lock-timeout=10m" in plan  # waits for an apply holding the state lock instead of failing
    assert f"-out={workspace / 'tfplan-abc123'}" in plan
    assert "no changes" in (workspace / "step_summary").read_text()


def test_plan_with_changes_succeeds_exports_2_and_renders_the_plan_text(workspace: Path) -> None:
    # GIVEN terraform plan reports changes (exit 2)
    fakes = fakes_with_plan_exit(workspace, 2)
    # WHEN the action plans
    result = run_action(workspace, fakes)
    # THEN exit 2 is success, not failure, and the plan's text is saved next to the plan file
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = read_outputs(workspace / "github_output")
    assert outputs["exit-code"] == "2"
    assert outputs["has-changes"] == "true"
    assert (workspace / "tfplan-abc123.txt").read_text() == "# aws_s3_bucket.this will be created\n"
    assert "changes to apply" in (workspace / "step_summary").read_text()


def test_plan_error_fails_the_step_and_still_exports_exit_code_1(workspace: Path) -> None:
    # GIVEN terraform plan errors
    fakes = fakes_with_plan_exit(workspace, 1)
    # WHEN the action plans
    result = run_action(workspace, fakes)
    # THEN the step fails, the exit code is still exported for later steps, and no plan file is advertised
    assert result.returncode == 1
    outputs = read_outputs(workspace / "github_output")
    assert outputs == {"exit-code": "1"}
    assert "plan failed in terraform with exit code 1" in result.stdout
    assert "failed (exit 1)" in (workspace / "step_summary").read_text()


def test_unformatted_files_stop_the_run_before_plan(workspace: Path) -> None:
    # GIVEN terraform fmt -check finds unformatted files
    fakes = FakeBin(workspace)
    fakes.add("terraform", ["fmt"], exit=3, stdout="main.tf\n")
    fakes.add("tfcmt", run_after_dashdash=True)
    # WHEN the action runs
    result = run_action(workspace, fakes)
    # THEN it fails naming make fmt, and neither validate nor plan runs
    assert result.returncode == 1
    assert "make fmt" in result.stdout
    assert [args[0] for args in fakes.calls("terraform")] == ["init", "fmt"]


def test_without_comment_plan_runs_terraform_directly_and_tfcmt_is_not_called(workspace: Path) -> None:
    # GIVEN comment=false (a scheduled drift check has no pull request)
    fakes = fakes_with_plan_exit(workspace, 2)
    # WHEN the action plans
    result = run_action(workspace, fakes, TF_COMMENT="false")
    # THEN terraform plan is called directly
    assert result.returncode == 0, result.stdout + result.stderr
    assert fakes.calls("tfcmt") == []
    assert read_outputs(workspace / "github_output")["exit-code"] == "2"


def test_extra_args_and_backend_config_pass_one_argument_per_line_unsplit(workspace: Path) -> None:
    # GIVEN extra arguments (one containing a space) and backend settings, one per line
    fakes = fakes_with_plan_exit(workspace, 0)
    # WHEN the action plans
    result = run_action(
        workspace,
        fakes,
        TF_EXTRA_ARGS="-var=name=a b\n\n  -lock-timeout=5m  \n",
        TF_BACKEND_CONFIG="bucket=my-state\nregion=eu-west-1\n",
    )
    # THEN each line is exactly one argument, blank lines dropped, surrounding spaces trimmed
    assert result.returncode == 0, result.stdout + result.stderr
    init = fakes.calls("terraform")[0]
    assert init[-2:] == ["-backend-config=bucket=my-state", "-backend-config=region=eu-west-1"]
    plan = fakes.calls("terraform")[3]
    assert plan[-2:] == ["-var=name=a b", "-lock-timeout=5m"]


def test_apply_runs_through_tfcmt_apply_with_auto_approve(workspace: Path) -> None:
    # GIVEN a successful apply
    fakes = fakes_with_plan_exit(workspace, 0)
    # WHEN the action applies with -destroy as an extra argument
    result = run_action(workspace, fakes, TF_COMMAND="apply", TF_EXTRA_ARGS="-destroy")
    # THEN tfcmt apply wraps terraform apply -auto-approve -destroy and the exit code is exported
    assert result.returncode == 0, result.stdout + result.stderr
    assert fakes.calls("tfcmt")[0][:3] == ["-var", "target:terraform", "apply"]
    assert "-patch" not in fakes.calls("tfcmt")[0]
    apply = fakes.calls("terraform")[3]
    assert apply[0] == "apply"
    assert "-auto-approve" in apply
    assert "-lock-timeout=10m" in apply  # waits for a plan or drift check holding the state lock
    assert apply[-1] == "-destroy"
    assert read_outputs(workspace / "github_output") == {"exit-code": "0"}


def test_failed_apply_fails_the_step_with_its_exit_code(workspace: Path) -> None:
    # GIVEN terraform apply fails
    fakes = FakeBin(workspace)
    fakes.add("terraform", ["apply"], exit=1, stderr="Error: AccessDenied\n")
    fakes.add("tfcmt", run_after_dashdash=True)
    # WHEN the action applies
    result = run_action(workspace, fakes, TF_COMMAND="apply")
    # THEN the step fails and exports the code
    assert result.returncode == 1
    assert read_outputs(workspace / "github_output") == {"exit-code": "1"}
    assert "apply failed" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TF_COMMAND": "destroy"}, "command must be plan or apply, got 'destroy'"),
        ({"TF_COMMENT": "yes"}, "comment must be true or false, got 'yes'"),
        ({"TF_WORKING_DIR": "nowhere"}, "working-directory 'nowhere' does not exist"),
    ],
)
def test_bad_input_fails_before_terraform_runs_and_names_the_value(
    workspace: Path, env: dict[str, str], message: str
) -> None:
    # GIVEN a wrong input
    fakes = fakes_with_plan_exit(workspace, 0)
    # WHEN the action runs
    result = run_action(workspace, fakes, **env)
    # THEN it fails naming the value, and terraform is never called
    assert result.returncode == 1
    assert message in result.stdout
    assert fakes.calls("terraform") == []


# --- install-tfcmt.sh ---------------------------------------------------------------------------

VERSION = "4.14.18"
ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine().lower()]
ASSET = f"tfcmt_linux_{ARCH}.tar.gz"


def make_release(root: Path, *, tamper: bool = False, list_asset: bool = True) -> Path:
    """A release folder laid out like github.com/.../releases/download/v<version>/."""
    folder = root / "releases" / f"v{VERSION}"
    folder.mkdir(parents=True)
    program = f"#!/bin/sh\necho 'tfcmt version {VERSION}'\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("tfcmt")
        info.size = len(program)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(program))
    tarball = buffer.getvalue()
    digest = hashlib.sha256(tarball).hexdigest()
    (folder / ASSET).write_bytes(tarball + (b"tampered" if tamper else b""))
    lines = [f"{'0' * 64}  tfcmt_darwin_arm64.tar.gz"]
    if list_asset:
        lines.append(f"{digest}  {ASSET}")
    (folder / f"tfcmt_{VERSION}_checksums.txt").write_text("\n".join(lines) + "\n")
    return folder


def install(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    runner_temp = tmp_path / "runner_temp"
    runner_temp.mkdir(exist_ok=True)
    (tmp_path / "github_path").touch()
    base = {
        "TFCMT_VERSION": VERSION,
        "TFCMT_RELEASES_URL": (tmp_path / "releases").as_uri(),
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_PATH": str(tmp_path / "github_path"),
    }
    return subprocess.run(
        [str(INSTALL)], env=FakeBin(tmp_path).env(**{**base, **env}), capture_output=True, text=True, check=False
    )


def test_tarball_matching_the_checksums_file_is_installed_and_put_on_path(tmp_path: Path) -> None:
    # GIVEN a release whose checksums file lists the tarball's real sha256
    make_release(tmp_path)
    # WHEN the script installs it
    result = install(tmp_path)
    # THEN tfcmt is extracted, runs, and its folder is added to GITHUB_PATH
    assert result.returncode == 0, result.stdout + result.stderr
    installed = tmp_path / "runner_temp" / f"tfcmt-{VERSION}"
    assert (tmp_path / "github_path").read_text() == f"{installed}\n"
    assert f"tfcmt version {VERSION}" in result.stdout


def test_tampered_tarball_is_rejected_and_not_installed(tmp_path: Path) -> None:
    # GIVEN a tarball that no longer matches its checksum
    make_release(tmp_path, tamper=True)
    # WHEN the script installs it
    result = install(tmp_path)
    # THEN it fails, nothing lands on PATH and the binary is never extracted
    assert result.returncode == 1
    assert "does not match its sha256" in result.stdout
    assert (tmp_path / "github_path").read_text() == ""
    assert not (tmp_path / "runner_temp" / f"tfcmt-{VERSION}" / "tfcmt").exists()


def test_tarball_missing_from_the_checksums_file_is_rejected(tmp_path: Path) -> None:
    # GIVEN a checksums file without an entry for our tarball
    make_release(tmp_path, list_asset=False)
    # WHEN the script installs it
    result = install(tmp_path)
    # THEN it fails naming the missing entry
    assert result.returncode == 1
    assert f"no sha256 entry for {ASSET}" in result.stdout
    assert (tmp_path / "github_path").read_text() == ""


def test_pinned_sha256_that_differs_from_the_checksums_file_is_rejected(tmp_path: Path) -> None:
    # GIVEN a pinned sha256 that is not the release's
    make_release(tmp_path)
    # WHEN the script installs with it
    result = install(tmp_path, TFCMT_SHA256="f" * 64)
    # THEN it fails naming both values
    assert result.returncode == 1
    assert "pinned tfcmt-sha256 is " + "f" * 64 in result.stdout


def test_malformed_version_is_rejected_before_any_download(tmp_path: Path) -> None:
    # GIVEN a version that is not X.Y.Z (no release folder exists either)
    # WHEN the script runs
    result = install(tmp_path, TFCMT_VERSION="latest")
    # THEN it fails on the version, not on a download
    assert result.returncode == 1
    assert "tfcmt-version must be X.Y.Z, got 'latest'" in result.stdout
