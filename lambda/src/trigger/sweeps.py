"""Parameter sweeps: one retrain request, up to MAX_SETS runs. Pure: no AWS calls (the flow is trigger.sweep_flow).

A retrain request may carry `sweep` (docs/contracts.md), either a grid or a list of parameter sets:

    {"action": "retrain", "request_id": "1234", "image": "<tag or digest>", "params": {"epochs": 10},
     "sweep": {"grid": {"lr": [0.5, 1.0, 1.5], "seed": [0, 1]}}}          # 6 runs: every combination
    {"sweep": {"list": [{"lr": 0.5}, {"lr": 1.5, "seed": 3}]}}           # 2 runs: exactly these

Each set is `params` overlaid with the set's values, validated like any retrain's parameters. Run i is an
ordinary retrain run, `retrain-<request_id>-<8 hex of digest and its parameters>` (36 characters at most,
ECS startedBy's limit), so a sweep run is started, resumed and recorded exactly like a single retrain. The
sweep's own record, `sweeps/<request_id>.json`, lists its runs, which of them the trigger started, and
once every run has ended the ranking by test accuracy and the run that became champion.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from trigger.errors import InvalidEventError
from trigger.events import RetrainRequest, parse_retrain_request, validate_params
from trigger.runs import canonical_json, retrain_run_id

MAX_SETS = 32  # runs per sweep: a bounded bill per request (at most 32 tasks of ~15 minutes each on a CPU)
MAX_VALUES = 32  # values per grid axis
SCHEMA = 1
FINAL_STATES = frozenset({"succeeded", "failed"})


@dataclass(frozen=True)
class SweepRequest:
    """A retrain request with a sweep: the base request and the parameter sets, in order."""

    base: RetrainRequest
    sets: tuple[dict[str, str | int | float], ...]

    @property
    def request_id(self) -> str:
        return self.base.request_id

    @property
    def event_id(self) -> str:
        return f"sweep-{self.base.request_id}"


def is_sweep_request(event: object) -> TypeGuard[Mapping[str, Any]]:
    """A retrain request that carries a sweep (anything else is parsed by trigger.events)."""
    return isinstance(event, Mapping) and event.get("action") == "retrain" and "sweep" in event


def parse_sweep_request(event: Mapping[str, Any]) -> SweepRequest:
    """Validate the retrain request and expand its sweep; InvalidEventError names the first problem."""
    base = parse_retrain_request({k: v for k, v in event.items() if k != "sweep"})
    return SweepRequest(base=base, sets=expand(event["sweep"], base.params))


def expand(sweep: object, base: Mapping[str, str | int | float]) -> tuple[dict[str, str | int | float], ...]:
    """The parameter sets of a sweep: `{"grid": {name: [values]}}` or `{"list": [{name: value}]}`."""
    if not isinstance(sweep, Mapping) or len(sweep) != 1 or next(iter(sweep)) not in ("grid", "list"):
        raise InvalidEventError(f"sweep must be {{'grid': {{...}}}} or {{'list': [...]}}, got {sweep!r:.120}")
    kind, body = next(iter(sweep.items()))
    if kind == "grid":
        overlays = _grid(body)
    else:
        if not isinstance(body, list) or not all(isinstance(item, Mapping) for item in body):
            raise InvalidEventError(f"sweep.list must be a list of parameter objects, got {body!r:.120}")
        overlays = [dict(item) for item in body]
    if not 1 <= len(overlays) <= MAX_SETS:
        raise InvalidEventError(f"sweep has {len(overlays)} parameter sets; a sweep has 1 to {MAX_SETS}")
    sets = tuple(validate_params({**base, **overlay}) for overlay in overlays)
    seen: dict[str, int] = {}
    for index, params in enumerate(sets):
        key = canonical_json(params)
        if key in seen:
            raise InvalidEventError(f"sweep sets {seen[key]} and {index} are the same parameters {key}")
        seen[key] = index
    return sets


def _grid(body: object) -> list[dict[str, Any]]:
    if not isinstance(body, Mapping) or not body:
        raise InvalidEventError(f"sweep.grid must map parameter names to lists of values, got {body!r:.120}")
    axes: list[tuple[str, list[Any]]] = []
    total = 1
    for name, values in sorted(body.items()):
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_VALUES:
            raise InvalidEventError(f"sweep.grid.{name} must be a list of 1 to {MAX_VALUES} values, got {values!r:.80}")
        axes.append((name, values))
        total *= len(values)
    if total > MAX_SETS:  # checked before expanding: a grid of 32^7 must not be built to be refused
        raise InvalidEventError(f"sweep.grid makes {total} parameter sets; a sweep has 1 to {MAX_SETS}")
    names = [name for name, _ in axes]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))]


# --- the sweep record ----------------------------------------------------------------------------------


def sweep_key(request_id: str) -> str:
    return f"sweeps/{request_id}.json"


def run_ids(request: SweepRequest, digest: str) -> list[str]:
    """One run id per set, in order; a clash of two 8-hex hashes is refused rather than merged."""
    ids = [retrain_run_id(request.request_id, digest, params) for params in request.sets]
    if len(set(ids)) != len(ids):
        raise InvalidEventError(f"sweep {request.request_id}: two parameter sets hash to the same run id {ids}")
    return ids


def new_sweep_record(request: SweepRequest, digest: str, git_sha: str | None, now: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "request_id": request.request_id,
        "image_digest": digest,
        "git_sha": git_sha,
        "created_at": now,
        "updated_at": now,
        "state": "starting",  # starting -> running (every run started) -> finished (every run ended)
        "runs": [
            {"index": i, "run_id": run_id, "params": params, "started": False}
            for i, (run_id, params) in enumerate(zip(run_ids(request, digest), request.sets, strict=True))
        ],
    }


def same_sweep(record: Mapping[str, Any], request: SweepRequest, digest: str) -> bool:
    """Whether a stored sweep record is this request (a reused request id with other sets is not)."""
    stored = [(run.get("run_id"), run.get("params")) for run in record.get("runs", [])]
    ours = list(zip(run_ids(request, digest), request.sets, strict=True))
    return record.get("image_digest") == digest and stored == [(r, dict(p)) for r, p in ours]


@dataclass(frozen=True)
class RunResult:
    """What the ranking needs of one run: its record state, version and test accuracy (when it published)."""

    run_id: str
    params: Mapping[str, Any]
    state: str | None
    version: str | None
    accuracy: float | None


def rank(results: Sequence[RunResult], champion_version: str | None) -> dict[str, Any]:
    """The summary: runs by test accuracy (best first; runs without one last, in sweep order) and the champion.

    The champion is the sweep run whose version the champion pointer names now, or None when the gate
    kept an earlier champion (every sweep run was worse, or below the floor).
    """
    order = sorted(
        range(len(results)),
        key=lambda i: (results[i].accuracy is None, -(results[i].accuracy or 0.0), i),
    )
    ranking = [
        {
            "rank": position + 1,
            "run_id": results[i].run_id,
            "params": dict(results[i].params),
            "state": results[i].state,
            "version": results[i].version,
            "accuracy": results[i].accuracy,
        }
        for position, i in enumerate(order)
    ]
    champion = next((r.run_id for r in results if champion_version and r.version == champion_version), None)
    return {"ranking": ranking, "champion": champion, "champion_version": champion_version if champion else None}


def all_ended(results: Sequence[RunResult]) -> bool:
    return all(result.state in FINAL_STATES for result in results)


def markdown_table(summary: Mapping[str, Any]) -> str:
    """The ranking as a Markdown table (the retrain workflow's summary shows it)."""
    lines = ["| rank | run | parameters | state | test accuracy |", "|---:|---|---|---|---:|"]
    for row in summary.get("ranking", []):
        accuracy = f"{row['accuracy']:.4f}" if row.get("accuracy") is not None else "-"
        crown = " (champion)" if row["run_id"] == summary.get("champion") else ""
        params = canonical_json(row["params"])
        lines.append(f"| {row['rank']} | `{row['run_id']}`{crown} | `{params}` | {row['state']} | {accuracy} |")
    return "\n".join(lines)
