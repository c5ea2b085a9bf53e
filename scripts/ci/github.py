"""GitHub Actions plumbing every `ci` module shares: one error, the step's outputs and summary, the tool runner.

    from ci.github import CIError, run_tool, write_output
    sha = run_tool(["gh", "api", "repos/owner/repo/commits/main", "--jq", ".sha"]).strip()
    write_output("sha", sha)

A step reports an expected failure by raising CIError (or a subclass naming the step's concern) with
a message that names the wrong value; the module's `main` prints it as one `::error` annotation and
exits 1, never a traceback. `aws` and `gh` are reached only through `run_tool`, so the tests put
recording fakes of both on PATH (tests/fakebin.py). This module imports nothing from the others.

Outputs and summary follow "Workflow commands for GitHub Actions" (docs.github.com, "Setting an
output parameter", "Multiline strings", "Adding a job summary").
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class CIError(Exception):
    """A CI step cannot go on; the message says why and names the value."""


def run_tool(args: Sequence[str], stdin: str | None = None) -> str:
    """Run `aws`, `gh` or another tool; its stdout, or CIError carrying its stderr."""
    result = subprocess.run(list(args), input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CIError(f"`{' '.join(args[:3])} …` failed (exit {result.returncode}): {result.stderr.strip()}")
    return result.stdout


def json_value(text: str, what: str) -> Any:
    """`text` parsed as JSON, or CIError naming `what` was not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CIError(f"{what} is not JSON ({error}): {text[:200]!r}") from error


def json_object(text: str, what: str) -> dict[str, Any]:
    """`text` parsed as one JSON object, or CIError naming `what`."""
    value = json_value(text, what)
    if not isinstance(value, dict):
        raise CIError(f"{what} is not a JSON object: {text[:200]!r}")
    return value


def write_output(name: str, value: str) -> None:
    """Append `name=value` to $GITHUB_OUTPUT (single-line values only; printed when run outside Actions)."""
    if "\n" in value:
        raise CIError(f"output {name} must be one line, got {value!r}")
    path = os.environ.get("GITHUB_OUTPUT")
    if not path:
        print(f"output {name}={value}")
        return
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write(f"{name}={value}\n")


def write_multiline_output(name: str, value: str) -> None:
    """Append a multi-line value to $GITHUB_OUTPUT, fenced by a random delimiter it cannot contain."""
    delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
    with Path(os.environ["GITHUB_OUTPUT"]).open("a", encoding="utf-8") as fh:
        fh.write(f"{name}<<{delimiter}\n{value.rstrip(chr(10))}\n{delimiter}\n")


def append_summary(markdown: str) -> None:
    """Append markdown to $GITHUB_STEP_SUMMARY (nothing outside Actions)."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with Path(path).open("a", encoding="utf-8") as fh:
            fh.write(markdown.rstrip("\n") + "\n")


def annotate_error(title: str, error: Exception | str) -> int:
    """Print one `::error` annotation for an expected failure; the exit status to return (1)."""
    print(f"::error title={title}::{error}")
    return 1
