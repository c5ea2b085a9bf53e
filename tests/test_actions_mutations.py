"""Mutation checks: each named mistake must fail the tests that guard the file it is planted in.

GIVEN a copy of .github/actions/terraform with one known mistake planted (a `cd` dropped, an error
swallowed with `|| true`, a prompt allowed, a check skipped, a fresh plan instead of the saved one),
WHEN the tests of tests/test_actions_terraform.py that guard against that mistake (ACTION_GUARDS) run
against that copy (PUSHTRAIN_TERRAFORM_ACTION), THEN they fail; and against an unmutated copy they
pass, so each failure is the mutation's doing. Running only the guards (pytest -k) keeps each check to
a few tests instead of the file up to its first failure; the whole file runs in the suite itself.

Likewise for trainer-image.yml (WORKFLOW_MUTATIONS): a copy with one mistake, pointed at by
PUSHTRAIN_TRAINER_IMAGE_WORKFLOW, must fail its guards in tests/test_actions_docker_build_push.py
(WORKFLOW_GUARDS); and for the
reviewed plan (REVIEWED_PLAN_MUTATIONS, in terraform-apply.yml or scripts/ci/reviewed_plan.py,
pointed at by PUSHTRAIN_APPLY_WORKFLOW and PUSHTRAIN_CI_SCRIPTS), which must fail the guarding tests
of tests/test_workflows_reviewed_plan.py.

A mutation that no longer applies (its text is gone from the script) fails here too: rewrite it
along with the script, so the check cannot silently stop checking.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ACTION = REPO / ".github" / "actions" / "terraform"
SUITE = REPO / "tests" / "test_actions_terraform.py"

# name -> (script, text, replacement): each text must occur exactly once.
MUTATIONS: dict[str, tuple[str, str, str]] = {
    "no cd into the working directory": ("run.sh", 'cd "$workdir"\n', "\n"),
    "init errors ignored": (
        "run.sh",
        'if ! terraform init -input=false -no-color "${init_args[@]}"; then',
        'if ! { terraform init -input=false -no-color "${init_args[@]}" || true; }; then',
    ),
    "validate errors ignored": ("run.sh", "terraform validate -no-color\n", "terraform validate -no-color || true\n"),
    "init may prompt": ("run.sh", "terraform init -input=false", "terraform init"),
    "plan may prompt": ("run.sh", "run_terraform plan -input=false", "run_terraform plan"),
    "apply may prompt": ("run.sh", "run_terraform apply -input=false", "run_terraform apply"),
    "apply ignores the recorded hash": ("run.sh", 'if [[ "$actual" != "$expected" ]]; then', "if false; then"),
    "apply re-plans instead of applying the saved plan": (
        "run.sh",
        '"${extra_args[@]}" "$plan_file" 2>&1',
        '-auto-approve "${extra_args[@]}" 2>&1',
    ),
    "a stale plan is reported as a plain failure": ("run.sh", 'grep -q "Saved plan is stale"', "grep -q NEVER"),
    "plan comments always patched": (
        "run.sh",
        'if [[ "$sub" == "plan" && "$patch" == "true" ]]; then',
        'if [[ "$sub" == "plan" ]]; then',
    ),
    "installer skips the pinned sha256": (
        "install-tool.sh",
        'if ! (cd "$dir" && printf',
        'if false && (cd "$dir" && printf',
    ),
    "installer skips the attestation check of an unpinned tfcmt": (
        "install-tool.sh",
        'if ! gh attestation verify "$dir/$asset"',
        'if false && gh attestation verify "$dir/$asset"',
    ),
    "attestation accepted from any signer workflow": (
        "install-tool.sh",
        " \\\n    --signer-workflow suzuki-shunsuke/go-release-workflow/.github/workflows/release.yaml;",
        ";",
    ),
    "an unpinned terraform is trusted on gh's word": (
        "install-tool.sh",
        'if [[ "$tool" != tfcmt ]]; then',
        "if false; then",
    ),
    "gh gets no token": ("action.yml", "GH_TOKEN: ${{ inputs.github-token }}", "GH_TOKEN_UNUSED: x"),
}
# name -> the tests of SUITE that catch that mistake (a pytest -k expression over their names)
ACTION_GUARDS: dict[str, str] = {
    "no cd into the working directory": "every_terraform_call_runs_in_the_working_directory",
    "init errors ignored": "failed_init_or_validate_stops_the_run_before_plan",
    "validate errors ignored": "failed_init_or_validate_stops_the_run_before_plan",
    "init may prompt": "init_and_plan_never_prompt",
    "plan may prompt": "init_and_plan_never_prompt",
    "apply may prompt": "apply_applies_the_downloaded_plan_byte_for_byte",
    "apply ignores the recorded hash": "a_plan_changed_after_planning_is_refused",
    "apply re-plans instead of applying the saved plan": "apply_applies_the_downloaded_plan_byte_for_byte",
    "a stale plan is reported as a plain failure": "a_stale_plan_fails_with_a_clear_message",
    "plan comments always patched": "without_patch_tfcmt_posts_a_new_plan_comment",
    "installer skips the pinned sha256": "a_replaced_asset_is_rejected",
    "installer skips the attestation check of an unpinned tfcmt": "unpinned_tfcmt_whose_provenance_gh",
    "attestation accepted from any signer workflow": "unpinned_tfcmt_whose_provenance_gh_verifies",
    "an unpinned terraform is trusted on gh's word": "unpinned_terraform_is_refused",
    "gh gets no token": "gives_gh_its_token_only_for_installing_tfcmt",
}


TRAINER_IMAGE = REPO / ".github" / "workflows" / "trainer-image.yml"
IMAGE_SUITE = REPO / "tests" / "test_actions_docker_build_push.py"

# name -> (text, replacement) in trainer-image.yml: each text must occur exactly once.
WORKFLOW_MUTATIONS: dict[str, tuple[str, str]] = {
    "the CUDA push loses its -cuda suffix": ("tags: ${{ github.sha }}-cuda\n", "tags: ${{ github.sha }}\n"),
    "the CUDA image is pushed whatever PUSHTRAIN_GPU says": ("        if: vars.PUSHTRAIN_GPU == 'true'\n", ""),
    "the CUDA digest is not an output": ("      cuda-digest: ${{ steps.image-cuda.outputs.digest }}\n", ""),
}
WORKFLOW_GUARDS: dict[str, str] = {
    "the CUDA push loses its -cuda suffix": "cuda_variant_is_pushed_beside_the_cpu_image",
    "the CUDA image is pushed whatever PUSHTRAIN_GPU says": "cuda_variant_is_pushed_beside_the_cpu_image",
    "the CUDA digest is not an output": "push_job_exposes_the_pushed_digest",
}


def every(guards: dict[str, str]) -> str:
    """The -k expression selecting every guard, for the unmutated run."""
    return " or ".join(sorted(set(guards.values())))


def run_suite(
    action: Path, guards: str, suite: Path = SUITE, variable: str = "PUSHTRAIN_TERRAFORM_ACTION"
) -> subprocess.CompletedProcess[str]:
    """The tests of `suite` that `guards` selects, against the copy at `action`. A selection that matches
    no test exits 5, never 1, so a renamed guard cannot pass for a caught mutation."""
    env = {**os.environ, variable: str(action)}
    plugins = ["-p", "no:cacheprovider", "-p", "no:randomly"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(suite), "-x", "-q", "-k", guards, *plugins],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def copy_action(tmp_path: Path) -> Path:
    target = tmp_path / "terraform-action"
    shutil.copytree(ACTION, target)
    return target


@pytest.mark.slow
def test_the_unmutated_copy_passes(tmp_path: Path) -> None:
    # GIVEN an exact copy of the action  WHEN every guard runs against it  THEN they pass
    assert set(ACTION_GUARDS) == set(MUTATIONS), "each mutation names the tests that guard against it"
    result = run_suite(copy_action(tmp_path), every(ACTION_GUARDS))
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_each_mutation_fails_the_action_tests(tmp_path: Path, name: str) -> None:
    # GIVEN a copy of the action with one mistake planted
    action = copy_action(tmp_path)
    script, text, replacement = MUTATIONS[name]
    source = (action / script).read_text()
    assert source.count(text) == 1, f"mutation {name!r} no longer applies to {script}: rewrite it with the script"
    (action / script).write_text(source.replace(text, replacement))
    # WHEN the tests that guard against it run against it
    result = run_suite(action, ACTION_GUARDS[name])
    # THEN they fail (exit 1: a test failed, not a crash of the run)
    assert result.returncode == 1, f"mutation {name!r} survived:\n{result.stdout[-3000:]}"


def copy_workflow(tmp_path: Path) -> Path:
    target = tmp_path / "trainer-image.yml"
    shutil.copyfile(TRAINER_IMAGE, target)
    return target


@pytest.mark.slow
def test_the_unmutated_workflow_copy_passes(tmp_path: Path) -> None:
    assert set(WORKFLOW_GUARDS) == set(WORKFLOW_MUTATIONS), "each mutation names the tests that guard against it"
    result = run_suite(copy_workflow(tmp_path), every(WORKFLOW_GUARDS), IMAGE_SUITE, "PUSHTRAIN_TRAINER_IMAGE_WORKFLOW")
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(WORKFLOW_MUTATIONS))
def test_each_workflow_mutation_fails_the_image_tests(tmp_path: Path, name: str) -> None:
    # GIVEN a copy of trainer-image.yml with one mistake planted
    workflow = copy_workflow(tmp_path)
    text, replacement = WORKFLOW_MUTATIONS[name]
    source = workflow.read_text()
    assert source.count(text) == 1, f"mutation {name!r} no longer applies to trainer-image.yml: rewrite it"
    workflow.write_text(source.replace(text, replacement))
    # WHEN the image tests run against it  THEN they fail (a test failed, not a crash of the run)
    result = run_suite(workflow, WORKFLOW_GUARDS[name], IMAGE_SUITE, "PUSHTRAIN_TRAINER_IMAGE_WORKFLOW")
    assert result.returncode == 1, f"mutation {name!r} survived:\n{result.stdout[-3000:]}"


REVIEWED_SUITE = REPO / "tests" / "test_workflows_reviewed_plan.py"
APPLY_WORKFLOW = REPO / ".github" / "workflows" / "terraform-apply.yml"
COMPARE_STEP = "      - name: Compare with the plan the merge queue required\n"
# name -> (file, text, replacement): each text must occur exactly once in its file.
REVIEWED_PLAN_MUTATIONS: dict[str, tuple[str, str, str]] = {
    "continue-on-error on the compare step": (
        "terraform-apply.yml", COMPARE_STEP, COMPARE_STEP + "        continue-on-error: true\n"
    ),
    "the compare always run with --event workflow_dispatch": (
        "terraform-apply.yml", '--event "$EVENT"', "--event workflow_dispatch"
    ),
    "non-push events skipping the comparison": (
        "terraform-apply.yml", COMPARE_STEP, COMPARE_STEP + "        if: github.event_name == 'push'\n"
    ),
    "expired artifacts not filtered": (
        "reviewed_plan.py", 'live = [a for a in listed if not a.get("expired")]', "live = listed"
    ),
    "a run started by hand skips the head check": (
        "reviewed_plan.py",
        '    require_head(github, repository, commit)\n    if event == "workflow_dispatch":',
        '    if event == "workflow_dispatch":',
    ),
    "any event may apply": ("reviewed_plan.py", 'if event not in {"push", "workflow_dispatch"}:', "if False:"),
    "runs of any event accepted": ("reviewed_plan.py", 'and run.get("event") == "merge_group"', ""),
    "runs of any repository accepted": (
        "reviewed_plan.py", 'and (run.get("head_repository") or {}).get("full_name") == repository', ""
    ),
    "values not compared, only actions": (
        "plan_changes.py",
        '"after": known(change.get("after"), change.get("after_unknown"), change.get("after_sensitive")),',
        "",
    ),
}  # fmt: skip
# The tests that guard these mistakes (the whole file runs in the suite; here only what each needs).
GUARDS = "uploads_nothing or expired or fork or other_event or unconditional or two_merges or run_started_by_hand"


def run_reviewed_suite(workflow: Path, scripts: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PUSHTRAIN_APPLY_WORKFLOW": str(workflow), "PUSHTRAIN_CI_SCRIPTS": str(scripts)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(REVIEWED_SUITE), "-x", "-q", "-k", GUARDS, "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def copy_reviewed(tmp_path: Path) -> tuple[Path, Path]:
    workflow = tmp_path / "terraform-apply.yml"
    shutil.copyfile(APPLY_WORKFLOW, workflow)
    shutil.copytree(REPO / "scripts" / "ci", tmp_path / "scripts" / "ci")
    return workflow, tmp_path / "scripts"


@pytest.mark.slow
def test_the_unmutated_reviewed_plan_copy_passes(tmp_path: Path) -> None:
    result = run_reviewed_suite(*copy_reviewed(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REVIEWED_PLAN_MUTATIONS))
def test_each_reviewed_plan_mutation_fails_its_tests(tmp_path: Path, name: str) -> None:
    # GIVEN a copy of terraform-apply.yml and scripts/ci with one mistake planted
    workflow, scripts = copy_reviewed(tmp_path)
    target, text, replacement = REVIEWED_PLAN_MUTATIONS[name]
    path = workflow if target.endswith(".yml") else scripts / "ci" / target
    source = path.read_text()
    assert source.count(text) == 1, f"mutation {name!r} no longer applies to {target}: rewrite it"
    path.write_text(source.replace(text, replacement))
    # WHEN the reviewed-plan tests run against it  THEN they fail (a test failed, not a crash of the run)
    result = run_reviewed_suite(workflow, scripts)
    assert result.returncode == 1, f"mutation {name!r} survived:\n{result.stdout[-3000:]}"
