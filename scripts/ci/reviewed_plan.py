"""Refuse to apply a plan of main that differs from the plan reviewed on its pull request.

The terraform-apply workflow plans the merged commit (that plan file is what gets applied) and then,
with `PYTHONPATH=scripts`:

    python3 -m ci.reviewed_plan --repository owner/repo --commit <sha> --event push \\
        --changes "$RUNNER_TEMP/tfplan-<sha>.changes"

- a push: the merged pull request of the commit is looked up (`gh api …/commits/<sha>/pulls`), the
  artifact `tfplan-<head sha>` its last plan uploaded is downloaded, and its list of resource changes
  (one "<actions> <address>" line each) must equal the merged plan's. Equal: the job goes on, and the
  production reviewers approve a plan whose changes a pull request reviewer already saw. Different, or
  no pull request, or no artifact: exit 1 with the reason (and a comment on the pull request when
  there is one), so nothing is applied;
- `workflow_dispatch` (someone started the workflow by hand): there is no pull request plan; the
  production environment's reviewers approve the plan shown in the run's summary.

Only resource addresses and actions are compared, never attribute values: the production reviewers
see the whole plan. Only the standard library; GitHub through `gh` (`actions: read`, and
`pull-requests: write` for the comment).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

HOW_TO_APPLY = (
    "To apply the current plan of main anyway, start the terraform-apply workflow by hand (Actions → "
    "terraform-apply → Run workflow on main): its plan is shown in the run's summary, and the production "
    "environment's reviewers approve exactly that plan."
)


class PlanMismatchError(Exception):
    """The merged plan is not the reviewed one (or that cannot be shown); the message says which."""


def gh(args: Sequence[str], stdin: str | None = None) -> bytes:
    result = subprocess.run(
        ["gh", *args], input=stdin.encode() if stdin is not None else None, capture_output=True, check=False
    )
    if result.returncode != 0:
        raise PlanMismatchError(
            f"`gh {' '.join(args[:2])}` failed (exit {result.returncode}): {result.stderr.decode().strip()}"
        )
    return result.stdout


def merged_pull_request(repository: str, commit: str) -> dict[str, object] | None:
    """The merged pull request that produced `commit` on main, or None."""
    pulls = json.loads(gh(["api", f"repos/{repository}/commits/{commit}/pulls"]))
    merged = [p for p in pulls if isinstance(p, dict) and p.get("merged_at")]
    return merged[0] if merged else None


def reviewed_changes(repository: str, head_sha: str) -> list[str]:
    """The resource changes of the pull request's last plan, from its artifact `tfplan-<head sha>`."""
    name = f"tfplan-{head_sha}"
    listing = json.loads(gh(["api", f"repos/{repository}/actions/artifacts?name={name}&per_page=100"]))
    artifacts = [a for a in listing.get("artifacts", []) if a.get("name") == name and not a.get("expired")]
    if not artifacts:
        raise PlanMismatchError(
            f"the pull request's plan artifact {name} is missing or expired, so its reviewed plan cannot be compared"
        )
    newest = max(artifacts, key=lambda a: str(a.get("created_at", "")))
    run_id = str((newest.get("workflow_run") or {}).get("id", ""))
    with tempfile.TemporaryDirectory() as folder:
        gh(["run", "download", run_id, "--repo", repository, "--name", name, "--dir", folder])
        found = sorted(Path(folder).rglob("*.changes"))
        if len(found) != 1:
            raise PlanMismatchError(f"the artifact {name} holds {len(found)} .changes files (expected one)")
        return lines(found[0].read_text())


def lines(text: str) -> list[str]:
    return sorted(line.strip() for line in text.splitlines() if line.strip())


def difference(merged: list[str], reviewed: list[str]) -> str:
    """The two lists' differences in words; empty when they are equal."""
    only_merged = sorted(set(merged) - set(reviewed))
    only_reviewed = sorted(set(reviewed) - set(merged))
    parts = []
    if only_merged:
        parts.append("only in the plan of main: " + ", ".join(only_merged))
    if only_reviewed:
        parts.append("only in the reviewed plan: " + ", ".join(only_reviewed))
    return "; ".join(parts)


def same_as_reviewed(merged: list[str], reviewed: list[str], number: object) -> None:
    """PlanMismatchError naming the differences, unless the two plans make the same changes."""
    diff = difference(merged, reviewed)
    if diff:
        raise PlanMismatchError(
            f"the plan of main makes other changes than the plan reviewed on #{number} "
            f"(state or main moved after that plan): {diff}"
        )


def summary(text: str) -> None:
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with Path(path).open("a", encoding="utf-8") as fh:
            fh.write(text + "\n")


def check(repository: str, commit: str, event: str, changes: Path) -> str:
    """What was checked, in words; PlanMismatchError when the plan must not be applied."""
    if not changes.is_file():
        raise PlanMismatchError(f"the plan of main left no list of changes at {changes}")
    merged = lines(changes.read_text())
    if event == "workflow_dispatch":
        return "started by hand: no pull request plan to compare; the production reviewers approve the plan shown here"
    pull = merged_pull_request(repository, commit)
    if pull is None:
        raise PlanMismatchError(
            f"commit {commit} reached main without a merged pull request, so no reviewer saw a plan of it"
        )
    number = pull["number"]
    head = pull.get("head")
    head_sha = str(head.get("sha", "")) if isinstance(head, dict) else ""
    try:
        same_as_reviewed(merged, reviewed_changes(repository, head_sha), number)
    except PlanMismatchError as error:
        body = f"**terraform-apply refused to apply the plan of {commit}:** {error}.\n\n{HOW_TO_APPLY}"
        gh(["pr", "comment", str(number), "--repo", repository, "--body-file", "-"], stdin=body)
        raise
    return f"the plan of main makes the same {len(merged)} resource changes as the plan reviewed on #{number}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m ci.reviewed_plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", required=True)
    parser.add_argument("--commit", required=True, help="the commit of main that was planned")
    parser.add_argument("--event", required=True, help="github.event_name: push or workflow_dispatch")
    parser.add_argument("--changes", type=Path, required=True, help="the plan's .changes file (run.sh)")
    args = parser.parse_args(argv)
    try:
        outcome = check(args.repository, args.commit, args.event, args.changes)
    except (PlanMismatchError, json.JSONDecodeError) as error:
        message = f"{error}. Nothing will be applied. {HOW_TO_APPLY}"
        summary(f"### reviewed plan: refused\n\n{message}")
        print(f"::error title=reviewed plan::{message}")
        return 1
    summary(f"### reviewed plan: {outcome}")
    print(outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
