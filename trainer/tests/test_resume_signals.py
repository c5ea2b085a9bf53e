"""Interruption and resumption of a real `python -m trainer train` process (SIGTERM and SIGKILL).

Each test starts the trainer as a subprocess on a small generated dataset and the small `cnn`
model, interrupts it during the second of two epochs, starts it again with the same run id, and
compares the result with an uninterrupted run of the same settings.

Tolerance: a resumed run replays the same batches in the same order with the same weights, so on
the same machine its metrics equal the uninterrupted run's up to floating-point reduction order;
we allow 1e-4 on the test loss and 1 test image (1/256) on the accuracy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from trainer.synth import write_folder

pytestmark = pytest.mark.slow

N_TRAIN, N_TEST = 1024, 256
SETTINGS = ["--model", "cnn", "--epochs", "2", "--batch-size", "16", "--lr", "0.02", "--seed", "3"]
LOSS_TOLERANCE = 1e-4
ACCURACY_TOLERANCE = 1 / N_TEST
START_TIMEOUT_S = 180  # a loaded 2-core machine takes a while to import torch and train one epoch


@dataclass(frozen=True)
class Workspace:
    data: Path
    store: Path
    work: Path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("resume")
    write_folder(root / "data", n_train=N_TRAIN, n_test=N_TEST, seed=1)
    return Workspace(root / "data", root / "store", root / "work")


def trainer_command(ws: Workspace, run_id: str, progress: str = "json") -> list[str]:
    return [
        sys.executable, "-m", "trainer", "train", *SETTINGS, "--run-id", run_id, "--data-uri", str(ws.data),
        "--store-uri", str(ws.store), "--work-dir", str(ws.work), "--progress", progress, "--threads", "1",
    ]  # fmt: skip


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRAINER_")} | {"PYTHONUNBUFFERED": "1"}


def run_to_end(ws: Workspace, run_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        trainer_command(ws, run_id), env=clean_env(), capture_output=True, text=True, timeout=600, check=False
    )


def start(ws: Workspace, run_id: str, log: Path, progress: str = "json") -> subprocess.Popen[str]:
    command = trainer_command(ws, run_id, progress)
    with log.open("w") as out:
        return subprocess.Popen(command, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)


def wait_until(done: Callable[[], bool], what: str, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not done():
        if process.poll() is not None:
            pytest.fail(f"trainer exited {process.returncode} before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {what} within {START_TIMEOUT_S} s:\n{log.read_text()}")
        time.sleep(0.005)


def status(ws: Workspace, run_id: str) -> dict[str, Any]:
    return dict(json.loads((ws.store / "runs" / run_id / "status.json").read_text()))


def final_metrics(ws: Workspace, run_id: str) -> dict[str, Any]:
    version = status(ws, run_id)["version"]
    return dict(json.loads((ws.store / "models" / "cifar10" / version / "metrics.json").read_text()))


def epochs_trained(output: str) -> list[int]:
    lines = (json.loads(line) for line in output.splitlines() if line.startswith('{"event": "epoch"'))
    return [line["epoch"] for line in lines]


@pytest.fixture(scope="module")
def uninterrupted(workspace: Workspace) -> dict[str, Any]:
    done = run_to_end(workspace, "baseline")
    assert done.returncode == 0, done.stderr
    return final_metrics(workspace, "baseline")


def assert_same_result(resumed: dict[str, Any], baseline: dict[str, Any]) -> None:
    assert abs(resumed["loss"] - baseline["loss"]) <= LOSS_TOLERANCE
    assert abs(resumed["accuracy"] - baseline["accuracy"]) <= ACCURACY_TOLERANCE
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2]
    for ours, theirs in zip(resumed["epochs"], baseline["epochs"], strict=True):
        assert abs(ours["train_loss"] - theirs["train_loss"]) <= LOSS_TOLERANCE
        assert abs(ours["test_loss"] - theirs["test_loss"]) <= LOSS_TOLERANCE


def test_sigterm_mid_epoch_checkpoints_and_the_restart_resumes_to_the_same_result(
    workspace: Workspace, uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    run_id = "spot-sigterm"
    # GIVEN a training process inside its second epoch: its progress bar for epoch 2 appears once
    # the epoch's first batch is done (the bar is drawn by the first per-batch callback)
    log = tmp_path / "first.log"
    first = start(workspace, run_id, log, progress="bar")
    wait_until(lambda: "epoch 2/2" in log.read_text(errors="replace"), "a batch of epoch 2", first, log)
    # WHEN Spot's two-minute warning arrives
    first.send_signal(signal.SIGTERM)
    # THEN it stops at a batch boundary, stores that position, marks the run interrupted and exits 75
    assert first.wait(timeout=120) == 75, log.read_text()
    record = status(workspace, run_id)
    assert record["state"] == "interrupted"
    assert "stopped by a signal at epoch 2 step" in record["reason"]
    step, steps = (int(n) for n in record["reason"].split("step ")[1].split(";")[0].split("/"))
    assert 0 < step < steps, f"expected a stop mid-epoch, got step {step} of {steps}"

    # WHEN the task is started again with the same run id
    second = run_to_end(workspace, run_id)
    # THEN it resumes from that batch (no epoch redone), finishes, and matches the uninterrupted run
    assert second.returncode == 0, second.stderr
    assert f"resuming at epoch 2 step {step} of {steps}" in second.stderr
    assert epochs_trained(second.stdout) == [2]
    record = status(workspace, run_id)
    assert (record["state"], record["attempt"]) == ("succeeded", 2)
    assert [h["state"] for h in record["history"]] == ["running", "interrupted", "running", "succeeded"]
    assert_same_result(final_metrics(workspace, run_id), uninterrupted)


def test_sigkill_restart_resumes_from_the_last_epoch_checkpoint(
    workspace: Workspace, uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    run_id = "spot-sigkill"
    checkpoint = workspace.store / "runs" / run_id / "checkpoint.pt"
    # GIVEN a training process past its first epoch
    log = tmp_path / "first.log"
    first = start(workspace, run_id, log)
    wait_until(checkpoint.exists, "checkpoint of epoch 1", first, log)
    # WHEN it is killed with no chance to checkpoint
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=60) == -signal.SIGKILL
    assert status(workspace, run_id)["state"] == "running"  # nobody could record the kill

    # THEN the restart resumes at the start of epoch 2 (redoing at most that epoch) and finishes
    second = run_to_end(workspace, run_id)
    assert second.returncode == 0, second.stderr
    assert "resuming at epoch 2 step 0 of" in second.stderr
    assert epochs_trained(second.stdout) == [2]
    assert status(workspace, run_id)["state"] == "succeeded"
    assert_same_result(final_metrics(workspace, run_id), uninterrupted)


def test_rerun_of_a_succeeded_run_exits_zero_without_training(
    workspace: Workspace, uninterrupted: dict[str, Any]
) -> None:
    # GIVEN the uninterrupted run has succeeded; WHEN the same run is started again (a duplicate event)
    before = status(workspace, "baseline")
    again = run_to_end(workspace, "baseline")
    # THEN it exits 0, trains nothing and publishes nothing new
    assert again.returncode == 0, again.stderr
    assert epochs_trained(again.stdout) == []
    assert "already succeeded" in again.stderr
    assert status(workspace, "baseline") == before
    assert len(list((workspace.store / "models" / "cifar10").glob("*-baseline"))) == 1
