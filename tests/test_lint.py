"""`make lint` is a gate: each linter passes a clean tree and fails when a finding is planted.

GIVEN a small tree that every linter accepts, WHEN one finding of a linter's kind is
planted in it, THEN `scripts/lint.py --only <linter>` exits non-zero, and on the clean
tree it exits zero (so the failure is the planted finding, not the setup).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT = REPO / "scripts" / "lint.py"

CLEAN: dict[str, str] = {
    "app.py": 'def greet(name: str) -> str:\n    return f"hello {name}"\n',
    "run.sh": '#!/usr/bin/env bash\nset -euo pipefail\necho "$1"\n',
    "Dockerfile": (
        "FROM python:3.12-slim@sha256:" + "0" * 64 + "\n"
        "RUN useradd --uid 10001 --create-home app\n"
        "USER 10001\n"
        "HEALTHCHECK NONE\n"
        'CMD ["python", "-c", "print(1)"]\n'
    ),
    ".github/workflows/ci.yml": (
        "name: ci\non: push\npermissions: {}\njobs:\n  hello:\n    runs-on: ubuntu-24.04\n"
        "    timeout-minutes: 5\n    steps:\n      - run: echo hello\n"
    ),
    "terraform/main.tf": 'locals {\n  name = "pushtrain"\n}\n',
}

# linter -> (file, planted content): one real finding of that linter's kind each.
PLANTED: dict[str, tuple[str, str]] = {
    "ruff": ("app.py", "import os\n\ndef greet(name):\n    return eval(name)\n"),
    "terraform-fmt": ("terraform/main.tf", 'locals {\n    name="pushtrain"\n}\n'),
    "checkov": ("terraform/bucket.tf", 'resource "aws_s3_bucket" "this" {\n  bucket = "open-bucket"\n}\n'),
    "zizmor": (
        ".github/workflows/ci.yml",
        "name: ci\non: pull_request_target\npermissions: write-all\njobs:\n  hello:\n    runs-on: ubuntu-24.04\n"
        "    timeout-minutes: 5\n    steps:\n      - uses: actions/checkout@v4\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n",
    ),
    "actionlint": (
        ".github/workflows/ci.yml",
        "name: ci\non: push\npermissions: {}\njobs:\n  hello:\n    runs-on: ubuntu-24.04\n"
        "    timeout-minutes: 5\n    steps:\n      - run: echo $UNQUOTED_VAR\n        shell: bash\n",
    ),
    "hadolint": ("Dockerfile", "FROM python:latest\nRUN apt-get update && apt-get install -y curl\n"),
    "shellcheck": ("run.sh", "#!/usr/bin/env bash\necho $1\nrm -rf $DIR/\n"),
    # an AWS quota (scripts/aws_limits.py): a queue name of 81 characters, one over SQS's 80
    "limits": ("terraform/queue.tf", 'resource "aws_sqs_queue" "this" {\n  name = "' + "q" * 81 + '"\n}\n'),
}


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def lint(root: Path, *linters: str) -> subprocess.CompletedProcess[str]:
    """scripts/lint.py on `root`: the named linters (two or more run concurrently), or all of them."""
    return subprocess.run(
        [sys.executable, str(LINT), "--root", str(root), *(arg for name in linters for arg in ("--only", name))],
        env={k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"},  # plain "== linter" headers
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_the_clean_tree_passes_every_linter_run_at_once_and_each_ones_output_is_whole(tmp_path: Path) -> None:
    import lint as lint_script

    # GIVEN the clean tree every planted-finding test below starts from
    write_tree(tmp_path, CLEAN)
    # WHEN `make lint` runs it: every linter, concurrently, each in its own process
    clean = lint(tmp_path)
    # THEN each linter passes it (so a planted test's failure is its finding, not the setup)
    assert clean.returncode == 0, f"a linter rejected the clean tree:\n{clean.stdout}\n{clean.stderr}"
    assert f"lint passed: {', '.join(lint_script.LINTERS)}" in clean.stdout
    # AND each linter's lines are printed together, in order, from its header to its result
    marks = [line.split(" (")[0] for line in clean.stdout.splitlines() if line.startswith("== ")]
    assert marks == [mark for name in lint_script.LINTERS for mark in (f"== {name}", f"== {name}: ok")]


def test_a_finding_in_one_of_concurrent_linters_fails_lint_naming_only_that_one(tmp_path: Path) -> None:
    # GIVEN a clean tree with a shell script finding planted
    write_tree(tmp_path, CLEAN)
    write_tree(tmp_path, dict([PLANTED["shellcheck"]]))
    # WHEN ruff and shellcheck run concurrently
    result = lint(tmp_path, "ruff", "shellcheck")
    # THEN lint fails, naming shellcheck alone, with shellcheck's finding in the output
    assert result.returncode == 1, result.stdout + result.stderr
    assert "lint failed: shellcheck\n" in result.stderr
    assert "lint failed: ruff" not in result.stderr
    assert "SC2086" in result.stdout


@pytest.mark.parametrize("linter", sorted(PLANTED))
def test_planted_finding_fails_lint(tmp_path: Path, linter: str) -> None:
    # GIVEN the clean tree (test_the_clean_tree_passes_every_linter_run_at_once: every linter passes it)
    write_tree(tmp_path, CLEAN)

    # WHEN one finding is planted
    name, content = PLANTED[linter]
    write_tree(tmp_path, {name: content})
    dirty = lint(tmp_path, linter)

    # THEN the gate fails and names the linter
    assert dirty.returncode == 1, f"{linter} missed the planted finding:\n{dirty.stdout}\n{dirty.stderr}"
    assert f"lint failed: {linter}" in dirty.stderr


def test_missing_linter_is_a_failure_not_a_skip(tmp_path: Path) -> None:
    # GIVEN an interpreter whose bin folder has no linters and a PATH without them
    write_tree(tmp_path, CLEAN)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    code = (
        "import sys, runpy; sys.executable = '/nonexistent/python'; "
        f"sys.argv = ['lint', '--root', {str(tmp_path)!r}, '--only', 'hadolint']; "
        f"runpy.run_path({str(LINT)!r}, run_name='__main__')"
    )
    # WHEN the hadolint gate runs, with the repo's venvs hidden from it
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False, cwd=tmp_path
    )
    # THEN it fails, saying what is missing (unless the machine has hadolint on PATH itself)
    if (REPO / ".venv-checkov" / "bin" / "hadolint").exists():
        pytest.skip("hadolint is installed in the checkov virtualenv")
    assert result.returncode == 1
    assert "'hadolint' is not installed" in result.stderr


def test_zizmor_audits_dependabot_configuration(tmp_path: Path) -> None:
    # GIVEN a clean tree plus a Dependabot configuration without a cooldown (zizmor's dependabot-cooldown)
    write_tree(tmp_path, CLEAN)
    config = "version: 2\nupdates:\n  - package-ecosystem: pip\n    directory: /\n    schedule: { interval: weekly }\n"
    write_tree(tmp_path, {".github/dependabot.yml": config})
    # WHEN the zizmor gate runs  THEN it fails on dependabot.yml
    result = lint(tmp_path, "zizmor")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "dependabot-cooldown" in result.stdout + result.stderr
    # AND with a cooldown it passes
    write_tree(tmp_path, {".github/dependabot.yml": config + "    cooldown: { default-days: 7 }\n"})
    assert lint(tmp_path, "zizmor").returncode == 0


# --- IAM policies (scripts/lint.py --only iam) -------------------------------------------------------

IAM_CLEAN = (
    'data "aws_iam_policy_document" "reader" {\n'
    "  statement {\n"
    '    actions   = ["s3:GetObject"]\n'
    '    resources = ["arn:aws:s3:::pushtrain-artifacts/models/*"]\n'
    "  }\n"
    "}\n"
)


@pytest.mark.parametrize(
    ("planted", "finding"),
    [
        # sqs:SendMessage has a resource type (queue): "*" writes into every queue of the account
        ('actions   = ["sqs:SendMessage"]\n    resources = ["*"]', "RESOURCE_STAR"),
        # a misspelt action is denied by AWS at run time, never at apply
        ('actions   = ["s3:GetObjects"]\n    resources = ["arn:aws:s3:::pushtrain-artifacts/*"]', "UNKNOWN_ACTION"),
        # iam:PassRole of every role to any service
        ('actions   = ["iam:PassRole"]\n    resources = ["*"]', "RESOURCE_STAR"),
    ],
)
def test_iam_lint_fails_on_a_planted_policy_and_passes_a_scoped_one(tmp_path: Path, planted: str, finding: str) -> None:
    # GIVEN a root whose only policy document is scoped: the IAM gate passes it
    write_tree(tmp_path, {**CLEAN, "terraform/iam.tf": IAM_CLEAN})
    clean = lint(tmp_path, "iam")
    assert clean.returncode == 0, f"iam rejected the clean tree:\n{clean.stdout}\n{clean.stderr}"

    # WHEN a statement with a finding is planted in it
    bad = IAM_CLEAN.replace(
        '    actions   = ["s3:GetObject"]\n    resources = ["arn:aws:s3:::pushtrain-artifacts/models/*"]',
        f"    {planted}",
    )
    write_tree(tmp_path, {"terraform/iam.tf": bad})
    dirty = lint(tmp_path, "iam")

    # THEN the gate fails, naming the finding
    assert dirty.returncode == 1, f"iam missed the planted finding:\n{dirty.stdout}\n{dirty.stderr}"
    assert finding in dirty.stdout
    assert "lint failed: iam" in dirty.stderr


def test_iam_lint_suppressions_need_a_reason_and_a_finding(tmp_path: Path) -> None:
    # GIVEN a scoped document carrying a suppression without a reason, for a finding it does not have
    skipped = IAM_CLEAN.replace("{\n  statement", "{\n  # iam-lint:skip=RESOURCE_STAR\n  statement", 1)
    write_tree(tmp_path, {**CLEAN, "terraform/iam.tf": skipped})
    # THEN the gate fails on both counts
    result = lint(tmp_path, "iam")
    assert result.returncode == 1
    assert "gives no reason" in result.stdout
    assert "suppresses nothing" in result.stdout


def test_iam_lint_suppression_for_named_actions_hides_only_those(tmp_path: Path) -> None:
    # GIVEN "*" for two actions that have a resource type, and a suppression naming one of them
    star = IAM_CLEAN.replace(
        '    actions   = ["s3:GetObject"]\n    resources = ["arn:aws:s3:::pushtrain-artifacts/models/*"]',
        '    actions   = ["ecs:ListTasks", "sqs:SendMessage"]\n    resources = ["*"]',
    )
    only_list = "{\n  # iam-lint:skip=RESOURCE_STAR(ecs:ListTasks): the cluster condition scopes it\n  statement"
    write_tree(tmp_path, {**CLEAN, "terraform/iam.tf": star.replace("{\n  statement", only_list, 1)})
    # WHEN the IAM gate runs  THEN the action it does not name is still a finding
    result = lint(tmp_path, "iam")
    assert result.returncode == 1, result.stdout
    assert "RESOURCE_STAR" in result.stdout
    # AND naming both actions suppresses the finding
    both = only_list.replace("(ecs:ListTasks)", "(ecs:ListTasks, sqs:SendMessage)")
    write_tree(tmp_path, {**CLEAN, "terraform/iam.tf": star.replace("{\n  statement", both, 1)})
    assert lint(tmp_path, "iam").returncode == 0, lint(tmp_path, "iam").stdout


def test_an_iam_suppression_limited_to_actions_covers_only_findings_about_those_actions() -> None:
    from lint import IamSkip

    skip = IamSkip("AWS's public parameters have no account", frozenset({"ssm:GetParameter", "ssm:GetParameters"}))
    # parliament's details: action names, or (RESOURCE_MISMATCH) one {"action": ..., "required_format": ...} each
    assert skip.covers(["ssm:GetParameter"])
    assert skip.covers([{"action": "ssm:GetParameters", "required_format": "arn:*:ssm:*:*:parameter/*"}])
    assert not skip.covers([{"action": "ssm:GetParameter"}, {"action": "s3:GetObject"}])
    assert not skip.covers(["s3:GetObject"])
    assert not skip.covers([])
    assert not skip.covers({"action": "ssm:GetParameter"})  # not a list: never silently covered
    assert IamSkip("the whole issue", None).covers({"anything": 1})


def test_the_linter_and_the_terraform_reader_do_not_import_the_local_pipeline() -> None:
    import ast

    # GIVEN the linter, its AWS-limits check and the Terraform reader both it and the emulator use
    scripts = LINT.parent
    files = [LINT, scripts / "aws_limits.py", *sorted((scripts / "tfread").glob("*.py"))]
    # THEN none imports pushtrain_local (the emulator): the reader is its own package, imported by both
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
        assert not {name for name in imported if name.split(".")[0] == "pushtrain_local"}, path
    assert any((scripts / "tfread").glob("*.py"))
