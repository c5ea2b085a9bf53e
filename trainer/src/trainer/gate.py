"""The quality gate: every finished run is published; only a good enough one becomes champion.

A version is promoted to `models/<model_name>/champion.json` when both hold:

1. its test accuracy is at least the configured floor (`accuracy_floor`), and
2. it beats the current champion by the configured margin: accuracy >= champion + `champion_margin`.

The pointer changes by compare-and-swap (`Store.update_json`): read it with its ETag, decide, write
with `If-Match` (or `If-None-Match: *` when there is no champion yet). When another run moved the pointer in
between, the write fails, and the decision is taken again against the new champion, so two runs
finishing together cannot lose an update: the better one ends as champion. A version that is
already in the champion's history was judged before and is never promoted again (a resumed run
re-gating its version must not demote a newer champion).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from trainer.store import NotFound, Store

log = logging.getLogger(__name__)

CHAMPION_SCHEMA = 1
# Promotions kept in champion.json: enough to audit a season of runs, small enough to read.
CHAMPION_HISTORY_LIMIT = 100


class GateError(Exception):
    """The champion pointer could not be read or updated."""


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided for one version, and why."""

    version: str
    accuracy: float
    promoted: bool
    reason: str
    champion_version: str | None  # the champion after the decision
    previous_version: str | None  # the champion before a promotion (None if there was none)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "accuracy": self.accuracy,
            "promoted": self.promoted,
            "reason": self.reason,
            "champion_version": self.champion_version,
            "previous_version": self.previous_version,
        }


def champion_key(model_name: str) -> str:
    return f"models/{model_name}/champion.json"


def read_champion(store: Store, model_name: str) -> tuple[dict[str, Any] | None, str | None]:
    """The champion record and its ETag, or (None, None) when no version has been promoted yet."""
    try:
        data, etag = store.get_with_etag(champion_key(model_name))
    except NotFound:
        return None, None
    return _parse_champion(store, model_name, data), etag


def _parse_champion(store: Store, model_name: str, data: bytes) -> dict[str, Any]:
    try:
        record = json.loads(data)
        float(record["accuracy"])
        str(record["version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise GateError(f"{store.uri_of(champion_key(model_name))} is not a champion record: {exc}") from exc
    return dict(record)


def judge(accuracy: float, champion: dict[str, Any] | None, floor: float, margin: float) -> tuple[bool, str]:
    """Whether a version with this accuracy should replace champion, and the reason in words."""
    if accuracy < floor:
        return False, f"accuracy {accuracy:.4f} is below the floor {floor:.4f}"
    if champion is None:
        return True, f"accuracy {accuracy:.4f} meets the floor {floor:.4f} and there is no champion yet"
    bar = float(champion["accuracy"]) + margin
    rule = f"champion {champion['version']} ({float(champion['accuracy']):.4f}) + margin {margin:.4f}"
    if accuracy < bar:
        return False, f"accuracy {accuracy:.4f} is below {rule}"
    return True, f"accuracy {accuracy:.4f} is at least {rule}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def promote_if_better(
    store: Store,
    model_name: str,
    version: str,
    accuracy: float,
    *,
    floor: float,
    margin: float,
    run_id: str | None = None,
) -> GateDecision:
    """Apply the gate to a published version and move the champion pointer if it passes."""
    if margin < 0:
        raise ValueError(f"champion_margin must be >= 0, got {margin}")
    decision: GateDecision | None = None

    def decide(champion: dict[str, Any] | None) -> dict[str, Any] | None:
        """Set `decision` against this champion; return the new champion record, or None to keep it."""
        nonlocal decision
        current = champion["version"] if champion else None
        if champion is not None and champion["version"] == version:
            decision = GateDecision(version, accuracy, True, "already champion", version, None)
            return None
        if champion is not None and any(entry.get("version") == version for entry in champion.get("history", [])):
            # Promoted before and superseded since: the gate already ran for this version (a
            # resumed run re-gating it must not demote the newer champion).
            reason = f"already judged: promoted before, since superseded by {current}"
            log.info("gate: %s stays published, not promoted again: %s", version, reason)
            decision = GateDecision(version, accuracy, False, reason, current, None)
            return None
        promote, reason = judge(accuracy, champion, floor, margin)
        if not promote:
            log.info("gate: %s stays published, not promoted: %s", version, reason)
            decision = GateDecision(version, accuracy, False, reason, current, None)
            return None
        history = list(champion.get("history", [])) if champion else []
        history.append({"version": version, "accuracy": accuracy, "run_id": run_id, "promoted_at": _now()})
        decision = GateDecision(version, accuracy, True, reason, version, current)
        return {
            "schema": CHAMPION_SCHEMA,
            "model_name": model_name,
            "version": version,
            "accuracy": accuracy,
            "run_id": run_id,
            "promoted_at": history[-1]["promoted_at"],
            "previous": {"version": champion["version"], "accuracy": champion["accuracy"]} if champion else None,
            "reason": reason,
            "history": history[-CHAMPION_HISTORY_LIMIT:],
        }

    promoted = store.update_json(
        champion_key(model_name), decide, decode=lambda data: _parse_champion(store, model_name, data)
    )
    if promoted is not None:
        log.info("gate: promoted %s to champion of %s: %s", version, model_name, promoted["reason"])
    return cast("GateDecision", decision)  # decide() ran at least once, and every branch sets it
