"""The real CLI in a subprocess: invalid configuration exits 2 with a message naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import synth

EXIT_INVALID_CONFIG = 2


def _trainer(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRAINER_")}
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        env={**clean, **env, "PUSHTRAIN_LOG_LEVEL": "WARNING"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        ([], {"TRAINER_FOO": "1"}, "TRAINER_FOO"),
        (["--epochs", "0"], {}, "epochs"),
        ([], {"TRAINER_EPOCHS": "0"}, "epochs"),
        (["--model", "resnet50"], {}, "model"),
        ([], {"TRAINER_DATA_URI": "s3://bucket_with_underscores/cifar-10-python.tar.gz"}, "data_uri"),
        (["--store-uri", "ftp://example.com/store"], {}, "store_uri"),
        (["--batch-size", "lots"], {}, "batch_size"),
    ],
    ids=["unknown-variable", "zero-epochs-flag", "zero-epochs-env", "unknown-model", "bad-s3-uri", "bad-store", "type"],
)
def test_invalid_configuration_exits_2_naming_the_setting(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    result = _trainer(["train", *args], env, tmp_path)
    assert result.returncode == EXIT_INVALID_CONFIG, result.stderr
    assert named in result.stderr
    assert not (tmp_path / ".pushtrain").exists()  # rejected before anything was written


def test_batch_larger_than_the_dataset_exits_2_naming_batch_size(tmp_path: Path) -> None:
    # GIVEN a dataset of 100 training images and a batch of 500
    synth.write_folder(tmp_path / "data", n_train=100, n_test=20, seed=0)
    args = ["train", "--batch-size", "500", "--data-uri", "data", "--store-uri", "store", "--work-dir", "work"]
    # WHEN the trainer runs, THEN it exits 2 once the dataset's size is known, naming the setting
    result = _trainer(args, {}, tmp_path)
    assert result.returncode == EXIT_INVALID_CONFIG, result.stderr
    assert "batch_size" in result.stderr
    assert "100 images" in result.stderr


def test_settings_lists_every_variable(tmp_path: Path) -> None:
    result = _trainer(["settings"], {}, tmp_path)
    assert result.returncode == 0
    assert "TRAINER_DATA_URI" in result.stdout
    assert "TRAINER_BATCH_SIZE" in result.stdout


def test_synth_subcommand_writes_a_dataset(tmp_path: Path) -> None:
    result = _trainer(["synth", "--out", "data", "--train", "50", "--test", "10"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_unknown_command_exits_2(tmp_path: Path) -> None:
    result = _trainer(["fly"], {}, tmp_path)
    assert result.returncode == EXIT_INVALID_CONFIG
    assert "fly" in result.stderr
