"""One structured JSON line per decision, on stdout (CloudWatch Logs keeps one line per record).

Every line has `decision` and `outcome`, and where known `event_id`, `run_id`, `digest`, `attempt`,
`task_arn`; CloudWatch Logs Insights can then answer "what happened to this push" with one filter.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

MAX_FIELD_CHARS = 2000  # a string field longer than this is cut (an error echoing a huge event, say)


def _bounded(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
        return f"{value[:MAX_FIELD_CHARS]}…({len(value)} characters)"
    return value


def log_decision(decision: str, outcome: str, **fields: Any) -> dict[str, Any]:
    """Write one JSON line and return it (the handler also returns the last decision)."""
    line = {
        "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "logger": "pushtrain.trigger",
        "decision": decision,
        "outcome": outcome,
        **{key: _bounded(value) for key, value in fields.items() if value is not None},
    }
    sys.stdout.write(json.dumps(line, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
    return line
