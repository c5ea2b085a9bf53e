"""The quality gate: every finished run is published; only a good enough one becomes champion.

A version is promoted to `models/<model_name>/champion.json` when both hold, compared exactly
(`fractions.Fraction` of the integer counts `correct/total`, thresholds parsed from their decimal
strings: trainer.counts):

1. its test accuracy is at least the floor: correct/total >= `accuracy_floor`, and
2. it reaches the champion's accuracy plus the margin: correct/total >= champion + `champion_margin`.

Ties: "at least" both times. A version exactly at the floor passes it; a version exactly at the
champion's accuracy + margin is promoted (with margin 0, an equally accurate newer version replaces
the champion: the newer code and data win a tie). 90/100 and 9000/10000 are the same accuracy.

The champion's accuracy is read from the champion version's own published files (its metrics.json,
checked against the SHA-256 its manifest lists), never from the copy in champion.json: a pointer that
names a version which is not published, or whose metrics are damaged, does not count as a champion
(the version is judged against the floor alone and the reason says so), so a forged pointer cannot
block a better run; a pointer claiming 100 % does not either.

The pointer changes by compare-and-swap (`Store.update_json`): read it with its ETag, decide, write
with `If-Match` (or `If-None-Match: *` when there is no champion yet). When another run moved the pointer in
between, the write fails, and the decision is taken again against the new champion, so two runs
finishing together cannot lose an update: the better one ends as champion. A version that is
already in the champion's history was judged before and is never promoted again (a resumed run
re-gating its version must not demote a newer champion).

The outcome has one shape, `GateOutcome`: the run record's `gate` field is its `to_record()`, and the
run's report and notification read it back with `from_record` (docs/contracts.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, cast

from trainer.counts import Counts, parse_decimal
from trainer.store import NotFound, Store
from trainer.versions import METRICS_FILE, read_manifest, verify_files, version_prefix

log = logging.getLogger(__name__)

CHAMPION_SCHEMA = 1
# Promotions kept in champion.json: enough to audit a season of runs, small enough to read.
CHAMPION_HISTORY_LIMIT = 100
OUTCOMES = ("promoted", "kept", "pending")


class GateError(Exception):
    """The champion pointer could not be read or updated."""


@dataclass(frozen=True)
class Compared:
    """The champion a version was judged against, with its counts (read from its own metrics)."""

    version: str
    counts: Counts

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, **self.counts.to_dict()}


@dataclass(frozen=True)
class GateOutcome:
    """What the gate decided for one version, and why: the one shape of the run record's `gate`."""

    outcome: str  # promoted | kept | pending (the gate could not run; retried later)
    reason: str
    version: str
    counts: Counts | None  # the version's test counts (None: unknown, only when pending)
    floor: str  # the decimal strings the decision used
    margin: str
    compared: Compared | None  # the champion judged against (None: there was none, or pending)
    champion_version: str | None  # the champion after the decision
    at: str

    @property
    def promoted(self) -> bool:
        return self.outcome == "promoted"

    @property
    def pending(self) -> bool:
        return self.outcome == "pending"

    @property
    def previous_version(self) -> str | None:
        """The champion this version replaced (None when it was not promoted or there was none)."""
        return self.compared.version if self.promoted and self.compared else None

    def delta(self) -> Fraction | None:
        """This version's accuracy minus the compared champion's, exactly (None without both)."""
        if self.counts is None or self.compared is None:
            return None
        return self.counts.fraction - self.compared.counts.fraction

    def to_record(self) -> dict[str, Any]:
        """The run record's `gate` field (docs/contracts.md)."""
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "version": self.version,
            "correct": self.counts.correct if self.counts else None,
            "total": self.counts.total if self.counts else None,
            "floor": self.floor,
            "margin": self.margin,
            "compared": self.compared.to_dict() if self.compared else None,
            "champion_version": self.champion_version,
            "at": self.at,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, version: str, floor: str, margin: str) -> GateOutcome:
        """Read a record's `gate` back; a field an older trainer did not write is None (floor, margin: given)."""
        outcome = str(record.get("outcome", "pending"))
        if outcome not in OUTCOMES:
            raise ValueError(f"gate outcome {outcome!r} is not one of {OUTCOMES}")
        counts = Counts.from_mapping(record, "the gate record") if record.get("correct") is not None else None
        compared_raw = record.get("compared")
        compared = (
            Compared(str(compared_raw["version"]), Counts.from_mapping(compared_raw, "the gate record's compared"))
            if isinstance(compared_raw, Mapping)
            else None
        )
        champion = record.get("champion_version")
        return cls(
            outcome=outcome,
            reason=str(record.get("reason", "")),
            version=str(record.get("version") or version),
            counts=counts,
            floor=str(record.get("floor") or floor),
            margin=str(record.get("margin") or margin),
            compared=compared,
            champion_version=None if champion is None else str(champion),
            at=str(record.get("at", "")),
        )


