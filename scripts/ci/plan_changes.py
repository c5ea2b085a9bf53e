"""A plan's change set, normalised so that two plans compare equal only when they make the same changes.

    terraform show -json tfplan >tfplan.json
    python3 -m ci.plan_changes tfplan.json >tfplan.changes

One JSON line per resource the plan changes (no-ops left out), sorted by address, keys sorted:

    {"actions": ["update"], "address": "aws_lambda_function.trigger", "after": {...}, "replace_paths": []}

`after` is the resource's planned value with every attribute Terraform knows only after the apply
replaced by "(known after apply)" (`after_unknown`), and every sensitive attribute (`after_sensitive`)
replaced by {"sha256": <hash of its canonical JSON>}: the change set travels in an artifact anyone
with read access can download, like the plan's text, which shows sensitive values as "(sensitive)".
A hash still tells two different values apart; a low-entropy secret could be guessed from it, which
is why the stack keeps secrets out of Terraform (Secrets Manager, OIDC). `replace_paths` says which
attribute forces a replacement. Terraform's JSON output format: developer.hashicorp.com/terraform/
internals/json-format ("Change Representation": after_unknown, after_sensitive, replace_paths).

Compared by ci.reviewed_plan: a re-plan of another commit, or of the same commit against another state,
that touches the same addresses with the same actions but other values is a different change set.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ci.github import CIError, annotate_error, json_object

UNKNOWN = "(known after apply)"


def _hash(value: Any) -> dict[str, str]:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return {"sha256": hashlib.sha256(canonical.encode()).hexdigest()}


def known(value: Any, unknown: Any, sensitive: Any) -> Any:
    """`value` with unknown parts marked and sensitive parts hashed (the masks mirror its shape)."""
    if unknown is True:
        return UNKNOWN
    if sensitive is True:
        return _hash(value)
    if isinstance(value, dict):
        unknown_map = unknown if isinstance(unknown, dict) else {}
        sensitive_map = sensitive if isinstance(sensitive, dict) else {}
        keys = set(value) | {k for k, v in unknown_map.items() if v is True}
        return {k: known(value.get(k), unknown_map.get(k), sensitive_map.get(k)) for k in sorted(keys)}
    if isinstance(value, list):
        unknown_list = unknown if isinstance(unknown, list) else []
        sensitive_list = sensitive if isinstance(sensitive, list) else []
        return [known(item, _at(unknown_list, i), _at(sensitive_list, i)) for i, item in enumerate(value)]
    return value


def _at(items: list[Any], index: int) -> Any:
    return items[index] if index < len(items) else None


def change_set(plan: dict[str, Any]) -> list[str]:
    """The plan's normalised changes, one canonical JSON line each, sorted by address."""
    changes = plan.get("resource_changes") or []
    if not isinstance(changes, list):
        raise CIError(f"resource_changes is {type(changes).__name__}, not a list: not a `terraform show -json` plan")
    lines = []
    for entry in changes:
        change = entry.get("change") if isinstance(entry, dict) else None
        if not isinstance(change, dict) or not isinstance(entry.get("address"), str):
            raise CIError(f"a resource change without an address or change: {json.dumps(entry)[:200]}")
        actions = change.get("actions")
        if not isinstance(actions, list) or not actions:
            raise CIError(f"{entry['address']}: actions {actions!r} is not a list of actions")
        if actions == ["no-op"]:
            continue
        record = {
            "address": entry["address"],
            "actions": actions,
            "after": known(change.get("after"), change.get("after_unknown"), change.get("after_sensitive")),
            "replace_paths": change.get("replace_paths") or [],
        }
        lines.append(json.dumps(record, sort_keys=True, separators=(",", ":")))
    return sorted(lines)


def read_change_set(text: str, what: str) -> dict[str, dict[str, Any]]:
    """A .changes file as {address: record}; CIError naming `what` when a line is not a change."""
    records: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = json_object(line, f"{what}, line {number}")
        address = record.get("address")
        if not isinstance(address, str) or not isinstance(record.get("actions"), list):
            raise CIError(f"{what}, line {number} is not a change (address, actions): {line[:200]!r}")
        if address in records:
            raise CIError(f"{what} lists {address} twice")
        records[address] = record
    return records


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python3 -m ci.plan_changes <terraform show -json output>", file=sys.stderr)
        return 2
    path = Path(args[0])
    if not path.is_file():
        return annotate_error("plan changes", f"no plan JSON at {path}")
    try:
        for line in change_set(json_object(path.read_text(), str(path))):
            print(line)
    except CIError as error:
        return annotate_error("plan changes", error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
