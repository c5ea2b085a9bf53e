"""A small IAM policy evaluator for the tests: which statements of a rendered policy document let a
request through, with IAM's rule that a condition on a key the request does not carry fails (except
`Null` and the negated operators). It knows only the operators our policies use and refuses others,
so a new operator in a policy fails the test that meets it instead of being misread.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any


def as_list(value: Any) -> list[Any]:
    """A list as written, or a single value (`"Action": "s3:GetObject"`, `values = each.value`) as one item."""
    return value if isinstance(value, list) else [value]


def condition_holds(operator: str, key: str, expected: Any, context: dict[str, str]) -> bool:
    """Whether one condition (`operator`, `key`, its values) holds for the request `context`."""
    values, actual = [str(v) for v in as_list(expected)], context.get(key)
    if operator == "Null":
        return (actual is None) == (values[0] == "true")
    if operator == "ArnNotEquals":
        return actual is None or actual not in values
    if actual is None:
        return False  # IAM: a condition on a key the request does not carry fails
    if operator in {"StringEquals", "ArnEquals", "Bool"}:
        return actual in values
    if operator == "ArnLike":
        return any(fnmatch.fnmatchcase(actual, v) for v in values)
    raise AssertionError(f"the evaluator does not know {operator}; add it before using it in a policy")


def matching_sids(
    statements: Iterable[dict[str, Any]], action: str, resource: str, context: dict[str, str]
) -> list[str]:
    """The Sids of `statements` whose actions, resources and conditions all match this request."""
    sids = []
    for statement in statements:
        if not any(fnmatch.fnmatchcase(action, a) for a in as_list(statement["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in as_list(statement["Resource"])):
            continue
        conditions = statement.get("Condition", {})
        if all(condition_holds(op, k, v, context) for op, keys in conditions.items() for k, v in keys.items()):
            sids.append(statement.get("Sid", "?"))
    return sids
