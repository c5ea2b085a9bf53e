"""The trainer's side of sweeps: the held-out validation set and a sweep run's outcome.

- the validation set is a function of the training set's size alone (never of the run's seed);
- a sweep run publishes its version with validation counts and is never promoted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from trainer.config import ConfigError, TrainConfig
from trainer.data import load_dataset, validation_indices
from trainer.gate import champion_key
from trainer.runstate import read_status
from trainer.store import LocalStore
from trainer.synth import write_folder
from trainer.versions import read_manifest

from trainer import run

RUN = "retrain-1234-0a1b2c3d"
SWEEP = "1234"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_folder(root, n_train=512, n_test=128, seed=3)
    return root


def make_config(data_dir: Path, tmp_path: Path, **changes: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "model": "cnn", "epochs": 2, "batch_size": 64, "lr": 0.02, "seed": 0, "run_id": RUN,
        "data_uri": str(data_dir), "store_uri": str(tmp_path / "store"), "work_dir": str(tmp_path / "work"),
        "progress": "none", "threads": 1, "accuracy_floor": 0.0,
    }  # fmt: skip
    settings.update(changes)
    return TrainConfig(model="cnn").replace(**settings)


# --- the validation split -------------------------------------------------------------------------


def test_validation_set_is_the_same_for_every_seed_and_disjoint_from_training(data_dir: Path, tmp_path: Path) -> None:
    full = load_dataset(make_config(data_dir, tmp_path))
    a = load_dataset(make_config(data_dir, tmp_path, val_images=100, seed=0))
    b = load_dataset(make_config(data_dir, tmp_path, val_images=100, seed=12345))
    assert a.val_images is not None and b.val_images is not None and a.val_labels is not None
    assert torch.equal(a.val_images, b.val_images) and torch.equal(a.train_images, b.train_images)
    assert (len(a.train_labels), len(a.val_labels)) == (412, 100)
    held = validation_indices(512, 100)
    assert torch.equal(a.val_images, full.train_images[held])
    kept = sorted(set(range(512)) - set(held.tolist()))
    assert torch.equal(a.train_images, full.train_images[kept])  # the rest, in their order
    assert torch.equal(a.test_images, full.test_images)  # the test set is untouched
    assert full.val_images is None and a.describe()["validation_images"] == 100
    assert set(validation_indices(512, 50).tolist()) <= set(held.tolist())  # a larger set holds out a superset


def test_validation_set_that_leaves_no_training_images_is_a_config_error(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="val_images"):
        load_dataset(make_config(data_dir, tmp_path, val_images=512))


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"sweep_id": "../x"}, "sweep_id"),
        ({"sweep_id": "a/b"}, "sweep_id"),
        ({"val_images": -1}, "val_images"),
    ],
)
def test_sweep_settings_are_checked(changes: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TrainConfig(model="cnn").replace(**changes)
    assert caught.value.setting == setting


# --- whole sweep runs -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_run_that_goes_on_publishes_validation_counts_and_is_never_promoted(
    data_dir: Path, tmp_path: Path
) -> None:
    config = make_config(data_dir, tmp_path, sweep_id=SWEEP, val_images=64)
    store = LocalStore(tmp_path / "store")
    assert run.main(config) == run.EXIT_SUCCEEDED
    record = read_status(store, RUN)
    assert record is not None and record["state"] == "succeeded"
    assert record["gate"]["outcome"] == "kept" and "never promoted" in record["gate"]["reason"]
    assert not store.exists(champion_key("cifar10"))
    validation = read_manifest(store, "cifar10", record["version"])["metrics"]["validation"]
    assert validation["total"] == 64 and 0 <= validation["correct"] <= 64
    final = json.loads(store.get(run.final_key(SWEEP, RUN)))
    assert (final["correct"], final["total"], final["epochs"]) == (validation["correct"], 64, 2)
