"""What the trainer may use of the machine: CPU threads from the container's quota, the device, the precision.

A container sees every host core in `os.cpu_count()`, but Fargate (and `docker run --cpus`) limits it
through a CFS quota: under cgroup v2 in `/sys/fs/cgroup/cpu.max` ("<quota> <period>" in microseconds,
or "max <period>" for none), under cgroup v1 in `/sys/fs/cgroup/cpu/cpu.cfs_quota_us` (-1 for none) and
`cpu.cfs_period_us`. Running more torch threads than the quota allows makes them wait for each other at
every barrier, so the thread count follows the quota.

Memory: a CPU training step frees and reallocates the same few gigabytes of activations. glibc gives
blocks over 32 MiB back to the kernel on free (mmap/munmap) and trims the heap's top, so every step
faulted 50,000-190,000 fresh zeroed pages in again (measured with `getrusage`); `retain_freed_memory`
keeps them, and the heap settles after the first steps (resident peak 2,107 MB over 36 steps, against
2,132 MB with the defaults).
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import platform
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"
CGROUP_V1_CPU = "/sys/fs/cgroup/cpu"  # holds cpu.cfs_quota_us and cpu.cfs_period_us
CPUINFO = "/proc/cpuinfo"
# CPU flags that mean bf16 matrix multiplies run natively (not emulated through fp32, which is slower).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _read_words(path: Path) -> list[str] | None:
    try:
        return path.read_text(encoding="ascii").split()
    except OSError:
        return None


def _whole_cpus(quota_text: str, period_text: str, where: str) -> int | None:
    """max(1, floor(quota / period)), or None for no quota ("max", -1) or unreadable numbers."""
    if quota_text == "max":
        return None
    try:
        quota, period = int(quota_text), int(period_text)
    except ValueError:
        log.warning("ignoring unreadable CPU quota %r / %r in %s", quota_text, period_text, where)
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.floor(quota / period))


def cpu_quota_threads(
    path: str | os.PathLike[str] = CGROUP_CPU_MAX, v1_dir: str | os.PathLike[str] = CGROUP_V1_CPU
) -> int | None:
    """Whole CPUs the cgroup CPU quota allows (at least 1), or None without a quota or a readable file.

    cgroup v2 `cpu.max` first: "200000 100000" -> 2, "150000 100000" -> 1 (a fractional CPU is not
    worth a thread of its own), "max 100000" -> None. Without that file, cgroup v1's
    `cpu.cfs_quota_us` / `cpu.cfs_period_us` in `v1_dir` the same way (quota -1: None).
    """
    words = _read_words(Path(path))
    if words is not None:
        return _whole_cpus(words[0], words[1], str(path)) if len(words) == 2 else None
    quota = _read_words(Path(v1_dir) / "cpu.cfs_quota_us")
    period = _read_words(Path(v1_dir) / "cpu.cfs_period_us")
    if not quota or not period:
        return None
    return _whole_cpus(quota[0], period[0], str(v1_dir))


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_threads(
    requested: int,
    cpu_max_path: str | os.PathLike[str] = CGROUP_CPU_MAX,
    v1_dir: str | os.PathLike[str] = CGROUP_V1_CPU,
) -> int:
    """Threads to use: `requested` when > 0, else the CPU quota, else the CPUs in the affinity mask."""
    if requested > 0:
        return requested
    quota = cpu_quota_threads(cpu_max_path, v1_dir)
    cpus = available_cpus()
    return min(quota, cpus) if quota is not None else cpus


def apply_threads(requested: int) -> int:
    """Set torch's intra-op thread count from `resolve_threads` and return it."""
    threads = resolve_threads(requested)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def retain_freed_memory() -> bool:
    """Make glibc malloc keep freed memory in the process for the next allocation; True if it now does.

    `M_MMAP_MAX` 0 serves large blocks from the heap instead of fresh mmaps, and a trim threshold of
    SIZE_MAX (-1 as mallopt's int) never hands the heap's top back. The process's resident memory then
    stays at its peak (the training step's own, about 2.1 GB for the default model at batch 1024,
    unchanged) and the step stops paying a page fault per 4 KiB it touches: two full bf16 epochs ran
    7 % faster here (trainer/README.md, *Efficiency*). Process-wide and irreversible in practice; a
    no-op returning False where the C library is not glibc (macOS, musl).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, -1) == 1)


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
    # The host's vCPUs (not this process's share): with the GPU's name, what trainer.pricing recognises
    # an EC2 instance type by.
    summary["host_cpus"] = os.cpu_count() or 0
    model = cpu_model()
    if model:
        summary["cpu_model"] = model
    return summary


def cpu_model(cpuinfo: str | os.PathLike[str] = CPUINFO) -> str:
    """The CPU's model name as /proc/cpuinfo reports it ("" when unknown)."""
    try:
        for line in Path(cpuinfo).read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
