"""The `terraform` composite action's scripts, run against recording fakes of terraform and tfcmt.

run.sh plan: GIVEN a fake `terraform` whose `plan` exits 0, 2 or 1 (and a fake `tfcmt` that runs the
command after `--`, as the real one does), WHEN the script runs, THEN the calls (in the working
directory, never prompting), the outputs in $GITHUB_OUTPUT, the files beside the plan, the summary
and the script's own exit status follow the -detailed-exitcode contract.

run.sh apply: GIVEN a saved plan and the sha256 its plan job recorded, WHEN the script applies, THEN
terraform applies exactly that file, byte for byte, and never plans; a missing, changed or stale plan
fails with one clear line and nothing is applied.

install-tool.sh: GIVEN a release folder served over file:// and a pinned checksums file, WHEN the
script installs, THEN only an asset whose sha256 is pinned for that exact tool/version is installed;
an unpinned tfcmt only if a fake `gh attestation verify` accepts it (and its line to pin is printed),
an unpinned Terraform never.

PUSHTRAIN_TERRAFORM_ACTION points the tests at another copy of the action (the mutation check).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from fakebin import FakeBin

REPO = Path(__file__).resolve().parent.parent
ACTION = Path(os.environ.get("PUSHTRAIN_TERRAFORM_ACTION", REPO / ".github" / "actions" / "terraform"))
RUN = ACTION / "run.sh"
INSTALL = ACTION / "install-tool.sh"
SHOW_JSON = json.dumps(
    {
        "resource_changes": [
            {"address": "aws_s3_bucket.this", "change": {"actions": ["create"]}},
            {"address": "aws_iam_role.old", "change": {"actions": ["delete", "create"]}},
            {"address": "aws_ecs_cluster.this", "change": {"actions": ["no-op"]}},
        ]
    }
)


def read_outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


LOCK = 'provider "registry.terraform.io/hashicorp/aws" {\n  version = "6.1.0"\n}\n'


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "work" / "terraform").mkdir(parents=True)
    (tmp_path / "work" / "terraform" / ".terraform.lock.hcl").write_text(LOCK)  # a committed lock file
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


def fakes_with_plan_exit(workspace: Path, plan_exit: int, failing: str | None = None) -> FakeBin:
    """terraform whose plan exits `plan_exit` (writing a plan file unless it errs); `failing` subcommand exits 1."""
    fakes = FakeBin(workspace)
    if failing:
        fakes.add("terraform", [failing], exit=1, stderr=f"Error: {failing} failed\n")
    plan_file = workspace / "tfplan-abc123"
    fakes.add(
        "terraform",
        ["plan"],
        exit=plan_exit,
        stdout="Plan: 1 to add, 0 to change, 0 to destroy.\n",
        writes={} if plan_exit == 1 else {str(plan_file): "binary plan bytes"},
    )
    fakes.add("terraform", ["show", "-json"], stdout=SHOW_JSON)
    fakes.add("terraform", ["show"], stdout="# aws_s3_bucket.this will be created\n")
    fakes.add("tfcmt", run_after_dashdash=True)
    return fakes


def subcommands(fakes: FakeBin) -> list[str]:
    return [args[0] for args in fakes.calls("terraform")]


# --- plan ------------------------------------------------------------------------------------------


def test_plan_without_changes_succeeds_and_reports_exit_code_0(workspace: Path) -> None:
    # GIVEN terraform plan reports no changes
    fakes = fakes_with_plan_exit(workspace, 0)
    # WHEN the action plans
    result = run_action(workspace, fakes)
    # THEN it succeeds, exports 0 / no changes / the plan's sha256, and runs init, fmt -check, validate, plan
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = read_outputs(workspace / "github_output")
    sha = hashlib.sha256(b"binary plan bytes").hexdigest()
    assert outputs == {
        "exit-code": "0",
        "has-changes": "false",
        "plan-file": str(workspace / "tfplan-abc123"),
        "plan-sha256": sha,
    }
    assert subcommands(fakes) == ["init", "fmt", "validate", "plan", "show", "show"]
    assert "-check" in fakes.calls("terraform")[1]
    assert fakes.calls("tfcmt")[0][:4] == ["-var", "target:terraform", "plan", "-patch"]
    plan = fakes.calls("terraform")[3]
    assert "-detailed-exitcode" in plan
    assert "-lock-timeout=10m" in plan  # waits for an apply holding the state lock instead of failing
    assert f"-out={workspace / 'tfplan-abc123'}" in plan
    assert (workspace / "tfplan-abc123.sha256").read_text() == f"{sha}  tfplan-abc123\n"
    assert "no changes" in (workspace / "step_summary").read_text()


def test_every_terraform_call_runs_in_the_working_directory(workspace: Path) -> None:
    # GIVEN a plan  WHEN the action runs from the repository root with working-directory terraform
    fakes = fakes_with_plan_exit(workspace, 2)
    result = run_action(workspace, fakes)
    # THEN init, fmt, validate, plan and show all ran inside terraform/, not the root
    assert result.returncode == 0, result.stdout + result.stderr
    cwds = {c["cwd"] for c in fakes.all_calls() if c["name"] == "terraform"}
    assert cwds == {str(workspace / "work" / "terraform")}


def test_init_and_plan_never_prompt(workspace: Path) -> None:
    # GIVEN a plan  WHEN the action runs  THEN init and plan are told not to ask for input (a prompt hangs CI)
    fakes = fakes_with_plan_exit(workspace, 0)
    result = run_action(workspace, fakes)
    assert result.returncode == 0, result.stdout + result.stderr
    init, plan = fakes.calls("terraform")[0], fakes.calls("terraform")[3]
    assert (init[0], plan[0]) == ("init", "plan")
    assert "-input=false" in init
    assert "-input=false" in plan


def test_plan_with_changes_leaves_text_changes_and_hash_and_shows_the_plan(workspace: Path) -> None:
    # GIVEN terraform plan reports changes (exit 2)
    fakes = fakes_with_plan_exit(workspace, 2)
    # WHEN the action plans
    result = run_action(workspace, fakes)
    # THEN exit 2 is success; the text, the JSON and the lock file init used lie beside the plan
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = read_outputs(workspace / "github_output")
    assert (outputs["exit-code"], outputs["has-changes"]) == ("2", "true")
    assert (workspace / "tfplan-abc123.txt").read_text() == "# aws_s3_bucket.this will be created\n"
    assert json.loads((workspace / "tfplan-abc123.json").read_text()) == json.loads(SHOW_JSON)
    assert (workspace / "tfplan-abc123.lock.hcl").read_text() == LOCK
    assert "no .terraform.lock.hcl is committed" not in result.stdout
    summary = (workspace / "step_summary").read_text()
    assert "changes to apply" in summary
    assert "# aws_s3_bucket.this will be created" in summary  # what the production reviewers read


def test_plan_error_fails_the_step_and_still_exports_exit_code_1(workspace: Path) -> None:
    # GIVEN terraform plan errors
    fakes = fakes_with_plan_exit(workspace, 1)
    # WHEN the action plans
    result = run_action(workspace, fakes)
    # THEN the step fails, the exit code is still exported for later steps, and no plan file is advertised
    assert result.returncode == 1
    assert read_outputs(workspace / "github_output") == {"exit-code": "1"}
    assert "plan failed in terraform with exit code 1" in result.stdout
    assert "failed (exit 1)" in (workspace / "step_summary").read_text()


@pytest.mark.parametrize(("failing", "ran"), [("init", ["init"]), ("validate", ["init", "fmt", "validate"])])
def test_failed_init_or_validate_stops_the_run_before_plan(workspace: Path, failing: str, ran: list[str]) -> None:
    # GIVEN terraform init (or validate) fails
    fakes = fakes_with_plan_exit(workspace, 0, failing=failing)
    # WHEN the action plans
    result = run_action(workspace, fakes)
    # THEN the step fails there: nothing after it runs, and no exit code or plan is advertised
    assert result.returncode != 0
    assert subcommands(fakes) == ran
    assert read_outputs(workspace / "github_output") == {}


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
    assert subcommands(fakes) == ["init", "fmt"]


def test_without_comment_plan_runs_terraform_directly_and_tfcmt_is_not_called(workspace: Path) -> None:
    # GIVEN comment=false (a scheduled drift check has no pull request)
    fakes = fakes_with_plan_exit(workspace, 2)
    # WHEN the action plans
    result = run_action(workspace, fakes, TF_COMMENT="false")
    # THEN terraform plan is called directly
    assert result.returncode == 0, result.stdout + result.stderr
    assert fakes.calls("tfcmt") == []
    assert read_outputs(workspace / "github_output")["exit-code"] == "2"


def test_without_patch_tfcmt_posts_a_new_plan_comment(workspace: Path) -> None:
    # GIVEN patch=false (the plan of the merged commit, beside the pull request's own plan comment)
    fakes = fakes_with_plan_exit(workspace, 2)
    # WHEN the action plans  THEN tfcmt plan runs without -patch
    result = run_action(workspace, fakes, TF_PATCH="false")
    assert result.returncode == 0, result.stdout + result.stderr
    assert fakes.calls("tfcmt")[0][:3] == ["-var", "target:terraform", "plan"]
    assert "-patch" not in fakes.calls("tfcmt")[0]


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


# --- apply -----------------------------------------------------------------------------------------

PLAN_BYTES = b"\x00tfplan\xff the reviewed plan \x01"


def saved_plan(workspace: Path, content: bytes = PLAN_BYTES) -> tuple[Path, str]:
    """A downloaded plan file and the sha256 its plan job recorded."""
    path = workspace / "reviewed-plan" / "tfplan-abc123"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    path.with_name(path.name + ".lock.hcl").write_text(PLANNED_LOCK)
    return path, hashlib.sha256(content).hexdigest()


PLANNED_LOCK = LOCK.replace("6.1.0", "6.0.0")  # the plan's providers, older than the committed file


def apply(workspace: Path, fakes: FakeBin, plan: Path, sha: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_action(workspace, fakes, TF_COMMAND="apply", TF_PLAN_FILE=str(plan), TF_PLAN_SHA256=sha, **env)


def test_apply_applies_the_downloaded_plan_byte_for_byte_and_never_plans(workspace: Path) -> None:
    # GIVEN the downloaded plan file and its recorded sha256; the fake keeps a copy of what it applies
    plan, sha = saved_plan(workspace)
    fakes = FakeBin(workspace)
    fakes.add("terraform", ["apply"], copies={"{last}": str(workspace / "applied")})
    fakes.add("tfcmt", run_after_dashdash=True)
    # WHEN the action applies
    result = apply(workspace, fakes, plan, sha)
    # THEN terraform applied exactly that file (its last argument), saw its exact bytes, and never planned
    assert result.returncode == 0, result.stdout + result.stderr
    assert subcommands(fakes) == ["init", "fmt", "validate", "apply"]
    applied = fakes.calls("terraform")[3]
    assert applied[-1] == str(plan)
    assert (workspace / "applied").read_bytes() == PLAN_BYTES
    assert "-input=false" in applied
    assert "-lock-timeout=10m" in applied  # waits for a plan or drift check holding the state lock
    assert "-auto-approve" not in applied  # a saved plan needs no approval flag: it is the approval
    assert fakes.calls("tfcmt")[0][:3] == ["-var", "target:terraform", "apply"]
    assert read_outputs(workspace / "github_output") == {"exit-code": "0"}
    assert f"applied the reviewed plan (sha256 `{sha}`)" in (workspace / "step_summary").read_text()


def test_a_plan_changed_after_planning_is_refused_before_terraform_runs(workspace: Path) -> None:
    # GIVEN a plan file whose bytes are not the ones the plan job hashed
    plan, sha = saved_plan(workspace)
    plan.write_bytes(PLAN_BYTES + b"tampered")
    fakes = FakeBin(workspace)
    # WHEN the action applies
    result = apply(workspace, fakes, plan, sha)
    # THEN it fails naming both hashes, and terraform is never called
    assert result.returncode == 1
    actual = hashlib.sha256(PLAN_BYTES + b"tampered").hexdigest()
    assert f"the plan file's sha256 is {actual}, but the plan job recorded {sha}" in result.stdout
    assert "nothing applied" in result.stdout
    assert fakes.calls("terraform") == []


def test_a_missing_plan_is_refused_and_nothing_is_planned_instead(workspace: Path) -> None:
    # GIVEN no plan file where the artifact should have been downloaded
    fakes = FakeBin(workspace)
    # WHEN the action applies
    result = apply(workspace, fakes, workspace / "reviewed-plan" / "tfplan-abc123", "a" * 64)
    # THEN it fails saying so, and terraform is never called (no fallback to a fresh plan)
    assert result.returncode == 1
    assert "no saved plan at" in result.stdout
    # (an approval after the artifact's day: download-artifact may fail, this message is the job's answer)
    assert "the plan job's artifact is missing or expired (it is kept 1 day" in result.stdout
    assert fakes.calls("terraform") == []


def test_a_malformed_recorded_hash_is_refused(workspace: Path) -> None:
    # GIVEN a plan but an empty recorded hash (the plan job's output went missing)
    plan, _ = saved_plan(workspace)
    fakes = FakeBin(workspace)
    # WHEN the action applies  THEN it refuses without calling terraform
    result = apply(workspace, fakes, plan, "")
    assert result.returncode == 1
    assert "plan-sha256 must be the 64-hex sha256 the plan job recorded, got ''" in result.stdout
    assert fakes.calls("terraform") == []


def test_a_stale_plan_fails_with_a_clear_message(workspace: Path) -> None:
    # GIVEN terraform refuses the saved plan because the state changed after it was made
    plan, sha = saved_plan(workspace)
    fakes = FakeBin(workspace)
    fakes.add("terraform", ["apply"], exit=1, stderr="Error: Saved plan is stale\n")
    fakes.add("tfcmt", run_after_dashdash=True)
    # WHEN the action applies
    result = apply(workspace, fakes, plan, sha)
    # THEN it fails saying the plan is stale, nothing was applied, and how to go on; it never re-plans
    assert result.returncode == 1
    assert "the saved plan is stale" in result.stdout
    assert "run the workflow again to plan afresh" in result.stdout
    assert "plan" not in subcommands(fakes)
    assert "the saved plan is stale, nothing applied" in (workspace / "step_summary").read_text()


def test_failed_apply_fails_the_step_with_its_exit_code(workspace: Path) -> None:
    # GIVEN terraform apply fails for another reason
    plan, sha = saved_plan(workspace)
    fakes = FakeBin(workspace)
    fakes.add("terraform", ["apply"], exit=1, stderr="Error: AccessDenied\n")
    fakes.add("tfcmt", run_after_dashdash=True)
    # WHEN the action applies
    result = apply(workspace, fakes, plan, sha)
    # THEN the step fails and exports the code
    assert result.returncode == 1
    assert read_outputs(workspace / "github_output") == {"exit-code": "1"}
    assert "apply failed" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TF_COMMAND": "destroy"}, "command must be plan or apply, got 'destroy'"),
        ({"TF_COMMENT": "yes"}, "comment must be true or false, got 'yes'"),
        ({"TF_PATCH": "no"}, "patch must be true or false, got 'no'"),
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


# --- install-tool.sh ---------------------------------------------------------------------------------

ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine().lower()]
TOOLS = {
    # tool: (version, asset, folder of the release under the releases URL)
    "terraform": ("1.15.5", f"terraform_1.15.5_linux_{ARCH}.zip", "1.15.5"),
    "tfcmt": ("4.14.18", f"tfcmt_linux_{ARCH}.tar.gz", "v4.14.18"),
}


def make_release(root: Path, tool: str, *, tamper: bool = False, pin: bool = True) -> str:
    """A release folder laid out like the tool's download site, and a pinned checksums file; the sha256."""
    version, asset, folder_name = TOOLS[tool]
    folder = root / "releases" / folder_name
    folder.mkdir(parents=True)
    program = f"#!/bin/sh\necho '{tool} version {version}'\n".encode()
    buffer = io.BytesIO()
    if asset.endswith(".zip"):
        with zipfile.ZipFile(buffer, "w") as archive:
            info = zipfile.ZipInfo(tool)
            info.external_attr = 0o755 << 16
            archive.writestr(info, program)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            info = tarfile.TarInfo(tool)
            info.size = len(program)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(program))
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    (folder / asset).write_bytes(data + (b"tampered" if tamper else b""))
    lines = ["# pinned", f"{'0' * 64}  {tool}/0.0.1/{asset}"]
    if pin:
        lines.append(f"{digest}  {tool}/{version}/{asset}")
    (root / "tool-checksums.txt").write_text("\n".join(lines) + "\n")
    return digest


