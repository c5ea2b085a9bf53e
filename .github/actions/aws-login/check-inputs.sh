#!/usr/bin/env bash
# Fail early, and say what to set, when the role or region a workflow passes is empty or malformed:
# an unset repository variable otherwise surfaces as an opaque STS error.
set -euo pipefail

role="${ROLE_TO_ASSUME:-}"
region="${AWS_LOGIN_REGION:-}"
status=0

if [[ -z "$role" ]]; then
  echo "::error title=aws-login::role-to-assume is empty: set the repository variable the workflow reads (docs/deploying.md, step 2)"
  status=1
elif [[ ! "$role" =~ ^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$ ]]; then
  echo "::error title=aws-login::role-to-assume is not an IAM role ARN: '$role' (expected arn:aws:iam::<12 digits>:role/<name>)"
  status=1
fi

if [[ -z "$region" ]]; then
  echo "::error title=aws-login::aws-region is empty: set the repository variable AWS_REGION (docs/deploying.md, step 2)"
  status=1
elif [[ ! "$region" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]]; then
  echo "::error title=aws-login::aws-region is not an AWS region: '$region' (expected e.g. eu-west-1)"
  status=1
fi

exit "$status"
