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
    from pushtrain_local.terraform import TerraformModule

    module = TerraformModule.load(STACK)
    on = {name: {**module.variables[name], "enabled": True} for name in ("gpu", "batch")}
    return module.with_variables({"network_mode": "private", **on})


def test_every_trainer_variant_runs_the_one_container_definition() -> None:
    from pushtrain_local.hcl import evaluate_value

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
            assert repr(container[key]) == repr(value), f"{variant} differs from the common container in {key}"
        assert container["readonlyRootFilesystem"] is True
        assert container["logConfiguration"]["options"]["awslogs-stream-prefix"].startswith("trainer")


def test_every_launch_template_is_hardened_once() -> None:
    from pushtrain_local.hcl import evaluate_value

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
