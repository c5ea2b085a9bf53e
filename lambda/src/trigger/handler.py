"""The Lambda entry point: `trigger.handler.lambda_handler`, and the trigger's one front door.

An adapter: every input passes once through INPUTS, a table of input kinds (matches, parse, flow) tried
in order; the first kind that matches parses and validates the event, and its flow runs it (trigger.flows,
trigger.sweep_flow, trigger.reconcile), logging one JSON line per decision (trigger.log). An event no kind
matches is refused here, in one place (trigger.events.unsupported). Every failure is raised so Lambda's
retries and the dead-letter queue see it. Configuration and clients are made once per container, on the
first invocation.

A new event source is one row here (docs/README "where to change what"): a predicate and a parser in
trigger.events (or a module of its own), and a flow.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from trigger import events
from trigger.aws import Clients, default_clients
from trigger.compute import ScaledRequest, is_scaled_request, parse_scaled_request
from trigger.config import Config, load_config
from trigger.ecs import Sleep
from trigger.errors import InvalidEventError
from trigger.events import BatchJobEvent, PushEvent, RetrainRequest, ScheduledEvent, SkippedEvent, TaskStopEvent
from trigger.flows import handle_batch_job_event, handle_push, handle_retrain, handle_task_stop
from trigger.log import log_decision
from trigger.notices import InstanceNotice, handle_instance_notice, is_instance_notice, parse_instance_notice
from trigger.reconcile import reconcile
from trigger.records import Clock, utc_now
from trigger.sweep_flow import handle_sweep, sweep_task_stopped
from trigger.sweeps import SweepRequest, is_sweep_request, parse_sweep_request

Flow = Callable[[Any, Config, Clients, Clock, Sleep], dict[str, Any]]


@dataclass(frozen=True)
class Input:
    """One kind of input: how to recognise it, how to parse it (InvalidEventError), what to do with it."""

    name: str
    matches: Callable[[Mapping[str, Any]], bool]
    parse: Callable[[Mapping[str, Any], Config], Any]
    flow: Flow


def _push(event: PushEvent, config: Config, clients: Clients, clock: Clock, sleep: Sleep) -> dict[str, Any]:
    outcome = handle_push(clients, config, event, clock=clock, sleep=sleep)
    return log_decision(event_id=event.event_id, **outcome.fields())


def _task_stop(event: TaskStopEvent, config: Config, clients: Clients, clock: Clock, sleep: Sleep) -> dict[str, Any]:
    outcome = handle_task_stop(clients, config, event, clock=clock, sleep=sleep)
    answer = log_decision(event_id=event.event_id, **outcome.fields())
    # A sweep's run or refit stopped: the next sets start as runs end, the last run's end claims the refit,
    # and the refit's end finishes the sweep (trigger.sweep_flow.sweep_task_stopped).
    swept = sweep_task_stopped(clients, config, event.environment, clock=clock, sleep=sleep)
    if swept is not None:
        started, record = swept
        for each in started:
            log_decision(event_id=event.event_id, **each.fields())
        log_decision("sweep", record["state"], event_id=event.event_id, request_id=record["request_id"],
                     sweep_outcome=record.get("outcome"))  # fmt: skip
    return answer


def _batch_job(event: BatchJobEvent, config: Config, clients: Clients, clock: Clock, sleep: Sleep) -> dict[str, Any]:
    outcome = handle_batch_job_event(clients, config, event, clock=clock)
    return log_decision(event_id=event.event_id, **outcome.fields())


def _instance_notice(
    notice: InstanceNotice, config: Config, clients: Clients, clock: Clock, sleep: Sleep
) -> dict[str, Any]:
    """An EC2 Spot warning or rebalance recommendation: stop our tasks on that instance gracefully."""
    outcomes = handle_instance_notice(clients, config, notice, clock=clock, sleep=sleep)
    answers = [log_decision(event_id=notice.event_id, **each.fields()) for each in outcomes]
    return answers[-1]


def _retrain(
    request: RetrainRequest | ScaledRequest, config: Config, clients: Clients, clock: Clock, sleep: Sleep
) -> dict[str, Any]:
    """A retrain request: on the default compute, or (ScaledRequest) on `compute` / `nodes` machines."""
    base, compute, nodes = (
        (request.base, request.compute, request.nodes) if isinstance(request, ScaledRequest) else (request, None, 1)
    )
    outcome, answer = handle_retrain(clients, config, base, compute=compute, nodes=nodes, clock=clock, sleep=sleep)
    log_decision(event_id=request.event_id, **outcome.fields())
    return answer


def _sweep(request: SweepRequest, config: Config, clients: Clients, clock: Clock, sleep: Sleep) -> dict[str, Any]:
    started, answer = handle_sweep(clients, config, request, clock=clock, sleep=sleep)  # a few starts per call
    for each in started:
        log_decision(event_id=request.event_id, **each.fields())
    log_decision(
        "sweep", answer["state"], event_id=request.event_id, remaining=answer["remaining"], waiting=answer["waiting"]
    )
    return answer


def _reconcile(event: ScheduledEvent, config: Config, clients: Clients, clock: Clock, sleep: Sleep) -> dict[str, Any]:
    # PUSHTRAIN_RECONCILE_LOOKBACK_DAYS: older runs and images were trained or deliberately left
    # alone, and a first deployment must not start one paid task per image ever pushed.
    since = timedelta(days=config.reconcile_lookback_days)
    outcomes = reconcile(clients, config, since=since, clock=clock, sleep=sleep)
    for each in outcomes:
        log_decision(event_id=event.event_id, **each.fields())
    started = sum(o.outcome in {"started", "retried-start"} for o in outcomes)
    return log_decision("reconcile", "done", event_id=event.event_id, started=started, decisions=len(outcomes))


# In order: the first match wins (a sweep or a scaled request is a retrain request with more keys).
INPUTS: tuple[Input, ...] = (
    Input("sweep", is_sweep_request, lambda event, config: parse_sweep_request(event), _sweep),
    Input("scaled retrain", is_scaled_request, parse_scaled_request, _retrain),
    Input("retrain", events.is_retrain_request, lambda event, config: events.parse_retrain_request(event), _retrain),
    Input("push", events.is_push_event, events.parse_push_event, _push),
    Input("task stop", events.is_task_state_change, events.parse_task_stop_event, _task_stop),
    Input("batch job", events.is_batch_event, events.parse_batch_job_event, _batch_job),
    Input("spot notice", is_instance_notice, parse_instance_notice, _instance_notice),
    Input("schedule", events.is_scheduled_event, events.parse_scheduled_event, _reconcile),
)


def classify(event: object) -> Input:
    """The input kind of `event`; InvalidEventError (the one refusal) when it is none of them."""
    if isinstance(event, Mapping):
        for kind in INPUTS:
            if kind.matches(event):
                return kind
    raise events.unsupported(event)


def parse(event: object, config: Config) -> Any:
    """The validated input (or a SkippedEvent: well-formed, not for us); InvalidEventError names the problem."""
    return _read(event, config)[1]


def _read(event: object, config: Config) -> tuple[Input, Any]:
    """The input kind and the parsed input. A document nested deeper than Python can walk (Lambda hands
    over any JSON; `repr` or a parser would raise RecursionError) is refused like any malformed input."""
    try:
        kind = classify(event)
        return kind, kind.parse(event, config)  # type: ignore[arg-type] (classify checked it is a Mapping)
    except RecursionError:
        raise InvalidEventError(
            f"event is nested deeper than the parser's limit (Python recursion limit {sys.getrecursionlimit()}); "
            "no input of the trigger nests more than a few levels"
        ) from None


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
        kind, parsed = _read(event, config)
    except InvalidEventError as error:
        log_decision("reject", "invalid-event", event_id=event_id, error=str(error))
        raise
    if isinstance(parsed, SkippedEvent):
        return log_decision("skip", "not-for-us", event_id=parsed.event_id, reason=parsed.reason)
    try:
        return kind.flow(parsed, config, clients, clock, sleep)
    except Exception as error:
        log_decision("error", type(error).__name__, event_id=parsed.event_id, error=str(error))
        raise
