"""Checkpoints: a usable one round-trips; a corrupted or incompatible one is reported, never ignored."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from trainer.checkpoint import CheckpointError, checkpoint_key, load_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.store import LocalStore, Store

RUN = "push-feedfacefeedfacefeed"
CHECKSUM = "sha256:" + "c" * 64


@pytest.fixture
def config(tmp_path: Path) -> TrainConfig:
    return TrainConfig(model="cnn").replace(
        epochs=3, work_dir=str(tmp_path / "work"), store_uri=str(tmp_path / "store")
    )


@pytest.fixture
def store(config: TrainConfig) -> Store:
    return LocalStore(Path(config.store_uri))


def session_like_state(config: TrainConfig) -> dict[str, Any]:
    """The shape TrainingSession.state_dict() produces, with the same kinds of values."""
    return {
        "schema": 1,
        "config": config.to_dict(),
        "model": {"fc.weight": torch.randn(4, 3)},
        "epochs_done": 1,
        "step": 17,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }


def test_checkpoint_round_trips_with_rng_states(store: Store, config: TrainConfig) -> None:
    state = session_like_state(config)
    save_checkpoint(store, RUN, state, config, CHECKSUM, wall_seconds=12.5)
    payload = load_checkpoint(store, RUN, config, CHECKSUM)
    assert payload is not None
    assert payload["wall_seconds"] == 12.5
    assert payload["state"]["step"] == 17
    torch.testing.assert_close(payload["state"]["model"]["fc.weight"], state["model"]["fc.weight"])
    assert (payload["state"]["rng"]["numpy"][1] == state["rng"]["numpy"][1]).all()
    assert payload["state"]["rng"]["python"] == state["rng"]["python"]


def test_no_checkpoint_means_a_fresh_start(store: Store, config: TrainConfig) -> None:
    assert load_checkpoint(store, RUN, config, CHECKSUM) is None


def test_newer_checkpoint_is_loaded_and_the_one_before_it_is_kept(store: Store, config: TrainConfig) -> None:
    first = session_like_state(config)
    save_checkpoint(store, RUN, first, config, CHECKSUM)
    second = {**first, "epochs_done": 2, "step": 0}
    save_checkpoint(store, RUN, second, config, CHECKSUM)
    payload = load_checkpoint(store, RUN, config, CHECKSUM)
    assert payload is not None
    assert (payload["state"]["epochs_done"], payload["state"]["step"]) == (2, 0)
    # the previous checkpoint stays beside the newest one, each with its sha256 sidecar (to fall back to)
    kept = [checkpoint_key(RUN, slot) for slot in (0, 1)]
    assert store.list(f"runs/{RUN}/") == sorted([*kept, *(key + ".sha256" for key in kept)])


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"\x00" * len(data), id="zeroed"),
        pytest.param(lambda data: b"not a checkpoint at all", id="garbage"),
    ],
)
def test_corrupted_checkpoint_is_reported_naming_the_file(store: Store, config: TrainConfig, damage: Any) -> None:
    save_checkpoint(store, RUN, session_like_state(config), config, CHECKSUM)
    store.put(checkpoint_key(RUN), damage(store.get(checkpoint_key(RUN))))
    with pytest.raises(CheckpointError, match=rf"checkpoint .*{RUN}/checkpoint\.pt is unreadable"):
        load_checkpoint(store, RUN, config, CHECKSUM)


def test_file_that_is_not_our_checkpoint_is_rejected(store: Store, config: TrainConfig, tmp_path: Path) -> None:
    torch.save({"model": {}}, tmp_path / "other.pt")
    store.upload_file(tmp_path / "other.pt", checkpoint_key(RUN))
    with pytest.raises(CheckpointError, match="not a pushtrain checkpoint"):
        load_checkpoint(store, RUN, config, CHECKSUM)


def test_checkpoint_of_another_format_version_is_rejected(store: Store, config: TrainConfig, tmp_path: Path) -> None:
    torch.save({"format": "pushtrain-checkpoint", "format_version": 99, "state": {}}, tmp_path / "future.pt")
    store.upload_file(tmp_path / "future.pt", checkpoint_key(RUN))
    with pytest.raises(CheckpointError, match="format version 99; this trainer reads version 1"):
        load_checkpoint(store, RUN, config, CHECKSUM)


def test_checkpoint_of_other_training_settings_names_every_difference(store: Store, config: TrainConfig) -> None:
    save_checkpoint(store, RUN, session_like_state(config), config, CHECKSUM)
    changed = config.replace(lr=0.5, seed=3)
    with pytest.raises(
        CheckpointError, match=r"different run \(lr: checkpoint 0\.05, run 0\.5; seed: checkpoint 0, run 3\)"
    ):
        load_checkpoint(store, RUN, changed, CHECKSUM)


def test_checkpoint_of_another_dataset_is_rejected(store: Store, config: TrainConfig) -> None:
    save_checkpoint(store, RUN, session_like_state(config), config, CHECKSUM)
    with pytest.raises(CheckpointError, match="dataset: checkpoint"):
        load_checkpoint(store, RUN, config, "sha256:" + "e" * 64)


def test_operational_settings_may_change_between_attempts(store: Store, config: TrainConfig) -> None:
    # GIVEN a checkpoint from attempt 1; WHEN attempt 2 runs with other threads, precision and gate
    save_checkpoint(store, RUN, session_like_state(config), config, CHECKSUM)
    resumed = config.replace(attempt=2, threads=4, precision="fp32", accuracy_floor=0.9, progress="none")
    # THEN the checkpoint still fits
    assert load_checkpoint(store, RUN, resumed, CHECKSUM) is not None
