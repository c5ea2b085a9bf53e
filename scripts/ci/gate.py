"""Checks that always run, so a required check can never go missing or pass by being skipped.

GitHub counts a skipped job as a success for a required check, and a workflow filtered out by
`paths:` reports no check at all. So the workflows run on every pull request and decide here:

    python3 -m ci.gate changed --repository owner/repo --pull-request 12 \\
        --include 'terraform/*' --exclude 'terraform/bootstrap/*'
    python3 -m ci.gate verdict --check 'terraform-plan result' --changes-result success \\
        --changed true --fork false --plan-result success

`changed` lists the pull request's files (`gh api …/pulls/<n>/files`) and writes `changed=true` to
$GITHUB_OUTPUT when any matches an `--include` pattern and no `--exclude` pattern (fnmatch: `*`
crosses `/`), else `changed=false`; with no `--pull-request` (a push) everything counts as changed.
`verdict` is the one required check of the terraform-plan workflow (the `result` job, `if: always()`):

| terraform changed | pull request from | plan      | verdict |
| ----------------- | ----------------- | --------- | ------- |
| unknown (the `changes` job failed) | any | any | fail |
| no                | any               | (skipped) | pass    |
| yes               | this repository   | success   | pass    |
| yes               | this repository   | anything else (failure, cancelled, skipped) | fail |
| yes               | a fork            | (skipped: no OIDC token) | fail, telling a maintainer what to do |

Only the standard library; GitHub through `gh` (ci.github).
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections.abc import Sequence

from ci.github import CIError, annotate_error, json_value, run_tool, write_output

# GitHub lists at most 3,000 files of a pull request; a longer list cannot prove that nothing changed.
FILES_LIMIT = 3000

FORK_MESSAGE = (
    "this pull request comes from a fork, and a fork's workflow gets no OIDC token and no repository "
    "variables, so terraform/ cannot be planned here. A maintainer: review the diff, then push the same "
    "commits to a branch of this repository "
    "(gh pr checkout {number} && git push origin HEAD:refs/heads/fork-pr-{number}) and open a pull request from "
    "that branch; its plan is the one to review and merge"
)


class GateError(CIError):
    """The gate cannot decide; the message says why."""


def gh_json(args: Sequence[str]) -> object:
    return json_value(run_tool(["gh", *args]), f"the answer of `gh {' '.join(args[:2])}`")


def pull_request_files(repository: str, number: int) -> list[str]:
    """Every path the pull request adds, changes, removes or renames (both names of a rename)."""
    pages = gh_json(["api", "--paginate", "--slurp", f"repos/{repository}/pulls/{number}/files?per_page=100"])
    if not isinstance(pages, list):
        raise GateError(f"`gh api …/pulls/{number}/files` answered {str(pages)[:200]!r}, not pages of files")
    files: list[str] = []
    for page in pages:
        for item in page if isinstance(page, list) else []:
            files.append(str(item["filename"]))
            if item.get("previous_filename"):
                files.append(str(item["previous_filename"]))
    return files


def matches(path: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, p) for p in include) and not any(fnmatch.fnmatchcase(path, p) for p in exclude)


def changed(files: Sequence[str], include: Sequence[str], exclude: Sequence[str]) -> bool:
    """True when any file is included and not excluded, or when the list may be cut short."""
    if len(files) >= FILES_LIMIT:
        return True
    return any(matches(path, include, exclude) for path in files)


def verdict(*, check: str, changes_result: str, changed_output: str, fork: bool, plan_result: str, number: str) -> str:
    """The summary check's answer: a line saying why it passes; GateError saying why it fails."""
    if changes_result != "success" or changed_output not in {"true", "false"}:
        raise GateError(
            f"{check}: could not tell whether this pull request changes terraform/ (the changes job ended "
            f"'{changes_result}'): re-run the workflow"
        )
    if changed_output == "false":
        return f"{check}: nothing the stack is built from changed; no plan needed"
    if fork:
        raise GateError(f"{check}: {FORK_MESSAGE.format(number=number)}")
    if plan_result != "success":
        raise GateError(
            f"{check}: the plan did not succeed (the plan job ended '{plan_result}'): read its log and "
            "the plan comment, fix, and push again"
        )
    return f"{check}: the plan succeeded; review it in the pull request's plan comment"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m ci.gate", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("changed", help="does the pull request change files matching the patterns?")
    c.add_argument("--repository", required=True)
    c.add_argument("--pull-request", default="", help="its number; empty for a push (everything changed)")
    c.add_argument("--include", action="append", required=True)
    c.add_argument("--exclude", action="append", default=[])
    v = sub.add_parser("verdict", help="the summary check of the terraform-plan workflow")
    v.add_argument("--check", required=True, help="the check's name, for the message")
    v.add_argument("--changes-result", required=True, help="needs.changes.result")
    v.add_argument("--changed", default="", help="needs.changes.outputs.changed")
    v.add_argument("--fork", choices=["true", "false"], required=True)
    v.add_argument("--plan-result", required=True, help="needs.plan.result")
    v.add_argument("--pull-request", default="", help="its number, for the fork message")
    args = parser.parse_args(argv)
    try:
        if args.command == "changed":
            if not args.pull_request:
                print("not a pull request: everything counts as changed")
                write_output("changed", "true")
                return 0
            files = pull_request_files(args.repository, int(args.pull_request))
            answer = changed(files, args.include, args.exclude)
            print(f"{len(files)} files changed; matching {args.include} minus {args.exclude}: {str(answer).lower()}")
            write_output("changed", str(answer).lower())
            return 0
        print(
            verdict(
                check=args.check,
                changes_result=args.changes_result,
                changed_output=args.changed,
                fork=args.fork == "true",
                plan_result=args.plan_result,
                number=args.pull_request,
            )
        )
    except CIError as error:
        return annotate_error("gate", error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
