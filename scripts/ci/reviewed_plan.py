"""Apply only a plan of main's head that makes exactly the changes of the plan the merge queue required.

Why the merge queue (README, "Deploy"): with pull requests planned on their own heads, a second pull
request merged before the first one's apply plans the first one's pending changes too, and the plan
of main then differs from what either pull request showed. The merge queue builds each group on
top of main and runs the required `terraform-plan result` check on that commit (`merge_group`):
GitHub merges exactly the commit it tested, so that plan is a plan of what main becomes. Its plan
job first waits until no terraform-apply run is still going (`settled`), so it plans against the
state every earlier merge has reached; two merges in a row each apply their own changes.

The steps (with `PYTHONPATH=scripts`):

    # terraform-plan.yml, merge_group only, before planning:
    python3 -m ci.reviewed_plan settled --repository owner/repo --timeout-minutes 120
    # terraform-apply.yml, plan job, after planning main (every event: push or workflow_dispatch):
    python3 -m ci.reviewed_plan check --repository owner/repo --commit <sha> --event push \\
        --changes "$RUNNER_TEMP/tfplan-<sha>.changes"
    # terraform-apply.yml, apply job, after the approval and before applying:
    python3 -m ci.reviewed_plan head --repository owner/repo --commit <sha>

`check`, for every event: refuses unless `--commit` is main's current head (a re-run of an old
terraform-apply run would plan an old commit against today's state). Then
- push: looks up the run that planned this commit in the merge queue, by what GitHub records about
  it and nothing an artifact's name can claim: workflow terraform-plan.yml, event `merge_group`,
  head sha = the commit, head repository = this repository, conclusion success (a fork's
  `pull_request` run executes the fork's own workflow file and can upload an artifact with any
  name). It downloads that run's artifact `tfplan-<sha>` by run id (expired ones are refused) and
  compares the normalised change sets (ci.plan_changes: addresses, actions, known after-values,
  replace paths, sensitive values hashed). Equal: the job goes on, and the production reviewers
  approve that plan. Anything else: exit 1 with the reason, nothing is uploaded, nothing applied;
- workflow_dispatch (started by hand): its own plan is the plan to review: written to the run's
  summary, and the production environment's reviewers approve exactly that plan file;
- any other event: refused (only those two may lead to an apply).

Only the standard library; GitHub through `gh` (`actions: read`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from ci.github import CIError, annotate_error, append_summary, json_value, run_tool
from ci.plan_changes import read_change_set

PLAN_WORKFLOW = "terraform-plan.yml"
APPLY_WORKFLOW = "terraform-apply.yml"
ACTIVE_STATUSES = ("queued", "in_progress", "waiting", "pending", "requested")  # "List workflow runs": status
HOW_TO_APPLY = (
    "To apply the current plan of main anyway, start the terraform-apply workflow by hand (Actions → "
    "terraform-apply → Run workflow on main): its own plan is shown in the run's summary, and the "
    "production environment's reviewers approve exactly that plan."
)


class PlanMismatchError(CIError):
    """The plan of main is not the reviewed one (or that cannot be shown); the message says which."""


class GitHub(Protocol):
    """The two things this module asks GitHub: a REST answer, and a run's artifact on disk."""

    def api(self, path: str) -> Any: ...

    def download(self, run_id: int, name: str, folder: Path) -> None: ...


class GhCli:
    """GitHub through the `gh` command-line tool (GH_TOKEN from the workflow)."""

    def __init__(self, repository: str) -> None:
        self.repository = repository

    def api(self, path: str) -> Any:
        return json_value(run_tool(["gh", "api", path]), f"the answer of GET {path}")

    def download(self, run_id: int, name: str, folder: Path) -> None:
        run_tool(
            ["gh", "run", "download", str(run_id), "--repo", self.repository, "--name", name, "--dir", str(folder)]
        )


# --- main's head ------------------------------------------------------------------------------------


