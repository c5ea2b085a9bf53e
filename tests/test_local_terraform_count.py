"""The local pipeline emulates the default stack: a resource whose `count` is 0 under the defaults (the
optional GPU and Batch capacity) does not exist in it, and one whose count is 1 does."""

from __future__ import annotations

from pathlib import Path

import pytest
from tfread.terraform import TerraformModule

REPO = Path(__file__).resolve().parent.parent

MODULE = """
variable "gpu" {
  type    = object({ enabled = optional(bool, false) })
  default = { enabled = %s }
}
locals {
  gpu_enabled = var.gpu.enabled
}
resource "aws_ecs_task_definition" "this" {
  family = "trainer"
}
resource "aws_ecs_task_definition" "gpu" {
  count  = local.gpu_enabled ? 1 : 0
  family = "trainer-gpu"
}
"""


@pytest.mark.parametrize(("enabled", "expected"), [("false", ["this"]), ("true", ["gpu", "this"])])
def test_a_resource_counted_out_by_the_defaults_is_not_in_the_emulated_stack(
    tmp_path: Path, enabled: str, expected: list[str]
) -> None:
    (tmp_path / "main.tf").write_text(MODULE % enabled, encoding="utf-8")
    module = TerraformModule.load(tmp_path)
    assert sorted(name for kind, name in module.resources if kind == "aws_ecs_task_definition") == expected


def test_the_real_stack_emulates_no_scale_out_capacity_by_default() -> None:
    module = TerraformModule.load(REPO / "terraform")
    assert module.single("aws_ecs_task_definition")[0] == "this"
    assert not [key for key in module.resources if key[0].startswith(("aws_batch_", "aws_autoscaling_"))]
