"""The AWS-limits check (scripts/aws_limits.py, `scripts/lint.py --only limits`): every quota fails when a
root exceeds it by one and passes at the quota itself, and the apply role's permissions held inline, as
before they were split into managed policies, fail it.

Each case is a small Terraform root written to a temporary directory and read by the same renderer the
linter uses, so what is measured is what `terraform apply` would send.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import aws_limits
import pytest

REPO = Path(__file__).resolve().parent.parent

TRUST = """
data "aws_iam_policy_document" "trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = [%s]
    }
  }
}
"""


def root(tmp_path: Path, text: str) -> Path:
    (tmp_path / "main.tf").write_text('variable "region" {\n  default = "us-east-1"\n}\n' + text, encoding="utf-8")
    return tmp_path


def document(name: str, resources: int, principal: bool = False) -> str:
    """A policy document with one statement naming `resources` ARNs of 41 characters each."""
    arns = ", ".join(f'"arn:aws:s3:::bucket-{i:06d}/object-{i:06d}"' for i in range(resources))
    who = '\n    principals {\n      type        = "*"\n      identifiers = ["*"]\n    }' if principal else ""
    return f"""
data "aws_iam_policy_document" "{name}" {{
  statement {{
    actions   = ["s3:GetObject"]{who}
    resources = [{arns}]
  }}
}}
"""


def role(name: str = "r", services: int = 1) -> str:
    identifiers = ", ".join(f'"s{i:04d}.amazonaws.com"' for i in range(services))
    return (
        TRUST % identifiers
        + f"""
