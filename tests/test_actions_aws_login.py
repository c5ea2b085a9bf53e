"""The `aws-login` action's input check: an unset repository variable fails early and says what to set.

GIVEN a role ARN and region as a workflow passes them, WHEN check-inputs.sh runs, THEN well-formed
values pass and empty or malformed ones fail with a message naming the value.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parent.parent / ".github" / "actions" / "aws-login" / "check-inputs.sh"
ROLE = "arn:aws:iam::123456789012:role/pushtrain-github-plan"


def check(role: str, region: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ROLE_TO_ASSUME": role, "AWS_LOGIN_REGION": region}
    return subprocess.run([str(CHECK)], env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    ("role", "region"),
    [(ROLE, "eu-west-1"), ("arn:aws-us-gov:iam::123456789012:role/ci/plan", "us-gov-west-1"), (ROLE, "ap-southeast-2")],
)
def test_well_formed_role_and_region_pass(role: str, region: str) -> None:
    # GIVEN a real-looking role ARN and region  WHEN checked  THEN it passes silently
    result = check(role, region)
    assert result.returncode == 0, result.stdout
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("role", "region", "message"),
    [
        ("", "eu-west-1", "role-to-assume is empty: set the repository variable"),
        ("pushtrain-github-plan", "eu-west-1", "role-to-assume is not an IAM role ARN: 'pushtrain-github-plan'"),
        ("arn:aws:iam::1234:role/x", "eu-west-1", "not an IAM role ARN: 'arn:aws:iam::1234:role/x'"),
        (ROLE, "", "aws-region is empty: set the repository variable AWS_REGION"),
        (ROLE, "Ireland", "aws-region is not an AWS region: 'Ireland'"),
    ],
)
def test_empty_or_malformed_value_fails_naming_it(role: str, region: str, message: str) -> None:
    # GIVEN a missing or wrong value  WHEN checked  THEN it fails naming the value and what to set
    result = check(role, region)
    assert result.returncode == 1
    assert message in result.stdout
