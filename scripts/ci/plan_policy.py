"""pushtrain's policies on what a plan will do, checked by checkov, reported beside the plan.

    terraform show -json tfplan >tfplan.json
    python3 -m ci.plan_policy --plan-json tfplan.json --checkov .venv-checkov/bin/checkov \\
        [--repository owner/repo --pull-request 12]

1. Prepare checkov's input: the plan JSON with every destroyed resource put back into
   `planned_values` (its `before` values; actions ["delete"]), because checkov's terraform_plan
   framework reads resources from `planned_values` only, where a destroyed resource is absent.
2. Run checkov (--framework terraform_plan) with only the project's own checks, policies/plan
   (CKV_PUSHTRAIN_1 no trust policy change, _2 no deletion or replacement of a bucket or KMS key,
   _3 nothing public).
3. Write the findings to the job summary and, on a pull request, to one sticky comment under the
   plan comment (ci.comments), edited on every push; exit 1 when there is any, so the plan job fails,
   the required check fails, and nothing is uploaded for an apply.

Only the standard library (checkov runs as its own program).
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ci.comments import upsert_comment
from ci.github import CIError, annotate_error, append_summary, json_object, json_value

CHECKS = ("CKV_PUSHTRAIN_1", "CKV_PUSHTRAIN_2", "CKV_PUSHTRAIN_3")
MARKER = "<!-- pushtrain:plan-policy -->"
POLICIES = Path(__file__).resolve().parents[2] / "policies" / "plan"


def with_deletions(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan with each destroyed resource back in planned_values, so checkov sees it."""
    prepared = copy.deepcopy(plan)
    root = prepared.setdefault("planned_values", {}).setdefault("root_module", {})
    resources = root.setdefault("resources", [])
    planned = {r.get("address") for r in resources}
    for module in root.get("child_modules", []) or []:
        planned |= {r.get("address") for r in module.get("resources", [])}
    for entry in prepared.get("resource_changes") or []:
        change = entry.get("change") or {}
        if "delete" not in (change.get("actions") or []) or entry.get("address") in planned:
            continue
        resources.append(
            {
                "address": entry["address"],
                "mode": entry.get("mode", "managed"),
                "type": entry["type"],
                "name": entry["name"],
                "values": change.get("before") or {},
            }
        )
    return prepared


def findings(report: Any) -> list[dict[str, str]]:
    """Failed checks from checkov's JSON output (one report, a list of them, or a summary only)."""
    reports = report if isinstance(report, list) else [report]
    found = []
    for one in reports:
        for check in ((one or {}).get("results") or {}).get("failed_checks", []) if isinstance(one, dict) else []:
            found.append(
                {
                    "id": str(check.get("check_id")),
                    "name": str(check.get("check_name")),
                    "resource": str(check.get("resource")),
                }
            )
    return sorted(found, key=lambda f: (f["id"], f["resource"]))


def run_checkov(checkov: str, plan: dict[str, Any], workdir: Path, policies: Path = POLICIES) -> list[dict[str, str]]:
    """checkov's findings on the plan with the project's checks; CIError when checkov itself fails."""
    target = workdir / "tfplan.checkov.json"
    # One resource a line range: checkov keys results by file lines, and a one-line file reports none.
    target.write_text(json.dumps(with_deletions(plan), indent=1))
    args = [
        checkov, "--framework", "terraform_plan", "--file", str(target), "--external-checks-dir", str(policies),
        "--check", ",".join(CHECKS), "--skip-download", "--quiet", "--compact", "--output", "json",
    ]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode not in {0, 1} or not result.stdout.strip():
        raise CIError(f"checkov failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()[-500:]}")
    return findings(json_value(result.stdout, "checkov's report"))


def render(found: list[dict[str, str]]) -> str:
    if not found:
        return f"{MARKER}\n### Plan policies: no findings\n\nNone of {', '.join(CHECKS)} fails on this plan.\n"
    lines = [MARKER, f"### Plan policies: {len(found)} finding(s), the apply is blocked", ""]
    lines += [f"- `{f['id']}` {f['name']}: `{f['resource']}`" for f in found]
    lines += ["", "Policies: `policies/plan/pushtrain_plan.py`; a change they refuse is made by hand, on purpose."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m ci.plan_policy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan-json", type=Path, required=True, help="terraform show -json of the plan")
    parser.add_argument("--checkov", required=True, help="the checkov program (pinned by requirements/checkov.txt)")
    parser.add_argument("--repository", default="", help="owner/name, to comment on the pull request")
    parser.add_argument("--pull-request", default="", help="its number; empty: the summary only")
    args = parser.parse_args(argv)
    if not args.plan_json.is_file():
        return annotate_error("plan policy", f"no plan JSON at {args.plan_json}")
    try:
        plan = json_object(args.plan_json.read_text(), str(args.plan_json))
        found = run_checkov(args.checkov, plan, args.plan_json.parent)
        text = render(found)
        append_summary(text)
        print(text)
        if args.pull_request:
            print(upsert_comment(args.repository, int(args.pull_request), MARKER, text), "the plan policy comment")
    except CIError as error:
        return annotate_error("plan policy", error)
    if found:
        return annotate_error(
            "plan policy", f"{len(found)} finding(s): " + ", ".join(f"{f['id']} {f['resource']}" for f in found)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
