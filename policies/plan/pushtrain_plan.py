"""pushtrain's own checkov policies on a plan (framework terraform_plan): what a plan may never do.

    checkov --framework terraform_plan -f tfplan.checkov.json --external-checks-dir policies/plan \\
        --check CKV_PUSHTRAIN_1,CKV_PUSHTRAIN_2,CKV_PUSHTRAIN_3 --skip-download --output json

checkov loads this file with --external-checks-dir; each module-level instance registers one check.
In a plan, checkov gives a resource's planned values (each wrapped in a list, as from HCL), plus
`__change_actions__` (the plan's actions for it) and `__change_keys__` (the top-level attributes
whose value differs before and after: checkov/terraform/plan_parser.py, _get_resource_changes).
checkov reads resources from `planned_values` only, where a destroyed resource is absent; ci.plan_policy
re-inserts each destroyed resource (its `before` values, actions ["delete"]) so that these checks see
deletions too. Static rules on the code (checkov's own, tflint) run in `make lint`; these see what a
plan will do, which no static rule can.
"""

from __future__ import annotations

import json
from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck

ACTIONS = "__change_actions__"
CHANGED = "__change_keys__"


def _one(value: Any) -> Any:
    """A plan value as checkov wraps it ([value]) unwrapped."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


class RoleTrustUnchanged(BaseResourceCheck):
    """CKV_PUSHTRAIN_1: no plan changes any IAM role's trust policy, nor replaces or deletes a role.

    Who may assume a role is decided by hand, in terraform/bootstrap (README, "Deploy"); a stack
    change that widens a trust policy would hand the role to someone new without that review.
    A new role (create only) has no trust to change.
    """

    def __init__(self) -> None:
        super().__init__(
            name="Plans never change an IAM role's trust policy",
            id="CKV_PUSHTRAIN_1",
            categories=[CheckCategories.IAM],
            supported_resources=["aws_iam_role"],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        actions = conf.get(ACTIONS) or []
        if "delete" in actions:
            return CheckResult.FAILED
        if "update" in actions and "assume_role_policy" in (conf.get(CHANGED) or []):
            return CheckResult.FAILED
        return CheckResult.PASSED


class KeepsStatefulResources(BaseResourceCheck):
    """CKV_PUSHTRAIN_2: no plan deletes or replaces the artifacts bucket, the state bucket or a KMS key.

    Their contents (models, run records, Terraform state, what the key encrypted) are not in Terraform:
    a replacement loses them as surely as a delete. Retire one by hand, on purpose.
    """

    def __init__(self) -> None:
        super().__init__(
            name="Plans never delete or replace a bucket or a KMS key",
            id="CKV_PUSHTRAIN_2",
            categories=[CheckCategories.BACKUP_AND_RECOVERY],
            supported_resources=["aws_s3_bucket", "aws_kms_key"],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        return CheckResult.FAILED if "delete" in (conf.get(ACTIONS) or []) else CheckResult.PASSED


PUBLIC_ACLS = {"public-read", "public-read-write", "authenticated-read"}
POLICY_ATTRIBUTE = {
    "aws_s3_bucket_policy": "policy",
    "aws_sns_topic_policy": "policy",
    "aws_sqs_queue_policy": "policy",
    "aws_ecr_repository_policy": "policy",
    "aws_kms_key": "policy",
}


def public_statements(document: Any) -> list[str]:
    """Sids (or indexes) of Allow statements any principal gets without a condition."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError:
            return []
    statements = document.get("Statement", []) if isinstance(document, dict) else []
    if isinstance(statements, dict):
        statements = [statements]
    found = []
    for index, statement in enumerate(statements):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow" or statement.get("Condition"):
            continue
        principal = statement.get("Principal")
        aws = principal.get("AWS") if isinstance(principal, dict) else None
        if principal == "*" or aws == "*" or (isinstance(aws, list) and "*" in aws):
            found.append(str(statement.get("Sid", index)))
    return found


class NothingPublic(BaseResourceCheck):
    """CKV_PUSHTRAIN_3: nothing the plan creates or changes is open to anyone.

    A bucket's public access block with any of its four settings off, a public ACL, a resource
    policy that allows any principal without a condition, a Lambda permission or function URL open
    to all, or ingress from 0.0.0.0/0 or ::/0.
    """

    def __init__(self) -> None:
        super().__init__(
            name="Plans make nothing public",
            id="CKV_PUSHTRAIN_3",
            categories=[CheckCategories.GENERAL_SECURITY],
            supported_resources=[
                "aws_s3_bucket_public_access_block",
                "aws_s3_bucket_acl",
                "aws_lambda_permission",
                "aws_lambda_function_url",
                "aws_vpc_security_group_ingress_rule",
                "aws_security_group",
                *POLICY_ATTRIBUTE,
            ],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        if "delete" in (conf.get(ACTIONS) or []) and "create" not in (conf.get(ACTIONS) or []):
            return CheckResult.PASSED  # a resource going away opens nothing
        kind = self.entity_type
        if kind == "aws_s3_bucket_public_access_block":
            flags = ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
            public = any(_one(conf.get(flag)) is not True for flag in flags)
        elif kind == "aws_s3_bucket_acl":
            public = _one(conf.get("acl")) in PUBLIC_ACLS
        elif kind == "aws_lambda_permission":
            public = _one(conf.get("principal")) == "*"
        elif kind == "aws_lambda_function_url":
            public = _one(conf.get("authorization_type")) == "NONE"
        elif kind == "aws_vpc_security_group_ingress_rule":
            public = _one(conf.get("cidr_ipv4")) == "0.0.0.0/0" or _one(conf.get("cidr_ipv6")) == "::/0"
        elif kind == "aws_security_group":
            rules = _one(conf.get("ingress")) or []
            rules = rules if isinstance(rules, list) else [rules]
            public = any(
                "0.0.0.0/0" in (rule.get("cidr_blocks") or []) or "::/0" in (rule.get("ipv6_cidr_blocks") or [])
                for rule in rules
                if isinstance(rule, dict)
            )
        else:
            public = bool(public_statements(_one(conf.get(POLICY_ATTRIBUTE[kind]))))
        return CheckResult.FAILED if public else CheckResult.PASSED


role_trust = RoleTrustUnchanged()
stateful = KeepsStatefulResources()
nothing_public = NothingPublic()
