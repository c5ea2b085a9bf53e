"""Open, update or close the one infrastructure-drift issue from a scheduled plan's exit code.

Used by `.github/workflows/drift.yml` after `terraform plan -detailed-exitcode` (with `PYTHONPATH=scripts`):

    python3 -m ci.drift_issue --exit-code 2 --plan-text "$RUNNER_TEMP/tfplan-….txt" \\
        --repository owner/repo --run-url https://github.com/owner/repo/actions/runs/1

- exit code 2 (drift): the open issue labelled `drift` gets the new plan as its body and a comment
  (so watchers are notified), or, when there is none, one is opened;
- exit code 0 (clean): an open drift issue is closed with a comment saying so; nothing else happens;
- anything else, or no exit code at all (login, init or plan failed before one existed): the check
  itself failed, which must not be silent: the open drift issue gets a comment saying so, or, when
  there is none, one is opened saying the check fails; then this exits 1 (the job stays failed).

The token (`GH_TOKEN`) needs `issues: write`. Only the standard library; GitHub through `gh`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ci.github import CIError, annotate_error, run_tool

LABEL = "drift"
TITLE = "Infrastructure drift: AWS differs from terraform/"
FAILED_TITLE = "Drift check failing: cannot tell whether AWS matches terraform/"
BODY_LIMIT = 60_000  # characters of plan text; GitHub caps an issue body at 65,536


class DriftIssueError(CIError):
    """The drift issue cannot be updated; the message names the value or command that failed."""


def gh(args: Sequence[str], stdin: str | None = None) -> str:
    """Run `gh`; its stdout, or CIError carrying its stderr."""
    return run_tool(["gh", *args], stdin)


def open_drift_issues(repository: str) -> list[int]:
    """Numbers of the open issues labelled drift, oldest first."""
    text = gh(["issue", "list", "--repo", repository, "--state", "open", "--label", LABEL, "--json", "number"])
    try:
        issues = json.loads(text)
        return sorted(int(issue["number"]) for issue in issues)
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as error:
        raise DriftIssueError(
            f"`gh issue list` answered something that is not a list of issues: {text[:200]!r}"
        ) from error


def render_body(plan_text: str, run_url: str) -> str:
    """The issue body: what drifted, from which run, and how to resolve it."""
    plan = plan_text.strip()
    if len(plan) > BODY_LIMIT:
        plan = plan[:BODY_LIMIT] + "\n… (truncated: the whole plan is in the run's log)"
    return (
        "The scheduled drift check found that AWS no longer matches `terraform/` on the default branch.\n\n"
        f"Run: {run_url}\n\n"
        "Resolve it by applying `terraform/` again (re-run the terraform-apply workflow), or by changing the code "
        "to match what was changed by hand. This issue closes itself when a later check finds no drift.\n\n"
        f"<details><summary>terraform plan</summary>\n\n```\n{plan}\n```\n</details>\n"
    )


def render_failure(exit_code: int | None, run_url: str) -> str:
    """The issue body when the check itself failed: no answer about drift, and where to look."""
    what = "ended before terraform plan ran" if exit_code is None else f"failed: terraform plan exited {exit_code}"
    return (
        f"The scheduled drift check {what}, so nobody knows whether AWS still matches `terraform/`.\n\n"
        f"Run: {run_url}\n\n"
        "Read the run's log (expired credentials, a changed role, a provider error, a held state lock), fix the "
        "cause, and re-run the drift workflow. This issue closes itself when a later check finds no drift.\n"
    )


def ensure_label(repository: str) -> None:
    gh(
        [
            "label",
            "create",
            LABEL,
            "--repo",
            repository,
            "--force",
            "--color",
            "d93f0b",
            "--description",
            "AWS differs from terraform/ (opened by the drift workflow)",
        ]
    )


def reconcile(exit_code: int | None, plan_text: str, repository: str, run_url: str) -> str:
    """Bring the drift issue in line with the plan's exit code; returns what was done, in words.

    A failed check (any code but 0 and 2, or None) is reported on the issue, then raised as DriftIssueError.
    """
    issues = open_drift_issues(repository)
    if exit_code not in (0, 2):
        if issues:
            gh(
                ["issue", "comment", str(issues[0]), "--repo", repository, "--body-file", "-"],
                stdin=render_failure(exit_code, run_url),
            )
            done = f"commented on #{issues[0]}"
        else:
            ensure_label(repository)
            url = gh(
                [
                    "issue",
                    "create",
                    "--repo",
                    repository,
                    "--title",
                    FAILED_TITLE,
                    "--label",
                    LABEL,
                    "--body-file",
                    "-",
                ],
                stdin=render_failure(exit_code, run_url),
            )
            done = f"opened {url.strip()}"
        code = "no exit code" if exit_code is None else f"exit code {exit_code}"
        raise DriftIssueError(f"the drift check failed ({code}), so it says nothing about drift; {done}")
    if exit_code == 0:
        for number in issues:
            gh(
                [
                    "issue",
                    "close",
                    str(number),
                    "--repo",
                    repository,
                    "--comment",
                    f"No drift any more as of {run_url}.",
                ]
            )
        return f"no drift; closed {', '.join(f'#{n}' for n in issues)}" if issues else "no drift"
    body = render_body(plan_text, run_url)
    if issues:
        number = issues[0]
        gh(["issue", "edit", str(number), "--repo", repository, "--title", TITLE, "--body-file", "-"], stdin=body)
        gh(["issue", "comment", str(number), "--repo", repository, "--body", f"Still drifted as of {run_url}."])
        return f"drift; updated #{number}"
    ensure_label(repository)
    url = gh(
        ["issue", "create", "--repo", repository, "--title", TITLE, "--label", LABEL, "--body-file", "-"], stdin=body
    )
    return f"drift; opened {url.strip()}"


def _read_plan_text(path: Path | None) -> str:
    if path is None or not path.is_file():
        raise DriftIssueError(f"the plan has changes but its text file {path} does not exist")
    return path.read_text()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m ci.drift_issue", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--exit-code", required=True, help="terraform plan -detailed-exitcode's exit code (empty: the plan never ran)"
    )
    parser.add_argument("--plan-text", type=Path, help="the plan as text (needed when the exit code is 2)")
    parser.add_argument("--repository", required=True, help="owner/name")
    parser.add_argument("--run-url", required=True, help="link to this workflow run")
    args = parser.parse_args(argv)
    exit_code = int(args.exit_code) if args.exit_code.strip().lstrip("-").isdigit() else None
    try:
        plan_text = _read_plan_text(args.plan_text) if exit_code == 2 else ""
        outcome = reconcile(exit_code, plan_text, args.repository, args.run_url)
    except CIError as error:
        return annotate_error("drift", error)
    print(outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
