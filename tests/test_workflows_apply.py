"""terraform-apply and destroy change production only as the plan a person saw.

GIVEN the two workflows, WHEN their jobs are read and their scripts run against recording fakes of
terraform, tfcmt and gh, THEN:
- the plan job (plan role, no environment) plans and uploads the plan file with its sha256, and the
  apply job (production environment) downloads exactly that artifact and applies that file byte for
  byte with the recorded hash, never planning; a changed or missing plan fails with a message;
- the plan file is uploaded only after ci.reviewed_plan passed (its attacks:
  tests/test_workflows_reviewed_plan.py), with the lock file its providers came from;
- GitHub's concurrency rules (one pending run per group, a newer one replaces it) can drop no
  destroy for an apply or an apply for a destroy: a dropped run is always replaced by a later run of
  the same workflow, whose plan of a later main contains its changes.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakebin import FakeBin

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
RUN = REPO / ".github" / "actions" / "terraform" / "run.sh"
SHA = "0123456789abcdef0123456789abcdef01234567"
HEAD = "fedcba9876543210fedcba9876543210fedcba98"


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    document["on"] = document.pop(True)
    return document


def terraform_step(job: dict[str, Any]) -> dict[str, Any]:
    (step,) = [s for s in job["steps"] if str(s.get("uses", "")).endswith("/.github/actions/terraform")]
    return step


def resolve(value: str, context: dict[str, str]) -> str:
    """Replace each `${{ name }}` by context[name] (the test's stand-in for the runner's expressions)."""
    return re.sub(r"\$\{\{\s*([^}]+?)\s*\}\}", lambda m: context[m.group(1)], value)


# --- the jobs and how they are wired --------------------------------------------------------------------


@pytest.mark.parametrize(("workflow", "apply_job"), [("terraform-apply.yml", "apply"), ("destroy.yml", "destroy")])
def test_the_apply_job_applies_the_plan_jobs_artifact_with_its_recorded_hash(workflow: str, apply_job: str) -> None:
    jobs = load(workflow)["jobs"]
    plan, apply = jobs["plan"], jobs[apply_job]
    # GIVEN the plan job: no environment (no approval wait, the plan role); it uploads the plan file,
    # its hash and its lock file only after ci.reviewed_plan checked the plan
    assert "environment" not in plan
    plan_step = terraform_step(plan)
    assert plan_step["with"]["command"] == "plan"
    assert plan["outputs"]["plan-sha256"] == "${{ steps.plan.outputs.plan-sha256 }}"
    steps = plan["steps"]
    check = next(s for s in steps if "ci.reviewed_plan check" in str(s.get("run", "")))
    (upload,) = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert steps.index(plan_step) < steps.index(check) < steps.index(upload)
    assert upload["with"]["path"].splitlines() == [
        "${{ steps.plan.outputs.plan-file }}",
        "${{ steps.plan.outputs.plan-file }}.sha256",
        "${{ steps.plan.outputs.plan-file }}.lock.hcl",
    ]
    assert upload["with"]["name"] == "tfplan-${{ github.sha }}-${{ github.run_attempt }}"
    assert upload["with"]["retention-days"] == 1
    assert plan["outputs"]["artifact-name"] == (
        "${{ steps.upload.outputs.artifact-id && format('tfplan-{0}-{1}', github.sha, github.run_attempt) || '' }}"
    )
    # THEN the apply job waits for the production reviewers, after the plan job
    assert apply["environment"] == "production"
    assert apply["needs"] == "plan"
    # AND downloads exactly that artifact
    (download,) = [s for s in apply["steps"] if str(s.get("uses", "")).startswith("actions/download-artifact@")]
    assert download["with"]["name"] == "${{ needs.plan.outputs.artifact-name }}"
    # AND applies the downloaded file (named by the action: tfplan-<sha>), checked against the recorded hash
    apply_step = terraform_step(apply)
    assert apply_step["with"]["command"] == "apply"
    assert apply_step["with"]["plan-file"] == download["with"]["path"] + "/tfplan-${{ github.sha }}"
    assert apply_step["with"]["plan-sha256"] == "${{ needs.plan.outputs.plan-sha256 }}"
    # AND nothing in the apply job plans
    assert "-destroy" not in str(apply_step["with"].get("extra-args", ""))
    assert not any("terraform plan" in str(s.get("run", "")) for s in apply["steps"])


def test_the_action_names_the_plan_file_by_commit_and_uploads_nothing_itself() -> None:
    action = yaml.safe_load((REPO / ".github" / "actions" / "terraform" / "action.yml").read_text())
    steps = {s.get("id"): s for s in action["runs"]["steps"]}
    assert "format('{0}/tfplan-{1}', runner.temp, inputs.head-sha)" in steps["run"]["env"]["TF_PLAN_FILE"]
    # THEN uploading is each workflow's step, after its checks
    assert not any("upload-artifact" in str(s.get("uses", "")) for s in action["runs"]["steps"])
    # AND a pull request or merge group uploads only the plan's text and change set, never the plan
    # file or its JSON (anyone who can read the repository can download an artifact)
    (upload,) = [
        s for s in load("terraform-plan.yml")["jobs"]["plan"]["steps"] if "upload-artifact" in str(s.get("uses", ""))
    ]
    assert upload["with"]["path"].splitlines() == [
        "${{ steps.plan.outputs.plan-file }}.txt",
        "${{ steps.plan.outputs.plan-file }}.changes",
    ]
    assert upload["with"]["name"] == "tfplan-${{ github.event.pull_request.head.sha || github.sha }}"


def test_the_plan_of_main_is_posted_beside_the_pull_requests_and_applied_only_with_changes() -> None:
    plan = load("terraform-apply.yml")["jobs"]["plan"]
    assert plan["permissions"]["actions"] == "read"
    assert terraform_step(plan)["with"]["patch"] == "false"
    assert load("terraform-apply.yml")["jobs"]["apply"]["if"] == "needs.plan.outputs.has-changes == 'true'"


# --- the plan job's outputs, carried to the apply job, apply the same bytes --------------------------------


def test_plan_then_apply_through_the_workflows_wiring_applies_the_same_bytes(tmp_path: Path) -> None:
    # GIVEN the plan job's run of the action: terraform writes a plan file
    runner_temp = tmp_path / "runner_temp"
    (tmp_path / "work" / "terraform").mkdir(parents=True)
    runner_temp.mkdir()
    plan_path = runner_temp / f"tfplan-{SHA}"
    plan_bytes = "\x00 plan of main \xff"
    (tmp_path / "work" / "terraform" / ".terraform.lock.hcl").write_text("# the committed lock file\n")
    fakes = FakeBin(tmp_path)
    fakes.add("terraform", ["plan"], exit=2, writes={str(plan_path): plan_bytes})
    fakes.add("terraform", ["show", "-json"], stdout='{"resource_changes": []}')
    fakes.add("terraform", ["apply"], copies={"{last}": str(tmp_path / "applied")})
    output, summary = tmp_path / "plan_output", tmp_path / "summary"

    def action(env: dict[str, str], out: Path) -> subprocess.CompletedProcess[str]:
        out.write_text("")
        return subprocess.run(
            [str(RUN)],
            cwd=tmp_path / "work",
            env=fakes.env(TF_COMMENT="false", GITHUB_OUTPUT=str(out), GITHUB_STEP_SUMMARY=str(summary), **env),
            capture_output=True,
            text=True,
            check=False,
        )

    planned = action({"TF_COMMAND": "plan", "TF_PLAN_FILE": str(plan_path)}, output)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    step_outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    # WHEN the artifact travels (upload, then download into the apply job's folder) and the apply job's
    # `with:` is resolved the way the runner would
    download = runner_temp / "reviewed-plan"
    download.mkdir()
    for produced in runner_temp.glob(f"tfplan-{SHA}*"):
        (download / produced.name).write_bytes(produced.read_bytes())
    context = {
        "github.sha": SHA,
        "needs.plan.outputs.plan-sha256": step_outputs["plan-sha256"],
        "runner.temp": str(runner_temp),
    }
    with_ = terraform_step(load("terraform-apply.yml")["jobs"]["apply"])["with"]
    applied = action(
        {
            "TF_COMMAND": "apply",
            "TF_PLAN_FILE": resolve(with_["plan-file"], context),
            "TF_PLAN_SHA256": resolve(with_["plan-sha256"], context),
        },
        tmp_path / "apply_output",
    )
    # THEN terraform applied the very bytes the plan job planned, and planned only once (in the plan job)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (tmp_path / "applied").read_bytes() == plan_bytes.encode()
    assert [args[0] for args in fakes.calls("terraform")].count("plan") == 1
    assert step_outputs["plan-sha256"] == hashlib.sha256(plan_bytes.encode()).hexdigest()


def zip_step(workflow: str, job: str, name: str) -> dict[str, Any]:
    (step,) = [s for s in load(workflow)["jobs"][job]["steps"] if s.get("name") == name]
    return step


def fake_packager(tmp_path: Path, content: bytes) -> Path:
    """A tree whose scripts/package_lambda.py writes build/trigger.zip with `content`."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "package_lambda.py").write_text(
        "from pathlib import Path\n"
        "Path('build').mkdir(exist_ok=True)\n"
        f"Path('build/trigger.zip').write_bytes({content!r})\n"
    )
    return tmp_path


