"""`python -m trainer sweeps show ID`: one sweep, from its record `sweeps/<ID>.json` in the store.

    python -m trainer sweeps show 1234                       # state, ranking by validation, refit, gate, charts
    python -m trainer sweeps show 1234 --json                # the whole sweep record
    python -m trainer sweeps show 1234 --store s3://pushtrain-artifacts-…

The trigger writes the record (docs/contracts.md, "The sweep record") and renders its summary into it
(`summary_markdown`: the ranking by validation accuracy, the stopped-early runs and their rung, the refit
and the gate's decision, a Mermaid chart per swept parameter): this prints that same text, the one the
retrain workflow's summary shows. The store is `--store`, else `TRAINER_STORE_URI`, else the local default.
Exit codes: 0 shown, 1 no such sweep / unreadable record / store unreachable, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from trainer.cli_common import COMMAND, EXIT_FAILED, EXIT_OK, EXIT_USAGE, explain, quiet_pipe, store_options
from trainer.store import NotFound, Store, StoreError, open_store

_SWEEP_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")  # trainer.config's sweep_id
STATES = ("running", "refitting", "finished")


class SweepRecordError(ValueError):
    """The sweep record is not a sweep record; the message says what is wrong and where."""


def sweep_key(sweep_id: str) -> str:
    return f"sweeps/{sweep_id}.json"


def read_sweep(store: Store, sweep_id: str) -> dict[str, Any]:
    """The sweep record, checked for the fields `show` prints; NotFound or SweepRecordError otherwise."""
    where = store.uri_of(sweep_key(sweep_id))
    raw = store.get(sweep_key(sweep_id))
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SweepRecordError(f"{where} is not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise SweepRecordError(f"{where} is not a JSON object")
    if record.get("state") not in STATES:
        raise SweepRecordError(f"{where}: state {record.get('state')!r} is not one of {STATES}")
    runs = record.get("runs")
    if not isinstance(runs, list) or not all(isinstance(run, dict) for run in runs):
        raise SweepRecordError(f"{where}: runs is not a list of objects")
    if not isinstance(record.get("summary_markdown", ""), str):
        raise SweepRecordError(f"{where}: summary_markdown is not text")
    return record


def render(record: dict[str, Any]) -> str:
    refit = record.get("refit") or {}
    head = (
        f"sweep {record.get('request_id')}: {record['state']}, {len(record['runs'])} set(s) on "
        f"{record.get('image_digest')}, at most {record.get('max_parallel')} at once"
        + (f", cap {record['max_cost_usd']} USD" if record.get("max_cost_usd") is not None else "")
        + (f", early stopping eta={record['eta']}" if record.get("eta") else "")
        + (f"; refit {refit.get('run_id')} {refit.get('ended') or 'running'}" if refit else "")
        + (f", gate: {(refit.get('gate') or {}).get('outcome')}" if refit.get("gate") else "")
    )
    return head + "\n\n" + (record.get("summary_markdown") or "(no run has been started yet)")


def _parser() -> argparse.ArgumentParser:
    common = store_options()
    parser = argparse.ArgumentParser(prog=f"{COMMAND} sweeps", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", parents=[common], help="one sweep: ranking, refit, gate, charts")
    show.add_argument("sweep_id", help="the sweep's request id")
    return parser


@quiet_pipe
def main(argv: Sequence[str]) -> int:
    """Run one `sweeps` command; return the exit code."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse exits 2 on bad usage and 0 on --help
        return int(exc.code or 0)
    if not _SWEEP_ID.fullmatch(args.sweep_id) or ".." in args.sweep_id:
        print(f"trainer sweeps: {args.sweep_id!r} is not a sweep id ([A-Za-z0-9._-], at most 64)", file=sys.stderr)
        return EXIT_USAGE
    try:
        store = open_store(args.store)
        record = read_sweep(store, args.sweep_id)
    except BrokenPipeError:
        raise  # quiet_pipe ends it quietly
    except (NotFound, SweepRecordError) as exc:
        problem = f"no sweep {args.sweep_id} in {args.store}" if isinstance(exc, NotFound) else str(exc)
        print(f"trainer sweeps: {problem}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:  # a store URI that is not one
        print(f"trainer sweeps: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreError, OSError) as exc:
        print(f"trainer sweeps: {explain(exc)}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(record, indent=2, sort_keys=True) if args.json else render(record))
    return EXIT_OK
