"""AWS quotas a Terraform root can break only at apply time, checked on what the roots render to.

Content checks (parliament, checkov, the contract tests) never see size: a policy IAM refuses with
LimitExceeded, a name one character too long or a Lambda environment over 4 KB all pass them and fail
the first `terraform apply` on a real account. `scripts/lint.py --only limits` renders every root
(the policy renderer of the local pipeline) in each variant of `VARIANTS` and compares each value with
the quota below; each quota names the AWS page that states it.

    >>> findings = check_root(Path("terraform/bootstrap"), {})
    >>> findings
    []
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
from tfread.hcl import HclError, JsonEncoded, Scope, Unknown, evaluate_value
from tfread.policies import document_scope, resource_values, roles_in
from tfread.terraform import TerraformError, TerraformModule

IAM_QUOTAS = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html"
S3_BUCKET_POLICY = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-iam-policies.html"
S3_BUCKET_NAMES = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html"
KMS_KEY_POLICY = "https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-overview.html"
SNS_POLICY = "https://docs.aws.amazon.com/sns/latest/dg/sns-access-policy-language-api-permissions-reference.html"
SQS_POLICY = "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-policies.html"
SQS_NAMES = "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_CreateQueue.html"
ENDPOINT_POLICY = "https://docs.aws.amazon.com/vpc/latest/privatelink/vpc-endpoints-access.html"
LAMBDA_QUOTAS = "https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html"
LAMBDA_NAMES = "https://docs.aws.amazon.com/lambda/latest/api/API_CreateFunction.html"
EVENTS_NAMES = "https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutRule.html"
LOGS_NAMES = "https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_CreateLogGroup.html"
TAGS = "https://docs.aws.amazon.com/tag-editor/latest/userguide/tagging.html"


@dataclass(frozen=True)
class Limit:
    """One AWS quota: the most `what` may be, in `unit`, as the page at `source` states it."""

    what: str
    maximum: int
    unit: str
    source: str


# IAM counts a policy's characters without whitespace ("IAM and AWS STS quotas": "IAM doesn't count
# white space when calculating the size of a policy"); the provider sends the compact JSON.
INLINE_PER_ROLE = Limit("inline policies of one role, together", 10_240, "characters", IAM_QUOTAS)
MANAGED_POLICY = Limit("one customer managed policy", 6_144, "characters", IAM_QUOTAS)
TRUST_POLICY = Limit("a role's trust policy (default quota)", 2_048, "characters", IAM_QUOTAS)
MANAGED_PER_ROLE = Limit("managed policies attached to one role (default quota)", 10, "policies", IAM_QUOTAS)
# Resource policies, measured as aws_iam_policy_document renders them (indented JSON), the larger form.
RESOURCE_POLICIES: dict[str, tuple[str, Limit]] = {
    "aws_s3_bucket_policy": ("policy", Limit("a bucket policy", 20 * 1024, "bytes", S3_BUCKET_POLICY)),
    "aws_kms_key": ("policy", Limit("a key policy", 32_768, "bytes", KMS_KEY_POLICY)),
    "aws_sns_topic": ("policy", Limit("a topic policy", 30 * 1024, "bytes", SNS_POLICY)),
    "aws_sns_topic_policy": ("policy", Limit("a topic policy", 30 * 1024, "bytes", SNS_POLICY)),
    "aws_sqs_queue": ("policy", Limit("a queue policy", 8_192, "bytes", SQS_POLICY)),
    "aws_sqs_queue_policy": ("policy", Limit("a queue policy", 8_192, "bytes", SQS_POLICY)),
    "aws_vpc_endpoint": (
        "policy",
        Limit("an endpoint policy, whitespace included", 20_480, "characters", ENDPOINT_POLICY),
    ),
    "aws_vpc_endpoint_policy": (
        "policy",
        Limit("an endpoint policy, whitespace included", 20_480, "characters", ENDPOINT_POLICY),
    ),
}
LAMBDA_ENVIRONMENT = Limit("a function's environment variables, together", 4 * 1024, "bytes", LAMBDA_QUOTAS)
# A value only an apply knows (an ECR URI, subnet ids) counts as this many bytes: each of ours is far shorter.
UNKNOWN_VALUE_BYTES = 256
NAMES: dict[str, tuple[str, Limit]] = {
    "aws_iam_role": ("name", Limit("an IAM role name", 64, "characters", IAM_QUOTAS)),
    "aws_lambda_function": ("function_name", Limit("a function name", 64, "characters", LAMBDA_NAMES)),
    "aws_s3_bucket": ("bucket", Limit("a bucket name", 63, "characters", S3_BUCKET_NAMES)),
    "aws_cloudwatch_event_rule": ("name", Limit("an EventBridge rule name", 64, "characters", EVENTS_NAMES)),
    "aws_sqs_queue": ("name", Limit("a queue name", 80, "characters", SQS_NAMES)),
    "aws_cloudwatch_log_group": ("name", Limit("a log group name", 512, "characters", LOGS_NAMES)),
}
TAGS_PER_RESOURCE = Limit("tags on one resource (the provider's default_tags included)", 50, "tags", TAGS)

# Names carry the region: checked with the longest commercial region name there is (14 characters).
LONGEST_REGION = "ap-southeast-5"
ACCOUNT = "123456789012"
# The shapes a root takes: (root relative to the repository, label, variables over the defaults).
VARIANTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "terraform": [
        ("default", {}),
        ("private", {"network_mode": "private"}),
        ("gpu+batch", {"network_mode": "private", "gpu": {"enabled": True}, "batch": {"enabled": True}}),
    ],
    "terraform/bootstrap": [("default", {})],
}


def iam_size(document: Mapping[str, Any]) -> int:
    """A policy's size as IAM counts it: its JSON without whitespace outside strings."""
    return len(json.dumps(document, separators=(",", ":"), ensure_ascii=False))


