"""The scale-out inputs of the trigger, parsed and dispatched apart from the core flows (trigger.handler).

- a retrain request with `sweep` (trigger.sweeps, trigger.sweep_flow);
- a retrain request with `nodes` or `compute` (trigger.compute; one node -> trigger.flows.handle_retrain on
  that compute, nodes > 1 -> trigger.batch);
- an AWS Batch "Batch Job State Change" of our queue (trigger.batch).
"""

from __future__ import annotations

import time
from typing import Any

from trigger.aws import Clients
from trigger.batch import (
    BatchJobEvent,
    handle_batch_job_event,
    handle_batch_retrain,
    is_batch_event,
    parse_batch_job_event,
)
from trigger.compute import ScaledRequest, is_scaled_request, parse_scaled_request
from trigger.config import Config
from trigger.ecs import Sleep
from trigger.flows import handle_retrain
from trigger.log import log_decision
from trigger.records import Clock, utc_now
from trigger.sweep_flow import handle_sweep
from trigger.sweeps import SweepRequest, is_sweep_request, parse_sweep_request

ScaleOutInput = SweepRequest | ScaledRequest | BatchJobEvent
SCALE_OUT_INPUTS = (SweepRequest, ScaledRequest, BatchJobEvent)


def parse_scale_out(event: object, config: Config) -> ScaleOutInput | None:
    """The scale-out input `event` is, validated; None when it is none of them (trigger.events parses it)."""
    if is_sweep_request(event):
        return parse_sweep_request(event)
    if is_scaled_request(event):
        return parse_scaled_request(event, config)
    if is_batch_event(event):
        return parse_batch_job_event(event, config)
    return None


def dispatch_scale_out(
    parsed: ScaleOutInput, config: Config, clients: Clients, *, clock: Clock = utc_now, sleep: Sleep = time.sleep
) -> dict[str, Any]:
    """Run the flow for a scale-out input; log one line per decision; return the answer."""
    if isinstance(parsed, SweepRequest):  # a few starts per invocation, then the ranking
        started, answer = handle_sweep(clients, config, parsed, clock=clock, sleep=sleep)
        for each in started:
            log_decision(event_id=parsed.event_id, **each.fields())
        log_decision("sweep", answer["state"], event_id=parsed.event_id, remaining=answer["remaining"])
        return answer
    if isinstance(parsed, BatchJobEvent):
        outcome = handle_batch_job_event(clients, config, parsed, clock=clock)
        return log_decision(event_id=parsed.event_id, **outcome.fields())
    if parsed.nodes == 1:  # one task: on Fargate, or on the GPU capacity provider
        outcome, answer = handle_retrain(clients, config, parsed.base, compute=parsed.compute, clock=clock, sleep=sleep)
    else:
        outcome, answer = handle_batch_retrain(clients, config, parsed.base, parsed.nodes, clock=clock)
    log_decision(event_id=parsed.event_id, **outcome.fields())
    return answer