def champion_key(model_name: str) -> str:
    return f"models/{model_name}/champion.json"


def read_champion(store: Store, model_name: str) -> tuple[dict[str, Any] | None, str | None]:
    """The champion record and its ETag, or (None, None) when no version has been promoted yet."""
    try:
        data, etag = store.get_with_etag(champion_key(model_name))
    except NotFound:
        return None, None
    return parse_champion(store, model_name, data), etag


def parse_champion(store: Store, model_name: str, data: bytes) -> dict[str, Any]:
    """champion.json as a dict; only its `version` is trusted to mean anything (the accuracy is re-read)."""
    try:
        record = json.loads(data)
        if not isinstance(record, dict) or not isinstance(record["version"], str) or not record["version"]:
            raise TypeError(f"'version' must be a non-empty string, got {record.get('version')!r}")  # noqa: TRY301
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise GateError(f"{store.uri_of(champion_key(model_name))} is not a champion record: {exc}") from exc
    return dict(record)


def _legacy_counts(metrics: Mapping[str, Any], where: str) -> Counts:
    """Counts of a version published before they were stored: from its float32 accuracy and test_images.

    A float32 fraction k/n with n below 2**24 identifies k exactly: round(accuracy * n) is k, and k/n lies
    within half a step (1 / 2n) of the stored value. Anything else is a damaged document.
    """
    try:
        accuracy, total = float(metrics["accuracy"]), metrics["test_images"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where} holds no accuracy counts: {exc}") from exc
    if type(total) is not int or not 0 < total < 2**24 or not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"{where} holds no usable accuracy counts (accuracy {accuracy!r}, test_images {total!r})")
    correct = round(accuracy * total)
    if abs(Fraction(correct, total) - Fraction(accuracy)) >= Fraction(1, 2 * total):
        raise ValueError(f"{where}: accuracy {accuracy!r} is no count out of {total} test images")
    return Counts(correct, total)


def version_counts(store: Store, model_name: str, version: str) -> Counts:
    """A published version's test counts, from its metrics.json after checking it against the manifest's SHA-256.

    NotFound when the version is not published (no manifest) or metrics.json is missing; ValueError naming the
    file when it is damaged (its SHA-256 differs, or the counts are missing or impossible), or when the
    manifest's own copy of the counts disagrees with metrics.json.
    """
    manifest = read_manifest(store, model_name, version)
    key = version_prefix(model_name, version) + METRICS_FILE
    data = store.get(key)
    listed = (manifest.get("files") or {}).get(METRICS_FILE) if isinstance(manifest.get("files"), dict) else None
    want = listed.get("sha256") if isinstance(listed, dict) else None
    if want != hashlib.sha256(data).hexdigest():
        raise ValueError(f"{store.uri_of(key)} does not match the SHA-256 its manifest lists ({want})")
    try:
        metrics = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{store.uri_of(key)} is not JSON: {exc}") from exc
    if not isinstance(metrics, dict):
        raise ValueError(f"{store.uri_of(key)} is not a metrics document")  # noqa: TRY004 -- damaged data
    if "correct" in metrics or "total" in metrics:
        counts = Counts.from_mapping(metrics, store.uri_of(key))
    else:
        counts = _legacy_counts(metrics, store.uri_of(key))
    copy = manifest.get("metrics")
    listed_counts = (copy.get("correct"), copy.get("total")) if isinstance(copy, dict) else (None, None)
    if listed_counts not in {(None, None), (counts.correct, counts.total)}:
        where = store.uri_of(version_prefix(model_name, version) + "manifest.json")
        raise ValueError(f"{where} says {copy.get('correct')}/{copy.get('total')}, its metrics.json {counts}")
    return counts


def _champion_counts(store: Store, model_name: str, version: str) -> tuple[Counts | None, str]:
    """The champion version's counts, or None with why it does not count as a champion."""
    try:
        return version_counts(store, model_name, version), ""
    except NotFound:
        return None, f"champion.json names {version}, which is not a published version"
    except ValueError as exc:
        return None, f"champion.json names {version}, whose metrics are damaged ({exc})"


def judge(
    counts: Counts, champion: Compared | None, floor: Fraction, margin: Fraction, *, floor_text: str, margin_text: str
) -> tuple[bool, str]:
    """Whether a version with these counts should replace the champion, and the reason in words (exact)."""
    accuracy = counts.fraction
    if accuracy < floor:
        return False, f"accuracy {counts} is below the floor {floor_text}"
    if champion is None:
        return True, f"accuracy {counts} meets the floor {floor_text} and there is no champion yet"
    bar = champion.counts.fraction + margin
    rule = f"champion {champion.version} ({champion.counts}) + margin {margin_text}"
    if accuracy < bar:
        return False, f"accuracy {counts} is below {rule}"
    if accuracy == bar:
        return True, f"accuracy {counts} ties {rule}; a tie promotes the newer version"
    return True, f"accuracy {counts} is above {rule}"