def rendered_size(document: Mapping[str, Any]) -> int:
    """A resource policy's size as aws_iam_policy_document renders it (indented), in UTF-8 bytes."""
    return len(json.dumps(document, indent=2, ensure_ascii=False).encode())


def over(limit: Limit, value: int, subject: str) -> str | None:
    """A finding when `value` exceeds `limit`, else None."""
    if value <= limit.maximum:
        return None
    return f"{subject}: {limit.what} is {value:,} {limit.unit}, over AWS's {limit.maximum:,} ({limit.source})"


def _variables(module: TerraformModule, variables: Mapping[str, Any]) -> dict[str, Any]:
    """`variables` with object variables merged over their defaults (gpu = {enabled = true} keeps the rest)."""
    merged = {}
    for name, value in variables.items():
        default = module.variables.get(name)
        merged[name] = {**default, **value} if isinstance(default, dict) and isinstance(value, dict) else value
    return merged


def check_module(module: TerraformModule, variables: Mapping[str, Any], label: str) -> list[str]:
    """Every quota finding of one root under `variables` (`label` names the variant in the messages)."""
    if "region" in module.variables:
        variables = {"region": LONGEST_REGION, **variables}
    loaded, scope = document_scope(module, ACCOUNT, LONGEST_REGION, variables=_variables(module, variables))
    where = f"{module.path.name} ({label})"
    findings = [
        *_role_findings(loaded, scope, where),
        *_policy_findings(loaded, scope, where),
        *_lambda_findings(loaded, scope, where),
        *_name_findings(loaded, scope, where),
        *_tag_findings(loaded, scope, where),
    ]
    return [finding for finding in findings if finding is not None]


def _role_findings(module: TerraformModule, scope: Scope, where: str) -> Iterator[str | None]:
    for role in roles_in(module, scope).values():
        subject = f"{where}: {role.role}"
        yield over(INLINE_PER_ROLE, sum(iam_size(d) for d in role.inline.values()), subject)
        yield over(MANAGED_PER_ROLE, len(role.managed), subject)
        if role.trust is not None:
            yield over(TRUST_POLICY, iam_size(role.trust), subject)
    for label, policy in resource_values(module, scope, "aws_iam_policy", "policy").items():
        document = _document(policy)
        if document is not None:
            yield over(MANAGED_POLICY, iam_size(document), f"{where}: {label}")


