"""The trigger's configuration: every PUSHTRAIN_* environment variable, read here and nowhere else.

Terraform sets them on the Lambda function (see docs/contracts.md). `load_config` validates all of
them at once and names each variable that is missing or wrong, so a misconfigured function fails its
first invocation with one clear message instead of a KeyError deep inside a request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trigger.errors import ConfigError

# ECS RunTask's clientToken is "<run_id>-a<attempt>[-od]" (at most 64 characters); two digits of
# attempts keep every token well inside that limit.
MAX_ATTEMPTS_LIMIT = 99
# A start is claimed in the run record before RunTask; a claim older than PUSHTRAIN_CLAIM_SECONDS
# belongs to an invocation that died (the function's timeout bounds every invocation), so another may
# take it over. Terraform sets it to three times the function's timeout; below one timeout a live start
# could be taken over, so the floor is Lambda's shortest useful timeout for us (60 s).
MIN_CLAIM_SECONDS, MAX_CLAIM_SECONDS = 60, 3600
# How far back the scheduled reconcile looks (run records last written, images pushed); runs/
# objects must live longer (terraform/variables.tf checkpoint_expiration_days), or an expired record
# would make an old image look never trained.
MAX_LOOKBACK_DAYS = 365
MAX_BATCH_NODES = 16  # terraform/variables.tf allows var.batch.max_nodes from 2 to 16
# Where a run trains (docs/contracts.md): "cpu" on Fargate, "gpu" on the GPU capacity provider.
COMPUTES = ("cpu", "gpu")
_DECIMAL = re.compile(r"[0-9]{1,9}", re.ASCII)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}", re.ASCII)
_REPOSITORY_NAME = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*", re.ASCII)
_REPOSITORY_URI = re.compile(r"[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?/(?P<name>[^\s]+)", re.ASCII)
_SUBNET = re.compile(r"subnet-[0-9a-f]{8,17}", re.ASCII)
_SECURITY_GROUP = re.compile(r"sg-[0-9a-f]{8,17}", re.ASCII)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)


@dataclass(frozen=True)
class Config:
    """Where the trigger starts training: cluster, task family, network, bucket and limits."""

    cluster: str
    task_family: str
    container_name: str
    repository_name: str
    repository_uri: str
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]
    assign_public_ip: str
    bucket: str
    max_attempts: int
    claim_seconds: int
    reconcile_lookback_days: int
    # Scale-out (terraform gpu.tf, batch.tf): "" when that capacity is not deployed; requests that need
    # it are then refused (trigger.compute). The model name locates the versions a sweep ranks.
    gpu_task_family: str = ""
    gpu_capacity_provider: str = ""
    # With var.gpu.spot the first provider is Spot and this one on-demand (a GPU Spot task interrupted
    # or never placed resumes here); "" when the one GPU provider is on-demand already.
    gpu_on_demand_capacity_provider: str = ""
    # Where a push trains, and a retrain request or sweep without `compute` (trigger.compute).
    default_compute: str = "cpu"
    batch_job_queue: str = ""
    batch_job_definition: str = ""
    # The most nodes the Batch compute environment holds (var.batch.max_nodes): a job asking for more
    # would wait RUNNABLE until the queue's time limit cancels it, so the trigger refuses it. 0: no Batch.
    batch_max_nodes: int = 0
    model_name: str = "cifar10"


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate every PUSHTRAIN_* variable; raise ConfigError naming each bad one."""
    env = os.environ if environ is None else environ
    problems: list[str] = []

    def text(name: str, pattern: re.Pattern[str]) -> str:
        value = env.get(name, "")
        if not value:
            problems.append(f"{name} is not set")
        elif not pattern.fullmatch(value):
            problems.append(f"{name}={value[:200]!r} does not match {pattern.pattern}")
        return value

    def id_list(name: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
        raw = env.get(name, "")
        items = tuple(item.strip() for item in raw.split(",") if item.strip())
        if not items:
            problems.append(f"{name} is not set (a comma-separated list)")
        bad = [item for item in items if not pattern.fullmatch(item)]
        if bad:
            problems.append(f"{name} has invalid entries {bad} (expected {pattern.pattern})")
        return items

    def number(name: str, low: int, high: int) -> int:
        raw = env.get(name, "")
        if not _DECIMAL.fullmatch(raw):
            problems.append(f"{name}={raw[:40]!r} is not a whole number in ASCII decimal")
            return 0
        value = int(raw)
        if not low <= value <= high:
            problems.append(f"{name}={value} is outside {low}..{high}")
        return value

    cluster = text("PUSHTRAIN_CLUSTER", _NAME)
    task_family = text("PUSHTRAIN_TASK_FAMILY", _NAME)
    container_name = text("PUSHTRAIN_CONTAINER_NAME", _NAME)
    repository_name = text("PUSHTRAIN_REPOSITORY_NAME", _REPOSITORY_NAME)
    repository_uri = text("PUSHTRAIN_REPOSITORY_URI", _REPOSITORY_URI)
    uri = _REPOSITORY_URI.fullmatch(repository_uri)
    if uri and repository_name and uri.group("name") != repository_name:
        problems.append(
            f"PUSHTRAIN_REPOSITORY_URI={repository_uri!r} does not end in PUSHTRAIN_REPOSITORY_NAME={repository_name!r}"
        )
    subnets = id_list("PUSHTRAIN_SUBNETS", _SUBNET)
    security_groups = id_list("PUSHTRAIN_SECURITY_GROUPS", _SECURITY_GROUP)
    assign_public_ip = env.get("PUSHTRAIN_ASSIGN_PUBLIC_IP", "")
    if assign_public_ip not in {"ENABLED", "DISABLED"}:
        problems.append(f"PUSHTRAIN_ASSIGN_PUBLIC_IP={assign_public_ip!r} is not ENABLED or DISABLED")
    bucket = text("PUSHTRAIN_BUCKET", _BUCKET)
    max_attempts = number("PUSHTRAIN_MAX_ATTEMPTS", 1, MAX_ATTEMPTS_LIMIT)
    claim_seconds = number("PUSHTRAIN_CLAIM_SECONDS", MIN_CLAIM_SECONDS, MAX_CLAIM_SECONDS)
    reconcile_lookback_days = number("PUSHTRAIN_RECONCILE_LOOKBACK_DAYS", 1, MAX_LOOKBACK_DAYS)

    scale_out = _scale_out(env, problems)

    if problems:
        raise ConfigError("invalid trigger configuration: " + "; ".join(problems))
    return Config(
        cluster=cluster,
        task_family=task_family,
        container_name=container_name,
        repository_name=repository_name,
        repository_uri=repository_uri,
        subnets=subnets,
        security_groups=security_groups,
        assign_public_ip=assign_public_ip,
        bucket=bucket,
        max_attempts=max_attempts,
        claim_seconds=claim_seconds,
        reconcile_lookback_days=reconcile_lookback_days,
        **scale_out,
    )


def _scale_out(env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """The optional scale-out variables (empty: not deployed), appending what is wrong to `problems`."""

    def optional(name: str, pattern: re.Pattern[str]) -> str:
        value = env.get(name, "")
        if value and not pattern.fullmatch(value):
            problems.append(f"{name}={value!r} does not match {pattern.pattern}")
        return value

    values = {
        "gpu_task_family": optional("PUSHTRAIN_GPU_TASK_FAMILY", _NAME),
        "gpu_capacity_provider": optional("PUSHTRAIN_GPU_CAPACITY_PROVIDER", _NAME),
        "gpu_on_demand_capacity_provider": optional("PUSHTRAIN_GPU_ON_DEMAND_CAPACITY_PROVIDER", _NAME),
        "default_compute": env.get("PUSHTRAIN_DEFAULT_COMPUTE", "") or "cpu",
        "batch_job_queue": optional("PUSHTRAIN_BATCH_JOB_QUEUE", _NAME),
        "batch_job_definition": optional("PUSHTRAIN_BATCH_JOB_DEFINITION", _NAME),
        "model_name": optional("PUSHTRAIN_MODEL_NAME", _NAME) or "cifar10",
    }
    for first, second in (("gpu_task_family", "gpu_capacity_provider"), ("batch_job_queue", "batch_job_definition")):
        if bool(values[first]) != bool(values[second]):
            problems.append(f"PUSHTRAIN_{first.upper()} and PUSHTRAIN_{second.upper()} must both be set or both empty")
    raw_max_nodes = env.get("PUSHTRAIN_BATCH_MAX_NODES", "")
    if values["batch_job_queue"]:
        if _DECIMAL.fullmatch(raw_max_nodes) and 2 <= int(raw_max_nodes) <= MAX_BATCH_NODES:
            values["batch_max_nodes"] = int(raw_max_nodes)
        else:
            problems.append(
                f"PUSHTRAIN_BATCH_MAX_NODES={raw_max_nodes[:40]!r} must be a whole number from 2 to {MAX_BATCH_NODES} "
                "when PUSHTRAIN_BATCH_JOB_QUEUE is set (Terraform var.batch.max_nodes)"
            )
    elif raw_max_nodes:
        problems.append("PUSHTRAIN_BATCH_MAX_NODES is set but PUSHTRAIN_BATCH_JOB_QUEUE is empty")
    if values["gpu_on_demand_capacity_provider"] and not values["gpu_capacity_provider"]:
        problems.append("PUSHTRAIN_GPU_ON_DEMAND_CAPACITY_PROVIDER is set but PUSHTRAIN_GPU_CAPACITY_PROVIDER is empty")
    if values["default_compute"] not in COMPUTES:
        problems.append(f"PUSHTRAIN_DEFAULT_COMPUTE={values['default_compute'][:40]!r} is not one of {list(COMPUTES)}")
    elif values["default_compute"] == "gpu" and not (values["gpu_task_family"] and values["gpu_capacity_provider"]):
        problems.append(
            "PUSHTRAIN_DEFAULT_COMPUTE='gpu' needs GPU capacity: PUSHTRAIN_GPU_TASK_FAMILY and "
            "PUSHTRAIN_GPU_CAPACITY_PROVIDER are empty (Terraform var.gpu.enabled = true)"
        )
    return values
