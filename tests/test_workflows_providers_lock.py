"""providers-lock: the committed lock files gain every platform's hashes, proposed as a pull request.

GIVEN the workflow's steps run as the runner runs them against a recording fake `terraform` (and
`gh`), WHEN the lock step and the pull-request step run, THEN both roots are locked for
linux_amd64, linux_arm64 and darwin_arm64, and no pull request is opened when nothing changed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from fakebin import FakeBin

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / ".github" / "workflows" / "providers-lock.yml"


def step(name: str) -> dict[str, Any]:
    (found,) = [s for s in yaml.safe_load(WORKFLOW.read_text())["jobs"]["lock"]["steps"] if s.get("name") == name]
    return found


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_both_roots_are_locked_for_the_three_platforms(tmp_path: Path) -> None:
    fakes = FakeBin(tmp_path)
    fakes.install("terraform")
    result = bash(step("Lock the providers of both roots for every platform")["run"], tmp_path, fakes.env())
    assert result.returncode == 0, result.stderr
    platforms = ["-platform=linux_amd64", "-platform=linux_arm64", "-platform=darwin_arm64"]
    assert fakes.calls("terraform") == [
        ["-chdir=terraform", "providers", "lock", *platforms],
        ["-chdir=terraform/bootstrap", "providers", "lock", *platforms],
    ]


def test_terraform_is_the_pinned_one_and_dependabot_picks_versions_with_the_same_cooldown() -> None:
    assert step("Install Terraform (pinned sha256)")["run"].startswith(".github/actions/terraform/install-tool.sh ")
    updates = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())["updates"]
    cooldowns = {u["package-ecosystem"]: u["cooldown"] for u in updates}
    assert cooldowns["terraform"] == cooldowns["github-actions"] == {"default-days": 7}
    (terraform,) = [u for u in updates if u["package-ecosystem"] == "terraform"]
    assert set(terraform["directories"]) == {"/terraform", "/terraform/bootstrap"}


def test_no_pull_request_when_the_lock_files_already_hold_every_platform(tmp_path: Path) -> None:
    # GIVEN a checkout whose lock files the lock step left unchanged
    (tmp_path / "terraform" / "bootstrap").mkdir(parents=True)
    for root in ("terraform", "terraform/bootstrap"):
        (tmp_path / root / ".terraform.lock.hcl").write_text("# locked\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "locks"]):
        subprocess.run([*git, *args], cwd=tmp_path, check=True, capture_output=True)
    fakes = FakeBin(tmp_path / "bin")
    fakes.install("gh")
    # WHEN the pull-request step runs  THEN it says so and opens nothing
    env = fakes.env(REPOSITORY="octo/pushtrain", RUN_ID="1", GH_TOKEN="fake")  # noqa: S106 -- a fake token for a fake gh
    result = bash(step("Open a pull request when they changed")["run"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert "already hold every platform's hashes" in result.stdout
    assert fakes.calls("gh") == []
