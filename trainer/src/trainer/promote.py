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
from trainer.counts import Counts
from trainer.gate import (
    CHAMPION_HISTORY_LIMIT,
    CHAMPION_SCHEMA,
    Compared,
    GateError,
    champion_key,
    parse_champion,
    previous_entry,
    version_counts,
)
from trainer.registry import verify_files
from trainer.store import NotFound, Store, StoreError, open_store
from trainer.tracking import move_champion_alias
from trainer.versions import read_manifest

log = logging.getLogger(__name__)

COMMANDS = ("promote", "rollback")


class ChampionChangeError(Exception):
    """The champion cannot be changed as asked (the CLI prints the message and exits 1)."""


@dataclass(frozen=True)
class ChampionChange:
    action: str  # "promote" | "rollback"
    version: str
    previous: str | None
    changed: bool  # False: the version was already champion
    note: str = ""  # how much less accurate the new champion is than the one it replaced ("" when it is not)


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


def _counts_or_none(store: Store, model_name: str, version: str | None) -> Counts | None:
    """A version's checked counts, or None when it has none to compare (not published, damaged)."""
    if version is None:
        return None
    try:
        return version_counts(store, model_name, version)
    except (NotFound, ValueError):
        return None


def _less_accurate(target: Counts, current: Counts | None) -> str | None:
    """How much less accurate the target is than the champion, in words; None when it is not."""
    if current is None or target.fraction >= current.fraction:
        return None
    gap = float(100 * (current.fraction - target.fraction))
    return f"{gap:.2f} percentage points less accurate ({target} against {current})"


def change_champion(
    store: Store,
    model_name: str,
    action: str,
    version: str | None,
    *,
    by: str,
    reason: str,
    now: str,
    expected: str | None = None,
    force: bool = False,
) -> ChampionChange:
    """Promote `version` (action "promote") or take the champion back one step ("rollback", version None).

    One compare-and-swap loop, the store's (`Store.update_json`), as the gate's.

    rollback removes the champion the operator saw: `expected` (`--from VERSION`), or the champion read
    when the command started. When the champion is another version by the time the write happens (a gate
    or another person moved it), the rollback is refused naming both, never applied to the new champion.

    promote refuses a version less accurate than the champion unless `force`, saying by how much.
    """
    key = champion_key(model_name)
    result: ChampionChange | None = None
    seen: list[str | None] = []  # the champion of the first read: what the operator saw when the command started

    def decide(champion: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal result
        current = champion["version"] if champion else None
        if not seen:
            seen.append(expected if expected is not None else current)
        if action == "rollback":
            if champion is None:
                raise ChampionChangeError(f"no champion for {model_name!r} in {store.uri}: nothing to roll back")
            if current != seen[0]:
                raise ChampionChangeError(
                    f"the champion is {current}, not {seen[0]}"
                    + (" (it changed while rolling back)" if expected is None else "")
                    + f": nothing rolled back; to roll back {current}, run again with --from {current}"
                )
            stack = champion_stack(champion)
            if len(stack) < 2:
                raise ChampionChangeError(f"{current} is the first champion in the history: nothing to roll back to")
            target = stack[-2]
        else:
            assert version is not None  # noqa: S101 -- the parser requires it for promote
            target = version
        if target == current:
            result = ChampionChange(action, target, current, changed=False)
            return None
        manifest = verify_version(store, model_name, target)
        try:
            counts = version_counts(store, model_name, target)
        except (NotFound, ValueError) as exc:
            raise ChampionChangeError(f"refusing {target}: {exc}") from exc
        current_counts = _counts_or_none(store, model_name, current)
        worse = _less_accurate(counts, current_counts)
        if worse and action == "promote" and not force:
            raise ChampionChangeError(
                f"refusing {target}: it is {worse}, the champion {current}; pass --force to promote it anyway"
            )
        result = ChampionChange(action, target, current, changed=True, note=f"{target} is {worse}" if worse else "")
        entry = {"version": target, "accuracy": counts.accuracy, **counts.to_dict(), "run_id": manifest.get("run_id"),
                 "promoted_at": now, "action": action, "by": by, "reason": reason, "replaced": current}  # fmt: skip
        if force and worse:
            entry["forced"] = True
        history = [*(champion.get("history", []) if champion else []), entry][-CHAMPION_HISTORY_LIMIT:]
        compared = Compared(current, current_counts) if current is not None and current_counts else None
        previous = previous_entry(current, compared)
        return {
            "schema": CHAMPION_SCHEMA,
            "model_name": model_name,
            "version": target,
            "accuracy": counts.accuracy,
            **counts.to_dict(),
            "run_id": manifest.get("run_id"),
            "promoted_at": now,
            "previous": previous,
            "reason": f"{action} by {by}: {reason}",
            "history": history,
        }

    try:
        written = store.update_json(key, decide, decode=lambda data: parse_champion(store, model_name, data))
    except GateError as exc:
        raise ChampionChangeError(str(exc)) from exc
    assert result is not None  # noqa: S101 -- decide() ran at least once; every branch that returns sets it
    if written is not None:
        log.info("%s: %s is champion of %s (was %s)", action, result.version, model_name, result.previous)
    return result


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
    promote.add_argument(
        "--force",
        action="store_true",
        help="promote even when it is less accurate than the champion (says by how much)",
    )
    rollback = commands.add_parser(
        "rollback", parents=[common, who], help="return to the champion before the current one"
    )
    rollback.add_argument(
        "--from",
        dest="expected",
        metavar="VERSION",
        help="the champion to remove; refused when the champion is another version (default: the one read at start)",
    )


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
            expected=getattr(args, "expected", None),
            force=bool(getattr(args, "force", False)),
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
        if change.note:
            print(f"note: {change.note}")
    else:
        print(f"{change.version} is already the champion of {args.model_name}; nothing changed")
    return EXIT_OK
