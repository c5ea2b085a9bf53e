"""pushtrain's checkov policies on plans (policies/plan), run by the real checkov of .venv-checkov.

GIVEN a plan JSON (as `terraform show -json` writes it) holding, for each policy, resources that
must pass and resources that must fail, WHEN ci.plan_policy runs checkov on it (framework
terraform_plan, only the project's checks), THEN exactly the failing ones are reported, each policy
passes at least once and fails at least once, and a plain deletion (absent from planned_values,
where checkov looks) is still seen. ci.plan_policy's report and exit status are checked against a
recording fake checkov.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ci import plan_policy
from fakebin import FakeBin

REPO = Path(__file__).resolve().parent.parent
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
OPEN = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "Open", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}],
}
GUARDED = {
    "Version": "2012-10-17",
    "Statement": [{**OPEN["Statement"][0], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}],
}
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
WIDER = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
}
PAB = {
    "block_public_acls": True,
    "block_public_policy": True,
    "ignore_public_acls": True,
    "restrict_public_buckets": True,
}

# (type, name, actions, before, after, expected finding or None)
RESOURCES: list[tuple[str, str, list[str], Any, Any, str | None]] = [
    (
        "aws_iam_role",
        "widened",
        ["update"],
        {"assume_role_policy": json.dumps(TRUST)},
        {"assume_role_policy": json.dumps(WIDER)},
        "CKV_PUSHTRAIN_1",
    ),
    ("aws_iam_role", "replaced", ["delete", "create"], {"name": "a"}, {"name": "b"}, "CKV_PUSHTRAIN_1"),
    (
        "aws_iam_role",
        "tagged",
        ["update"],
        {"assume_role_policy": json.dumps(TRUST), "tags": {}},
        {"assume_role_policy": json.dumps(TRUST), "tags": {"a": "b"}},
        None,
    ),
    ("aws_iam_role", "new", ["create"], None, {"assume_role_policy": json.dumps(TRUST)}, None),
    ("aws_s3_bucket", "this", ["delete"], {"bucket": "pushtrain-artifacts"}, None, "CKV_PUSHTRAIN_2"),
    ("aws_s3_bucket", "state", ["create", "delete"], {"bucket": "tfstate"}, {"bucket": "tfstate"}, "CKV_PUSHTRAIN_2"),
    ("aws_kms_key", "notifications", ["update"], {"description": "a"}, {"description": "b"}, None),
    (
        "aws_s3_bucket_public_access_block",
        "this",
        ["update"],
        PAB,
        {**PAB, "block_public_policy": False},
        "CKV_PUSHTRAIN_3",
    ),
    ("aws_s3_bucket_public_access_block", "state", ["create"], None, PAB, None),
    ("aws_s3_bucket_policy", "open", ["create"], None, {"policy": json.dumps(OPEN)}, "CKV_PUSHTRAIN_3"),
    ("aws_s3_bucket_policy", "guarded", ["create"], None, {"policy": json.dumps(GUARDED)}, None),
    (
        "aws_lambda_permission",
        "anyone",
        ["create"],
        None,
        {"principal": "*", "action": "lambda:InvokeFunction"},
        "CKV_PUSHTRAIN_3",
    ),
    ("aws_lambda_permission", "events", ["create"], None, {"principal": "events.amazonaws.com"}, None),
    ("aws_lambda_function_url", "open", ["create"], None, {"authorization_type": "NONE"}, "CKV_PUSHTRAIN_3"),
    ("aws_vpc_security_group_ingress_rule", "world", ["create"], None, {"cidr_ipv4": "0.0.0.0/0"}, "CKV_PUSHTRAIN_3"),
]


def plan() -> dict[str, Any]:
    planned, changes = [], []
    for kind, name, actions, before, after, _ in RESOURCES:
        address = f"{kind}.{name}"
        change = {"actions": actions, "before": before, "after": after, "after_unknown": {}}
        changes.append({"address": address, "mode": "managed", "type": kind, "name": name, "change": change})
        if after is not None:  # terraform leaves a destroyed resource out of planned_values
            planned.append({"address": address, "mode": "managed", "type": kind, "name": name, "values": after})
    return {
        "format_version": "1.2",
        "terraform_version": "1.15.5",
        "planned_values": {"root_module": {"resources": planned}},
        "resource_changes": changes,
        "configuration": {"root_module": {}},
    }


@pytest.mark.skipif(not CHECKOV.exists(), reason="needs .venv-checkov (make setup)")
def test_the_real_checkov_reports_exactly_the_changes_each_policy_forbids(tmp_path: Path) -> None:
    # WHEN the plan goes through ci.plan_policy and the real checkov
    found = plan_policy.run_checkov(str(CHECKOV), plan(), tmp_path)
    # THEN exactly the forbidden changes are findings, under the policy that forbids each
    expected = sorted((finding, f"{kind}.{name}") for kind, name, *_, finding in RESOURCES if finding)
    assert sorted((f["id"], f["resource"]) for f in found) == expected
    # AND each policy both passed and failed on this plan (none is vacuous)
    for check in plan_policy.CHECKS:
        fails = [r for r in RESOURCES if r[-1] == check]
        passes = [r for r in RESOURCES if r[-1] is None and plan_policy_covers(check, r[0])]
        assert fails and passes, check


def plan_policy_covers(check: str, kind: str) -> bool:
    covers = {
        "CKV_PUSHTRAIN_1": {"aws_iam_role"},
        "CKV_PUSHTRAIN_2": {"aws_s3_bucket", "aws_kms_key"},
        "CKV_PUSHTRAIN_3": {
            "aws_s3_bucket_public_access_block",
            "aws_s3_bucket_policy",
            "aws_lambda_permission",
            "aws_lambda_function_url",
            "aws_vpc_security_group_ingress_rule",
        },
    }
    return kind in covers[check]


def test_a_destroyed_resource_is_put_back_where_checkov_looks() -> None:
    # GIVEN a plan that destroys the artifacts bucket: terraform leaves it out of planned_values
    raw = plan()
    addresses = {r["address"] for r in raw["planned_values"]["root_module"]["resources"]}
    assert "aws_s3_bucket.this" not in addresses  # what checkov alone would never see
    # WHEN prepared  THEN it is there, with its values before the plan
    prepared = plan_policy.with_deletions(raw)["planned_values"]["root_module"]["resources"]
    (bucket,) = [r for r in prepared if r["address"] == "aws_s3_bucket.this"]
    assert bucket["values"] == {"bucket": "pushtrain-artifacts"}
    assert len(prepared) == len(addresses) + 1


def run_main(
    tmp_path: Path, report: dict[str, Any], exit_code: int, *extra: str
) -> tuple[subprocess.CompletedProcess[str], FakeBin]:
    fakes = FakeBin(tmp_path)
    fakes.add("checkov", stdout=json.dumps(report), exit=exit_code)
    fakes.add("gh", ["api", "--paginate"], stdout="")
    plan_json = tmp_path / "tfplan.json"
    plan_json.write_text(json.dumps(plan()))
    result = subprocess.run(
        [sys.executable, "-m", "ci.plan_policy", "--plan-json", str(plan_json), "--checkov", "checkov", *extra],
        env=fakes.env(PYTHONPATH=str(REPO / "scripts"), GITHUB_STEP_SUMMARY=str(tmp_path / "summary")),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return result, fakes


FAILED = {
    "check_type": "terraform_plan",
    "results": {
        "failed_checks": [
            {
                "check_id": "CKV_PUSHTRAIN_1",
                "check_name": "Plans never change an IAM role's trust policy",
                "resource": "aws_iam_role.task",
            }
        ]
    },
}


def test_findings_fail_the_step_and_are_posted_beside_the_plan_comment(tmp_path: Path) -> None:
    result, fakes = run_main(tmp_path, FAILED, 1, "--repository", "octo/pushtrain", "--pull-request", "12")
    # THEN the step fails naming the finding, the summary and the pull request's sticky comment say so
    assert result.returncode == 1
    assert "::error title=plan policy::1 finding(s): CKV_PUSHTRAIN_1 aws_iam_role.task" in result.stdout
    assert "the apply is blocked" in (tmp_path / "summary").read_text()
    (post,) = [c for c in fakes.all_calls() if c["name"] == "gh" and "--method" in c["args"]]
    assert post["args"][post["args"].index("--method") + 1 :][:2] == ["POST", "repos/octo/pushtrain/issues/12/comments"]
    assert "aws_iam_role.task" in json.loads(post["stdin"])["body"]
    # AND checkov ran with the project's checks only, on the plan framework
    (call,) = fakes.calls("checkov")
    assert call[call.index("--check") + 1] == "CKV_PUSHTRAIN_1,CKV_PUSHTRAIN_2,CKV_PUSHTRAIN_3"
    assert call[call.index("--framework") + 1] == "terraform_plan"


def test_a_clean_plan_passes_and_a_broken_checkov_fails_loudly(tmp_path: Path) -> None:
    clean, _ = run_main(tmp_path / "a", {"passed": 3, "failed": 0}, 0)
    assert clean.returncode == 0, clean.stdout
    assert "no findings" in clean.stdout
    broken, _ = run_main(tmp_path / "b", {}, 2)
    assert broken.returncode == 1
    assert "checkov failed (exit 2)" in broken.stdout


def test_the_plan_jobs_run_the_policies_before_anything_is_uploaded() -> None:
    import yaml

    workflows = REPO / ".github" / "workflows"
    for path, job in (("terraform-plan.yml", "plan"), ("terraform-apply.yml", "plan")):
        steps = yaml.safe_load((workflows / path).read_text())["jobs"][job]["steps"]
        policy = next(i for i, s in enumerate(steps) if "ci.plan_policy" in str(s.get("run", "")))
        upload = next(i for i, s in enumerate(steps) if "upload-artifact" in str(s.get("uses", "")))
        assert policy < upload, path
        assert "if" not in steps[policy] and not steps[policy].get("continue-on-error"), path
        install = next(s for s in steps if "requirements/checkov.txt" in str(s.get("run", "")))
        assert steps.index(install) < policy
    assert shutil.which  # the policies folder is a package checkov imports
    assert (REPO / "policies" / "plan" / "__init__.py").is_file()
