"""The trainer's side of sweeps: the held-out validation set, ASHA's rung decisions, `stopped-early`.

- the validation set is a function of the training set's size alone (never of the run's seed);
- ASHA decisions against a table of rung results (exact counts, ties by run id);
- a resumed run keeps its first rung result and decision; damaged peers are left out, not trusted;
- a sweep run that is not in the top 1/eta at a rung checkpoints and ends `stopped-early`, publishing
  nothing; one that is trains on, publishes its version with validation counts, and is never promoted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from trainer.asha import CONTINUE, STOP, RungResult, keeps_going, read_rung, report, rung_epochs, rung_key
from trainer.checkpoint import checkpoint_key
from trainer.config import ConfigError, TrainConfig
from trainer.counts import Counts
from trainer.data import load_dataset, validation_indices
from trainer.gate import champion_key
from trainer.registry import published_versions
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
        ({"early_stop_eta": 3}, "early_stop_eta"),  # no sweep_id, no validation set
        ({"early_stop_eta": 3, "sweep_id": SWEEP}, "early_stop_eta"),  # no validation set to measure
        ({"early_stop_eta": 1, "sweep_id": SWEEP, "val_images": 10}, "early_stop_eta"),
        ({"sweep_id": "../x"}, "sweep_id"),
        ({"sweep_id": "a/b"}, "sweep_id"),
        ({"val_images": -1}, "val_images"),
    ],
)
def test_sweep_settings_are_checked(changes: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TrainConfig(model="cnn").replace(**changes)
    assert caught.value.setting == setting


# --- ASHA's decisions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epochs", "eta", "rungs"),
    [(8, 2, (1, 2, 4)), (9, 3, (1, 3)), (9.9, 3, (1, 3)), (2, 2, (1,)), (1, 2, ()), (3, 4, ()), (16, 4, (1, 4))],
)
def test_rungs_are_whole_epochs_at_e_over_eta_to_the_k(epochs: float, eta: int, rungs: tuple[int, ...]) -> None:
    assert rung_epochs(epochs, eta) == rungs


# (results at the rung as run: correct/total, the run deciding, eta, goes on?)
TABLE = [
    ({"a": (5, 10)}, "a", 2, True),  # the first at a rung always goes on
    ({"a": (5, 10), "b": (6, 10)}, "b", 2, True),  # top ceil(2/2) = 1
    ({"a": (5, 10), "b": (4, 10)}, "b", 2, False),
    ({"a": (5, 10), "b": (5, 10)}, "b", 2, False),  # a tie goes to the smaller run id
    ({"a": (5, 10), "b": (5, 10)}, "a", 2, True),
    ({"b": (1, 2), "a": (2, 4)}, "b", 2, False),  # equal fractions are equal, whatever the totals
    ({"a": (3, 10), "b": (2, 10), "c": (1, 10)}, "b", 2, True),  # top ceil(3/2) = 2
    ({"a": (3, 10), "b": (2, 10), "c": (1, 10)}, "c", 2, False),
    ({"a": (3, 10), "b": (2, 10), "c": (1, 10)}, "b", 3, False),  # top ceil(3/3) = 1
    ({"a": (3, 10), "b": (2, 10), "c": (1, 10), "d": (4, 10)}, "a", 3, True),  # top ceil(4/3) = 2
    ({"a": (333, 1000), "b": (1, 3)}, "b", 2, True),  # 1/3 > 0.333: exact, not floats
]


@pytest.mark.parametrize(("table", "run_id", "eta", "goes_on"), TABLE)
def test_asha_decisions(table: dict[str, tuple[int, int]], run_id: str, eta: int, goes_on: bool) -> None:
    results = [RungResult(name, correct, total) for name, (correct, total) in table.items()]
    assert keeps_going(results, run_id, eta) is goes_on
    assert keeps_going(list(reversed(results)), run_id, eta) is goes_on  # the order of the listing is irrelevant


def test_a_resumed_run_keeps_its_first_rung_result_and_decision(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert report(store, SWEEP, epoch=1, run_id="b", counts=Counts(5, 10), eta=2) == (CONTINUE, 1)
    report(store, SWEEP, epoch=1, run_id="a", counts=Counts(9, 10), eta=2)
    # resumed: measures again (other counts) and finds a better peer now, but keeps what it reported first
    assert report(store, SWEEP, epoch=1, run_id="b", counts=Counts(1, 10), eta=2) == (CONTINUE, 2)
    stored = json.loads(store.get(rung_key(SWEEP, 1, "b")))
    assert (stored["correct"], stored["total"], stored["decision"]) == (5, 10, CONTINUE)


def test_a_result_stored_without_its_decision_is_decided_on_its_first_counts(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    report(store, SWEEP, epoch=2, run_id="a", counts=Counts(9, 10), eta=2)
    undecided = {"run_id": "b", "epoch": 2, "correct": 8, "total": 10, "decision": None}  # crashed before deciding
    store.put(rung_key(SWEEP, 2, "b"), json.dumps(undecided).encode())
    assert report(store, SWEEP, epoch=2, run_id="b", counts=Counts(10, 10), eta=2) == (STOP, 2)
    assert json.loads(store.get(rung_key(SWEEP, 2, "b")))["correct"] == 8


@pytest.mark.parametrize(
    "damage",
    [
        b'{"run_id": "x", "correct": 9',  # truncated
        b'{"run_id": "x", "correct": 11, "total": 10, "decision": null}',  # more correct than total
        b'{"run_id": "x", "correct": 9.0, "total": 10, "decision": null}',  # not a count
        b'{"run_id": "x", "correct": NaN, "total": 10, "decision": null}',
        b'{"run_id": "x", "correct": 0, "total": 0, "decision": null}',
        b'{"run_id": "y", "correct": 9, "total": 10, "decision": null}',  # names another run than its key
        b'{"run_id": "x", "correct": 9, "total": 10, "decision": "promote"}',
        b"\xff\xfe",
        b"[]",
    ],
)
def test_a_damaged_peer_result_is_left_out_and_named(
    tmp_path: Path, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    store = LocalStore(tmp_path)
    store.put(rung_key(SWEEP, 1, "x"), damage)
    with caplog.at_level(logging.WARNING, logger="trainer.asha"):
        assert report(store, SWEEP, epoch=1, run_id="b", counts=Counts(1, 10), eta=2) == (CONTINUE, 1)
    assert "x.json" in caplog.text
    assert [r.run_id for r in read_rung(store, SWEEP, 1)] == ["b"]


# --- whole sweep runs -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_below_the_rung_cut_ends_stopped_early_and_publishes_nothing(data_dir: Path, tmp_path: Path) -> None:
    config = make_config(data_dir, tmp_path, sweep_id=SWEEP, val_images=64, early_stop_eta=2)
    store = LocalStore(tmp_path / "store")
    better = {"run_id": "a-better-run", "epoch": 1, "correct": 64, "total": 64, "decision": CONTINUE}
    store.put(rung_key(SWEEP, 1, "a-better-run"), json.dumps(better).encode())
    assert run.main(config) == run.EXIT_STOPPED_EARLY == 0
    record = read_status(store, RUN)
    assert record is not None
    assert (record["state"], record["stopped_at_epoch"]) == ("stopped-early", 1)
    assert "top 1/2 of the 2 run(s)" in record["reason"]
    assert published_versions(store, "cifar10") == []
    assert store.exists(checkpoint_key(RUN))
    mine = json.loads(store.get(rung_key(SWEEP, 1, RUN)))
    assert mine["decision"] == STOP and mine["total"] == 64
    assert not store.exists(champion_key("cifar10"))
    # a stop event or a person starting it again: a final state, nothing trains
    assert run.main(config) == 0
    assert read_status(store, RUN)["state"] == "stopped-early"  # type: ignore[index]


@pytest.mark.slow
def test_a_sweep_run_that_goes_on_publishes_validation_counts_and_is_never_promoted(
    data_dir: Path, tmp_path: Path
) -> None:
    config = make_config(data_dir, tmp_path, sweep_id=SWEEP, val_images=64, early_stop_eta=2)
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
    assert json.loads(store.get(rung_key(SWEEP, 1, RUN)))["decision"] == CONTINUE


@pytest.mark.slow
def test_a_sweep_run_restarted_after_a_crash_keeps_its_rung_result_and_decision(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a sweep run that reported its rung (and was told to go on), then died before its checkpoint
    config = make_config(data_dir, tmp_path, sweep_id=SWEEP, val_images=64, early_stop_eta=2)
    store = LocalStore(tmp_path / "store")

    def crash(*_: Any, **__: Any) -> None:
        raise RuntimeError("killed before the checkpoint")

    monkeypatch.setattr(run.Run, "save_checkpoint", crash)
    assert run.main(config) == run.EXIT_FAILED
    first = json.loads(store.get(rung_key(SWEEP, 1, RUN)))
    assert first["decision"] == CONTINUE
    monkeypatch.undo()
    # AND meanwhile a better run reached the rung: deciding again now would stop this one
    better = {"run_id": "a-better-run", "epoch": 1, "correct": 64, "total": 64, "decision": CONTINUE}
    store.put(rung_key(SWEEP, 1, "a-better-run"), json.dumps(better).encode())
    # WHEN the run starts again THEN it keeps its first result and decision at the rung, and trains on
    assert run.main(config) == run.EXIT_SUCCEEDED
    assert json.loads(store.get(rung_key(SWEEP, 1, RUN))) == first
    assert read_status(store, RUN)["state"] == "succeeded"  # type: ignore[index]
