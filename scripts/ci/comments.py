"""Sticky pull-request comments: one comment per marker, edited in place, never duplicated.

    upsert_comment("owner/repo", 42, "<!-- pushtrain:preview -->", body)

The marker is an HTML comment (invisible on GitHub) that the body carries on its first line. The
upsert lists the issue's comments written by the workflow's own bot, edits the first one holding the
marker (`PATCH`), and creates one only when none does (`POST`). Only the bot's comments count: a
person quoting the marker cannot make the workflow edit their comment (GitHub would refuse anyway).
Through `gh api`, so tests put a recording fake `gh` on PATH.
"""

from __future__ import annotations

import json
import re

from ci.github import CIError, run_tool

BOT = "github-actions[bot]"
MARKER = re.compile(r"<!-- pushtrain:[a-z0-9:._-]{1,80} -->")
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_GIT_SHA = re.compile(r"[0-9a-f]{40}")


def with_marker(marker: str, body: str) -> str:
    """The body with the marker as its first line (added once)."""
    if not MARKER.fullmatch(marker):
        raise CIError(f"marker {marker!r} must match {MARKER.pattern}")
    return body if body.startswith(marker + "\n") else f"{marker}\n{body}"


def find_comment(list_path: str, marker: str) -> int | None:
    """The id of the bot's first comment under list_path (an API path) that holds the marker, or None."""
    query = f".[] | select(.user.login == {json.dumps(BOT)} and (.body | contains({json.dumps(marker)}))) | .id"
    out = run_tool(["gh", "api", "--paginate", list_path, "--jq", query])
    ids = [line.strip() for line in out.splitlines() if line.strip()]
    if ids and not ids[0].isdecimal():
        raise CIError(f"gh answered a comment id that is not a number: {ids[0]!r}")
    return int(ids[0]) if ids else None


def _upsert(list_path: str, edit_path: str, marker: str, body: str) -> str:
    text = with_marker(marker, body)
    existing = find_comment(list_path, marker)
    payload = json.dumps({"body": text})
    if existing is None:
        run_tool(["gh", "api", "--method", "POST", list_path, "--input", "-"], payload)
        return "created"
    run_tool(["gh", "api", "--method", "PATCH", edit_path.format(id=existing), "--input", "-"], payload)
    return "updated"


def _check_repository(repository: str) -> None:
    if not _REPOSITORY.fullmatch(repository):
        raise CIError(f"repository {repository!r} is not owner/name")


def upsert_comment(repository: str, issue: int, marker: str, body: str) -> str:
    """Create or update the sticky comment on a pull request (or issue); "created" or "updated"."""
    _check_repository(repository)
    if issue < 1:
        raise CIError(f"pull request number {issue} is not a number GitHub gives")
    return _upsert(
        f"repos/{repository}/issues/{issue}/comments", f"repos/{repository}/issues/comments/{{id}}", marker, body
    )


def upsert_commit_comment(repository: str, commit: str, marker: str, body: str) -> str:
    """The same on a commit (a re-run workflow edits its comment instead of adding a second)."""
    _check_repository(repository)
    if not _GIT_SHA.fullmatch(commit):
        raise CIError(f"commit {commit!r} is not 40 hex characters")
    return _upsert(f"repos/{repository}/commits/{commit}/comments", f"repos/{repository}/comments/{{id}}", marker, body)


def pull_requests_of_commit(repository: str, commit: str) -> list[int]:
    """Numbers of the merged pull requests that brought the commit in (the commit's own PRs)."""
    query = ".[] | select(.merged_at != null) | .number"
    out = run_tool(["gh", "api", f"repos/{repository}/commits/{commit}/pulls", "--jq", query])
    numbers = [line.strip() for line in out.splitlines() if line.strip()]
    bad = [n for n in numbers if not n.isdecimal()]
    if bad:
        raise CIError(f"gh answered pull request numbers that are not numbers: {bad}")
    return [int(n) for n in numbers]