def _policy_findings(module: TerraformModule, scope: Scope, where: str) -> Iterator[str | None]:
    for rtype, (argument, limit) in RESOURCE_POLICIES.items():
        for label, policy in resource_values(module, scope, rtype, argument).items():
            document = _document(policy)
            if document is not None:
                yield over(limit, rendered_size(document), f"{where}: {label}")


def _lambda_findings(module: TerraformModule, scope: Scope, where: str) -> Iterator[str | None]:
    for label, blocks in resource_values(module, scope, "aws_lambda_function", "environment").items():
        for block in blocks if isinstance(blocks, list) else [blocks] if blocks else []:
            size = environment_size(block.get("variables") or {})
            yield over(LAMBDA_ENVIRONMENT, size, f"{where}: {label}")


def _name_findings(module: TerraformModule, scope: Scope, where: str) -> Iterator[str | None]:
    for rtype, (argument, limit) in NAMES.items():
        for label, name in resource_values(module, scope, rtype, argument).items():
            if isinstance(name, str):
                yield over(limit, len(name), f"{where}: {label} ({name!r})")


def _tag_findings(module: TerraformModule, scope: Scope, where: str) -> Iterator[str | None]:
    default_tags = _default_tags(module, scope)
    yield over(TAGS_PER_RESOURCE, len(default_tags), f"{where}: the aws provider's default_tags")
    for (rtype, rname), body in sorted(module.resources.items()):
        if "tags" not in body:
            continue
        try:
            instances = module.instances_of(body, f"{rtype}.{rname}", scope)
        except TerraformError:
            # A for_each only an apply knows (one instance per subnet): the tag keys do not depend on the key.
            instances = {None: scope.with_bound({"each": {"key": "?", "value": Unknown("each.value")}})}
        for instance_scope in instances.values():
            tags = evaluate_value(body["tags"], instance_scope)
            if isinstance(tags, dict):
                yield over(TAGS_PER_RESOURCE, len(set(default_tags) | set(tags)), f"{where}: {rtype}.{rname}")


def environment_size(variables: Mapping[str, Any]) -> int:
    """A Lambda environment's size: its variables as JSON, UTF-8 bytes; an unknown value as UNKNOWN_VALUE_BYTES."""
    known = {k: ("x" * UNKNOWN_VALUE_BYTES if isinstance(v, Unknown) else str(v)) for k, v in variables.items()}
    return len(json.dumps(known, separators=(",", ":"), ensure_ascii=False).encode())


def _document(value: Any) -> dict[str, Any] | None:
    if isinstance(value, JsonEncoded):
        value = value.value
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else None


def _default_tags(module: TerraformModule, scope: Scope) -> dict[str, Any]:
    """The aws provider's `default_tags { tags = ... }` of the root, evaluated; {} when it sets none."""
    tags: dict[str, Any] = {}
    for file in sorted(module.path.glob("*.tf")):
        for block in hcl2.loads(file.read_text(encoding="utf-8")).get("provider", []):
            for name, body in block.items():
                if name.strip('"') != "aws":
                    continue
                for default in body.get("default_tags", []):
                    try:
                        value = evaluate_value(default.get("tags"), scope)
                    except HclError as exc:
                        raise TerraformError(f"{file}: provider aws default_tags: {exc}") from exc
                    tags.update(value if isinstance(value, dict) else {})
    return tags


def check_root(root: Path, variables: Mapping[str, Any], label: str = "default") -> list[str]:
    """The quota findings of the root at `root` under `variables`."""
    return check_module(TerraformModule.load(root), variables, label)


def check_tree(repository: Path) -> Iterator[str]:
    """The quota findings of every root and variant of `VARIANTS` under `repository`."""
    for root, variants in VARIANTS.items():
        path = repository / root
        if not path.is_dir():
            continue
        for label, variables in variants:
            yield from check_root(path, variables, label)
