"""The hard generated dataset: readable like any other, deterministic, and with the promised label noise."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from trainer.config import load_config
from trainer.data import load_dataset

from trainer import synth


def test_hard_set_relabels_about_the_promised_share_and_keeps_classes_balanced_before_that() -> None:
    _, clean = synth.generate(5000, seed=1, difficulty=dataclasses.replace(synth.HARD, label_noise=0.0))
    _, noisy = synth.generate(5000, seed=1, difficulty=synth.HARD)
    changed = (clean != noisy).mean()
    # a replaced label keeps its class one time in ten: 10 % replaced -> ~9 % changed
    assert 0.07 < changed < 0.11
    assert np.bincount(clean, minlength=10).tolist() == [500] * 10


def test_hard_set_is_deterministic_differs_from_the_easy_one_and_says_so(tmp_path: Path) -> None:
    a = synth.dataset_files(50, 10, seed=4, difficulty=synth.HARD)
    b = synth.dataset_files(50, 10, seed=4, difficulty=synth.HARD)
    easy = synth.dataset_files(50, 10, seed=4)
    assert a == b and a["data_batch_1"] != easy["data_batch_1"]
    manifest = json.loads(a[synth.MANIFEST])
    assert manifest["difficulty"]["label_noise"] == synth.HARD.label_noise
    assert "difficulty" not in json.loads(easy[synth.MANIFEST])


def test_hard_set_loads_through_the_verified_reader(tmp_path: Path) -> None:
    assert synth.main(["--out", str(tmp_path), "--train", "50", "--test", "10", "--hard"]) == 0
    config = load_config(["--data-uri", str(tmp_path), "--work-dir", str(tmp_path / "work")], {})
    data = load_dataset(config)
    assert (len(data.train_labels), len(data.test_labels), data.generated) == (50, 10, True)