def main_head(github: GitHub, repository: str) -> str:
    """The sha main points at now ("Get a reference", GET /repos/{o}/{r}/git/ref/heads/main)."""
    answer = github.api(f"repos/{repository}/git/ref/heads/main")
    sha = (answer.get("object") or {}).get("sha") if isinstance(answer, dict) else None
    if not isinstance(sha, str) or len(sha) != 40:
        raise PlanMismatchError(f"GitHub answered no commit for main: {json.dumps(answer)[:200]}")
    return sha


def require_head(github: GitHub, repository: str, commit: str) -> None:
    head = main_head(github, repository)
    if head != commit:
        raise PlanMismatchError(
            f"the planned commit {commit} is not main's head ({head}): this run (or a re-run of it) would "
            "apply an old commit's plan against today's state; the run for main's head applies instead"
        )


# --- the plan run the merge queue required ----------------------------------------------------------


def plan_run(github: GitHub, repository: str, commit: str) -> dict[str, Any]:
    """The newest successful merge-queue run of terraform-plan.yml for `commit`, from this repository.

    "List workflow runs for a workflow" (GET /repos/{o}/{r}/actions/workflows/{file}/runs) filters by
    event, head_sha and status on GitHub's side; every field is checked again here, so a wider answer
    can never let a fork's run through.
    """
    path = (
        f"repos/{repository}/actions/workflows/{PLAN_WORKFLOW}/runs"
        f"?event=merge_group&head_sha={commit}&status=success&per_page=100"
    )
    answer = github.api(path)
    runs = answer.get("workflow_runs", []) if isinstance(answer, dict) else []
    trusted = [
        run
        for run in runs
        if isinstance(run, dict)
        and run.get("event") == "merge_group"
        and run.get("head_sha") == commit
        and run.get("conclusion") == "success"
        and (run.get("head_repository") or {}).get("full_name") == repository
        and str(run.get("path", "")).split("@")[0] == f".github/workflows/{PLAN_WORKFLOW}"
    ]
    if not trusted:
        raise PlanMismatchError(
            f"no successful merge-queue run of {PLAN_WORKFLOW} planned {commit} in {repository}: it reached "
            "main without the merge queue (or its plan failed), so no required plan of it exists"
        )
    return max(trusted, key=lambda run: (int(run.get("run_number", 0)), int(run.get("run_attempt", 0))))


def reviewed_changes(github: GitHub, repository: str, run: dict[str, Any], commit: str) -> str:
    """The text of the .changes file in that run's artifact `tfplan-<commit>` (by run id, never by name alone)."""
    name = f"tfplan-{commit}"
    run_id = int(run["id"])
    answer = github.api(f"repos/{repository}/actions/runs/{run_id}/artifacts?name={quote(name)}&per_page=100")
    listed = [a for a in (answer.get("artifacts", []) if isinstance(answer, dict) else []) if a.get("name") == name]
    live = [a for a in listed if not a.get("expired")]
    if not live:
        state = "expired" if listed else "missing"
        raise PlanMismatchError(
            f"the plan artifact {name} of run {run_id} is {state}, so the required plan cannot be compared"
        )
    with tempfile.TemporaryDirectory() as folder:
        github.download(run_id, name, Path(folder))
        found = sorted(Path(folder).rglob("*.changes"))
        if len(found) != 1:
            raise PlanMismatchError(f"the artifact {name} of run {run_id} holds {len(found)} .changes files, not one")
        return found[0].read_text()


def difference(merged: str, reviewed: str) -> str:
    """The two change sets' differences in words (by address); empty when they are equal."""
    ours = read_change_set(merged, "the plan of main")
    theirs = read_change_set(reviewed, "the required plan")
    parts = []
    for address in sorted(set(ours) | set(theirs)):
        mine, required = ours.get(address), theirs.get(address)
        if mine == required:
            continue
        if required is None:
            parts.append(f"only in the plan of main: {'+'.join(mine['actions'])} {address}")  # type: ignore[index]
        elif mine is None:
            parts.append(f"only in the required plan: {'+'.join(required['actions'])} {address}")
        else:
            fields = sorted(k for k in set(mine) | set(required) if mine.get(k) != required.get(k))
            parts.append(f"{address} differs in {', '.join(fields)}")
    return "; ".join(parts)


