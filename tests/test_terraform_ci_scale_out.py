"""The CI roles against the optional scale-out capacity (terraform/gpu.tf, batch.tf, ec2_capacity.tf).

`terraform apply` with var.gpu.enabled or var.batch.enabled creates resource types the Fargate-only
stack has none of. GIVEN the resource and data types those files declare (parsed HCL) and a table of
the calls the AWS provider makes for each type (create, update, tag, delete; the reads of a refresh),
WHEN the CI roles' policies are rendered (the local pipeline's HCL reader) and evaluated for a request
on the stack's resource, built from the stack's own names, THEN the apply role is allowed every call
and the plan role every read; a type missing from the table fails, naming itself, so a new resource in
those files cannot ship without its grants. A few requests the roles must never be allowed close it.

The evaluator knows what these policies use: Allow statements, `*` in actions and ARNs, and the
StringEquals / ArnLike / ArnEquals / Bool conditions, with IAM's rule that a key missing from the
request fails its condition.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import hcl2
import pytest
from iam_eval import matching_sids
from test_terraform_contracts import (
    ACCOUNT,
    APPLY_ROLE,
    FACTS,
    REGION,
    STACK,
    block,
    load_root,
    locals_of,
    rendered,
    resolve,
    role_grants,
)
from tf_docs import unquote

SCALE_OUT_FILES = ("gpu.tf", "batch.tf", "ec2_capacity.tf")
NAME = "pushtrain"
TAGGED = {"aws:RequestTag/Project": NAME, "aws:ResourceTag/Project": NAME}


@functools.cache
def stack_names() -> dict[str, str]:
    """The scale-out names as the stack derives them (so a rename there breaks the CI scope here)."""
    stack = load_root(STACK)
    facts = {**FACTS, "data.aws_partition.this.partition": "aws"}
    local = locals_of(stack)
    names = {
        key: resolve(stack, local[key], facts)
        for key in ("gpu_task_family", "gpu_provider_name", "batch_job_family", "batch_queue_name", "batch_environment")
    }
    names["container_instance"] = resolve(stack, local["container_instance_t"], facts)
    # every GPU group (gpu.tf, one per local.gpu_groups entry) is named from local.gpu_group_prefix
    assert block(stack, "resource", "aws_autoscaling_group", "gpu")["name_prefix"] == "${each.value.name_prefix}"
    names["gpu_group_prefix"] = resolve(stack, "${local.gpu_group_prefix}")
    names["cluster"] = resolve(stack, local["cluster_name"], facts)
    names["ami_parameter"] = resolve(stack, block(stack, "data", "aws_ssm_parameter", "ecs_gpu_ami")["name"])
    names["path"] = unquote(local["iam_path"]).replace("${local.name}", NAME)
    return names


@functools.cache
def arns() -> dict[str, str]:
    n, ra = stack_names(), f"{REGION}:{ACCOUNT}"
    role = f"arn:aws:iam::{ACCOUNT}:role{n['path']}"
    return {
        "lt": f"arn:aws:ec2:{ra}:launch-template/lt-0123456789abcdef0",
        "group": f"arn:aws:autoscaling:{ra}:autoScalingGroup:0f1e2d3c-aaaa-bbbb-cccc-0123456789ab:"
        f"autoScalingGroupName/{n['gpu_group_prefix']}20261130141500000000000001",
        "provider": f"arn:aws:ecs:{ra}:capacity-provider/{n['gpu_provider_name']}",
        "cluster": f"arn:aws:ecs:{ra}:cluster/{n['cluster']}",
        "gpu_family": f"arn:aws:ecs:{ra}:task-definition/{n['gpu_task_family']}:3",
        "pg": f"arn:aws:ec2:{ra}:placement-group/{n['batch_environment']}",
        "sg": f"arn:aws:ec2:{ra}:security-group/sg-0123456789abcdef0",
        "sgr": f"arn:aws:ec2:{ra}:security-group-rule/sgr-0123456789abcdef0",
        "instance": f"arn:aws:ec2:{ra}:instance/*",
        "image": f"arn:aws:ec2:{REGION}::image/ami-0123456789abcdef0",
        "subnet": f"arn:aws:ec2:{ra}:subnet/subnet-0123456789abcdef0",
        "ce": f"arn:aws:batch:{ra}:compute-environment/{n['batch_environment']}",
        "jq": f"arn:aws:batch:{ra}:job-queue/{n['batch_queue_name']}",
        "jd": f"arn:aws:batch:{ra}:job-definition/{n['batch_job_family']}",
        "jd_rev": f"arn:aws:batch:{ra}:job-definition/{n['batch_job_family']}:4",
        "ci_role": f"{role}{n['container_instance']}",
        "task_role": f"{role}{NAME}-trainer-task",
        "trigger_role": f"{role}{NAME}-trigger",
        "profile": f"arn:aws:iam::{ACCOUNT}:instance-profile{n['path']}{n['container_instance']}",
        "ami": f"arn:aws:ssm:{REGION}::parameter{n['ami_parameter']}",
        "slr_autoscaling": f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/autoscaling.amazonaws.com/"
        "AWSServiceRoleForAutoScaling",
        "slr_batch": f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/batch.amazonaws.com/AWSServiceRoleForBatch",
    }


# A request: (action, resource key in arns(), extra request context).
Request = tuple[str, str, dict[str, str]]

# resource or data type -> the calls the provider makes to create, update, tag and delete it, and the
# calls AWS makes with the caller's permissions on the way (EC2 Auto Scaling's launch check, passing
# roles, the service-linked roles a first use creates).
MANAGE: dict[str, list[Request]] = {
    "aws_launch_template": [
        ("ec2:CreateLaunchTemplate", "lt", {}),
        ("ec2:CreateTags", "lt", {"ec2:CreateAction": "CreateLaunchTemplate"}),
        ("ec2:CreateLaunchTemplateVersion", "lt", {}),
        ("ec2:ModifyLaunchTemplate", "lt", {}),
        ("ec2:DeleteLaunchTemplate", "lt", {}),
    ],
    "aws_autoscaling_group": [
        ("autoscaling:CreateAutoScalingGroup", "group", {}),
        ("autoscaling:CreateOrUpdateTags", "group", {}),
        ("autoscaling:UpdateAutoScalingGroup", "group", {}),
        ("autoscaling:SetInstanceProtection", "group", {}),
        ("autoscaling:DeleteAutoScalingGroup", "group", {}),
        ("ec2:RunInstances", "lt", {}),
        ("ec2:RunInstances", "instance", {"ec2:LaunchTemplate": "lt"}),
        ("ec2:RunInstances", "image", {"ec2:LaunchTemplate": "lt"}),
        ("ec2:RunInstances", "subnet", {"ec2:LaunchTemplate": "lt"}),
        ("ec2:RunInstances", "sg", {"ec2:LaunchTemplate": "lt"}),
        ("ec2:CreateTags", "instance", {"ec2:CreateAction": "RunInstances"}),
        ("iam:PassRole", "ci_role", {"iam:PassedToService": "ec2.amazonaws.com"}),
        ("iam:CreateServiceLinkedRole", "slr_autoscaling", {"iam:AWSServiceName": "autoscaling.amazonaws.com"}),
    ],
    "aws_ecs_capacity_provider": [
        ("ecs:CreateCapacityProvider", "provider", {}),
        ("ecs:TagResource", "provider", {}),
        ("ecs:UpdateCapacityProvider", "provider", {}),
        ("ecs:DeleteCapacityProvider", "provider", {}),
        ("ecs:PutClusterCapacityProviders", "cluster", {}),
    ],
    "aws_ecs_task_definition": [
        ("ecs:RegisterTaskDefinition", "gpu_family", {}),
        ("ecs:TagResource", "gpu_family", {}),
        ("ecs:DeregisterTaskDefinition", "gpu_family", {"aws:RequestedRegion": REGION}),
        ("iam:PassRole", "task_role", {"iam:PassedToService": "ecs-tasks.amazonaws.com"}),
    ],
    "aws_placement_group": [
        ("ec2:CreatePlacementGroup", "pg", {}),
        ("ec2:CreateTags", "pg", {"ec2:CreateAction": "CreatePlacementGroup"}),
        ("ec2:DeletePlacementGroup", "pg", {}),
    ],
    "aws_security_group": [
        ("ec2:CreateSecurityGroup", "sg", {}),
        ("ec2:DeleteSecurityGroup", "sg", {}),
    ],
    "aws_vpc_security_group_ingress_rule": [
        ("ec2:AuthorizeSecurityGroupIngress", "sg", {}),
        ("ec2:RevokeSecurityGroupIngress", "sg", {}),
        ("ec2:RevokeSecurityGroupIngress", "sgr", {}),
    ],
    "aws_vpc_security_group_egress_rule": [
        ("ec2:AuthorizeSecurityGroupEgress", "sg", {}),
        ("ec2:RevokeSecurityGroupEgress", "sg", {}),
        ("ec2:RevokeSecurityGroupEgress", "sgr", {}),
    ],
    "aws_batch_compute_environment": [
        ("batch:CreateComputeEnvironment", "ce", {}),
        ("batch:TagResource", "ce", {}),
        ("batch:UpdateComputeEnvironment", "ce", {}),
        ("batch:DeleteComputeEnvironment", "ce", {}),
        ("iam:PassRole", "ci_role", {"iam:PassedToService": "batch.amazonaws.com"}),
        ("iam:CreateServiceLinkedRole", "slr_batch", {"iam:AWSServiceName": "batch.amazonaws.com"}),
    ],
    "aws_batch_job_queue": [
        ("batch:CreateJobQueue", "jq", {}),
        ("batch:CreateJobQueue", "ce", {}),
        ("batch:TagResource", "jq", {}),
        ("batch:UpdateJobQueue", "jq", {}),
        ("batch:DeleteJobQueue", "jq", {}),
    ],
    "aws_batch_job_definition": [
        ("batch:RegisterJobDefinition", "jd", {}),
        ("batch:TagResource", "jd_rev", {}),
        ("batch:DeregisterJobDefinition", "jd_rev", {}),
        ("iam:PassRole", "task_role", {"iam:PassedToService": "batch.amazonaws.com"}),
    ],
    "aws_iam_role": [
        ("iam:CreateRole", "ci_role", {"iam:PermissionsBoundary": "boundary"}),
        ("iam:DeleteRole", "ci_role", {}),
    ],
    "aws_iam_role_policy": [
        ("iam:PutRolePolicy", "ci_role", {"iam:PermissionsBoundary": "boundary"}),
        ("iam:PutRolePolicy", "trigger_role", {"iam:PermissionsBoundary": "boundary"}),
        ("iam:DeleteRolePolicy", "ci_role", {"iam:PermissionsBoundary": "boundary"}),
    ],
    "aws_iam_instance_profile": [
        ("iam:CreateInstanceProfile", "profile", {}),
        ("iam:TagInstanceProfile", "profile", {}),
        ("iam:AddRoleToInstanceProfile", "profile", {}),
        ("iam:PassRole", "ci_role", {"iam:PassedToService": "ec2.amazonaws.com"}),
        ("iam:RemoveRoleFromInstanceProfile", "profile", {}),
        ("iam:DeleteInstanceProfile", "profile", {}),
    ],
    "data.aws_ssm_parameter": [],
    "data.aws_iam_policy_document": [],  # rendered by Terraform itself: no AWS call
}

# The reads a refresh makes of each type: both roles need them (plan, and apply's refresh).
READS: dict[str, list[Request]] = {
    "aws_launch_template": [
        ("ec2:DescribeLaunchTemplates", "lt", {}),
        ("ec2:DescribeLaunchTemplateVersions", "lt", {}),
    ],
    "aws_autoscaling_group": [
        ("autoscaling:DescribeAutoScalingGroups", "group", {}),
        ("autoscaling:DescribeScalingActivities", "group", {}),
    ],
    "aws_ecs_capacity_provider": [
        ("ecs:DescribeCapacityProviders", "provider", {}),
        ("ecs:ListTagsForResource", "provider", {}),
    ],
    "aws_ecs_task_definition": [
        ("ecs:DescribeTaskDefinition", "gpu_family", {}),
        ("ecs:ListTagsForResource", "gpu_family", {}),
    ],
    "aws_placement_group": [("ec2:DescribePlacementGroups", "pg", {})],
    "aws_security_group": [("ec2:DescribeSecurityGroups", "sg", {})],
    "aws_vpc_security_group_ingress_rule": [("ec2:DescribeSecurityGroupRules", "sgr", {})],
    "aws_vpc_security_group_egress_rule": [("ec2:DescribeSecurityGroupRules", "sgr", {})],
    "aws_batch_compute_environment": [
        ("batch:DescribeComputeEnvironments", "ce", {}),
        ("batch:ListTagsForResource", "ce", {}),
    ],
    "aws_batch_job_queue": [("batch:DescribeJobQueues", "jq", {}), ("batch:ListTagsForResource", "jq", {})],
    "aws_batch_job_definition": [
        ("batch:DescribeJobDefinitions", "jd_rev", {}),
        ("batch:ListTagsForResource", "jd_rev", {}),
    ],
    "aws_iam_role": [("iam:GetRole", "ci_role", {}), ("iam:ListAttachedRolePolicies", "ci_role", {})],
    "aws_iam_role_policy": [("iam:GetRolePolicy", "ci_role", {})],
    "aws_iam_instance_profile": [
        ("iam:GetInstanceProfile", "profile", {}),
        ("iam:ListInstanceProfileTags", "profile", {}),
    ],
    "data.aws_ssm_parameter": [("ssm:GetParameter", "ami", {})],
    "data.aws_iam_policy_document": [],
}


def declared_types() -> set[str]:
    """Resource types (`aws_x`) and data sources (`data.aws_x`) the scale-out files declare."""
    found: set[str] = set()
    for name in SCALE_OUT_FILES:
        with (STACK / name).open(encoding="utf-8") as handle:
            parsed = hcl2.load(handle)
        for kind, prefix in (("resource", ""), ("data", "data.")):
            for entry in parsed.get(kind, []):
                found.update(prefix + unquote(type_name) for type_name in entry)
    return found


def allowing(policy: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> list[str]:
    """The Sids of the Allow statements that let `action` on `resource` with this request context through."""
    return matching_sids((s for s in policy["Statement"] if s["Effect"] == "Allow"), action, resource, context)


def request_context(extra: dict[str, str]) -> dict[str, str]:
    """The stack's tags on every request and resource (default_tags), the region, and the call's own keys."""
    resolved = arns()
    boundary = f"arn:aws:iam::{ACCOUNT}:policy/{NAME}/{NAME}-stack-boundary"
    context = {**TAGGED, "aws:RequestedRegion": REGION}
    for key, value in extra.items():
        context[key] = resolved.get(value, boundary if value == "boundary" else value)
    return context


def test_every_scale_out_type_has_its_calls_in_the_table() -> None:
    # GIVEN the types gpu.tf, batch.tf and ec2_capacity.tf declare
    declared = declared_types()
    assert {"aws_autoscaling_group", "aws_batch_compute_environment", "data.aws_ssm_parameter"} <= declared
    # THEN each has the provider's calls listed (and the table names no type that is gone)
    missing = declared - set(MANAGE)
    assert missing == set(), (
        f"{sorted(missing)}: add the provider's create/update/delete and read calls to MANAGE and READS "
        "here, and grant them to the CI roles in terraform/bootstrap/iam.tf"
    )
    assert set(MANAGE) == set(READS) == declared


@pytest.mark.parametrize("resource_type", sorted(MANAGE))
def test_the_apply_role_can_create_change_and_delete_each_scale_out_type(resource_type: str) -> None:
    # GIVEN the apply role's rendered policy and the calls the provider makes for the type
    apply = role_grants("terraform/bootstrap", APPLY_ROLE)
    resolved = arns()
    # WHEN each call is made on the stack's resource (its ARN from the stack's names)
    refused = [
        (action, resolved[key])
        for action, key, extra in MANAGE[resource_type] + READS[resource_type]
        if not allowing(apply, action, resolved[key], request_context(extra))
    ]
    # THEN every one is allowed
    assert refused == [], f"the apply role cannot manage {resource_type}"


@pytest.mark.parametrize("resource_type", sorted(READS))
def test_the_plan_role_can_refresh_each_scale_out_type(resource_type: str) -> None:
    plan = rendered("terraform/bootstrap")["plan"]
    resolved = arns()
    refused = [
        (action, resolved[key])
        for action, key, extra in READS[resource_type]
        if not allowing(plan, action, resolved[key], request_context(extra))
    ]
    assert refused == [], f"the plan role cannot refresh {resource_type}"


@pytest.mark.parametrize(
    ("action", "resource", "extra", "why"),
    [
        ("ec2:CreateLaunchTemplate", "lt", {"aws:RequestTag/Project": "other"}, "a template without the stack's tag"),
        ("ec2:DeleteLaunchTemplate", "lt", {"aws:ResourceTag/Project": "other"}, "someone else's template"),
        ("ec2:RunInstances", "lt", {"aws:ResourceTag/Project": "other"}, "launching from someone else's template"),
        ("ec2:RunInstances", "instance", {}, "launching without a launch template"),
        (
            "autoscaling:CreateAutoScalingGroup",
            "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:x:autoScalingGroupName/other",
            {},
            "a group outside the stack's names",
        ),
        (
            "batch:CreateComputeEnvironment",
            "arn:aws:batch:us-east-1:123456789012:compute-environment/other",
            {},
            "another compute environment",
        ),
        ("iam:PassRole", "ci_role", {"iam:PassedToService": "lambda.amazonaws.com"}, "the instance role to Lambda"),
        (
            "iam:CreateServiceLinkedRole",
            "arn:aws:iam::123456789012:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot",
            {"iam:AWSServiceName": "spot.amazonaws.com"},
            "a service-linked role no call of the stack makes the caller create",
        ),
        (
            "iam:AddRoleToInstanceProfile",
            "arn:aws:iam::123456789012:instance-profile/other",
            {},
            "someone else's instance profile",
        ),
    ],
)
def test_the_apply_role_is_refused_what_the_scale_out_does_not_need(
    action: str, resource: str, extra: dict[str, str], why: str
) -> None:
    apply = role_grants("terraform/bootstrap", APPLY_ROLE)
    resolved = arns()
    context = request_context({})
    for key, value in extra.items():
        context[key] = value
    assert allowing(apply, action, resolved.get(resource, resource), context) == [], why


def test_bootstrap_names_the_scale_out_resources_as_the_stack_does() -> None:
    # GIVEN the names the CI roles are scoped to and the ones the stack gives its scale-out resources
    bootstrap = load_root(STACK / "bootstrap")
    facts = {**FACTS, "data.aws_partition.this.partition": "aws"}
    ours = {
        key: resolve(bootstrap, locals_of(bootstrap)[key], facts)
        for key in ("gpu_task_family", "gpu_provider_name", "batch_job_family", "batch_queue_name", "batch_environment")
    }
    theirs = stack_names()
    # THEN they are the same, the container instance role is one of the stack roles bootstrap manages,
    # and the Auto Scaling group's prefix is the one gpu.tf uses
    assert ours == {key: theirs[key] for key in ours}
    assert resolve(bootstrap, locals_of(bootstrap)["container_instance_t"], facts) == theirs["container_instance"]
    assert theirs["container_instance"] in resolve(bootstrap, locals_of(bootstrap)["stack_role_names"], facts)
    assert resolve(bootstrap, locals_of(bootstrap)["gpu_group_prefix"], facts) == theirs["gpu_group_prefix"]


def test_the_table_covers_the_files_that_exist() -> None:
    # The scale-out files are where the table says (a rename would silently empty declared_types()).
    assert all((STACK / name).is_file() for name in SCALE_OUT_FILES), [
        name for name in SCALE_OUT_FILES if not Path(STACK / name).is_file()
    ]


# --- one trainer container and one hardened launch template, shared by every variant -------------------


def _scale_out_module() -> Any:
    from tfread.terraform import TerraformModule

    module = TerraformModule.load(STACK)
    on = {name: {**module.variables[name], "enabled": True} for name in ("gpu", "batch")}
    return module.with_variables({"network_mode": "private", **on})


def test_every_trainer_variant_runs_the_one_container_definition() -> None:
    from tfread.hcl import evaluate_value

    # GIVEN the three places a trainer container is defined (Fargate, GPU tasks, Batch multi-node jobs)
    module = _scale_out_module()
    uses = {
        "ecs.tf": "jsonencode([local.trainer_containers.fargate])",
        "gpu.tf": "jsonencode([local.trainer_containers.gpu])",
        "batch.tf": "container   = local.trainer_containers.mnp",
    }
    # THEN each names its variant of the one local, and writes no container field of its own
    for file, use in uses.items():
        text = (STACK / file).read_text(encoding="utf-8")
        assert use in text, f"{file} does not use the shared trainer container ({use})"
        assert "readonlyRootFilesystem" not in text.replace(use, "") or file == "ecs.tf"
    # AND every variant carries the same image, environment and read-only root filesystem
    containers = evaluate_value(module.locals["trainer_containers"], module.scope({}))
    common = evaluate_value(module.locals["trainer_container_common"], module.scope({}))
    assert set(containers) == {"fargate", "gpu", "mnp"}
    for variant, container in containers.items():
        for key, value in common.items():
            # the GPU variants add TRAINER_DEVICE=cuda to the environment, nothing else
            expected = value
            if key == "environment" and variant != "fargate":
                expected = sorted([*value, {"name": "TRAINER_DEVICE", "value": "cuda"}], key=lambda item: item["name"])
            assert repr(container[key]) == repr(expected), f"{variant} differs from the common container in {key}"
        assert container["readonlyRootFilesystem"] is True
        assert container["logConfiguration"]["options"]["awslogs-stream-prefix"].startswith("trainer")


def test_every_launch_template_is_hardened_once() -> None:
    from tfread.hcl import evaluate_value

    # GIVEN the stack's launch templates
    declared = [
        (file.name, name)
        for file in sorted(STACK.glob("*.tf"))
        for block in hcl2.loads(file.read_text(encoding="utf-8")).get("resource", [])
        for rtype, named in block.items()
        if unquote(rtype) == "aws_launch_template"
        for name in map(unquote, named)
    ]
    # THEN there is one, for every variant, and it takes IMDSv2-only and the encrypted volume from the local
    assert declared == [("ec2_capacity.tf", "container_instance")]
    module = _scale_out_module()
    hardened = evaluate_value(module.locals["hardened_launch_template"], module.scope({}))
    assert hardened["metadata_options"]["http_tokens"] == "required"
    assert hardened["metadata_options"]["http_put_response_hop_limit"] == 1
    assert hardened["root_volume"]["encrypted"] is True
    # AND the GPU groups and the Batch environment launch from their variant of it
    assert 'aws_launch_template.container_instance["gpu"].id' in (STACK / "gpu.tf").read_text(encoding="utf-8")
    assert 'aws_launch_template.container_instance["mnp"].id' in (STACK / "batch.tf").read_text(encoding="utf-8")


# --- every other file of the stack: the same check for the base resources ---------------------------------
# The scale-out table above, extended to every type the stack declares (network.tf, ecr.tf, ecs.tf, s3.tf,
# lambda.tf, eventbridge.tf, iam.tf, monitoring.tf, main.tf): the provider's create, update, tag and delete
# calls (MANAGE) and its refresh reads (READS), each on the resource the stack names. A type added to any
# file without its calls here, or its calls without a grant in terraform/bootstrap, fails.

ARTIFACTS = f"arn:aws:s3:::{NAME}-artifacts-{ACCOUNT}-{REGION}"


@functools.cache
def base_arns() -> dict[str, str]:
    ra = f"{REGION}:{ACCOUNT}"
    role = f"arn:aws:iam::{ACCOUNT}:role{stack_names()['path']}"
    return {
        "vpc": f"arn:aws:ec2:{ra}:vpc/vpc-0123456789abcdef0",
        "subnet": f"arn:aws:ec2:{ra}:subnet/subnet-0123456789abcdef0",
        "rtb": f"arn:aws:ec2:{ra}:route-table/rtb-0123456789abcdef0",
        "igw": f"arn:aws:ec2:{ra}:internet-gateway/igw-0123456789abcdef0",
        "vpce": f"arn:aws:ec2:{ra}:vpc-endpoint/vpce-0123456789abcdef0",
        "repo": f"arn:aws:ecr:{ra}:repository/{NAME}-trainer",
        "family": f"arn:aws:ecs:{ra}:task-definition/{NAME}-trainer:7",
        "log_trainer": f"arn:aws:logs:{ra}:log-group:/ecs/{NAME}-trainer",
        "log_trigger": f"arn:aws:logs:{ra}:log-group:/aws/lambda/{NAME}-trigger",
        "bucket": ARTIFACTS,
        "function": f"arn:aws:lambda:{ra}:function:{NAME}-trigger",
        "rule": f"arn:aws:events:{ra}:rule/{NAME}-ecr-push",
        "topic": f"arn:aws:sns:{ra}:{NAME}-notifications",
        "queue": f"arn:aws:sqs:{ra}:{NAME}-events-dlq",
        "alarm": f"arn:aws:cloudwatch:{ra}:alarm:{NAME}-trigger-errors",
        "key": f"arn:aws:kms:{ra}:key/00000000-0000-4000-8000-000000000000",
        "alias": f"arn:aws:kms:{ra}:alias/{NAME}-notifications",
        "execution_role": f"{role}{NAME}-trainer-execution",
        "slr_ecs": f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS",
        "*": "*",
    }


def _calls(*actions: str, on: str, **extra: str) -> list[Request]:
    return [(action, on, dict(extra)) for action in actions]


BASE_MANAGE: dict[str, list[Request]] = {
    "aws_vpc": [
        ("ec2:CreateVpc", "vpc", {}),
        ("ec2:CreateTags", "vpc", {"ec2:CreateAction": "CreateVpc"}),
        *_calls("ec2:ModifyVpcAttribute", "ec2:DeleteVpc", on="vpc"),
    ],
    "aws_subnet": [
        *_calls("ec2:CreateSubnet", on="subnet"),
        *_calls("ec2:CreateSubnet", on="vpc"),
        ("ec2:CreateTags", "subnet", {"ec2:CreateAction": "CreateSubnet"}),
        *_calls("ec2:ModifySubnetAttribute", "ec2:DeleteSubnet", on="subnet"),
    ],
    "aws_route_table": [
        *_calls("ec2:CreateRouteTable", "ec2:DeleteRouteTable", on="rtb"),
        *_calls("ec2:CreateRouteTable", on="vpc"),
        ("ec2:CreateTags", "rtb", {"ec2:CreateAction": "CreateRouteTable"}),
    ],
    "aws_route": _calls("ec2:CreateRoute", "ec2:ReplaceRoute", "ec2:DeleteRoute", on="rtb"),
    "aws_route_table_association": [
        *_calls("ec2:AssociateRouteTable", "ec2:DisassociateRouteTable", on="rtb"),
        *_calls("ec2:AssociateRouteTable", on="subnet"),
    ],
    "aws_internet_gateway": [
        *_calls("ec2:CreateInternetGateway", on="igw"),
        ("ec2:CreateTags", "igw", {"ec2:CreateAction": "CreateInternetGateway"}),
        *_calls("ec2:AttachInternetGateway", "ec2:DetachInternetGateway", on="igw"),
        *_calls("ec2:AttachInternetGateway", "ec2:DetachInternetGateway", on="vpc"),
        *_calls("ec2:DeleteInternetGateway", on="igw"),
    ],
    "aws_vpc_endpoint": [
        *_calls("ec2:CreateVpcEndpoint", on="vpce"),
        *_calls("ec2:CreateVpcEndpoint", on="vpc"),
        *_calls("ec2:CreateVpcEndpoint", on="subnet"),
        *_calls("ec2:CreateVpcEndpoint", on="sg"),
        *_calls("ec2:CreateVpcEndpoint", on="rtb"),
        ("ec2:CreateTags", "vpce", {"ec2:CreateAction": "CreateVpcEndpoint"}),
        *_calls("ec2:ModifyVpcEndpoint", "ec2:DeleteVpcEndpoints", on="vpce"),
        ("route53:AssociateVPCWithHostedZone", "*", {"aws:ViaAWSService": "true"}),
    ],
    "aws_security_group": [
        *_calls("ec2:CreateSecurityGroup", on="vpc"),
        ("ec2:CreateTags", "sg", {"ec2:CreateAction": "CreateSecurityGroup"}),
        *_calls("ec2:RevokeSecurityGroupEgress", on="sg"),  # the provider removes the default egress rule
    ],
    "aws_vpc_security_group_ingress_rule": [],
    "aws_vpc_security_group_egress_rule": [],
    "aws_ecr_repository": _calls(
        "ecr:CreateRepository",
        "ecr:TagResource",
        "ecr:UntagResource",
        "ecr:PutImageScanningConfiguration",
        "ecr:PutImageTagMutability",
        "ecr:ListImages",
        "ecr:BatchDeleteImage",
        "ecr:DeleteRepository",
        on="repo",
    ),
    "aws_ecr_lifecycle_policy": _calls("ecr:PutLifecyclePolicy", "ecr:DeleteLifecyclePolicy", on="repo"),
    "aws_ecs_cluster": [
        *_calls("ecs:CreateCluster", "ecs:TagResource", "ecs:UpdateCluster", "ecs:UpdateClusterSettings", on="cluster"),
        *_calls("ecs:DeleteCluster", on="cluster"),
        ("iam:CreateServiceLinkedRole", "slr_ecs", {"iam:AWSServiceName": "ecs.amazonaws.com"}),
    ],
    "aws_ecs_cluster_capacity_providers": _calls("ecs:PutClusterCapacityProviders", on="cluster"),
    "aws_ecs_task_definition": [
        *_calls("ecs:RegisterTaskDefinition", "ecs:TagResource", on="family"),
        ("ecs:DeregisterTaskDefinition", "family", {"aws:RequestedRegion": REGION}),
        ("iam:PassRole", "execution_role", {"iam:PassedToService": "ecs-tasks.amazonaws.com"}),
    ],
    "aws_cloudwatch_log_group": [
        *_calls(
            "logs:CreateLogGroup",
            "logs:TagResource",
            "logs:PutRetentionPolicy",
            "logs:DeleteLogGroup",
            on="log_trainer",
        ),
        *_calls("logs:CreateLogGroup", "logs:PutRetentionPolicy", on="log_trigger"),
    ],
    "aws_s3_bucket": _calls("s3:CreateBucket", "s3:TagResource", "s3:PutBucketTagging", "s3:DeleteBucket", on="bucket"),
    "aws_s3_bucket_versioning": _calls("s3:PutBucketVersioning", on="bucket"),
    "aws_s3_bucket_server_side_encryption_configuration": _calls("s3:PutEncryptionConfiguration", on="bucket"),
    "aws_s3_bucket_public_access_block": _calls("s3:PutBucketPublicAccessBlock", on="bucket"),
    "aws_s3_bucket_ownership_controls": _calls("s3:PutBucketOwnershipControls", on="bucket"),
    "aws_s3_bucket_policy": _calls("s3:PutBucketPolicy", "s3:DeleteBucketPolicy", on="bucket"),
    "aws_s3_bucket_lifecycle_configuration": _calls("s3:PutLifecycleConfiguration", on="bucket"),
    "aws_lambda_function": [
        *_calls(
            "lambda:CreateFunction",
            "lambda:TagResource",
            "lambda:UpdateFunctionCode",
            "lambda:UpdateFunctionConfiguration",
            "lambda:PutFunctionConcurrency",
            "lambda:DeleteFunctionConcurrency",
            "lambda:DeleteFunction",
            on="function",
        ),
        ("iam:PassRole", "trigger_role", {"iam:PassedToService": "lambda.amazonaws.com"}),
    ],
    "aws_lambda_function_event_invoke_config": _calls(
        "lambda:PutFunctionEventInvokeConfig",
        "lambda:UpdateFunctionEventInvokeConfig",
        "lambda:DeleteFunctionEventInvokeConfig",
        on="function",
    ),
    "aws_lambda_permission": _calls("lambda:AddPermission", "lambda:RemovePermission", on="function"),
    "aws_cloudwatch_event_rule": _calls("events:PutRule", "events:TagResource", "events:DeleteRule", on="rule"),
    "aws_cloudwatch_event_target": _calls("events:PutTargets", "events:RemoveTargets", on="rule"),
    "aws_sns_topic": _calls(
        "sns:CreateTopic", "sns:TagResource", "sns:SetTopicAttributes", "sns:DeleteTopic", on="topic"
    ),
    "aws_sns_topic_policy": _calls("sns:SetTopicAttributes", on="topic"),
    "aws_sns_topic_subscription": [
        *_calls("sns:Subscribe", on="topic"),
        *_calls("sns:SetSubscriptionAttributes", "sns:Unsubscribe", on="*"),
    ],
    "aws_sqs_queue": _calls(
        "sqs:CreateQueue", "sqs:TagQueue", "sqs:SetQueueAttributes", "sqs:GetQueueUrl", "sqs:DeleteQueue", on="queue"
    ),
    "aws_sqs_queue_policy": _calls("sqs:SetQueueAttributes", on="queue"),
    "aws_cloudwatch_metric_alarm": _calls(
        "cloudwatch:PutMetricAlarm", "cloudwatch:TagResource", "cloudwatch:DeleteAlarms", on="alarm"
    ),
    # Managing the key after CreateKey is granted by its key policy (monitoring.tf), not by IAM.
    "aws_kms_key": [("kms:CreateKey", "*", {}), ("kms:TagResource", "key", {})],
    "aws_kms_alias": [
        *_calls("kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias", on="alias"),
        *_calls("kms:CreateAlias", on="key"),
    ],
    "aws_iam_role": [
        ("iam:CreateRole", "task_role", {"iam:PermissionsBoundary": "boundary"}),
        ("iam:CreateRole", "execution_role", {"iam:PermissionsBoundary": "boundary"}),
        ("iam:CreateRole", "trigger_role", {"iam:PermissionsBoundary": "boundary"}),
        *_calls("iam:TagRole", "iam:UpdateRole", "iam:DeleteRole", on="trigger_role"),
    ],
    "aws_iam_role_policy": [
        ("iam:PutRolePolicy", "task_role", {"iam:PermissionsBoundary": "boundary"}),
        ("iam:DeleteRolePolicy", "execution_role", {"iam:PermissionsBoundary": "boundary"}),
    ],
    "data.aws_availability_zones": [],
    "data.aws_caller_identity": [],  # sts:GetCallerIdentity needs no permission
    "data.aws_partition": [],  # answered by the provider itself
    "data.aws_iam_policy_document": [],
    "data.aws_ssm_parameter": [],
}

BASE_READS: dict[str, list[Request]] = {
    "aws_vpc": _calls("ec2:DescribeVpcs", "ec2:DescribeVpcAttribute", on="vpc"),
    "aws_subnet": _calls("ec2:DescribeSubnets", on="*"),
    "aws_route_table": _calls("ec2:DescribeRouteTables", on="*"),
    "aws_route": _calls("ec2:DescribeRouteTables", on="*"),
    "aws_route_table_association": _calls("ec2:DescribeRouteTables", on="*"),
    "aws_internet_gateway": _calls("ec2:DescribeInternetGateways", on="*"),
    "aws_vpc_endpoint": _calls("ec2:DescribeVpcEndpoints", "ec2:DescribePrefixLists", on="*"),
    "aws_security_group": _calls("ec2:DescribeSecurityGroups", "ec2:DescribeSecurityGroupRules", on="*"),
    "aws_vpc_security_group_ingress_rule": [],
    "aws_vpc_security_group_egress_rule": [],
    "aws_ecr_repository": _calls("ecr:DescribeRepositories", "ecr:ListTagsForResource", on="repo"),
    "aws_ecr_lifecycle_policy": _calls("ecr:GetLifecyclePolicy", on="repo"),
    "aws_ecs_cluster": _calls("ecs:DescribeClusters", "ecs:ListTagsForResource", on="cluster"),
    "aws_ecs_cluster_capacity_providers": _calls("ecs:DescribeClusters", on="cluster"),
    "aws_ecs_task_definition": [("ecs:DescribeTaskDefinition", "*", {}), ("ecs:ListTagsForResource", "family", {})],
    "aws_cloudwatch_log_group": [("logs:DescribeLogGroups", "*", {}), ("logs:ListTagsForResource", "log_trainer", {})],
    "aws_s3_bucket": _calls(
        "s3:ListBucket", "s3:GetBucketTagging", "s3:GetBucketAcl", "s3:GetBucketPolicy", "s3:GetBucketCORS", on="bucket"
    ),
    "aws_s3_bucket_versioning": _calls("s3:GetBucketVersioning", on="bucket"),
    "aws_s3_bucket_server_side_encryption_configuration": _calls("s3:GetEncryptionConfiguration", on="bucket"),
    "aws_s3_bucket_public_access_block": _calls("s3:GetBucketPublicAccessBlock", on="bucket"),
    "aws_s3_bucket_ownership_controls": _calls("s3:GetBucketOwnershipControls", on="bucket"),
    "aws_s3_bucket_policy": _calls("s3:GetBucketPolicy", on="bucket"),
    "aws_s3_bucket_lifecycle_configuration": _calls("s3:GetLifecycleConfiguration", on="bucket"),
    "aws_lambda_function": _calls(
        "lambda:GetFunction", "lambda:ListVersionsByFunction", "lambda:GetFunctionCodeSigningConfig", on="function"
    ),
    "aws_lambda_function_event_invoke_config": _calls("lambda:GetFunctionEventInvokeConfig", on="function"),
    "aws_lambda_permission": _calls("lambda:GetPolicy", on="function"),
    "aws_cloudwatch_event_rule": _calls("events:DescribeRule", "events:ListTagsForResource", on="rule"),
    "aws_cloudwatch_event_target": _calls("events:ListTargetsByRule", on="rule"),
    "aws_sns_topic": _calls("sns:GetTopicAttributes", "sns:ListTagsForResource", on="topic"),
    "aws_sns_topic_policy": _calls("sns:GetTopicAttributes", on="topic"),
    "aws_sns_topic_subscription": _calls("sns:GetSubscriptionAttributes", on="*"),
    "aws_sqs_queue": _calls("sqs:GetQueueAttributes", "sqs:ListQueueTags", on="queue"),
    "aws_sqs_queue_policy": _calls("sqs:GetQueueAttributes", on="queue"),
    "aws_cloudwatch_metric_alarm": _calls("cloudwatch:DescribeAlarms", "cloudwatch:ListTagsForResource", on="alarm"),
    "aws_kms_key": _calls("kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", on="key"),
    "aws_kms_alias": _calls("kms:ListAliases", on="*"),
    "aws_iam_role": _calls("iam:GetRole", "iam:ListRolePolicies", "iam:ListAttachedRolePolicies", on="trigger_role"),
    "aws_iam_role_policy": _calls("iam:GetRolePolicy", on="task_role"),
    "data.aws_availability_zones": _calls("ec2:DescribeAvailabilityZones", on="*"),
    "data.aws_caller_identity": [],
    "data.aws_partition": [],
    "data.aws_iam_policy_document": [],
    "data.aws_ssm_parameter": [],
}


def stack_declared_types() -> set[str]:
    """Resource types and data sources every file of the stack declares."""
    found: set[str] = set()
    for path in sorted(STACK.glob("*.tf")):
        with path.open(encoding="utf-8") as handle:
            parsed = hcl2.load(handle)
        for kind, prefix in (("resource", ""), ("data", "data.")):
            for entry in parsed.get(kind, []):
                found.update(prefix + unquote(type_name) for type_name in entry)
    return found


def stack_requests(table: dict[str, list[Request]], base: dict[str, list[Request]], rtype: str) -> list[Request]:
    return table.get(rtype, []) + base.get(rtype, [])


def test_every_type_of_every_stack_file_has_its_calls_in_the_tables() -> None:
    declared = stack_declared_types()
    assert {"aws_vpc", "aws_lambda_function", "aws_s3_bucket_policy", "aws_kms_alias"} <= declared
    missing = declared - set(BASE_MANAGE) - set(MANAGE)
    assert missing == set(), f"{sorted(missing)}: add the provider's calls to BASE_MANAGE and BASE_READS"
    assert set(BASE_MANAGE) == set(BASE_READS)
    assert set(BASE_MANAGE) | set(MANAGE) == declared


def _resolve_all() -> dict[str, str]:
    return {**arns(), **base_arns()}


@pytest.mark.parametrize("resource_type", sorted(BASE_MANAGE))
def test_the_apply_role_can_create_change_and_delete_each_stack_type(resource_type: str) -> None:
    apply = role_grants("terraform/bootstrap", APPLY_ROLE)
    resolved = _resolve_all()
    refused = [
        (action, resolved[key])
        for action, key, extra in stack_requests(MANAGE, BASE_MANAGE, resource_type)
        + stack_requests(READS, BASE_READS, resource_type)
        if not allowing(apply, action, resolved[key], request_context(extra))
    ]
    assert refused == [], f"the apply role cannot manage {resource_type}"


@pytest.mark.parametrize("resource_type", sorted(BASE_READS))
def test_the_plan_role_can_refresh_each_stack_type(resource_type: str) -> None:
    plan = rendered("terraform/bootstrap")["plan"]
    resolved = _resolve_all()
    refused = [
        (action, resolved[key])
        for action, key, extra in stack_requests(READS, BASE_READS, resource_type)
        if not allowing(plan, action, resolved[key], request_context(extra))
    ]
    assert refused == [], f"the plan role cannot refresh {resource_type}"
