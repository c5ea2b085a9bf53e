"""Escalation attempts against the rendered policies: what an attacker holding the CI apply role's
credentials (a compromised `production` job), or code running as a stack role the apply role wrote,
would try first. Each request is evaluated with tests/iam_eval.py against every policy IAM would hold
for the caller (the apply role's managed policies; a stack role's permissions boundary), with the
stack's own tags and region on the request, so only the action and resource can refuse it; each must
match no Allow. Beside each attempt, the legitimate request it imitates is allowed, so a test that
denies everything cannot pass.
"""

from __future__ import annotations

import pytest
from iam_eval import matching_sids
from test_terraform_contracts import ACCOUNT, APPLY_ROLE, REGION, rendered, role_grants

NAME = "pushtrain"
RA = f"{REGION}:{ACCOUNT}"
ROLE = f"arn:aws:iam::{ACCOUNT}:role"
STACK_ROLE = f"{ROLE}/{NAME}/{NAME}-trigger"
BOUNDARY = f"arn:aws:iam::{ACCOUNT}:policy/{NAME}/{NAME}-stack-boundary"
CONTEXT = {
    "aws:RequestTag/Project": NAME,
    "aws:ResourceTag/Project": NAME,
    "aws:RequestedRegion": REGION,
    "iam:PermissionsBoundary": BOUNDARY,
}

# (what the attacker tries, action, resource, extra context)
APPLY_ROLE_ATTEMPTS: list[tuple[str, str, str, dict[str, str]]] = [
    ("make a stack role assumable by an outside principal", "iam:UpdateAssumeRolePolicy", STACK_ROLE, {}),
    ("create a stack role without the boundary", "iam:CreateRole", STACK_ROLE, {"iam:PermissionsBoundary": ""}),
    ("create a role outside the stack's names", "iam:CreateRole", f"{ROLE}/{NAME}/{NAME}-rogue", {}),
    ("write an inline policy into itself", "iam:PutRolePolicy", f"{ROLE}/{NAME}-github-apply", {}),
    ("write an inline policy into the plan role", "iam:PutRolePolicy", f"{ROLE}/{NAME}-github-plan", {}),
    ("attach AdministratorAccess to a stack role", "iam:AttachRolePolicy", STACK_ROLE, {}),
    ("attach AdministratorAccess to itself", "iam:AttachRolePolicy", f"{ROLE}/{NAME}-github-apply", {}),
    ("remove a stack role's boundary", "iam:DeleteRolePermissionsBoundary", STACK_ROLE, {}),
    (
        "swap a stack role's boundary for a wider policy",
        "iam:PutRolePermissionsBoundary",
        STACK_ROLE,
        {"iam:PermissionsBoundary": f"arn:aws:iam::{ACCOUNT}:policy/wide"},
    ),
    ("widen the boundary itself", "iam:CreatePolicyVersion", BOUNDARY, {}),
    (
        "widen its own managed policies",
        "iam:CreatePolicyVersion",
        f"arn:aws:iam::{ACCOUNT}:policy/{NAME}-github-apply-roles",
        {},
    ),
    ("make an older, wider version of the boundary the default", "iam:SetDefaultPolicyVersion", BOUNDARY, {}),
    (
        "pass itself to a Lambda function",
        "iam:PassRole",
        f"{ROLE}/{NAME}-github-apply",
        {"iam:PassedToService": "lambda.amazonaws.com"},
    ),
    (
        "pass the trainer task role to Lambda",
        "iam:PassRole",
        f"{ROLE}/{NAME}/{NAME}-trainer-task",
        {"iam:PassedToService": "lambda.amazonaws.com"},
    ),
    ("pass the trigger role to EC2", "iam:PassRole", STACK_ROLE, {"iam:PassedToService": "ec2.amazonaws.com"}),
    ("assume a stack role", "sts:AssumeRole", STACK_ROLE, {}),
    ("create an IAM user with keys", "iam:CreateAccessKey", f"arn:aws:iam::{ACCOUNT}:user/{NAME}-rogue", {}),
    ("rewrite the state bucket's policy", "s3:PutBucketPolicy", f"arn:aws:s3:::{NAME}-tfstate-{ACCOUNT}-{REGION}", {}),
    (
        "read a model it does not deploy",
        "s3:GetObject",
        f"arn:aws:s3:::{NAME}-artifacts-{ACCOUNT}-{REGION}/models/cifar10/champion.json",
        {},
    ),
    (
        "rewrite the notifications key's policy through IAM",
        "kms:PutKeyPolicy",
        f"arn:aws:kms:{RA}:key/00000000-0000-4000-8000-000000000000",
        {},
    ),
    ("deploy code into another function", "lambda:UpdateFunctionCode", f"arn:aws:lambda:{RA}:function:other", {}),
    ("launch an instance without a launch template", "ec2:RunInstances", f"arn:aws:ec2:{RA}:instance/*", {}),
]

