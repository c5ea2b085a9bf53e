"""Freed activation memory stays in the process: a CPU step must not fault its gigabytes in again.

Measured in fresh interpreters (the setting is process-wide), with glibc's defaults, after
`retain_freed_memory`, and after building a CPU training session (which must call it): a 64 MiB
tensor is written and freed, then the minor page faults of writing a 48 MiB one are counted.
glibc's defaults hand the 64 MiB block back to the kernel and map fresh zeroed pages for the next one
(one fault per 4 KiB page); retained, the 48 MiB tensor (with its alignment) fits in the freed block
and touches only pages the process already has. (A block of the very same size is no test: glibc's
aligned allocation asks for a little more than the freed block holds until neighbours coalesce.)
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

CHURN = """
import json, resource, sys, torch
from trainer import resources
retained = None
if sys.argv[1] == "retain":
    retained = resources.retain_freed_memory()
elif sys.argv[1] == "session":
    from trainer import synth
    from trainer.config import load_config
    from trainer.data import load_dataset
    from trainer.train import TrainingSession
    synth.write_folder(sys.argv[2], n_train=64, n_test=32, seed=0)
    config = load_config(["--data-uri", sys.argv[2], "--work-dir", sys.argv[2] + "/work", "--device", "cpu"], {})
    TrainingSession(config, load_dataset(config))
def write(mib):
    t = torch.empty(mib * 2**20, dtype=torch.uint8); t.fill_(1); return t
big = write(64)
del big
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
smaller = write(48)
print(json.dumps({"retained": retained, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""
PAGES = 48 * 2**20 // 4096  # 12,288 pages of 4 KiB

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
)


def _churn(*args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", CHURN, *args], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_retained_memory_is_reused_without_page_faults() -> None:
    default = _churn("default")
    retained = _churn("retain")
    # the control: glibc unmapped the freed block and faulted fresh pages in for the next one
    assert default["faults"] >= PAGES // 2, default
    assert retained["retained"] is True
    assert retained["faults"] < PAGES // 20, retained


def test_a_cpu_training_session_retains_freed_memory(tmp_path: Path) -> None:
    assert _churn("session", str(tmp_path / "data"))["faults"] < PAGES // 20
