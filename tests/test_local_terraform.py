"""The local pipeline reads its names from terraform/: the real files resolve, and what cannot resolve says so.

GIVEN the repository's terraform/ (or a small module written for one case), WHEN the reader resolves
names, environments and event patterns, THEN they equal what docs/contracts.md says `terraform apply`
creates, and an unresolvable name fails with a message naming it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tfread.hcl import HclError, Scope, Unknown, evaluate
from tfread.terraform import TerraformError, TerraformModule, rule_targets

REPO = Path(__file__).resolve().parent.parent
ACCOUNT, REGION = "123456789012", "us-east-1"


@pytest.fixture(scope="module")
def module() -> TerraformModule:
    return TerraformModule.load(REPO / "terraform")


def test_real_terraform_names_match_the_contract(module: TerraformModule) -> None:
    # WHEN the names are resolved for an account and the stack's default region
    stack = module.stack(ACCOUNT, module.default_region())

    # THEN they are the names of docs/contracts.md, built from var.name = "pushtrain"
    names = stack.names
    assert module.variables["name"] == "pushtrain"
    assert names.repository == "pushtrain-trainer"
    assert names.cluster == "pushtrain"
    assert names.task_family == "pushtrain-trainer"
    assert names.container == "trainer"
    assert names.function == "pushtrain-trigger"
    assert names.bucket == f"pushtrain-artifacts-{ACCOUNT}-{REGION}"


def test_real_base_task_environment_points_the_trainer_at_the_bucket(module: TerraformModule) -> None:
    stack = module.stack(ACCOUNT, REGION)

    env = stack.trainer_environment
    bucket = stack.names.bucket
    assert env["TRAINER_DATA_URI"] == f"s3://{bucket}/datasets/cifar-10-python.tar.gz"
    assert env["TRAINER_STORE_URI"] == f"s3://{bucket}"
    assert env["TRAINER_WORK_DIR"] == "/scratch"
    assert {"TRAINER_MODEL_NAME", "TRAINER_ACCURACY_FLOOR"} <= set(env)
    assert all(isinstance(v, str) for v in env.values())


def test_trigger_variables_are_unknown_until_the_emulation_supplies_ids(module: TerraformModule) -> None:
    # GIVEN no resource ids: the subnets and repository URL are "known after apply"
    plain = module.stack(ACCOUNT, REGION).lambda_environment
    assert isinstance(plain["PUSHTRAIN_SUBNETS"], Unknown)
    assert plain["PUSHTRAIN_CLUSTER"] == "pushtrain"

    # WHEN the emulation supplies them
    known = {
        ("aws_subnet", "*"): [{"id": "subnet-0aaaaaaaaaaaaaaa1"}, {"id": "subnet-0aaaaaaaaaaaaaaa2"}],
        ("aws_security_group", "id"): "sg-0bbbbbbbbbbbbbbb1",
        ("aws_ecr_repository", "repository_url"): f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/pushtrain-trainer",
        ("aws_s3_bucket", "id"): f"pushtrain-artifacts-{ACCOUNT}-{REGION}",
    }
    stack = module.stack(ACCOUNT, REGION, known)
    env = stack.lambda_environment

    # THEN every PUSHTRAIN_* variable of docs/contracts.md has a concrete value
    assert env["PUSHTRAIN_SUBNETS"] == "subnet-0aaaaaaaaaaaaaaa1,subnet-0aaaaaaaaaaaaaaa2"
    assert env["PUSHTRAIN_SECURITY_GROUPS"] == "sg-0bbbbbbbbbbbbbbb1"
    assert env["PUSHTRAIN_BUCKET"] == stack.names.bucket
    assert env["PUSHTRAIN_TASK_FAMILY"] == "pushtrain-trainer"
    assert not [k for k, v in env.items() if isinstance(v, Unknown)]


def test_event_patterns_render_the_templates_with_real_names(module: TerraformModule) -> None:
    cluster_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/pushtrain"
    patterns = module.event_patterns(ACCOUNT, REGION, {("aws_ecs_cluster", "arn"): cluster_arn})

    push = next(p for p in patterns.values() if p["source"] == ["aws.ecr"])
    assert push["detail"]["repository-name"] == ["pushtrain-trainer"]
    ecs_patterns = [p for p in patterns.values() if p["source"] == ["aws.ecs"]]
    assert ecs_patterns
    assert all(p["detail"]["clusterArn"] == [cluster_arn] for p in ecs_patterns)


def test_rule_targets_name_the_trigger_for_the_push_rule(module: TerraformModule) -> None:
    targets = rule_targets(module)
    patterns = module.event_patterns(ACCOUNT, REGION, {("aws_ecs_cluster", "arn"): "arn:x"})

    push_rules = [name for name, p in patterns.items() if p["source"] == ["aws.ecr"]]
    assert push_rules
    assert all("aws_lambda_function" in targets[name] for name in push_rules)


def _write(tmp_path: Path, text: str) -> TerraformModule:
    (tmp_path / "main.tf").write_text(text, encoding="utf-8")
    return TerraformModule.load(tmp_path)


def test_a_name_built_from_an_undeclared_variable_fails_naming_it(tmp_path: Path) -> None:
    module = _write(tmp_path, 'resource "aws_ecr_repository" "this" {\n  name = "${var.prefix}-trainer"\n}\n')
    scope = module.scope({})

    with pytest.raises(TerraformError, match=r"aws_ecr_repository\.this\.name.*var\.prefix"):
        module.argument("aws_ecr_repository", "name", scope)


def test_a_name_only_known_after_apply_fails_naming_the_reference(tmp_path: Path) -> None:
    module = _write(
        tmp_path,
        'resource "aws_sqs_queue" "q" {\n  name = "q"\n}\n'
        'resource "aws_ecr_repository" "this" {\n  name = aws_sqs_queue.q.arn\n}\n',
    )

    with pytest.raises(TerraformError, match=r"only known after apply \(aws_sqs_queue\.q\.arn\)"):
        module.argument("aws_ecr_repository", "name", module.scope({}))


def test_an_unsupported_function_fails_naming_it(tmp_path: Path) -> None:
    module = _write(
        tmp_path, 'resource "aws_ecs_cluster" "this" {\n  name = sha1(var.x)\n}\nvariable "x" {\n  default = "a"\n}\n'
    )

    with pytest.raises(TerraformError, match=r"function sha1\(\) is not supported"):
        module.argument("aws_ecs_cluster", "name", module.scope({}))


def test_two_resources_of_a_kind_are_ambiguous(tmp_path: Path) -> None:
    module = _write(
        tmp_path,
        'resource "aws_ecs_cluster" "a" {\n  name = "a"\n}\nresource "aws_ecs_cluster" "b" {\n  name = "b"\n}\n',
    )

    with pytest.raises(TerraformError, match=r"exactly one aws_ecs_cluster.*aws_ecs_cluster\.a, aws_ecs_cluster\.b"):
        module.single("aws_ecs_cluster")


def test_a_folder_without_tf_files_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TerraformError, match=r"no \.tf files"):
        TerraformModule.load(tmp_path)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('"${var.name}-trainer"', "pushtrain-trainer"),
        ('coalesce(var.none, "${var.name}-x")', "pushtrain-x"),
        ('var.none == null ? "default" : var.none', "default"),
        ('join(",", [for s in var.subnets : s.id])', "subnet-1,subnet-2"),
        ("{for k in sort(keys(var.env)) : k => lower(var.env[k])}", {"A": "x", "B": "y"}),
        ('[for k in keys(var.env) : { name = k, value = var.env[k] } if k != "B"]', [{"name": "A", "value": "X"}]),
        ('format("%s-%d", var.name, 3)', "pushtrain-3"),
        ("tostring(0.9)", "0.9"),
        ('"$${literal}"', "${literal}"),
    ],
)
def test_expressions_evaluate_like_terraform(expression: str, expected: object) -> None:
    scope = Scope(
        variables={
            "name": "pushtrain",
            "none": None,
            "subnets": [{"id": "subnet-1"}, {"id": "subnet-2"}],
            "env": {"B": "Y", "A": "X"},
        },
        locals={},
        resources={},
        module_path=Path(),
    )
    assert evaluate(expression, scope) == expected


def test_a_local_that_refers_to_itself_is_an_error() -> None:
    scope = Scope(variables={}, locals={"a": "${local.a}"}, resources={}, module_path=Path())
    with pytest.raises(HclError, match=r"local\.a refers to itself"):
        evaluate("local.a", scope)


def test_a_for_each_rule_expands_to_one_pattern_per_key_and_skips_schedules(tmp_path: Path) -> None:
    # GIVEN rules written as one for_each resource, a schedule among them, and targets for each rule
    module = _write(
        tmp_path,
        'variable "region" {\n  default = "us-east-1"\n}\n'
        "locals {\n  rules = {\n"
        '    push = { pattern = "{\\"source\\": [\\"aws.ecr\\"]}", schedule = null }\n'
        '    tick = { pattern = null, schedule = "rate(1 hour)" }\n'
        "  }\n}\n"
        'resource "aws_lambda_function" "this" {\n  function_name = "f"\n}\n'
        'resource "aws_sns_topic" "this" {\n  name = "t"\n}\n'
        'resource "aws_cloudwatch_event_rule" "this" {\n  for_each = local.rules\n'
        "  event_pattern       = each.value.pattern\n  schedule_expression = each.value.schedule\n}\n"
        'resource "aws_cloudwatch_event_target" "all" {\n  for_each = aws_cloudwatch_event_rule.this\n'
        "  rule = each.value.name\n  arn  = aws_lambda_function.this.arn\n}\n"
        'resource "aws_cloudwatch_event_target" "one" {\n'
        '  rule = aws_cloudwatch_event_rule.this["push"].name\n  arn  = aws_sns_topic.this.arn\n}\n',
    )

    # WHEN the patterns and targets are read
    patterns = module.event_patterns(ACCOUNT, REGION)
    targets = rule_targets(module)

    # THEN each key is a rule, the schedule has no pattern, and each target lands on its rule's key
    assert patterns == {"push": {"source": ["aws.ecr"]}}
    assert targets == {"push": {"aws_lambda_function", "aws_sns_topic"}, "tick": {"aws_lambda_function"}}


@pytest.mark.parametrize(
    ("gpu", "families", "on_demand"),
    [
        ({"enabled": False}, ["pushtrain-trainer"], ""),
        ({"enabled": True, "spot": True}, ["pushtrain-trainer", "pushtrain-trainer-gpu"], "pushtrain-gpu-od"),
        ({"enabled": True, "spot": False}, ["pushtrain-trainer", "pushtrain-trainer-gpu"], ""),
    ],
    ids=["gpu-off", "gpu-spot", "gpu-on-demand-only"],
)
def test_gpu_settings_reach_the_stop_rules_and_the_trigger(
    module: TerraformModule, gpu: dict[str, bool], families: list[str], on_demand: str
) -> None:
    # GIVEN the stack with var.gpu as given (and pushes training on GPU when it is on)
    default_gpu = dict(module.variables["gpu"])
    variables = {"gpu": {**default_gpu, **gpu}, "default_compute": "gpu" if gpu["enabled"] else "cpu"}
    stack = module.with_variables(variables)
    cluster_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/pushtrain"
    patterns = stack.event_patterns(ACCOUNT, REGION, {("aws_ecs_cluster", "arn"): cluster_arn})
    # THEN every task-stop rule matches a revision prefix of each deployed family, and nothing else
    prefix = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/"
    for name in ("spot_interruption", "training_failed", "training_succeeded"):
        assert patterns[name]["detail"]["taskDefinitionArn"] == [{"prefix": f"{prefix}{f}:"} for f in families]
    # AND the trigger learns the GPU family, both providers and the default compute
    # (the emulated stack holds the default's one task family; the Lambda environment alone is read here)
    env = stack._lambda_environment(stack.scope({}))
    assert env["PUSHTRAIN_GPU_TASK_FAMILY"] == ("pushtrain-trainer-gpu" if gpu["enabled"] else "")
    assert env["PUSHTRAIN_GPU_CAPACITY_PROVIDER"] == ("pushtrain-gpu" if gpu["enabled"] else "")
    assert env["PUSHTRAIN_GPU_ON_DEMAND_CAPACITY_PROVIDER"] == on_demand
    assert env["PUSHTRAIN_DEFAULT_COMPUTE"] == variables["default_compute"]
    # AND a GPU group and provider exist with the GPU capacity, and an on-demand pair exactly when it is Spot
    scope = stack.scope({})
    for rtype in ("aws_autoscaling_group", "aws_ecs_capacity_provider"):
        body = stack.resources.get((rtype, "gpu"))
        groups = sorted(stack.instances_of(body, f"{rtype}.gpu", scope)) if body else []
        assert groups == (["main", "on_demand"] if on_demand else ["main"] if gpu["enabled"] else [])