# The legitimate request each family of attempts imitates: allowed, so the evaluation is not vacuous.
APPLY_ROLE_ALLOWED: list[tuple[str, str, dict[str, str]]] = [
    ("iam:CreateRole", STACK_ROLE, {}),
    ("iam:PutRolePolicy", STACK_ROLE, {}),
    ("iam:PassRole", f"{ROLE}/{NAME}/{NAME}-trainer-task", {"iam:PassedToService": "ecs-tasks.amazonaws.com"}),
    ("iam:PassRole", STACK_ROLE, {"iam:PassedToService": "lambda.amazonaws.com"}),
    ("s3:PutBucketPolicy", f"arn:aws:s3:::{NAME}-artifacts-{ACCOUNT}-{REGION}", {}),
    ("lambda:UpdateFunctionCode", f"arn:aws:lambda:{RA}:function:{NAME}-trigger", {}),
]

# What a stack role (whatever its inline policy says) is capped at: its permissions boundary.
BOUNDED_ATTEMPTS: list[tuple[str, str, str, dict[str, str]]] = [
    ("join another cluster's capacity", "ecs:RegisterContainerInstance", f"arn:aws:ecs:{RA}:cluster/other", {}),
    ("poll another cluster's tasks", "ecs:Poll", f"arn:aws:ecs:{RA}:container-instance/other/0123abcd", {}),
    ("report another cluster's tasks", "ecs:SubmitTaskStateChange", f"arn:aws:ecs:{RA}:cluster/other", {}),
    ("report another cluster's containers", "ecs:SubmitContainerStateChange", f"arn:aws:ecs:{RA}:cluster/other", {}),
    ("report another cluster's attachments", "ecs:SubmitAttachmentStateChanges", f"arn:aws:ecs:{RA}:cluster/other", {}),
    ("submit jobs to another queue", "batch:SubmitJob", f"arn:aws:batch:{RA}:job-queue/other", {}),
    (
        "register another job definition family",
        "batch:RegisterJobDefinition",
        f"arn:aws:batch:{RA}:job-definition/other",
        {},
    ),
    ("create a role", "iam:CreateRole", f"{ROLE}/{NAME}/{NAME}-rogue", {}),
    ("pass a stack role to Lambda", "iam:PassRole", STACK_ROLE, {"iam:PassedToService": "lambda.amazonaws.com"}),
    ("run another family's task", "ecs:RunTask", f"arn:aws:ecs:{RA}:task-definition/other:1", {}),
]

BOUNDED_ALLOWED: list[tuple[str, str, dict[str, str]]] = [
    ("ecs:RegisterContainerInstance", f"arn:aws:ecs:{RA}:cluster/{NAME}", {}),
    ("ecs:RegisterContainerInstance", f"arn:aws:ecs:{RA}:cluster/{NAME}-mnp_Batch_0123abcd", {}),
    ("ecs:Poll", f"arn:aws:ecs:{RA}:container-instance/{NAME}/0123abcd", {}),
    ("ecs:SubmitTaskStateChange", f"arn:aws:ecs:{RA}:cluster/{NAME}", {}),
    ("batch:SubmitJob", f"arn:aws:batch:{RA}:job-queue/{NAME}-mnp", {}),
    ("batch:SubmitJob", f"arn:aws:batch:{RA}:job-definition/{NAME}-trainer-mnp:3", {}),
    ("batch:RegisterJobDefinition", f"arn:aws:batch:{RA}:job-definition/{NAME}-trainer-mnp", {}),
]


def allowed(statements: list[dict], action: str, resource: str, extra: dict[str, str]) -> list[str]:
    context = {k: v for k, v in {**CONTEXT, **extra}.items() if v != ""}
    return matching_sids((s for s in statements if s["Effect"] == "Allow"), action, resource, context)


def apply_statements() -> list[dict]:
    return role_grants("terraform/bootstrap", APPLY_ROLE)["Statement"]


def boundary_statements() -> list[dict]:
    return rendered("terraform/bootstrap")["stack_boundary"]["Statement"]


@pytest.mark.parametrize(
    ("why", "action", "resource", "extra"), APPLY_ROLE_ATTEMPTS, ids=[a[0] for a in APPLY_ROLE_ATTEMPTS]
)
def test_the_apply_role_is_refused_each_escalation(why: str, action: str, resource: str, extra: dict[str, str]) -> None:
    assert allowed(apply_statements(), action, resource, extra) == [], why


@pytest.mark.parametrize(("action", "resource", "extra"), APPLY_ROLE_ALLOWED)
def test_the_apply_role_keeps_what_deploying_needs(action: str, resource: str, extra: dict[str, str]) -> None:
    assert allowed(apply_statements(), action, resource, extra), f"{action} on {resource}"


@pytest.mark.parametrize(("why", "action", "resource", "extra"), BOUNDED_ATTEMPTS, ids=[a[0] for a in BOUNDED_ATTEMPTS])
def test_the_boundary_refuses_each_escalation_of_a_stack_role(
    why: str, action: str, resource: str, extra: dict[str, str]
) -> None:
    assert allowed(boundary_statements(), action, resource, extra) == [], why


@pytest.mark.parametrize(("action", "resource", "extra"), BOUNDED_ALLOWED)
def test_the_boundary_keeps_what_the_stack_roles_do(action: str, resource: str, extra: dict[str, str]) -> None:
    assert allowed(boundary_statements(), action, resource, extra), f"{action} on {resource}"


def test_no_apply_statement_grants_trust_changes() -> None:
    # The trust of a stack role is fixed at creation: no statement names UpdateAssumeRolePolicy at all
    actions = {a for s in apply_statements() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert "iam:UpdateAssumeRolePolicy" not in actions
