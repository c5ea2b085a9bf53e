"""The Lambda entry point: `trigger.handler.lambda_handler`.

An adapter: validate the event (trigger.events), run the flow for it (trigger.flows), log one JSON
line per decision (trigger.log), and raise on every failure so Lambda's retries and the dead-letter
queue see it. Configuration and clients are made once per container, on the first invocation.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from trigger.aws import Clients, default_clients
from trigger.config import Config, load_config
from trigger.ecs import Sleep
from trigger.errors import InvalidEventError
from trigger.events import (
    Event,
    PushEvent,
    RetrainRequest,
    ScheduledEvent,
    SkippedEvent,
    TaskStopEvent,
    parse_event,
)
from trigger.flows import handle_push, handle_retrain, handle_task_stop, reconcile
from trigger.log import log_decision
from trigger.records import Clock, utc_now
from trigger.scale_out import SCALE_OUT_INPUTS, ScaleOutInput, dispatch_scale_out, parse_scale_out


@functools.cache
def current_config() -> Config:
    """The validated configuration, read once per container (a ConfigError names every bad variable)."""
    return load_config()


def lambda_handler(event: object, context: object) -> dict[str, Any]:
    """Lambda calls this with the invocation payload; `context` is not used."""
    return handle(event, current_config(), default_clients())


def handle(
    event: object, config: Config, clients: Clients, *, clock: Clock = utc_now, sleep: Sleep = time.sleep
) -> dict[str, Any]:
    """Handle one event; return the decision (for a retrain request: the answer of docs/contracts.md)."""
    raw_id = event.get("id") if isinstance(event, Mapping) else None
    event_id = raw_id if isinstance(raw_id, str) else None
    try:
        parsed = parse_scale_out(event, config) or parse_event(event, config)
    except InvalidEventError as error:
        log_decision("reject", "invalid-event", event_id=event_id, error=str(error))
        raise
    try:
        return _dispatch(parsed, config, clients, clock=clock, sleep=sleep)
    except Exception as error:
        log_decision("error", type(error).__name__, event_id=parsed.event_id, error=str(error))
        raise


def _dispatch(
    parsed: Event | ScaleOutInput, config: Config, clients: Clients, *, clock: Clock, sleep: Sleep
) -> dict[str, Any]:
    if isinstance(parsed, SCALE_OUT_INPUTS):  # sweeps, multi-node and GPU requests, Batch jobs (trigger.scale_out)
        return dispatch_scale_out(parsed, config, clients, clock=clock, sleep=sleep)
    if isinstance(parsed, SkippedEvent):
        return log_decision("skip", "not-for-us", event_id=parsed.event_id, reason=parsed.reason)
    if isinstance(parsed, PushEvent):
        outcome = handle_push(clients, config, parsed, clock=clock, sleep=sleep)
    elif isinstance(parsed, TaskStopEvent):
        outcome = handle_task_stop(clients, config, parsed, clock=clock, sleep=sleep)
    elif isinstance(parsed, RetrainRequest):
        outcome, answer = handle_retrain(clients, config, parsed, clock=clock, sleep=sleep)
        log_decision(event_id=parsed.event_id, **outcome.fields())
        return answer
    elif isinstance(parsed, ScheduledEvent):
        # PUSHTRAIN_RECONCILE_LOOKBACK_DAYS: older runs and images were trained or deliberately left
        # alone, and a first deployment must not start one paid task per image ever pushed.
        since = timedelta(days=config.reconcile_lookback_days)
        outcomes = reconcile(clients, config, since=since, clock=clock, sleep=sleep)
        for each in outcomes:
            log_decision(event_id=parsed.event_id, **each.fields())
        started = sum(o.outcome in {"started", "retried-start"} for o in outcomes)
        return log_decision("reconcile", "done", event_id=parsed.event_id, started=started, decisions=len(outcomes))
    else:
        raise TypeError(f"parse_event returned {type(parsed).__name__}, which has no flow")
    return log_decision(event_id=parsed.event_id, **outcome.fields())
