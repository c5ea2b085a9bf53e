"""The GPU path (skipped without CUDA): the uint8 training set lives on the device, batches are gathered and
augmented there, bf16 autocast is chosen, and the epoch reports images/s the same way as on a CPU.

Where a device machine is available: `python -m pytest trainer/tests/test_gpu_session.py -q` there, and
`make bench ARGS=trainer` for GPU images/s and the time to the recipe's end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trainer.config import load_config
from trainer.data import load_dataset
from trainer.train import TrainingSession

from trainer import synth

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth-gpu")
    synth.write_folder(root, n_train=2048, n_test=512, seed=0)
    return root


def test_the_training_set_stays_on_the_device_as_uint8_and_an_epoch_trains(dataset_dir: Path) -> None:
    config = load_config(
        ["--data-uri", str(dataset_dir), "--work-dir", str(dataset_dir / "work"), "--epochs", "2", "--device", "cuda"],
        {},
    )
    session = TrainingSession(config, load_dataset(config))
    # GIVEN a session on the GPU THEN the whole uint8 training set was copied there once
    assert session.device.type == "cuda"
    assert (session._train_images.device.type, session._train_images.dtype) == ("cuda", torch.uint8)
    assert session._train_labels.device.type == "cuda"
    assert session.precision == "bf16"
    # WHEN an epoch runs THEN it learns, and reports throughput measured as on a CPU (images / seconds)
    result = session.run_epoch()
    assert result is not None
    assert result.images_per_s > 0
    assert result.images_per_s == pytest.approx(2048 // config.batch_size * config.batch_size / result.seconds)
