"""What the trainer may use of the machine: CPU threads from the container's quota, the device, the precision.

A container sees every host core in `os.cpu_count()`, but Fargate (and `docker run --cpus`) limits it
through the cgroup v2 quota in `/sys/fs/cgroup/cpu.max` ("<quota> <period>" in microseconds, or
"max <period>" for none). Running more torch threads than the quota allows makes them wait for each
other at every barrier, so the thread count follows the quota.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"
CPUINFO = "/proc/cpuinfo"
# CPU flags that mean bf16 matrix multiplies run natively (not emulated through fp32, which is slower).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_quota_threads(path: str | os.PathLike[str] = CGROUP_CPU_MAX) -> int | None:
    """Whole CPUs the cgroup v2 quota allows (at least 1), or None without a quota or a readable file.

    "200000 100000" -> 2, "150000 100000" -> 1 (a fractional CPU is not worth a thread of its own),
    "max 100000" -> None.
    """
    try:
        text = Path(path).read_text(encoding="ascii").split()
    except OSError:
        return None
    if len(text) != 2 or text[0] == "max":
        return None
    try:
        quota, period = int(text[0]), int(text[1])
    except ValueError:
        log.warning("ignoring unreadable CPU quota %r in %s", " ".join(text), path)
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.floor(quota / period))


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_threads(requested: int, cpu_max_path: str | os.PathLike[str] = CGROUP_CPU_MAX) -> int:
    """Threads to use: `requested` when > 0, else the CPU quota, else the CPUs in the affinity mask."""
    if requested > 0:
        return requested
    quota = cpu_quota_threads(cpu_max_path)
    cpus = available_cpus()
    return min(quota, cpus) if quota is not None else cpus


def apply_threads(requested: int) -> int:
    """Set torch's intra-op thread count from `resolve_threads` and return it."""
    threads = resolve_threads(requested)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def resolve_device(requested: str) -> torch.device:
    """ "auto" -> CUDA when available, else the CPU; "cuda" without a GPU is an error."""
    if requested == "cuda" and not torch.cuda.is_available():
        from trainer.config import ConfigError

        raise ConfigError("device", "'cuda' requested, but torch sees no CUDA device here")
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_has_native_bf16(cpuinfo: str | os.PathLike[str] = CPUINFO) -> bool:
    """Whether the CPU advertises native bf16 instructions (avx512_bf16 or AMX)."""
    try:
        flags = Path(cpuinfo).read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return any(flag in flags.split() for flag in NATIVE_BF16_FLAGS)


def resolve_precision(requested: str, device: torch.device) -> str:
    """ "fp32" or "bf16": "auto" picks bf16 autocast where the hardware runs it natively."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def hardware_summary(device: torch.device) -> dict[str, object]:
    """A short description of the hardware for the manifest."""
    summary: dict[str, object] = {
        "device": device.type,
        "torch_threads": torch.get_num_threads(),
        "cpus_available": available_cpus(),
        "cpu_quota": cpu_quota_threads(),
        "cpu_native_bf16": cpu_has_native_bf16(),
    }
    if device.type == "cuda":
        summary["gpu"] = torch.cuda.get_device_name(device)
    try:
        for line in Path(CPUINFO).read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("model name"):
                summary["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return summary