SIGNER_WORKFLOW = "suzuki-shunsuke/go-release-workflow/.github/workflows/release.yaml"


def install(
    tmp_path: Path, tool: str, version: str | None = None, *, fakes: FakeBin | None = None, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run install-tool.sh with `fakes` first on PATH (or exactly `path`), the step summary in tmp_path."""
    runner_temp = tmp_path / "runner_temp"
    runner_temp.mkdir(exist_ok=True)
    (tmp_path / "github_path").touch()
    (tmp_path / "step_summary").touch()
    env = {
        "TOOL_CHECKSUMS": str(tmp_path / "tool-checksums.txt"),
        "TOOL_RELEASES_URL": (tmp_path / "releases").as_uri(),
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_PATH": str(tmp_path / "github_path"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step_summary"),
    }
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [str(INSTALL), tool, version or TOOLS[tool][0]],
        env=(fakes or FakeBin(tmp_path)).env(**env),
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_an_asset_matching_its_pinned_sha256_is_installed_and_put_on_path(tmp_path: Path, tool: str) -> None:
    # GIVEN a release whose asset's sha256 is pinned for that exact tool/version/asset
    make_release(tmp_path, tool)
    # WHEN the script installs it
    result = install(tmp_path, tool)
    # THEN the tool is extracted, runs, and its folder is added to GITHUB_PATH
    assert result.returncode == 0, result.stdout + result.stderr
    installed = tmp_path / "runner_temp" / f"{tool}-{TOOLS[tool][0]}"
    assert (tmp_path / "github_path").read_text() == f"{installed}\n"
    assert f"{tool} version {TOOLS[tool][0]}" in result.stdout


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_a_replaced_asset_is_rejected_and_never_extracted(tmp_path: Path, tool: str) -> None:
    # GIVEN an asset that no longer matches its pinned sha256 (replaced on the release, or in transit)
    make_release(tmp_path, tool, tamper=True)
    # WHEN the script installs it
    result = install(tmp_path, tool)
    # THEN it fails, nothing lands on PATH and the binary is never extracted
    assert result.returncode == 1
    assert "does not match the sha256 pinned for" in result.stdout
    assert (tmp_path / "github_path").read_text() == ""
    assert not (tmp_path / "runner_temp" / f"{tool}-{TOOLS[tool][0]}" / tool).exists()


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_a_pinned_asset_is_installed_without_asking_gh(tmp_path: Path, tool: str) -> None:
    # GIVEN a pinned release and a recording `gh` on PATH
    make_release(tmp_path, tool)
    fakes = FakeBin(tmp_path)
    fakes.install("gh")
    # WHEN the script installs it
    result = install(tmp_path, tool, fakes=fakes)
    # THEN the pin alone decides: installed, and gh is never called
    assert result.returncode == 0, result.stdout + result.stderr
    assert fakes.calls("gh") == []


def test_an_unpinned_terraform_is_refused_before_any_download_even_with_gh(tmp_path: Path) -> None:
    # GIVEN a checksums file without a line for this Terraform (bumped without `make pin-tools`), and a
    # `gh` that would verify anything
    make_release(tmp_path, "terraform", pin=False)
    fakes = FakeBin(tmp_path)
    fakes.install("gh")
    # WHEN the script installs it
    result = install(tmp_path, "terraform", fakes=fakes)
    # THEN it fails naming the missing pin and how to add it; nothing was downloaded, gh never asked
    assert result.returncode == 1
    assert f"no sha256 pinned for terraform/1.15.5/terraform_1.15.5_linux_{ARCH}.zip" in result.stdout
    assert "make pin-tools" in result.stdout
    assert not (tmp_path / "runner_temp" / "terraform-1.15.5").exists()
    assert (tmp_path / "github_path").read_text() == ""
    assert fakes.calls("gh") == []


def test_an_unpinned_tfcmt_whose_provenance_gh_verifies_is_installed_and_its_pin_printed(tmp_path: Path) -> None:
    # GIVEN a tfcmt release with no pinned sha256, and a `gh attestation verify` that accepts it
    digest = make_release(tmp_path, "tfcmt", pin=False)
    fakes = FakeBin(tmp_path)
    fakes.add("gh", ["attestation", "verify"], stdout="Verification succeeded!\n")
    # WHEN the script installs it
    result = install(tmp_path, "tfcmt", fakes=fakes)
    # THEN gh verified the downloaded asset against tfcmt's repository and its release workflow
    assert result.returncode == 0, result.stdout + result.stderr
    installed = tmp_path / "runner_temp" / "tfcmt-4.14.18"
    asset = str(installed / f"tfcmt_linux_{ARCH}.tar.gz")
    verify = ["attestation", "verify", asset, "-R", "suzuki-shunsuke/tfcmt", "--signer-workflow", SIGNER_WORKFLOW]
    assert fakes.calls("gh") == [verify]
    # AND tfcmt is installed and on GITHUB_PATH
    assert (tmp_path / "github_path").read_text() == f"{installed}\n"
    assert "tfcmt version 4.14.18" in result.stdout
    # AND the exact line to add to tool-checksums.txt is printed, and written to the step summary
    pin = f"{digest}  tfcmt/4.14.18/tfcmt_linux_{ARCH}.tar.gz"
    assert pin in result.stdout.splitlines()
    assert f"    {pin}" in (tmp_path / "step_summary").read_text().splitlines()


def test_an_unpinned_tfcmt_whose_provenance_gh_rejects_is_not_installed(tmp_path: Path) -> None:
    # GIVEN a tfcmt release with no pinned sha256 whose attestation does not verify (replaced asset,
    # another signer, or no token)
    make_release(tmp_path, "tfcmt", pin=False)
    fakes = FakeBin(tmp_path)
    fakes.add("gh", ["attestation", "verify"], exit=1, stderr="no attestations found\n")
    # WHEN the script installs it
    result = install(tmp_path, "tfcmt", fakes=fakes)
    # THEN it fails with one clear line, the asset is deleted, never extracted and not on PATH
    assert result.returncode == 1
    assert f"tfcmt_linux_{ARCH}.tar.gz failed gh attestation verify" in result.stdout
    assert "not installing it" in result.stdout
    installed = tmp_path / "runner_temp" / "tfcmt-4.14.18"
    assert not (installed / f"tfcmt_linux_{ARCH}.tar.gz").exists()
    assert not (installed / "tfcmt").exists()
    assert (tmp_path / "github_path").read_text() == ""
    assert "tfcmt version" not in result.stdout
    assert (tmp_path / "step_summary").read_text() == ""


def test_an_unpinned_tfcmt_without_gh_is_refused_before_any_download(tmp_path: Path) -> None:
    # GIVEN a tfcmt release with no pinned sha256 and a PATH with the tools the script needs but no gh
    make_release(tmp_path, "tfcmt", pin=False)
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("bash", "uname", "awk", "dirname", "basename", "curl", "mkdir", "sha256sum", "cut", "rm", "tar"):
        found = shutil.which(name)
        assert found, f"{name} is needed to run install-tool.sh"
        (tools / name).symlink_to(found)
    # WHEN the script installs it
    result = install(tmp_path, "tfcmt", path=str(tools))
    # THEN it fails naming the missing pin and the missing gh; nothing was downloaded
    assert result.returncode == 1
    assert f"no sha256 pinned for tfcmt/4.14.18/tfcmt_linux_{ARCH}.tar.gz" in result.stdout
    assert "no gh to verify its build provenance with" in result.stdout
    assert not (tmp_path / "runner_temp" / "tfcmt-4.14.18").exists()


def test_the_action_gives_gh_its_token_only_for_installing_tfcmt() -> None:
    # GIVEN the action's steps
    import yaml

    steps = yaml.safe_load((ACTION / "action.yml").read_text())["runs"]["steps"]
    installs = {s["name"].split()[1]: s for s in steps if "install-tool.sh" in str(s.get("run"))}
    # THEN the tfcmt install passes the action's github-token as GH_TOKEN (gh attestation verify needs
    # one), and the Terraform install, which never falls back to gh, gets no token
    token_input = "${{ inputs.github-token }}"  # noqa: S105 - an expression naming the input, not a secret
    assert installs["tfcmt"]["env"]["GH_TOKEN"] == token_input
    assert "GH_TOKEN" not in installs["Terraform"]["env"]


@pytest.mark.parametrize(
    ("tool", "version", "message"),
    [
        ("tfcmt", "latest", "version must be X.Y.Z, got 'latest'"),
        ("tflint", "0.64.0", "tool must be terraform or tfcmt, got 'tflint'"),
    ],
)
def test_a_malformed_version_or_unknown_tool_is_rejected(tmp_path: Path, tool: str, version: str, message: str) -> None:
    # GIVEN a version that is not X.Y.Z, or a tool this script does not install  WHEN it runs  THEN it says so
    (tmp_path / "tool-checksums.txt").write_text("")
    result = install(tmp_path, tool, version)
    assert result.returncode == 1
    assert message in result.stdout


def test_the_repository_pins_the_terraform_the_action_installs_by_default() -> None:
    # GIVEN the action's default Terraform version and the pinned checksums in the repository
    import yaml

    action = yaml.safe_load((REPO / ".github" / "actions" / "terraform" / "action.yml").read_text())
    version = action["inputs"]["terraform-version"]["default"]
    pins = (REPO / ".github" / "actions" / "terraform" / "tool-checksums.txt").read_text()
    # THEN the linux/amd64 asset the runners download has a 64-hex sha256 pinned
    key = f"terraform/{version}/terraform_{version}_linux_amd64.zip"
    line = next(line for line in pins.splitlines() if line.endswith(f"  {key}"))
    assert len(line.split()[0]) == 64


# --- the providers the plan was made with --------------------------------------------------------------


def test_apply_initialises_with_exactly_the_plans_lock_file_read_only(workspace: Path) -> None:
    # GIVEN the plan's lock file (6.0.0) beside the downloaded plan, and a committed one (6.1.0)
    plan, sha = saved_plan(workspace)
    fakes = FakeBin(workspace)
    fakes.add("terraform", ["init"], copies={".terraform.lock.hcl": str(workspace / "lock-at-init")})
    fakes.add("tfcmt", run_after_dashdash=True)
    # WHEN the action applies
    result = apply(workspace, fakes, plan, sha)
    # THEN init saw the plan's lock file and was told not to change it
    assert result.returncode == 0, result.stdout + result.stderr
    assert (workspace / "lock-at-init").read_text() == PLANNED_LOCK
    assert "-lockfile=readonly" in fakes.calls("terraform")[0]


def test_apply_without_the_plans_lock_file_is_refused_before_terraform_runs(workspace: Path) -> None:
    plan, sha = saved_plan(workspace)
    plan.with_name(plan.name + ".lock.hcl").unlink()
    fakes = FakeBin(workspace)
    result = apply(workspace, fakes, plan, sha)
    assert result.returncode == 1
    assert "the plan artifact holds no lock file (tfplan-abc123.lock.hcl)" in result.stdout
    assert fakes.calls("terraform") == []


def test_a_plan_without_a_committed_lock_file_says_how_to_commit_one(workspace: Path) -> None:
    # GIVEN no committed lock file: init resolves the providers and writes one
    (workspace / "work" / "terraform" / ".terraform.lock.hcl").unlink()
    fakes = fakes_with_plan_exit(workspace, 2)
    fakes.rules["terraform"].insert(0, {**fakes.rules["terraform"][0], "args": ["init"], "exit": 0, "stderr": "",
                                        "writes": {".terraform.lock.hcl": LOCK}})  # fmt: skip
    fakes._save()
    # WHEN the action plans
    result = run_action(workspace, fakes)
    # THEN it plans, records the lock file init wrote, and says how to get one committed
    assert result.returncode == 0, result.stdout + result.stderr
    assert (workspace / "tfplan-abc123.lock.hcl").read_text() == LOCK
    assert "::warning title=terraform init::no .terraform.lock.hcl is committed in terraform" in result.stdout
    assert "providers lock -platform=linux_amd64 -platform=linux_arm64 -platform=darwin_arm64" in result.stdout


# A terraform that resolves providers like the real one: init without a lock file takes the newest
# release of the registry (a file the test edits) and writes the lock; with one it installs the
# locked version, and with -lockfile=readonly it may not change it; apply refuses a plan made with
# other providers than those installed ("Inconsistent dependency lock file").
PROVIDER_TERRAFORM = """\
#!{python}
import json, pathlib, sys
args = sys.argv[1:]
registry = pathlib.Path({registry!r})
lock = pathlib.Path(".terraform.lock.hcl")
installed = pathlib.Path(".terraform/installed")
if args[0] == "init":
    if lock.exists():
        version = lock.read_text().split('"')[3]
    elif "-lockfile=readonly" in args:
        print("Error: the lock file is missing and -lockfile=readonly forbids creating it", file=sys.stderr)
        sys.exit(1)
    else:
        version = registry.read_text().strip()
        lock.write_text('provider "registry.terraform.io/hashicorp/aws" {{\\n  version = "' + version + '"\\n}}\\n')
    installed.parent.mkdir(exist_ok=True)
    installed.write_text(version)
elif args[0] == "plan":
    out = next(a for a in args if a.startswith("-out="))[5:]
    pathlib.Path(out).write_text("planned with aws " + installed.read_text())
    sys.exit(2)
elif args[0] == "show":
    print(json.dumps({{"resource_changes": []}}) if "-json" in args else "plan text")
elif args[0] == "apply":
    planned = pathlib.Path(args[-1]).read_text().rsplit(" ", 1)[1]
    if planned != installed.read_text():
        print("Error: Inconsistent dependency lock file: the plan was made with aws " + planned, file=sys.stderr)
        sys.exit(1)
    print("Apply complete! with aws " + planned)
"""


def test_a_provider_released_between_plan_and_apply_is_not_used(workspace: Path) -> None:
    # GIVEN no committed lock file, and the registry's newest hashicorp/aws is 6.1.0 when the plan runs
    work = workspace / "work"
    (work / "terraform" / ".terraform.lock.hcl").unlink()
    registry = workspace / "registry"
    registry.write_text("6.1.0")
    fakes = FakeBin(workspace)
    fakes.install("terraform")
    (fakes.bin_dir / "terraform").write_text(PROVIDER_TERRAFORM.format(python=sys.executable, registry=str(registry)))
    planned = run_action(workspace, fakes, TF_COMMENT="false")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    sha = read_outputs(workspace / "github_output")["plan-sha256"]
    # WHEN 6.2.0 is released while the apply waits for approval, and the apply job starts afresh
    registry.write_text("6.2.0")
    shutil.rmtree(work / "terraform" / ".terraform")
    (work / "terraform" / ".terraform.lock.hcl").unlink()
    applied = apply(workspace, fakes, workspace / "tfplan-abc123", sha, TF_COMMENT="false")
    # THEN the apply installs 6.1.0 from the plan's lock file and applies
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Apply complete! with aws 6.1.0" in applied.stdout


def test_providers_that_cannot_be_installed_as_locked_fail_with_a_clear_message(workspace: Path) -> None:
    plan, sha = saved_plan(workspace)
    fakes = FakeBin(workspace)
    fakes.add("terraform", ["init"], exit=1, stderr="Error: Failed to install provider: checksum mismatch\n")
    result = apply(workspace, fakes, plan, sha)
    assert result.returncode == 1
    assert "could not install exactly the providers the plan was made with" in result.stdout
    assert "nothing applied" in result.stdout
    assert subcommands(fakes) == ["init"]
