"""After a run succeeded: its final report, the success notification, MLflow. All best effort.

`run.py` calls `after_success` once the run record says `succeeded` with the gate's outcome in its
`gate` field (promoted, kept, or pending when the gate could not run yet; `python -m trainer models
gate VERSION` retries it and rewrites the report). Each step reads what it needs back from the
store (the manifest, metrics.json, the champion, the run record), so it works the same for a run
that trained and for a run that only finished the bookkeeping of an earlier attempt:

1. `runs/<run_id>/report.md`: the report with the gate's outcome (pending included) and why, and the cost on the
   capacity the run had (trainer.report); this is what the workflows post to GitHub;
2. one SNS message when `notify_topic_arn` is set (trainer.notify);
3. the run, its metrics, report and curves, and the registered model version in MLflow when
   `MLFLOW_TRACKING_URI` is set (trainer.tracking).

Nothing here changes the run's state or exit code: the outcome is already recorded, and a failure
is logged with its cause.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from trainer import runstate
from trainer.config import TrainConfig
from trainer.gate import GateOutcome
from trainer.report import cost_line, render_report
from trainer.store import Store
from trainer.versions import CURVES_FILE, METRICS_FILE, read_manifest, version_prefix

log = logging.getLogger(__name__)

RUN_REPORT = "report.md"


def run_report_key(run_id: str) -> str:
    return f"runs/{run_id}/{RUN_REPORT}"


def write_run_report(
    store: Store,
    model_name: str,
    run_id: str,
    version: str,
    gate: Mapping[str, Any],
    *,
    floor: str,
    margin: str,
) -> tuple[str, dict[str, Any], GateOutcome, str | None]:
    """Render the final report, store it at runs/<run_id>/report.md; (text, manifest, gate, cost line).

    gate: the run record's `gate` field (trainer.gate.GateOutcome.to_record): promoted, kept or pending, with
    the counts and the champion compared; floor and margin fill in a record written before they were in it.
    """
    prefix = version_prefix(model_name, version)
    manifest = read_manifest(store, model_name, version)
    metrics = json.loads(store.get(prefix + METRICS_FILE))
    view = GateOutcome.from_record(gate, version=version, floor=floor, margin=margin)
    record = runstate.read_status(store, run_id) or {}
    placement = placement_of(record)
    text = render_report(manifest, metrics, store.uri_of(prefix + CURVES_FILE), gate=view, **placement)
    store.put(run_report_key(run_id), text.encode())
    log.info("run %s: report at %s", run_id, store.uri_of(run_report_key(run_id)))
    return text, manifest, view, cost_line(manifest, **placement)


def placement_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """Where the run record says the run trained, as trainer.report.cost_line takes it: the capacity
    provider (written by the trigger when it knows, docs/contracts.md), or AWS Batch with its node count,
    and whether the attempt was sent to on-demand capacity."""
    capacity = record.get("capacity_provider")
    nodes = record.get("nodes")
    if record.get("compute") == "batch" and isinstance(nodes, int) and not isinstance(nodes, bool) and nodes >= 1:
        return {"capacity": "AWS Batch (on demand)", "nodes": nodes, "on_demand": True}
    on_demand = record.get("on_demand")
    return {
        "capacity": capacity if isinstance(capacity, str) else None,
        "nodes": 1,
        "on_demand": on_demand if isinstance(on_demand, bool) else None,
    }


def after_success(
    store: Store,
    config: TrainConfig,
    run_id: str,
    version: str,
    gate_record: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Report, notify, track; never raises (see the module docstring). gate_record: the record's `gate`."""
    environ = os.environ if environ is None else environ
    try:
        text, manifest, gate, cost = write_run_report(
            store,
            config.model_name,
            run_id,
            version,
            gate_record,
            floor=config.accuracy_floor,
            margin=config.champion_margin,
        )
    except Exception as exc:  # noqa: BLE001 -- best effort: the run has succeeded already
        log.warning("run %s: could not write its report: %s: %s", run_id, type(exc).__name__, exc)
        return
    if config.notify_topic_arn:
        from trainer import notify

        subject, body = notify.success_message(
            manifest,
            outcome=gate.outcome,
            reason=gate.reason,
            cost=cost,
            report_uri=store.uri_of(run_report_key(run_id)),
        )
        notify.publish(config.notify_topic_arn, subject, body)
    if environ.get("MLFLOW_TRACKING_URI"):
        from trainer import tracking

        record = runstate.read_status(store, run_id) or {}
        live = record.get("mlflow_run_id")  # the MLflow run training logged into (trainer.tracking)
        tracking.log_version(
            store, manifest, report=text, promoted=gate.promoted, mlflow_run_id=live if isinstance(live, str) else None
        )
