"""`python -m trainer models promote VERSION` and `models rollback`: move the champion by hand.

    python -m trainer models promote 20261125T190312Z-push-… --reason "better on the holdout set"
    python -m trainer models rollback --reason "20261126… misclassifies trucks"
    python -m trainer models rollback --store s3://pushtrain-artifacts-… --by alice --reason "…"

Both are a compare-and-swap on `models/<model_name>/champion.json`, like the gate's: read it with
its ETag, write with `If-Match` (`If-None-Match: *` when there is none), and decide again when
another writer moved it in between. Each change appends to the champion's history who did it
(`--by`, default $GITHUB_ACTOR or the login name), why (`--reason`, required) and the action.

Before a version becomes champion, every file of it is checked against the SHA-256 its manifest
records: a version with a missing or altered file is refused.

`rollback` returns to the champion before the current one. The history is read as a stack (a
promotion pushes, a rollback pops), so two rollbacks go two champions back, not back and forth.

Exit codes, as every `models` command: 0 done (or already champion), 1 not found (no such version,
no champion, nothing to roll back to), refused (the version's files do not match its manifest) or
the store could not be read or updated, with one line saying which; 2 bad usage.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainer.cli_common import EXIT_FAILED, EXIT_OK, explain
from trainer.gate import CHAMPION_HISTORY_LIMIT, CHAMPION_SCHEMA, GateError, champion_key, read_champion, version_counts
from trainer.registry import verify_files
from trainer.store import NotFound, PreconditionFailed, Store, StoreError, open_store
from trainer.tracking import move_champion_alias
from trainer.versions import read_manifest

log = logging.getLogger(__name__)

COMMANDS = ("promote", "rollback")
MAX_CAS_ATTEMPTS = 16  # each lost race is another writer's success; the bound guards against a broken store


class ChampionChangeError(Exception):
    """The champion cannot be changed as asked (the CLI prints the message and exits 1)."""


@dataclass(frozen=True)
class ChampionChange:
    action: str  # "promote" | "rollback"
    version: str
    previous: str | None
    changed: bool  # False: the version was already champion


def verify_version(store: Store, model_name: str, version: str) -> dict[str, Any]:
    """The version's manifest, after checking every file it lists against its SHA-256.

    ChampionChangeError when the version is not published, its manifest is not JSON, or a file is
    missing or differs (trainer.registry.verify_files, the check `models show` prints).
    """
    try:
        manifest = read_manifest(store, model_name, version)
    except NotFound:
        raise ChampionChangeError(f"no published version {version!r} of {model_name!r} in {store.uri}") from None
    except ValueError as exc:  # read_manifest names the file and what is wrong with it
        raise ChampionChangeError(f"refusing {version}: {exc}") from exc
    problems = verify_files(store, model_name, version, manifest)
    if problems:
        raise ChampionChangeError(f"refusing {version}: its files do not match its manifest ({'; '.join(problems)})")
    return manifest


def champion_stack(record: Mapping[str, Any] | None) -> list[str]:
    """The champions in order, as the history says: promotions push, rollbacks pop."""
    stack: list[str] = []
    for entry in (record or {}).get("history") or []:
        if not isinstance(entry, dict) or "version" not in entry:
            continue
        if entry.get("action") == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != entry["version"]:
                stack.append(str(entry["version"]))  # a history cut by CHAMPION_HISTORY_LIMIT: trust the entry
        else:
            stack.append(str(entry["version"]))
    return stack


def _write(store: Store, key: str, record: dict[str, Any], etag: str | None) -> bool:
    body = json.dumps(record, indent=2, sort_keys=True).encode()
    try:
        if etag is None:
            store.put(key, body, if_none_match=True)
        else:
            store.put(key, body, if_match=etag)
    except PreconditionFailed:
        return False
    return True


def change_champion(
    store: Store, model_name: str, action: str, version: str | None, *, by: str, reason: str, now: str
) -> ChampionChange:
    """Promote `version` (action "promote") or go back one champion ("rollback", version None)."""
    key = champion_key(model_name)
    for _ in range(MAX_CAS_ATTEMPTS):
        try:
            champion, etag = read_champion(store, model_name)
        except GateError as exc:
            raise ChampionChangeError(str(exc)) from exc
        current = champion["version"] if champion else None
        if action == "rollback":
            stack = champion_stack(champion)
            if champion is None:
                raise ChampionChangeError(f"no champion for {model_name!r} in {store.uri}: nothing to roll back")
            if len(stack) < 2:
                raise ChampionChangeError(f"{current} is the first champion in the history: nothing to roll back to")
            target = stack[-2]
        else:
            assert version is not None  # noqa: S101 -- the parser requires it for promote
            target = version
        if target == current:
            return ChampionChange(action, target, current, changed=False)
        manifest = verify_version(store, model_name, target)
        try:
            counts = version_counts(store, model_name, target)
        except (NotFound, ValueError) as exc:
            raise ChampionChangeError(f"refusing {target}: {exc}") from exc
        accuracy = counts.accuracy
        entry = {"version": target, "accuracy": accuracy, **counts.to_dict(), "run_id": manifest.get("run_id"),
                 "promoted_at": now, "action": action, "by": by, "reason": reason, "replaced": current}  # fmt: skip
        history = [*(champion.get("history", []) if champion else []), entry][-CHAMPION_HISTORY_LIMIT:]
        record = {
            "schema": CHAMPION_SCHEMA,
            "model_name": model_name,
            "version": target,
            "accuracy": accuracy,
            **counts.to_dict(),
            "run_id": manifest.get("run_id"),
            "promoted_at": now,
            "previous": {"version": current, "accuracy": champion.get("accuracy")} if champion else None,
            "reason": f"{action} by {by}: {reason}",
            "history": history,
        }
        if _write(store, key, record, etag):
            log.info("%s: %s is champion of %s (was %s)", action, target, model_name, current)
            return ChampionChange(action, target, current, changed=True)
        log.info("champion of %s changed during the %s; deciding again", model_name, action)
    raise ChampionChangeError(
        f"could not update {store.uri_of(key)} after {MAX_CAS_ATTEMPTS} compare-and-swap attempts"
    )


# --- the `models promote|rollback` subcommands ---------------------------------------------------------


def default_actor(environ: Mapping[str, str]) -> str:
    """Who is acting: $GITHUB_ACTOR in a workflow, else the login name."""
    if environ.get("GITHUB_ACTOR"):
        return environ["GITHUB_ACTOR"]
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `promote` and `rollback` on the `models` subparsers (registry_cli)."""
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--by", default=default_actor(os.environ), help="who is acting (default: $GITHUB_ACTOR or you)")
    who.add_argument("--reason", required=True, help="why (recorded in the champion's history)")
    promote = commands.add_parser("promote", parents=[common, who], help="make a published version the champion")
    promote.add_argument("version", help="the version id (see `list`)")
    commands.add_parser("rollback", parents=[common, who], help="return to the champion before the current one")


def run(args: argparse.Namespace) -> int:
    """Run `promote` or `rollback`; print what changed; return the exit code."""
    from trainer.runstate import utc_now

    try:
        store = open_store(args.store)
        change = change_champion(
            store,
            args.model_name,
            args.command,
            getattr(args, "version", None),
            by=args.by,
            reason=args.reason,
            now=utc_now(),
        )
    except ChampionChangeError as exc:
        print(f"trainer models {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except StoreError as exc:
        print(f"trainer models {args.command}: {explain(exc)}", file=sys.stderr)
        return EXIT_FAILED
    if change.changed:
        move_champion_alias(args.model_name, change.version)  # nothing without MLFLOW_TRACKING_URI
    if args.json:
        print(json.dumps(change.__dict__, indent=2, sort_keys=True))
    elif change.changed:
        print(f"{change.version} is now the champion of {args.model_name} (was {change.previous or 'none'})")
    else:
        print(f"{change.version} is already the champion of {args.model_name}; nothing changed")
    return EXIT_OK
