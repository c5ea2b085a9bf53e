"""Threads follow the container's CPU quota (cgroup v2 cpu.max), not the host's core count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trainer.config import ConfigError
from trainer.resources import cpu_quota_threads, resolve_threads

from trainer import resources


@pytest.mark.parametrize(
    ("content", "threads"),
    [("200000 100000\n", 2), ("400000 100000", 4), ("150000 100000", 1), ("50000 100000", 1), ("max 100000", None)],
)
def test_quota_file_gives_whole_cpus(tmp_path: Path, content: str, threads: int | None) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(content)
    assert cpu_quota_threads(path) == threads


def test_missing_or_garbled_quota_file_means_no_quota(tmp_path: Path) -> None:
    assert cpu_quota_threads(tmp_path / "absent") is None
    (tmp_path / "cpu.max").write_text("lots of cpus")
    assert cpu_quota_threads(tmp_path / "cpu.max") is None


def test_threads_follow_the_quota_capped_by_the_cpus_we_may_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a host with 16 CPUs in our affinity mask and a 2-CPU quota
    monkeypatch.setattr(resources, "available_cpus", lambda: 16)
    quota = tmp_path / "cpu.max"
    quota.write_text("200000 100000")
    # THEN 2 threads; an explicit setting wins; without a quota, the affinity mask decides
    assert resolve_threads(0, quota) == 2
    assert resolve_threads(3, quota) == 3
    assert resolve_threads(0, tmp_path / "absent") == 16
    quota.write_text("3200000 100000")
    assert resolve_threads(0, quota) == 16


def test_cuda_requested_without_a_gpu_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device"):
        resources.resolve_device("cuda")
    assert resources.resolve_device("auto").type == "cpu"
