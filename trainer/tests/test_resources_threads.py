"""Threads follow the container's CPU quota (cgroup v2 cpu.max or v1 cfs_quota_us), not the host's core count."""

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
    assert cpu_quota_threads(path, tmp_path / "no-v1") == threads


def test_missing_or_garbled_quota_file_means_no_quota(tmp_path: Path) -> None:
    assert cpu_quota_threads(tmp_path / "absent", tmp_path / "no-v1") is None
    (tmp_path / "cpu.max").write_text("lots of cpus")
    assert cpu_quota_threads(tmp_path / "cpu.max", tmp_path / "no-v1") is None


@pytest.mark.parametrize(("quota", "threads"), [("200000", 2), ("150000", 1), ("-1", None), ("garbage", None)])
def test_cgroup_v1_quota_is_read_when_there_is_no_cpu_max(tmp_path: Path, quota: str, threads: int | None) -> None:
    # GIVEN a cgroup v1 host: no cpu.max, a cpu controller folder with the CFS quota and period
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text(quota + "\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    # THEN the quota in whole CPUs (-1 is no quota)
    assert cpu_quota_threads(tmp_path / "absent", v1) == threads


def test_cpu_model_is_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t: avx512_bf16\n")
    assert resources.cpu_model(cpuinfo) == "AMD EPYC 9R14"
    assert resources.cpu_model(tmp_path / "absent") == ""


def test_threads_follow_the_quota_capped_by_the_cpus_we_may_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a host with 16 CPUs in our affinity mask and a 2-CPU quota
    monkeypatch.setattr(resources, "available_cpus", lambda: 16)
    quota = tmp_path / "cpu.max"
    quota.write_text("200000 100000")
    # THEN 2 threads; an explicit setting wins; without a quota, the affinity mask decides
    no_v1 = tmp_path / "no-v1"
    assert resolve_threads(0, quota, no_v1) == 2
    assert resolve_threads(3, quota, no_v1) == 3
    assert resolve_threads(0, tmp_path / "absent", no_v1) == 16
    quota.write_text("3200000 100000")
    assert resolve_threads(0, quota, no_v1) == 16


def test_cuda_requested_without_a_gpu_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device"):
        resources.resolve_device("cuda")
    assert resources.resolve_device("auto").type == "cpu"
