"""The always-running summary checks: `terraform-plan result` and the scoping of `make test`.

GIVEN the results of the terraform-plan workflow's jobs (or a pull request's files as a fake `gh`
lists them), WHEN the workflow's own `run:` script runs as the runner runs it, THEN the check passes
only when nothing the stack is built from changed or the plan succeeded, and fails (with a message
for maintainers on a fork's pull request) otherwise; no required check can go missing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakebin import FakeBin

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    document["on"] = document.pop(True)
    return document


def step_running(job: dict[str, Any], module: str) -> dict[str, Any]:
    (step,) = [s for s in job["steps"] if module in str(s.get("run", ""))]
    return step


def run_step(step: dict[str, Any], env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """The step's script as GitHub runs `shell: bash` steps, with its env: resolved by the test."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", str(step["run"])],
        env={**os.environ, "PYTHONPATH": str(REPO / "scripts"), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


# --- terraform-plan result: the truth table ------------------------------------------------------------


def test_the_plan_workflow_runs_on_every_pull_request_and_its_result_job_always_runs() -> None:
    # GIVEN terraform-plan.yml
    workflow = load("terraform-plan.yml")
    # THEN no paths filter can keep the check from reporting, and the result job runs whatever the others did
    assert workflow["on"] == {"pull_request": {}, "merge_group": {}}
    result = workflow["jobs"]["result"]
    assert result["if"] == "always()"
    assert result["needs"] == ["changes", "plan", "queue-plan"]
    assert result["name"] == "terraform-plan result"
    env = step_running(result, "ci.gate verdict")["env"]
    assert env["CHANGES_RESULT"] == "${{ needs.changes.result }}"
    assert env["CHANGED"] == "${{ needs.changes.outputs.changed }}"
    assert (
        env["PLAN_RESULT"]
        == "${{ github.event_name == 'merge_group' && needs.queue-plan.result || needs.plan.result }}"
    )
    fork = "github.event.pull_request.head.repo.full_name != github.repository"
    assert env["FORK"] == f"${{{{ github.event_name == 'pull_request' && {fork} }}}}"
    assert env["DEPENDABOT"] == "${{ github.event_name == 'pull_request' && github.actor == 'dependabot[bot]' }}"
    # AND the plan runs only when something changed and the pull request is not from a fork
    plan_if = workflow["jobs"]["plan"]["if"]
    assert "needs.changes.outputs.changed == 'true'" in plan_if
    assert "github.event.pull_request.head.repo.full_name == github.repository" in plan_if


TRUTH_TABLE = [
    # (changes job, changed, fork, dependabot, plan job) -> passes, message
    ("success", "false", "false", "false", "skipped", True, "nothing the stack is built from changed"),
    ("success", "false", "true", "false", "skipped", True, "nothing the stack is built from changed"),
    ("success", "true", "false", "false", "success", True, "the plan succeeded"),
    ("success", "true", "false", "false", "failure", False, "the plan did not succeed (the plan job ended 'failure')"),
    ("success", "true", "false", "false", "cancelled", False, "the plan job ended 'cancelled'"),
    ("success", "true", "true", "false", "skipped", False, "A maintainer: review the diff, then push the same commits"),
    ("success", "true", "false", "true", "skipped", False, "as if they came from a fork (read-only token, no OIDC"),
    ("failure", "", "false", "false", "skipped", False, "could not tell whether this pull request changes terraform/"),
]


@pytest.mark.parametrize("row", TRUTH_TABLE, ids=lambda row: "-".join(map(str, row[:6])))
def test_the_result_check_follows_the_truth_table(row: tuple[str, str, str, str, str, bool, str]) -> None:
    changes, changed, fork, dependabot, plan, passes, message = row
    # GIVEN the jobs ended like this  WHEN the result job's script runs
    step = step_running(load("terraform-plan.yml")["jobs"]["result"], "ci.gate verdict")
    env = {"CHANGES_RESULT": changes, "CHANGED": changed, "FORK": fork, "PLAN_RESULT": plan, "NUMBER": "12"}
    result = run_step(step, {**env, "DEPENDABOT": dependabot})
    # THEN the check passes or fails as the table says, with one line saying why
    assert (result.returncode == 0) is passes, result.stdout + result.stderr
    assert message in result.stdout
    if not passes:
        assert result.stdout.startswith("::error title=gate::terraform-plan result: ")
    if fork == "true" and not passes:
        assert "gh pr checkout 12" in result.stdout


# --- which pull requests change what -------------------------------------------------------------------


def gh_listing(tmp_path: Path, files: list[str], renamed_from: str | None = None) -> FakeBin:
    fakes = FakeBin(tmp_path)
    items: list[dict[str, str]] = [{"filename": f} for f in files]
    if renamed_from:
        items[0]["previous_filename"] = renamed_from
    pages = [items[i : i + 100] for i in range(0, len(items), 100)] or [[]]
    fakes.add("gh", ["api"], stdout=json.dumps(pages))
    return fakes


def changes_step(workflow: str, job: str) -> dict[str, Any]:
    return step_running(load(workflow)["jobs"][job], "ci.gate changed")


def run_changes(tmp_path: Path, fakes: FakeBin, workflow: str, job: str, number: str = "12") -> dict[str, str]:
    output = tmp_path / "github_output"
    output.write_text("")
    env = {"REPOSITORY": "octo/pushtrain", "NUMBER": number, "GITHUB_OUTPUT": str(output)}
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", str(changes_step(workflow, job)["run"])],
        env=fakes.env(PYTHONPATH=str(REPO / "scripts"), **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(line.split("=", 1) for line in output.read_text().splitlines())


@pytest.mark.parametrize(
    ("files", "changed"),
    [
        (["terraform/lambda.tf"], "true"),
        (["README.md", "lambda/src/trigger/flows.py"], "true"),
        (["scripts/package_lambda.py"], "true"),
        (["terraform/bootstrap/iam.tf"], "false"),  # applied by hand, planned by nobody's pull request
        (["README.md", "docs/contracts.md", "trainer/src/trainer/train.py"], "false"),
        ([], "false"),
    ],
)
def test_the_plan_runs_only_when_what_the_stack_is_built_from_changed(
    tmp_path: Path, files: list[str], changed: str
) -> None:
    # GIVEN a pull request's files  WHEN the changes job runs  THEN it says whether the stack's plan can differ
    fakes = gh_listing(tmp_path, files)
    assert run_changes(tmp_path, fakes, "terraform-plan.yml", "changes") == {"changed": changed}
    # AND it asked GitHub for every page of the pull request's files
    (call,) = fakes.calls("gh")
    assert call[:3] == ["api", "--paginate", "--slurp"]
    assert call[3] == "repos/octo/pushtrain/pulls/12/files?per_page=100"


def test_a_file_renamed_out_of_terraform_counts_as_a_change(tmp_path: Path) -> None:
    # GIVEN a rename from terraform/ to docs/  THEN the old name counts: the stack loses that file
    fakes = gh_listing(tmp_path, ["docs/old.tf"], renamed_from="terraform/old.tf")
    assert run_changes(tmp_path, fakes, "terraform-plan.yml", "changes") == {"changed": "true"}


def test_a_listing_github_may_have_cut_short_counts_as_changed(tmp_path: Path) -> None:
    # GIVEN 3,000 files, GitHub's limit for the listing  THEN nothing can be proven unchanged
    fakes = gh_listing(tmp_path, [f"docs/{i}.md" for i in range(3000)])
    assert run_changes(tmp_path, fakes, "terraform-plan.yml", "changes") == {"changed": "true"}


def test_a_failing_listing_fails_the_changes_job(tmp_path: Path) -> None:
    # GIVEN gh cannot list the files
    fakes = FakeBin(tmp_path)
    fakes.add("gh", exit=1, stderr="HTTP 403: Resource not accessible by integration")
    output = tmp_path / "github_output"
    output.write_text("")
    env = {"REPOSITORY": "octo/pushtrain", "NUMBER": "12", "GITHUB_OUTPUT": str(output)}
    # WHEN the changes job runs
    result = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", str(changes_step("terraform-plan.yml", "changes")["run"])],
        env=fakes.env(PYTHONPATH=str(REPO / "scripts"), **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    # THEN it fails with GitHub's message and writes no answer (the result check then fails: unknown)
    assert result.returncode == 1
    assert "Resource not accessible by integration" in result.stdout
    assert output.read_text() == ""


# --- ci: docs-only pull requests skip only the slow tests -------------------------------------------------


@pytest.mark.parametrize(
    ("files", "code"),
    [
        (["README.md", "docs/contracts.md", "terraform/README.md"], "false"),
        (["README.md", "trainer/src/trainer/train.py"], "true"),
        ([".github/workflows/ci.yml"], "true"),
    ],
)
def test_ci_knows_a_docs_only_pull_request(tmp_path: Path, files: list[str], code: str) -> None:
    # GIVEN a pull request's files  WHEN ci's changes job runs  THEN code=false only when every file is prose
    fakes = gh_listing(tmp_path, files)
    assert run_changes(tmp_path, fakes, "ci.yml", "changes") == {"changed": code}


def test_a_push_to_main_counts_as_everything_changed(tmp_path: Path) -> None:
    # GIVEN no pull request number (a push)  THEN everything runs, and GitHub is not asked
    fakes = FakeBin(tmp_path)
    assert run_changes(tmp_path, fakes, "ci.yml", "changes", number="") == {"changed": "true"}
    assert fakes.calls("gh") == []


def test_make_test_always_reports_and_skips_only_slow_tests_on_docs_only_pull_requests() -> None:
    # GIVEN ci.yml's test job
    test = load("ci.yml")["jobs"]["test"]
    # THEN it runs even when the changes job failed (never "skipped", which a required check counts as passed)
    assert test["if"] == "${{ !cancelled() }}"
    assert test["name"] == "make test"
    # AND only an explicit "no code changed" narrows the suite; anything else (failure, push) runs all of it
    assert test["env"]["PYTEST_ARGS"] == "${{ needs.changes.outputs.code == 'false' && '-m \"not slow\"' || '' }}"
    assert load("ci.yml")["jobs"]["changes"]["outputs"]["code"] == "${{ steps.changed.outputs.changed }}"
    # AND no workflow that reports a required check filters its pull requests by path
    for name in ("ci.yml", "terraform-plan.yml"):
        pull_request = load(name)["on"]["pull_request"] or {}
        assert "paths" not in pull_request and "paths-ignore" not in pull_request, name


# --- the walkthrough requires the checks the workflows report -------------------------------------------


def reported_checks() -> set[str]:
    """The check names the pull request workflows report (matrix jobs expanded)."""
    names = set()
    for workflow in ("ci.yml", "terraform-plan.yml"):
        for job in load(workflow)["jobs"].values():
            name = str(job.get("name", ""))
            roots = ((job.get("strategy") or {}).get("matrix") or {}).get("root")
            names |= {name.replace("${{ matrix.root }}", root) for root in roots} if roots else {name}
    return names


def test_the_readme_ruleset_requires_only_checks_that_always_report() -> None:
    # GIVEN the ruleset of the README's walkthrough
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index('gh api -X POST "repos/$repo/rulesets"') :]
    body = block[block.index("<<'EOF'\n") + len("<<'EOF'\n") : block.index("\nEOF\n")]
    ruleset = json.loads(body)
    (checks,) = [r["parameters"] for r in ruleset["rules"] if r["type"] == "required_status_checks"]
    required = {c["context"] for c in checks["required_status_checks"]}
    # THEN every required check is a job the pull request workflows always run, the plan gate among them
    assert required <= reported_checks(), required - reported_checks()
    assert {"make test", "terraform-plan result", "tflint"} <= required
    assert all(c["integration_id"] == 15368 for c in checks["required_status_checks"])
    # AND merging goes through the merge queue, one group at a time (its plan is of what main becomes),
    # with code owners' review
    (queue,) = [r["parameters"] for r in ruleset["rules"] if r["type"] == "merge_queue"]
    assert queue["max_entries_to_build"] == queue["max_entries_to_merge"] == 1
    (review,) = [r["parameters"] for r in ruleset["rules"] if r["type"] == "pull_request"]
    assert review["require_code_owner_review"] is True
    assert ruleset["bypass_actors"] == []
    # AND the queue waits longer than the merge group's plan waits for pending applies
    settle = next(s for s in load("terraform-plan.yml")["jobs"]["plan"]["steps"] if "settled" in str(s.get("run", "")))
    assert queue["check_response_timeout_minutes"] > int(settle["run"].split("--timeout-minutes ")[1])


def test_codeowners_cover_what_runs_with_production_credentials() -> None:
    owners = {line.split()[0] for line in (REPO / ".github" / "CODEOWNERS").read_text().splitlines()
              if line.strip() and not line.startswith("#")}  # fmt: skip
    assert owners == {"/.github/", "/scripts/ci/", "/terraform/"}


def test_the_readme_gives_every_oidc_environment_a_main_only_branch_policy() -> None:
    # GIVEN the environments the workflows use (each trusted by a role)  THEN the walkthrough limits each to main
    readme = (REPO / "README.md").read_text()
    environments = set()
    for path in WORKFLOWS.glob("*.yml"):
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            if job.get("environment"):
                environments.add(job["environment"])
    assert environments == {"production", "ecr-push", "drift", "retrain", "report", "merge-queue"}
    loop = next(line for line in readme.splitlines() if line.startswith("for env in production"))
    assert set(loop.removeprefix("for env in ").removesuffix("; do").split()) == environments - {"merge-queue"}
    assert 'deployment-branch-policies" -f name=main -f type=branch' in readme
    # AND the merge queue's plan environment admits only the queue's branches; production no self-review
    assert "merge-queue/deployment-branch-policies\" \\\n  -f name='gh-readonly-queue/main/*'" in readme
    assert '"prevent_self_review": true' in readme
