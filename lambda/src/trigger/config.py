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

from trigger.errors import ConfigError

# ECS RunTask's clientToken is "<run_id>-a<attempt>[-od]" (at most 64 characters); two digits of
# attempts keep every token well inside that limit.
MAX_ATTEMPTS_LIMIT = 99

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_REPOSITORY_NAME = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_REPOSITORY_URI = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?/(?P<name>\S+)$")
_SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8,17}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


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
    # Scale-out (terraform gpu.tf, batch.tf): "" when that capacity is not deployed; requests that need
    # it are then refused (trigger.compute). The model name locates the versions a sweep ranks.
    gpu_task_family: str = ""
    gpu_capacity_provider: str = ""
    batch_job_queue: str = ""
    batch_job_definition: str = ""
    model_name: str = "cifar10"


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate every PUSHTRAIN_* variable; raise ConfigError naming each bad one."""
    env = os.environ if environ is None else environ
    problems: list[str] = []

    def text(name: str, pattern: re.Pattern[str]) -> str:
        value = env.get(name, "")
        if not value:
            problems.append(f"{name} is not set")
        elif not pattern.match(value):
            problems.append(f"{name}={value!r} does not match {pattern.pattern}")
        return value

    def id_list(name: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
        raw = env.get(name, "")
        items = tuple(item.strip() for item in raw.split(",") if item.strip())
        if not items:
            problems.append(f"{name} is not set (a comma-separated list)")
        bad = [item for item in items if not pattern.match(item)]
        if bad:
            problems.append(f"{name} has invalid entries {bad} (expected {pattern.pattern})")
        return items

    cluster = text("PUSHTRAIN_CLUSTER", _NAME)
    task_family = text("PUSHTRAIN_TASK_FAMILY", _NAME)
    container_name = text("PUSHTRAIN_CONTAINER_NAME", _NAME)
    repository_name = text("PUSHTRAIN_REPOSITORY_NAME", _REPOSITORY_NAME)
    repository_uri = text("PUSHTRAIN_REPOSITORY_URI", _REPOSITORY_URI)
    uri = _REPOSITORY_URI.match(repository_uri)
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
    raw_attempts = env.get("PUSHTRAIN_MAX_ATTEMPTS", "")
    max_attempts = 0
    try:
        max_attempts = int(raw_attempts)
    except ValueError:
        problems.append(f"PUSHTRAIN_MAX_ATTEMPTS={raw_attempts!r} is not an integer")
    else:
        if not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
            problems.append(f"PUSHTRAIN_MAX_ATTEMPTS={max_attempts} is outside 1..{MAX_ATTEMPTS_LIMIT}")

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
        **scale_out,
    )


def _scale_out(env: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    """The optional scale-out variables (empty: not deployed), appending what is wrong to `problems`."""

    def optional(name: str, pattern: re.Pattern[str]) -> str:
        value = env.get(name, "")
        if value and not pattern.match(value):
            problems.append(f"{name}={value!r} does not match {pattern.pattern}")
        return value

    values = {
        "gpu_task_family": optional("PUSHTRAIN_GPU_TASK_FAMILY", _NAME),
        "gpu_capacity_provider": optional("PUSHTRAIN_GPU_CAPACITY_PROVIDER", _NAME),
        "batch_job_queue": optional("PUSHTRAIN_BATCH_JOB_QUEUE", _NAME),
        "batch_job_definition": optional("PUSHTRAIN_BATCH_JOB_DEFINITION", _NAME),
        "model_name": optional("PUSHTRAIN_MODEL_NAME", _NAME) or "cifar10",
    }
    for first, second in (("gpu_task_family", "gpu_capacity_provider"), ("batch_job_queue", "batch_job_definition")):
        if bool(values[first]) != bool(values[second]):
            problems.append(f"PUSHTRAIN_{first.upper()} and PUSHTRAIN_{second.upper()} must both be set or both empty")
    return values