resource "aws_iam_role" "r" {{
  name               = "{name}"
  assume_role_policy = data.aws_iam_policy_document.trust.json
}}
"""
    )


def findings(path: Path) -> list[str]:
    return aws_limits.check_root(path, {})


def sized(limit: int, measure: Callable[[dict], int], make: Callable[[int], dict]) -> tuple[dict, dict]:
    """The largest `make(n)` within `limit` by `measure`, and the next one (over it)."""
    n = 1
    while measure(make(n + 1)) <= limit:
        n += 1
    return make(n), make(n + 1)


def rendered_document(path: Path, name: str) -> dict:
    from tfread.policies import policy_documents
    from tfread.terraform import TerraformModule

    return policy_documents(TerraformModule.load(path), "123456789012", "us-east-1")[name]


@pytest.mark.parametrize(
    ("resource", "limit"),
    [
        ("inline", aws_limits.INLINE_PER_ROLE),
        ("managed", aws_limits.MANAGED_POLICY),
        ("aws_s3_bucket_policy", aws_limits.RESOURCE_POLICIES["aws_s3_bucket_policy"][1]),
        ("aws_kms_key", aws_limits.RESOURCE_POLICIES["aws_kms_key"][1]),
        ("aws_sns_topic_policy", aws_limits.RESOURCE_POLICIES["aws_sns_topic_policy"][1]),
        ("aws_sqs_queue_policy", aws_limits.RESOURCE_POLICIES["aws_sqs_queue_policy"][1]),
        ("aws_vpc_endpoint", aws_limits.RESOURCE_POLICIES["aws_vpc_endpoint"][1]),
    ],
)
def test_each_policy_size_quota_fails_one_resource_over_it(
    tmp_path: Path, resource: str, limit: aws_limits.Limit
) -> None:
    # GIVEN a root holding one policy of that kind, with as many resources as fit and one more
    measure = aws_limits.iam_size if resource in {"inline", "managed"} else aws_limits.rendered_size
    resource_policy = resource not in {"inline", "managed"}

    def make(n: int) -> dict:
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    **({"Principal": "*"} if resource_policy else {}),
                    "Resource": [f"arn:aws:s3:::bucket-{i:06d}/object-{i:06d}" for i in range(n)],
                }
            ],
        }

    fits, too_big = sized(limit.maximum, measure, make)
    for policy, expected in ((fits, 0), (too_big, 1)):
        n = len(policy["Statement"][0]["Resource"])
        path = tmp_path / str(n)
        path.mkdir()
        policy_line = "  policy = data.aws_iam_policy_document.p.json\n"
        uses = {
            "inline": 'resource "aws_iam_role_policy" "p" {\n  role = aws_iam_role.r.id\n' + policy_line + "}\n",
            "managed": 'resource "aws_iam_policy" "p" {\n  name = "p"\n' + policy_line + "}\n",
        }.get(resource, f'resource "{resource}" "p" {{\n{policy_line}}}\n')
        root(path, role() + document("p", n, principal=resource_policy) + uses)
        # THEN the renderer's document is the one measured, and only the larger one is a finding
        assert rendered_document(path, "p") == policy
        found = findings(path)
        assert len(found) == expected, found
        if expected:
            assert limit.what in found[0] and f"{limit.maximum:,}" in found[0] and limit.source in found[0]


def test_the_trust_policy_quota_fails_one_principal_over_it(tmp_path: Path) -> None:
    def size(n: int) -> int:
        services = [f"s{i:04d}.amazonaws.com" for i in range(n)]
        statement = {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": services}}
        return aws_limits.iam_size({"Version": "2012-10-17", "Statement": [statement]})

    n = 1
    while size(n + 1) <= aws_limits.TRUST_POLICY.maximum:
        n += 1
    for services, expected in ((n, 0), (n + 1, 1)):
        path = tmp_path / str(services)
        path.mkdir()
        found = findings(root(path, role(services=services)))
        assert len(found) == expected, found
        assert not expected or aws_limits.TRUST_POLICY.what in found[0]


def test_more_than_ten_managed_policies_on_a_role_fail(tmp_path: Path) -> None:
    for count, expected in ((10, 0), (11, 1)):
        path = tmp_path / str(count)
        path.mkdir()
        attachments = "".join(
            f'resource "aws_iam_role_policy_attachment" "a{i}" {{\n  role       = aws_iam_role.r.name\n'
            f'  policy_arn = "arn:aws:iam::aws:policy/P{i}"\n}}\n'
            for i in range(count)
        )
        found = findings(root(path, role() + attachments))
        assert len(found) == expected, found
        assert not expected or aws_limits.MANAGED_PER_ROLE.what in found[0]


def test_a_lambda_environment_over_4_kb_fails(tmp_path: Path) -> None:
    for size, expected in ((aws_limits.LAMBDA_ENVIRONMENT.maximum, 0), (aws_limits.LAMBDA_ENVIRONMENT.maximum + 1, 1)):
        value = "v" * (size - len('{"K":""}'))
        path = tmp_path / str(size)
        path.mkdir()
        text = (
            f'resource "aws_lambda_function" "f" {{\n  function_name = "f"\n'
            f'  environment {{\n    variables = {{ K = "{value}" }}\n  }}\n}}\n'
        )
        found = findings(root(path, text))
        assert len(found) == expected, found
    # AND a value only an apply knows counts as UNKNOWN_VALUE_BYTES, not as nothing
    assert (
        aws_limits.environment_size({"K": aws_limits.Unknown("x")}) == len('{"K":""}') + aws_limits.UNKNOWN_VALUE_BYTES
    )


@pytest.mark.parametrize("rtype", sorted(aws_limits.NAMES))
def test_each_name_quota_fails_one_character_over_it(tmp_path: Path, rtype: str) -> None:
    argument, limit = aws_limits.NAMES[rtype]
    for length, expected in ((limit.maximum, 0), (limit.maximum + 1, 1)):
        path = tmp_path / str(length)
        path.mkdir()
        extra = "  assume_role_policy = data.aws_iam_policy_document.trust.json\n" if rtype == "aws_iam_role" else ""
        text = (TRUST % '"ecs-tasks.amazonaws.com"' if rtype == "aws_iam_role" else "") + (
            f'resource "{rtype}" "n" {{\n  {argument} = "{"n" * length}"\n{extra}}}\n'
        )
        found = findings(root(path, text))
        assert len(found) == expected, found
        assert not expected or limit.what in found[0]


def test_more_than_fifty_tags_fail_default_tags_included(tmp_path: Path) -> None:
    for own, expected in ((45, 0), (46, 1)):
        path = tmp_path / str(own)
        path.mkdir()
        defaults = ", ".join(f'D{i} = "x"' for i in range(5))
        tags = ", ".join(f'T{i} = "x"' for i in range(own))
        text = (
            f'provider "aws" {{\n  default_tags {{\n    tags = {{ {defaults} }}\n  }}\n}}\n'
            f'resource "aws_sqs_queue" "q" {{\n  name = "q"\n  tags = {{ {tags} }}\n}}\n'
        )
        found = findings(root(path, text))
        assert len(found) == expected, found
        assert not expected or aws_limits.TAGS_PER_RESOURCE.what in found[0]


def test_the_apply_role_held_inline_as_before_the_split_fails(tmp_path: Path) -> None:
    # GIVEN bootstrap with the apply role's documents held as its inline policies again (the shape before
    # they became managed policies: one role, all of its permissions inline)
    bootstrap = tmp_path / "bootstrap"
    shutil.copytree(REPO / "terraform" / "bootstrap", bootstrap, ignore=shutil.ignore_patterns("*.md", ".terraform*"))
    iam = bootstrap / "iam.tf"
    text = iam.read_text(encoding="utf-8")
    attachment = re.compile(r'resource "aws_iam_role_policy_attachment" "apply" \{.*?\n\}\n', re.DOTALL)
    assert attachment.search(text), "bootstrap attaches the apply role's managed policies"
    inline = (
        'resource "aws_iam_role_policy" "apply_inline" {\n  for_each = local.apply_policies\n\n'
        '  name   = each.key\n  role   = aws_iam_role.github["apply"].id\n  policy = each.value.document\n}\n'
    )
    iam.write_text(attachment.sub(inline, text), encoding="utf-8")
    # WHEN the limits are checked
    found = aws_limits.check_root(bootstrap, {})
    # THEN the role's inline aggregate is over IAM's 10,240 characters, and nothing else is
    assert len(found) == 1, found
    assert "aws_iam_role.github[apply]" in found[0] and aws_limits.INLINE_PER_ROLE.what in found[0]
    size = int(re.search(r"is ([\d,]+) characters", found[0]).group(1).replace(",", ""))
    assert size > 19_000  # the 19,506 the single document rendered to, give or take the renderer's order


def test_bootstrap_as_committed_is_within_every_quota() -> None:
    assert aws_limits.check_root(REPO / "terraform" / "bootstrap", {}) == []
    # AND the apply role's largest managed policy keeps room for growth (IAM's 6,144 is per policy)
    from tfread.policies import role_policies
    from tfread.terraform import TerraformModule

    held = role_policies(TerraformModule.load(REPO / "terraform" / "bootstrap"), "123456789012", "us-east-1")
    apply = held["pushtrain-github-apply"]
    assert len(apply.managed) <= aws_limits.MANAGED_PER_ROLE.maximum
    assert max(aws_limits.iam_size(d) for d in apply.managed.values() if d) <= aws_limits.MANAGED_POLICY.maximum
    assert json.dumps(apply.inline) == "{}"