@pytest.mark.parametrize(("rebuilt", "passes"), [(b"zip bytes", True), (b"other zip bytes", False)])
def test_the_apply_job_applies_only_with_the_trigger_zip_the_plan_was_made_with(
    tmp_path: Path, rebuilt: bytes, passes: bool
) -> None:
    # GIVEN the plan job recorded the zip's sha256
    tree = fake_packager(tmp_path, rebuilt)
    output = tmp_path / "out"
    output.write_text("")
    plan_zip = zip_step("terraform-apply.yml", "plan", "Build the trigger zip")
    apply_zip = zip_step("terraform-apply.yml", "apply", "Rebuild the trigger zip the plan was made with")
    env = {**os.environ, "GITHUB_OUTPUT": str(output), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    bash = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]
    subprocess.run([*bash, plan_zip["run"]], cwd=tree, env=env, check=True, capture_output=True)
    recorded = output.read_text().strip().removeprefix("sha256=")
    assert recorded == hashlib.sha256(rebuilt).hexdigest()
    # WHEN the apply job rebuilds it (the same bytes, or not) and compares
    expected = hashlib.sha256(b"zip bytes").hexdigest()
    assert apply_zip["env"]["EXPECTED"] == "${{ needs.plan.outputs.trigger-zip-sha256 }}"
    result = subprocess.run(
        [*bash, apply_zip["run"]],
        cwd=tree,
        env={**env, "EXPECTED": expected},
        capture_output=True,
        text=True,
        check=False,
    )
    # THEN only the same bytes go on; other bytes fail with a message before anything is applied
    assert (result.returncode == 0) is passes
    if not passes:
        assert f"the plan was made with {expected}: nothing applied" in result.stdout


