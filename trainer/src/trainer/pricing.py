"""What a run on EC2 instances cost: the GPU capacity provider's tasks and AWS Batch multi-node jobs.

A Fargate run is priced by TrainConfig.cost_per_hour (trainer.publish.estimated_cost). An EC2-backed run
is billed per instance-second at its instance type's price, so the report needs the type and the
count. The trainer cannot ask for the type (an awsvpc task cannot reach the instance metadata service:
the launch template's IMDSv2 hop limit is 1, terraform/ec2_capacity.tf), so it recognises it from the
hardware it trained on, as the manifest records it: the GPU's name and the host's vCPU count. Each row
below is one instance type the stack's defaults may launch (var.gpu.instance_types, var.batch.instance_type);
a machine that matches no row is reported as not estimated, never priced as something else.

Prices: Amazon EC2 On-Demand, Linux, US East (N. Virginia), USD per instance-hour, from
https://aws.amazon.com/ec2/pricing/on-demand/ as quoted in this repository since November 2026
(terraform/gpu.tf, README "Scaling out"); not re-read on this machine (it has no network). Spot
capacity is billed at the Spot price of each hour, which is lower and changes; the on-demand figure
is its upper bound. Arithmetic is exact (Decimal), rounded once, half up, to 1/10000 USD.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

PRICES_SOURCE = "https://aws.amazon.com/ec2/pricing/on-demand/"
PRICES_AS_OF = "2026-11"
PRICES_REGION = "us-east-1"
SECONDS_PER_HOUR = 3600
USD_PRECISION = Decimal("0.0001")  # USD: the precision the report shows


@dataclass(frozen=True)
class InstanceType:
    """One priced instance type: its name, the GPU model it carries, its vCPUs and on-demand $/hour."""

    name: str
    gpu_model: str  # as it appears in torch.cuda.get_device_name ("NVIDIA L4", "NVIDIA A10G", "Tesla T4")
    vcpus: int
    usd_per_hour: Decimal


INSTANCE_TYPES: tuple[InstanceType, ...] = (
    InstanceType("g6.xlarge", "L4", 4, Decimal("0.8048")),
    InstanceType("g5.xlarge", "A10G", 4, Decimal("1.006")),
    InstanceType("g4dn.xlarge", "T4", 4, Decimal("0.526")),
)


def instance_of(hardware: Mapping[str, Any]) -> InstanceType | None:
    """The priced instance type `hardware` (a manifest's) ran on, or None when it matches none.

    The GPU name must name the type's GPU model as a word ("NVIDIA L4" is an L4, "NVIDIA L40S" is not),
    and the host's vCPUs (`host_cpus`, when recorded) must be the type's.
    """
    gpu = hardware.get("gpu")
    if not isinstance(gpu, str):
        return None
    words = gpu.replace("-", " ").split()
    host_cpus = hardware.get("host_cpus")
    matches = [
        kind
        for kind in INSTANCE_TYPES
        if kind.gpu_model in words and (not isinstance(host_cpus, int) or host_cpus == kind.vcpus)
    ]
    return matches[0] if len(matches) == 1 else None


def run_cost(kind: InstanceType, nodes: int, wall_seconds: Decimal) -> Decimal:
    """USD for `nodes` instances of `kind` over `wall_seconds`, at the on-demand price, exactly then rounded."""
    if nodes < 1 or wall_seconds < 0:
        raise ValueError(f"nodes={nodes} must be >= 1 and wall_seconds={wall_seconds} >= 0")
    exact = kind.usd_per_hour * nodes * wall_seconds / SECONDS_PER_HOUR
    return exact.quantize(USD_PRECISION, rounding=ROUND_HALF_UP)
