"""The last two checkpoints are kept, each with a sha256 sidecar written after its data; a damaged newest one
falls back to the one before it, saying so; when none is usable the run is told why."""

from __future__ import annotations

import errno
import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from trainer.checkpoint import (
    CheckpointError,
    Checkpoints,
    DiskFullError,
    checkpoint_key,
    load_checkpoint,
    save_checkpoint,
    sidecar_key,
)
from trainer.config import TrainConfig
from trainer.store import LocalStore, Store

RUN = "push-0123456789abcdef0123"
CHECKSUM = "sha256:" + "d" * 64


@pytest.fixture
def config(tmp_path: Path) -> TrainConfig:
    return TrainConfig(model="cnn").replace(epochs=3, work_dir=str(tmp_path / "work"), store_uri=str(tmp_path / "s"))


class RecordingStore(LocalStore):
    """A local store that remembers the order of the keys written."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: list[str] = []

    def put(self, key: str, data: bytes, **kwargs: Any) -> str:
        self.writes.append(key)
        return super().put(key, data, **kwargs)

    def upload_file(self, path: Path, key: str, **kwargs: Any) -> str:
        self.writes.append(key)
        return super().upload_file(path, key, **kwargs)


@pytest.fixture
def store(config: TrainConfig) -> RecordingStore:
    return RecordingStore(Path(config.store_uri))


def state(config: TrainConfig, epochs_done: int) -> dict[str, Any]:
    return {
        "schema": 1,
        "config": config.to_dict(),
        "model": {"fc.weight": torch.randn(4, 3)},
        "epochs_done": epochs_done,
        "step": 0,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }


def test_each_checkpoint_is_followed_by_its_sidecar_and_two_are_kept(
    store: RecordingStore, config: TrainConfig
) -> None:
    # WHEN three checkpoints are saved
    for epoch in (1, 2, 3):
        save_checkpoint(store, RUN, state(config, epoch), config, CHECKSUM)
    # THEN every data write is followed by its own sidecar, the two names alternate, and the newest loads
    assert store.writes == [
        checkpoint_key(RUN, 0), sidecar_key(RUN, 0),
        checkpoint_key(RUN, 1), sidecar_key(RUN, 1),
        checkpoint_key(RUN, 0), sidecar_key(RUN, 0),
    ]  # fmt: skip
    sidecar = json.loads(store.get(sidecar_key(RUN, 0)))
    assert sidecar["sequence"] == 3
    assert sidecar["bytes"] == len(store.get(checkpoint_key(RUN, 0)))
    payload = load_checkpoint(store, RUN, config, CHECKSUM)
    assert payload is not None
    assert payload["state"]["epochs_done"] == 3


def _flip_a_byte(store: Store, key: str) -> None:
    data = bytearray(store.get(key))
    data[len(data) // 2] ^= 0xFF
    store.put(key, bytes(data))


def test_newest_checkpoint_with_a_flipped_byte_falls_back_to_the_previous_one_saying_so(
    store: RecordingStore, config: TrainConfig, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN two checkpoints, the newest damaged by one flipped byte (which torch.load might not notice)
    save_checkpoint(store, RUN, state(config, 1), config, CHECKSUM)
    save_checkpoint(store, RUN, state(config, 2), config, CHECKSUM)
    _flip_a_byte(store, checkpoint_key(RUN, 1))
    # WHEN the run resumes
    with caplog.at_level(logging.WARNING):
        checkpoints = Checkpoints(store, RUN, config, CHECKSUM)
        payload = checkpoints.load()
    # THEN it resumes from the older one, and the log says why
    assert payload is not None
    assert payload["state"]["epochs_done"] == 1
    assert "does not match" in caplog.text
    assert "older checkpoint" in caplog.text
    # ... and the next save replaces the damaged one, keeping the one it resumed from
    checkpoints.save(state(config, 2))
    assert json.loads(store.get(sidecar_key(RUN, 1)))["sequence"] == 2
    assert load_checkpoint(store, RUN, config, CHECKSUM)["state"]["epochs_done"] == 2  # type: ignore[index]


def test_newest_checkpoint_with_infinite_weights_falls_back(store: RecordingStore, config: TrainConfig) -> None:
    save_checkpoint(store, RUN, state(config, 1), config, CHECKSUM)
    poisoned = state(config, 2)
    poisoned["model"]["fc.weight"][0, :] = float("inf")
    save_checkpoint(store, RUN, poisoned, config, CHECKSUM)
    payload = load_checkpoint(store, RUN, config, CHECKSUM)
    assert payload is not None
    assert payload["state"]["epochs_done"] == 1


def test_save_interrupted_between_data_and_sidecar_resumes_the_previous_checkpoint(
    store: RecordingStore, config: TrainConfig
) -> None:
    # GIVEN two checkpoints, then a third whose data landed but whose sidecar never did (killed in between)
    save_checkpoint(store, RUN, state(config, 1), config, CHECKSUM)
    save_checkpoint(store, RUN, state(config, 2), config, CHECKSUM)
    torch.save({"partial": True}, Path(config.work_dir) / "third.pt")
    store.upload_file(Path(config.work_dir) / "third.pt", checkpoint_key(RUN, 0))
    # WHEN loaded, THEN the newest checkpoint with a matching sidecar wins
    payload = load_checkpoint(store, RUN, config, CHECKSUM)
    assert payload is not None
    assert payload["state"]["epochs_done"] == 2


def test_every_checkpoint_damaged_fails_naming_the_file(store: RecordingStore, config: TrainConfig) -> None:
    save_checkpoint(store, RUN, state(config, 1), config, CHECKSUM)
    save_checkpoint(store, RUN, state(config, 2), config, CHECKSUM)
    _flip_a_byte(store, checkpoint_key(RUN, 0))
    _flip_a_byte(store, checkpoint_key(RUN, 1))
    with pytest.raises(CheckpointError, match=rf"{RUN}/checkpoint\.b\.pt is unreadable"):
        load_checkpoint(store, RUN, config, CHECKSUM)


def test_a_checkpoint_of_another_run_is_refused_not_skipped(store: RecordingStore, config: TrainConfig) -> None:
    # an incompatible checkpoint is a mistake to report, not damage to route around
    save_checkpoint(store, RUN, state(config, 1), config, CHECKSUM)
    with pytest.raises(CheckpointError, match="different run"):
        load_checkpoint(store, RUN, config.replace(seed=5), CHECKSUM)


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        # what torch's zip writer raises for the same full disk (the free space left decides)
        RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/0: "
            "file write failed"
        ),
    ],
)
def test_a_full_disk_at_the_checkpoint_write_says_so_and_where(
    config: TrainConfig, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    # GIVEN a work_dir whose file system is full when the checkpoint is written
    def full(*_: object, **__: object) -> None:
        raise failure

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 0))  # type: ignore[attr-defined]
    store = LocalStore(Path(config.store_uri))
    # WHEN a checkpoint is saved, THEN the error says "no space left on device", where, and what to do
    with pytest.raises(
        DiskFullError, match=r"no space left on device writing the checkpoint at .*work.*TRAINER_WORK_DIR"
    ):
        save_checkpoint(store, RUN, state(config, 1), config, CHECKSUM)
    assert store.list("runs/") == []  # nothing stored


def test_another_failed_write_is_not_called_a_full_disk(config: TrainConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", broken)  # plenty of space left: it is not ENOSPC
    with pytest.raises(RuntimeError, match="file write failed"):
        save_checkpoint(LocalStore(Path(config.store_uri)), RUN, state(config, 1), config, CHECKSUM)