# --- the commands -----------------------------------------------------------------------------------


def check(github: GitHub, repository: str, commit: str, event: str, changes: Path) -> str:
    """What was checked, in words; PlanMismatchError when the plan must not be applied."""
    if event not in {"push", "workflow_dispatch"}:
        raise PlanMismatchError(f"event {event!r} never applies: only a push to main or a run started by hand")
    if not changes.is_file():
        raise PlanMismatchError(f"the plan of main left no change set at {changes}")
    merged = changes.read_text()
    count = len(read_change_set(merged, "the plan of main"))
    require_head(github, repository, commit)
    if event == "workflow_dispatch":
        return (
            f"started by hand on main's head {commit[:12]}: its own plan ({count} resource changes, in this "
            "summary) is the plan to review; the production reviewers approve exactly this plan file"
        )
    run = plan_run(github, repository, commit)
    diff = difference(merged, reviewed_changes(github, repository, run, commit))
    if diff:
        raise PlanMismatchError(
            f"the plan of main makes other changes than the plan the merge queue required (run {run['id']}): "
            f"{diff} (the state changed after that plan)"
        )
    return f"the plan of main makes the same {count} resource changes as the merge queue's plan (run {run['id']})"


def settled(
    github: GitHub,
    repository: str,
    *,
    timeout_s: float,
    poll_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Wait until no terraform-apply run is queued, running or waiting for approval; CIError on timeout."""
    deadline = clock() + timeout_s
    while True:
        active = []
        for status in ACTIVE_STATUSES:
            answer = github.api(
                f"repos/{repository}/actions/workflows/{APPLY_WORKFLOW}/runs?status={status}&per_page=100"
            )
            active += [run for run in answer.get("workflow_runs", []) if run.get("status") == status]
        if not active:
            return "no terraform-apply run is pending: this plan starts from the state every earlier merge reached"
        shown = ", ".join(f"{run.get('id')} ({run.get('status')}, {str(run.get('head_sha'))[:12]})" for run in active)
        if clock() >= deadline:
            raise CIError(
                f"terraform-apply runs still pending after {timeout_s / 60:.0f} minutes: {shown}. Approve or "
                "reject them, then add this pull request to the merge queue again"
            )
        print(f"waiting for terraform-apply runs to finish: {shown}", flush=True)
        sleep(poll_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m ci.reviewed_plan", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="refuse a plan of main that is not the merge queue's (or not of main's head)")
    c.add_argument("--repository", required=True)
    c.add_argument("--commit", required=True, help="the commit of main that was planned (github.sha)")
    c.add_argument("--event", required=True, help="github.event_name: push or workflow_dispatch")
    c.add_argument("--changes", type=Path, required=True, help="the plan's change set (ci.plan_changes)")
    h = sub.add_parser("head", help="refuse unless the commit is still main's head (the apply job, after approval)")
    h.add_argument("--repository", required=True)
    h.add_argument("--commit", required=True)
    s = sub.add_parser("settled", help="wait until no terraform-apply run is pending (merge queue plans)")
    s.add_argument("--repository", required=True)
    s.add_argument("--timeout-minutes", type=float, default=120.0)
    s.add_argument("--poll-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    github = GhCli(args.repository)
    try:
        if args.command == "check":
            outcome = check(github, args.repository, args.commit, args.event, args.changes)
        elif args.command == "head":
            require_head(github, args.repository, args.commit)
            outcome = f"{args.commit} is still main's head"
        else:
            outcome = settled(github, args.repository, timeout_s=args.timeout_minutes * 60, poll_s=args.poll_seconds)
    except CIError as error:
        message = f"{error}. Nothing will be applied. {HOW_TO_APPLY}" if args.command != "settled" else str(error)
        append_summary(f"### reviewed plan: refused\n\n{message}")
        return annotate_error("reviewed plan", message)
    append_summary(f"### reviewed plan: {outcome}")
    print(outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
