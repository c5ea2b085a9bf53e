"""`python -m trainer runs list|show`: the runs in a store, from their records `runs/<run_id>/status.json`.

    python -m trainer runs list                               # newest first: state, attempts, timings, version
    python -m trainer runs list --state failed --json
    python -m trainer runs list --git-sha 0123abc             # the run(s) of a commit (a prefix of 7+ characters)
    python -m trainer runs list --digest sha256:…             # the run(s) of an image
    python -m trainer runs show push-0123456789abcdef0123     # one run: its history, reason, version, report
    python -m trainer runs list --store s3://pushtrain-artifacts-…
    python -m trainer runs compare RUN_A RUN_B [--png c.png] [--markdown]  # side by side (trainer.compare)

A push's run id is a hash of the image digest (docs/contracts.md), so `--git-sha` or `--digest` is
how to find it. The store is `--store`, else `TRAINER_STORE_URI`, else the trainer's local default.
A record that cannot be read is listed as one line saying why; nothing prints a traceback.
Exit codes: 0 shown (an empty list included), 1 no such run / unreadable record / store unreachable,
2 bad usage, or a --store that does not exist or holds neither runs/ nor models/.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from trainer import runstate
from trainer.cli_common import (
    COMMAND,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    StoreMissing,
    explain,
    quiet_pipe,
    require_store,
    store_options,
)
from trainer.store import NotFound, Store, StoreError, open_store

_STATUS = re.compile(r"runs/(?P<run_id>[A-Za-z0-9._-]+)/status\.json")
_GIT_SHA_PREFIX = re.compile(r"[0-9a-f]{7,40}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
REASON_WIDTH = 60  # characters of a failure reason shown in the list; `show` prints all of it


@dataclass(frozen=True)
class RunRow:
    """One run as listed: its record, or why the record could not be read."""

    run_id: str
    record: dict[str, Any] | None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.record is None:
            return {"run_id": self.run_id, "problem": self.problem}
        return {**self.record, "timings": timings(self.record)}


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def timings(record: dict[str, Any]) -> dict[str, float | None]:
    """Seconds queued (created until first running), running (first running until the end) and in all."""
    history = [h for h in record.get("history") or [] if isinstance(h, dict)]
    created = _parse_time(record.get("created_at"))
    started = next((_parse_time(h.get("at")) for h in history if h.get("state") == "running"), None)
    ended = _parse_time(record.get("updated_at")) if record.get("state") in ("succeeded", "failed") else None

    def span(a: datetime | None, b: datetime | None) -> float | None:
        return (b - a).total_seconds() if a and b else None

    return {"queued_s": span(created, started), "running_s": span(started, ended), "total_s": span(created, ended)}


def read_runs(store: Store) -> list[RunRow]:
    """Every run record in the store, newest first; unreadable ones with the reason."""
    rows = []
    for key in store.list("runs/"):
        match = _STATUS.fullmatch(key)
        if match is None:
            continue  # checkpoints, reports, runs/_taskdefs/<family>/<digest>.json: not run records
        run_id = match["run_id"]
        try:
            record = runstate.read_status(store, run_id)
        except (runstate.RunStateError, StoreError) as exc:
            rows.append(RunRow(run_id, None, str(exc)))
            continue
        if record is not None:
            rows.append(RunRow(run_id, record))
    return sorted(rows, key=lambda r: (str((r.record or {}).get("created_at") or ""), r.run_id), reverse=True)


def matches(row: RunRow, *, state: str | None, git_sha: str | None, digest: str | None) -> bool:
    if row.record is None:
        return state is None and git_sha is None and digest is None
    record = row.record
    if state is not None and record.get("state") != state:
        return False
    if git_sha is not None and not str(record.get("git_sha") or "").startswith(git_sha):
        return False
    return digest is None or record.get("image_digest") == digest


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _list(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    require_store(store)
    rows = [r for r in read_runs(store) if matches(r, state=args.state, git_sha=args.git_sha, digest=args.digest)]
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2, sort_keys=True))
        return EXIT_OK
    if not rows:
        print(
            f"no runs in {store.uri} match"
            if (args.state or args.git_sha or args.digest)
            else f"no runs in {store.uri}"
        )
        return EXIT_OK
    print(f"{'run':<38} {'state':<11} {'att':>3} {'source':<11} {'created':<20} {'ran':>6}  version / reason")
    for row in rows:
        if row.record is None:
            print(f"{row.run_id:<38} {'unreadable':<11} {'-':>3} {'-':<11} {'-':<20} {'-':>6}  {row.problem}")
            continue
        r = row.record
        detail = r.get("version") or (str(r.get("reason") or "")[:REASON_WIDTH])
        print(
            f"{row.run_id:<38} {r.get('state', '?'):<11} {r.get('attempt', '?')!s:>3} {r.get('source', '?')!s:<11} "
            f"{r.get('created_at', '?')!s:<20} {_duration(timings(r)['running_s']):>6}  {detail}"
        )
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    require_store(store)
    try:
        record = runstate.read_status(store, args.run_id)
    except runstate.RunStateError as exc:
        print(f"trainer runs: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if record is None:
        hint = f"see `{COMMAND} runs list --store {args.store}`"
        print(f"trainer runs show: no run {args.run_id!r} in {store.uri} ({hint})", file=sys.stderr)
        return EXIT_FAILED
    report_key = f"runs/{args.run_id}/report.md"
    report = store.uri_of(report_key) if store.exists(report_key) else None
    if args.json:
        print(json.dumps({**record, "timings": timings(record), "report": report}, indent=2, sort_keys=True))
        return EXIT_OK
    spans = timings(record)
    rows = [
        ("run", record.get("run_id")),
        ("state", record.get("state")),
        ("attempts", record.get("attempt")),
        ("source", record.get("source")),
        ("image", record.get("image_digest") or "-"),
        ("git sha", record.get("git_sha") or "-"),
        ("params", json.dumps(record.get("params") or {}, sort_keys=True)),
        ("task", record.get("task_arn") or "-"),
        ("created", record.get("created_at")),
        ("updated", record.get("updated_at")),
        ("queued", _duration(spans["queued_s"])),
        ("ran", _duration(spans["running_s"])),
        ("version", record.get("version") or "-"),
        ("reason", record.get("reason") or "-"),
        ("report", report or "-"),
    ]
    for name, value in rows:
        print(f"{name:<9} {value}")
    print("history:")
    for entry in record.get("history") or []:
        if isinstance(entry, dict):
            reason = f"  {entry['reason']}" if entry.get("reason") else ""
            print(f"  {entry.get('at')}  {entry.get('state'):<11} attempt {entry.get('attempt')}{reason}")
    if record.get("state") == "succeeded" and record.get("version"):
        print(f"model:    {COMMAND} models show {record['version']} --store {args.store}")
    return EXIT_OK


def _git_sha(text: str) -> str:
    if not _GIT_SHA_PREFIX.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a git sha or a prefix of 7+ lowercase hex characters")
    return text


def _digest(text: str) -> str:
    if not _DIGEST.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not sha256:<64 hex>")
    return text


def _parser() -> argparse.ArgumentParser:
    common = store_options()
    parser = argparse.ArgumentParser(prog=f"{COMMAND} runs", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", parents=[common], help="runs, newest first")
    listing.add_argument("--state", choices=runstate.STATES, help="only runs in this state")
    listing.add_argument("--git-sha", type=_git_sha, help="only runs of this commit (a prefix of 7+ characters)")
    listing.add_argument("--digest", type=_digest, help="only runs of this image digest")
    show = commands.add_parser("show", parents=[common], help="one run's record, timings and history")
    show.add_argument("run_id", help="the run id (see `list`)")
    compare = commands.add_parser(
        "compare", parents=[common], help="runs side by side: settings that differ, metrics, cost, curves"
    )
    compare.add_argument("run_ids", nargs="+", metavar="RUN", help="two or more run ids (see `list`)")
    compare.add_argument("--png", type=Path, help="also write the test-accuracy curves, overlaid, to this PNG")
    compare.add_argument("--markdown", action="store_true", help="a Markdown table and the Mermaid chart")
    return parser


def _compare(args: argparse.Namespace) -> int:
    from trainer import compare

    if len(args.run_ids) < 2 or len(set(args.run_ids)) != len(args.run_ids):
        print("trainer runs compare: give two or more different run ids", file=sys.stderr)
        return EXIT_USAGE
    store = open_store(args.store)
    require_store(store)
    try:
        sides = [compare.load_side(store, args.model_name, run_id) for run_id in args.run_ids]
    except (compare.CompareError, runstate.RunStateError) as exc:
        print(f"trainer runs compare: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(compare.to_json(sides), indent=2, sort_keys=True))
    else:
        print(compare.markdown(sides) if args.markdown else compare.text_table(sides))
    if args.png is not None:
        print(f"curves: {compare.plot(sides, args.png)}", file=sys.stderr)
    return EXIT_OK


@quiet_pipe
def main(argv: Sequence[str]) -> int:
    """Run one `runs` command; return the exit code."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse exits 2 on bad usage and 0 on --help
        return int(exc.code or 0)
    try:
        return {"list": _list, "show": _show, "compare": _compare}[args.command](args)
    except BrokenPipeError:
        raise  # quiet_pipe ends it quietly
    except (ValueError, StoreMissing) as exc:  # a store URI that is not one, or names no store
        print(f"trainer runs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreError, NotFound, OSError) as exc:
        print(f"trainer runs: {explain(exc)}", file=sys.stderr)
        return EXIT_FAILED