# --- concurrency: nothing pending is silently dropped ---------------------------------------------------------


def simulate(arrivals: list[str], groups: dict[str, dict[str, Any]]) -> list[tuple[str, int]]:
    """GitHub's rule per concurrency group, with every run arriving while the first of its group runs:
    one run in progress, at most one pending; a newer arrival cancels the pending one (and the running
    one too when cancel-in-progress). Returns the (workflow, arrival index) runs that were cancelled."""
    running: dict[str, tuple[str, int]] = {}
    pending: dict[str, tuple[str, int]] = {}
    cancelled = []
    for index, workflow in enumerate(arrivals):
        group = groups[workflow]["group"]
        run = (workflow, index)
        if group not in running:
            running[group] = run
            continue
        if groups[workflow]["cancel-in-progress"]:
            cancelled.append(running[group])
            running[group] = run
            continue
        if group in pending:
            cancelled.append(pending[group])
        pending[group] = run
    return cancelled


@pytest.mark.parametrize(
    "arrivals",
    [
        ["apply", "destroy", "apply"],
        ["destroy", "apply", "destroy", "apply"],
        ["apply", "apply", "apply", "destroy"],
        ["apply", "destroy", "destroy", "apply", "apply"],
    ],
)
def test_no_pending_apply_or_destroy_is_dropped_for_the_other(arrivals: list[str]) -> None:
    # GIVEN the concurrency settings of the two workflows that change production
    groups = {
        "apply": load("terraform-apply.yml")["concurrency"],
        "destroy": load("destroy.yml")["concurrency"],
    }
    # WHEN runs arrive while others of their group are in progress
    cancelled = simulate(arrivals, groups)
    # THEN every cancelled run was replaced by a later run of the same workflow (a later plan of main,
    # which contains its changes), never by the other workflow
    for workflow, index in cancelled:
        assert workflow in arrivals[index + 1 :], f"{workflow} #{index} was dropped for another workflow"
    # AND a running change is never cancelled
    assert all(not g["cancel-in-progress"] for g in groups.values())
    assert groups["apply"]["group"] != groups["destroy"]["group"]


def test_the_simulation_catches_a_shared_group() -> None:
    # GIVEN the old configuration (apply and destroy in one group)  THEN a pending destroy is dropped for an apply
    shared = {"group": "terraform-production", "cancel-in-progress": False}
    cancelled = simulate(["apply", "destroy", "apply"], {"apply": shared, "destroy": shared})
    assert cancelled == [("destroy", 1)]


def test_only_main_applies_and_no_job_level_concurrency_reunites_the_groups() -> None:
    # GIVEN the apply workflow: pushes to main only (a later run's commit contains the earlier one's)
    apply = load("terraform-apply.yml")
    assert apply["on"]["push"]["branches"] == ["main"]
    assert apply["jobs"]["plan"]["if"] == "github.ref == 'refs/heads/main'"
    # THEN no job of either workflow joins a shared group of its own
    for name in ("terraform-apply.yml", "destroy.yml"):
        assert all("concurrency" not in job for job in load(name)["jobs"].values()), name