def previous_entry(current: str | None, compared: Compared | None) -> dict[str, Any] | None:
    """champion.json's `previous`: the champion replaced, with its counts when it had valid ones."""
    if current is None:
        return None
    if compared is None:
        return {"version": current}
    return {"version": current, "accuracy": compared.counts.accuracy, **compared.counts.to_dict()}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pending(version: str, counts: Counts | None, reason: str, *, floor: str, margin: str) -> GateOutcome:
    """The outcome of a gate that could not run (retried by the next start or `models gate`)."""
    return GateOutcome("pending", reason, version, counts, floor, margin, None, None, _now())


def promote_if_better(
    store: Store,
    model_name: str,
    version: str,
    counts: Counts,
    *,
    floor: str,
    margin: str,
    run_id: str | None = None,
    fence: Callable[[], None] | None = None,
) -> GateOutcome:
    """Apply the gate to a published version and move the champion pointer if it passes.

    floor and margin are decimal strings ("0.9"), parsed exactly; a malformed or negative one raises ValueError.
    fence: the run's fencing check, called immediately before each write of champion.json (it raises when the
    trainer lost its lease, and then the pointer is not written).
    """
    floor_exact, margin_exact = parse_decimal(floor, "accuracy_floor"), parse_decimal(margin, "champion_margin")
    decision: GateOutcome | None = None
    # The version's own files first: one whose bytes in the store are not what its manifest lists is never
    # promoted (S3's stored SHA-256s, no download: trainer.versions.verify_files).
    problems = verify_files(store, model_name, version, read_manifest(store, model_name, version))
    if problems:
        reason = f"its files do not match its manifest ({'; '.join(problems)})"
        log.warning("gate: %s is not promoted: %s", version, reason)
        return GateOutcome("kept", reason, version, counts, floor, margin, None, None, _now())

    def outcome(promoted: bool, reason: str, compared: Compared | None, champion_after: str | None) -> GateOutcome:
        word = "promoted" if promoted else "kept"
        return GateOutcome(word, reason, version, counts, floor, margin, compared, champion_after, _now())

    def decide(champion: dict[str, Any] | None) -> dict[str, Any] | None:
        """Set `decision` against this champion; return the new champion record, or None to keep it."""
        nonlocal decision
        current = champion["version"] if champion else None
        if champion is not None and champion["version"] == version:
            decision = outcome(True, "already champion", None, version)
            return None
        if champion is not None and any(
            isinstance(entry, dict) and entry.get("version") == version for entry in champion.get("history") or []
        ):
            # Promoted before and superseded since: the gate already ran for this version (a
            # resumed run re-gating it must not demote the newer champion).
            reason = f"already judged: promoted before, since superseded by {current}"
            log.info("gate: %s stays published, not promoted again: %s", version, reason)
            decision = outcome(False, reason, None, current)
            return None
        compared, void = None, ""
        if current is not None:
            champion_counts, void = _champion_counts(store, model_name, current)
            compared = Compared(current, champion_counts) if champion_counts is not None else None
        promote, reason = judge(counts, compared, floor_exact, margin_exact, floor_text=floor, margin_text=margin)
        if void:
            reason = f"{reason} ({void}: judged against the floor alone)"
        if not promote:
            log.info("gate: %s stays published, not promoted: %s", version, reason)
            decision = outcome(False, reason, compared, current)
            return None
        history = list(champion.get("history") or []) if champion else []
        promoted_at = _now()
        history.append({"version": version, "accuracy": counts.accuracy, **counts.to_dict(), "run_id": run_id,
                        "promoted_at": promoted_at})  # fmt: skip
        decision = outcome(True, reason, compared, version)
        if fence is not None:
            fence()
        return {
            "schema": CHAMPION_SCHEMA,
            "model_name": model_name,
            "version": version,
            "accuracy": counts.accuracy,  # for people; the gate re-reads the version's metrics
            **counts.to_dict(),
            "run_id": run_id,
            "promoted_at": promoted_at,
            "previous": previous_entry(current, compared),
            "reason": reason,
            "history": history[-CHAMPION_HISTORY_LIMIT:],
        }

    promoted = store.update_json(
        champion_key(model_name), decide, decode=lambda data: parse_champion(store, model_name, data)
    )
    if promoted is not None:
        log.info("gate: promoted %s to champion of %s: %s", version, model_name, promoted["reason"])
    return cast("GateOutcome", decision)  # decide() ran at least once, and every branch sets it
