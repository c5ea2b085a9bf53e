"""Where a retrain request runs: `nodes` and `compute` (docs/contracts.md). Pure: no AWS calls.

    {"action": "retrain", ..., "nodes": 4}                  # AWS Batch multi-node job (trigger.batch)
    {"action": "retrain", ..., "compute": "gpu"}            # one GPU task (ECS capacity provider)

Without `compute` a request runs on PUSHTRAIN_DEFAULT_COMPUTE (Terraform var.default_compute), as
pushes and sweeps do. A GPU run trains the CUDA variant of the image: the tag `<tag>-cuda`, or a
digest that carries such a tag (trigger.flows.resolve_image).

A request that needs capacity this stack has not deployed is refused here, before anything is
recorded or started, with one line naming the Terraform variable that deploys it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from trigger.config import COMPUTES, Config
from trigger.errors import InvalidEventError
from trigger.events import RetrainRequest, parse_retrain_request

CPU, GPU = COMPUTES
BATCH_COMPUTE = "batch"  # a run record's `compute` for an AWS Batch multi-node run (trigger.batch)
MAX_NODES = 16  # var.batch.max_nodes allows at most this many
SCALE_KEYS = ("compute", "nodes")


@dataclass(frozen=True)
class ScaledRequest:
    """A retrain request with a place to run: `nodes` machines of kind `compute`."""

    base: RetrainRequest
    compute: str
    nodes: int

    @property
    def event_id(self) -> str:
        return self.base.event_id


def is_scaled_request(event: object) -> TypeGuard[Mapping[str, Any]]:
    """A retrain request that names `nodes` or `compute` (and no sweep: sweeps run on the default)."""
    return (
        isinstance(event, Mapping)
        and event.get("action") == "retrain"
        and "sweep" not in event
        and any(key in event for key in SCALE_KEYS)
    )


def parse_scaled_request(event: Mapping[str, Any], config: Config) -> ScaledRequest:
    """Validate the request and check that its capacity is deployed; InvalidEventError names the problem."""
    base = parse_retrain_request({k: v for k, v in event.items() if k not in SCALE_KEYS})
    compute = event.get("compute", config.default_compute)
    if compute not in COMPUTES:
        raise InvalidEventError(f"compute={compute!r:.40} is not one of {list(COMPUTES)}")
    nodes = event.get("nodes", 1)
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
        raise InvalidEventError(f"nodes={nodes!r:.40} must be an integer from 1 to {MAX_NODES}")
    if nodes > 1 and not config.batch_job_queue:
        raise InvalidEventError(
            f"nodes={nodes} needs multi-node capacity, which this stack has not deployed "
            "(Terraform var.batch.enabled = true, terraform/batch.tf)"
        )
    if nodes > 1 and nodes > config.batch_max_nodes:
        raise InvalidEventError(
            f"nodes={nodes} is more than the {config.batch_max_nodes} nodes the Batch compute environment holds "
            "(Terraform var.batch.max_nodes); such a job would never start"
        )
    if compute == GPU and nodes == 1 and not config.gpu_task_family:
        raise InvalidEventError(
            "compute='gpu' needs GPU capacity, which this stack has not deployed "
            "(Terraform var.gpu.enabled = true, terraform/gpu.tf)"
        )
    return ScaledRequest(base=base, compute=compute, nodes=nodes)


def task_family(config: Config, compute: str) -> str:
    """The task definition family a run of `compute` copies: the Fargate trainer family or the GPU one."""
    if compute == GPU:
        if not config.gpu_task_family:
            raise InvalidEventError(
                "compute='gpu' needs GPU capacity, which this stack has not deployed "
                "(Terraform var.gpu.enabled = true, terraform/gpu.tf)"
            )
        return config.gpu_task_family
    return config.task_family
