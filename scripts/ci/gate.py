"""Checks that always run, so a required check can never go missing or pass by being skipped.

GitHub counts a skipped job as a success for a required check, and a workflow filtered out by
`paths:` reports no check at all. So the workflows run on every pull request and decide here:

    python3 -m ci.gate changed --repository owner/repo --pull-request 12 --stack
    python3 -m ci.gate changed --repository owner/repo --pull-request 12 --include '*' --exclude '*.md'
    python3 -m ci.gate verdict --check 'terraform-plan result' --changes-result success \\
        --changed true --fork false --dependabot false --plan-result success

`changed` lists the pull request's files (`gh api …/pulls/<n>/files`) and writes `changed=true` to
$GITHUB_OUTPUT when any matches an `--include` pattern and no `--exclude` pattern (fnmatch: `*`
crosses `/`), else `changed=false`; with no `--pull-request` (a push, a merge group) everything
counts as changed. `--stack` matches STACK_PATHS instead: the very list terraform-apply.yml's
`on.push.paths` holds (a test keeps the two equal), read with GitHub's filter-pattern rules, so the
pull request gate plans exactly what the apply would be started for.
`verdict` is the one required check of the terraform-plan workflow (the `result` job, `if: always()`):

| terraform changed | pull request from | plan      | verdict |
| ----------------- | ----------------- | --------- | ------- |
| unknown (the `changes` job failed) | any | any | fail |
| no                | any               | (skipped) | pass    |
| yes               | this repository   | success   | pass    |
| yes               | this repository   | anything else (failure, cancelled, skipped) | fail |
| yes               | a fork, or Dependabot | (skipped: no OIDC token) | fail, telling a maintainer what to do |

Only the standard library; GitHub through `gh` (ci.github).
"""

from __future__ import annotations

import argparse
import fnmatch
import re
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


# What the stack's plan is built from, in the syntax of `on.push.paths` ("Filter pattern cheat sheet",
# docs.github.com: `*` stops at `/`, `**` does not, a `!` pattern excludes what earlier ones matched,
# the last matching pattern decides). terraform/bootstrap is applied by hand. The same list triggers
# terraform-apply.yml (tests/test_workflows_reviewed_plan.py holds them equal).
STACK_PATHS = (
    "terraform/**",
    "!terraform/bootstrap/**",
    "lambda/**",
    "scripts/package_lambda.py",
    ".github/actions/aws-login/**",
    ".github/actions/terraform/**",
    ".github/workflows/terraform-apply.yml",
    ".github/workflows/terraform-plan.yml",
)

DEPENDABOT_MESSAGE = (
    "this pull request's run was started by Dependabot, and GitHub runs Dependabot's workflows as if they "
    "came from a fork (read-only token, no OIDC token, no repository secrets), so terraform/ cannot be "
    "planned here. A maintainer: review the diff, then push a commit of your own to the branch "
    "(git commit --allow-empty -m 'plan' && git push) or re-open it from a branch you push, so the run is yours"
)


def github_pattern(pattern: str) -> re.Pattern[str]:
    """A GitHub path filter pattern (without its `!`) as a regular expression."""
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    regex = "".join({"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part)) for part in parts)
    return re.compile(regex)


def matches_filters(path: str, patterns: Sequence[str]) -> bool:
    """Whether GitHub's `paths:` filter with these patterns would match the path (the last match decides)."""
    decided = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if github_pattern(pattern.removeprefix("!")).fullmatch(path):
            decided = not negated
    return decided


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


def verdict(
    *, check: str, changes_result: str, changed_output: str, fork: bool, dependabot: bool, plan_result: str, number: str
) -> str:
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
    if dependabot:
        raise GateError(f"{check}: {DEPENDABOT_MESSAGE}")
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
    c.add_argument("--include", action="append", default=[])
    c.add_argument("--exclude", action="append", default=[])
    c.add_argument("--stack", action="store_true", help="match STACK_PATHS (terraform-apply's trigger paths)")
    v = sub.add_parser("verdict", help="the summary check of the terraform-plan workflow")
    v.add_argument("--check", required=True, help="the check's name, for the message")
    v.add_argument("--changes-result", required=True, help="needs.changes.result")
    v.add_argument("--changed", default="", help="needs.changes.outputs.changed")
    v.add_argument("--fork", choices=["true", "false"], required=True)
    v.add_argument("--dependabot", choices=["true", "false"], default="false", help="github.actor is Dependabot")
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
            if args.stack:
                answer = len(files) >= FILES_LIMIT or any(matches_filters(f, STACK_PATHS) for f in files)
                shown = f"the stack's paths {list(STACK_PATHS)}"
            elif args.include:
                answer = changed(files, args.include, args.exclude)
                shown = f"{args.include} minus {args.exclude}"
            else:
                return annotate_error("gate", "changed needs --stack or --include patterns")
            print(f"{len(files)} files changed; matching {shown}: {str(answer).lower()}")
            write_output("changed", str(answer).lower())
            return 0
        print(
            verdict(
                check=args.check,
                changes_result=args.changes_result,
                changed_output=args.changed,
                fork=args.fork == "true",
                dependabot=args.dependabot == "true",
                plan_result=args.plan_result,
                number=args.pull_request,
            )
        )
    except CIError as error:
        return annotate_error("gate", error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
