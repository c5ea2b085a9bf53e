"""Run identity and the per-run parts of a RunTask request. Pure functions (docs/contracts.md).

- push:    run_id = "push-" + sha256(digest + canonical JSON of params)[:20]
- retrain: run_id = "retrain-" + request_id + "-" + sha256(digest + canonical JSON of params)[:8]
- clientToken = "<run_id>-a<attempt>", and "<run_id>-a<attempt>-od" for the on-demand fallback
  (a different request needs a different token: ECS answers a reused token with the first answer).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from trigger.events import PARAM_TYPES, SWEEP_PARAM_TYPES, Params

# Every run id the trigger makes (a stop event's TRAINER_RUN_ID is checked against it before any read).
RUN_ID = re.compile(r"push-[0-9a-f]{20}|retrain-[A-Za-z0-9_-]{1,19}-[0-9a-f]{8}", re.ASCII)
MAX_CLIENT_TOKEN = 64  # ECS RunTask limit
MAX_STARTED_BY = 36  # ECS RunTask limit
TAG_PREFIX = "pushtrain:"


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines what one attempt of a run starts."""

    run_id: str
    attempt: int
    digest: str
    git_sha: str | None
    params: Params
    # Where it trains (trigger.compute): "cpu" on Fargate, "gpu" on the GPU capacity provider; and
    # whether this attempt goes straight to the on-demand GPU provider (after a GPU Spot interruption
    # or a GPU start that found no capacity). Neither changes the run id: a GPU run trains another digest.
    compute: str = "cpu"
    on_demand: bool = False
    nodes: int = 1  # machines of a multi-node run (compute "batch", trigger.batch); 1 otherwise


def canonical_json(params: Params) -> str:
    """Sorted keys, no whitespace: the same parameters always hash the same."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _digest_hash(digest: str, params: Params) -> str:
    return hashlib.sha256((digest + canonical_json(params)).encode()).hexdigest()


def push_run_id(digest: str, params: Params) -> str:
    return "push-" + _digest_hash(digest, params)[:20]


def retrain_run_id(request_id: str, digest: str, params: Params) -> str:
    return f"retrain-{request_id}-{_digest_hash(digest, params)[:8]}"


def client_token(run_id: str, attempt: int, *, on_demand: bool = False) -> str:
    token = f"{run_id}-a{attempt}" + ("-od" if on_demand else "")
    if len(token) > MAX_CLIENT_TOKEN:
        raise ValueError(f"clientToken {token!r} is {len(token)} characters; ECS allows {MAX_CLIENT_TOKEN}")
    return token


def started_by(run_id: str) -> str:
    if len(run_id) > MAX_STARTED_BY:
        raise ValueError(f"run id {run_id!r} is {len(run_id)} characters; startedBy allows {MAX_STARTED_BY}")
    return run_id


def container_environment(spec: RunSpec) -> list[dict[str, str]]:
    """The TRAINER_* overrides of one attempt, sorted by name (a stable request for a stable token)."""
    env = {
        "TRAINER_RUN_ID": spec.run_id,
        "TRAINER_ATTEMPT": str(spec.attempt),
        "TRAINER_IMAGE_DIGEST": spec.digest,
    }
    if spec.git_sha:
        env["TRAINER_GIT_SHA"] = spec.git_sha
    for name, value in spec.params.items():
        if name not in PARAM_TYPES and name not in SWEEP_PARAM_TYPES:
            raise ValueError(f"parameter {name!r} is not one of {sorted(PARAM_TYPES | SWEEP_PARAM_TYPES)}")
        env[f"TRAINER_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return [{"name": name, "value": env[name]} for name in sorted(env)]


def resource_tags(spec: RunSpec) -> list[dict[str, str]]:
    tags = {"run-id": spec.run_id, "attempt": str(spec.attempt), "image-digest": spec.digest}
    if spec.git_sha:
        tags["git-sha"] = spec.git_sha
    return [{"key": TAG_PREFIX + key, "value": value} for key, value in tags.items()]
