"""What a person sees from `python -m trainer`: full --help, one-line expected failures, the next step to take."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from trainer.config import TrainConfig
from trainer.runstate import read_status
from trainer.store import LocalStore
from trainer.synth import write_folder
from trainer.train_help import field_comments, parser

from trainer import run

SRC = Path(__file__).resolve().parents[1] / "src"


def test_train_help_describes_every_setting_with_its_variable_and_default() -> None:
    actions = {a.dest: a for a in parser()._actions}
    for field in dataclasses.fields(TrainConfig):
        text = str(actions[field.name].help)
        description, _, rest = text.partition(f" [TRAINER_{field.name.upper()}; default ")
        assert description.strip() and rest, f"--{field.name} has no description or no variable: {text!r}"


def test_help_texts_come_from_the_fields_own_comments_including_continuation_lines() -> None:
    comments, sections = field_comments()
    assert comments["data_uri"].endswith('s3://bucket/key/cifar-10-python.tar.gz, or "download" (torchvision)')
    assert sections["accuracy_floor"] == "the quality gate"


def test_help_piped_into_head_ends_quietly() -> None:
    reader = subprocess.Popen(
        [sys.executable, "-m", "trainer", "train", "--help"],
        env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        bufsize=1,
    )  # fmt: skip
    assert reader.stdout is not None and reader.stderr is not None
    first = reader.stdout.readline()
    reader.stdout.close()
    reader.wait(timeout=120)
    assert first.startswith("usage: pushtrain train")
    assert reader.stderr.read() == "" and reader.returncode == 0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_folder(root, n_train=128, n_test=32, seed=4)
    return root


def config(tmp_path: Path, data: Path | str, store: str, **changes: Any) -> TrainConfig:
    return TrainConfig(model="cnn").replace(
        epochs=1, batch_size=32, data_uri=str(data), store_uri=store, work_dir=str(tmp_path / "work"),
        progress="none", threads=1, accuracy_floor=0.0, **changes,
    )  # fmt: skip


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_missing_data_fails_in_one_line_without_a_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    code = run.main(config(tmp_path, tmp_path / "no-data", str(tmp_path / "store"), run_id="no-data"))
    assert code == run.EXIT_FAILED
    (error,) = errors(caplog)
    assert error.exc_info is None
    assert "DatasetNotFoundError: CIFAR-10 not found" in error.getMessage()


def test_s3_without_credentials_says_how_to_provide_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # boto3's default session keeps the credentials it resolved first: another test in this process (moto's fake
    # keys) would otherwise lend them to this one, which then tries the real endpoint
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    code = run.main(config(tmp_path, tmp_path, "s3://pushtrain-nowhere", run_id="no-creds"))
    assert code == run.EXIT_FAILED
    (error,) = errors(caplog)
    assert "Unable to locate credentials" in error.getMessage() and "AWS_PROFILE" in error.getMessage()
    assert error.exc_info is None


def test_a_finished_run_says_how_to_train_again(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = config(tmp_path, data_dir, str(tmp_path / "store"), run_id="finished")
    assert run.main(settings) == run.EXIT_SUCCEEDED
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainer.run"):
        assert run.main(settings) == run.EXIT_SUCCEEDED
    assert any("to train again, give a new run id: --run-id NEW" in r.getMessage() for r in caplog.records)


def test_an_interrupted_run_says_rerun_the_same_command_to_resume(tmp_path: Path, data_dir: Path) -> None:
    store = LocalStore(tmp_path / "store")
    stop = threading.Event()
    stop.set()  # as if Ctrl-C came before the first batch
    code = run.Run(config(tmp_path, data_dir, str(store.root), run_id="stopped"), store, stop).execute()
    record = read_status(store, "stopped") or {}
    assert code == run.EXIT_INTERRUPTED
    assert record["state"] == "interrupted"
    assert record["reason"].endswith("rerun the same command to resume")
