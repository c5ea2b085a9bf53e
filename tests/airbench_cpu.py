"""The reference airbench94's CUDA calls made CPU ones, for the tests that run it without a GPU: the
differential tests (trainer/tests/test_airbench_reference.py) and the GPU bench's CPU rehearsal
(trainer/tests/test_bench_gpu.py)."""

from __future__ import annotations

import pytest
import torch


class NoEvent:
    """torch.cuda.Event for the reference's timing: records nothing, every interval 0 ms."""

    def __init__(self, **_: object) -> None:
        pass

    def record(self) -> None:
        pass

    def elapsed_time(self, _: object) -> float:
        return 0.0


def cuda_calls_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timing events and synchronization become no-ops, and a module's `.cuda()` and `.half()` leave it
    where and as it is (on the CPU, in fp32: the CPU runs fp16 convolutions slowly)."""
    monkeypatch.setattr(torch.cuda, "Event", NoEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *_, **__: None)
    monkeypatch.setattr(torch.nn.Module, "cuda", lambda module, *_, **__: module)
    monkeypatch.setattr(torch.nn.Module, "half", lambda module, *_, **__: module)
