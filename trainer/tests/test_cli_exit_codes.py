"""The real CLI in a subprocess: invalid configuration exits 2 with a message naming the setting, before torch
loads; a SIGTERM as soon as the process can catch one ends the run `interrupted` (exit 75)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainer.__main__ import record_invalid_config
from trainer.config import ConfigError
from trainer.runstate import new_record, read_status, status_key
from trainer.store import LocalStore

from trainer import synth

EXIT_INVALID_CONFIG = 2


EXIT_INTERRUPTED = 75
# `python -X importtime` writes one stderr line per module as its import completes, the module's name last:
# the first line naming torch or one of its submodules comes early in `import torch`.
TORCH_IMPORTED = re.compile(r"^import time:.*\|\s*torch(\.\S+)?$", re.MULTILINE)


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRAINER_")}
    return {**clean, **env, "PUSHTRAIN_LOG_LEVEL": "WARNING"}


def _trainer(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "trainer", *args],
        env=_clean_env(env),
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
    assert not TORCH_IMPORTED.search(result.stderr)  # ... and before torch loaded (45-150 s on a busy machine)


def test_batch_larger_than_the_dataset_shrinks_with_a_warning_and_trains(tmp_path: Path) -> None:
    # GIVEN a dataset of 100 training images and a batch of 500
    synth.write_folder(tmp_path / "data", n_train=100, n_test=20, seed=0)
    args = ["train", "--batch-size", "500", "--epochs", "1", "--data-uri", "data", "--store-uri", "store"]
    # WHEN the trainer runs, THEN it trains with batch 100 // 16 = 6 (16 steps per epoch) and says so
    result = _trainer([*args, "--work-dir", "work", "--progress", "none"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "batch 500 on 100 training images" in result.stderr
    assert "training with batch 6" in result.stderr
    assert TORCH_IMPORTED.search(result.stderr)  # the probe the invalid-configuration tests rely on sees torch load


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process `pid` has a handler installed for `sig` (the SigCgt mask of /proc/<pid>/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.MULTILINE).group(1), 16)  # type: ignore[union-attr]
    return bool(caught >> (sig - 1) & 1)


def test_sigterm_as_soon_as_the_trainer_can_catch_it_ends_the_run_interrupted(tmp_path: Path) -> None:
    # GIVEN a trainer just started for a run the trigger queued (no data there: an attempt that got as far as
    # downloading would fail instead)
    store = LocalStore(tmp_path / "store")
    _queued_by_trigger(store)
    run_env = {"TRAINER_RUN_ID": RUN_ID, "TRAINER_STORE_URI": str(store.root), "TRAINER_DATA_URI": "data"}
    log = tmp_path / "stderr.log"  # a file, not a pipe: nobody reads while we wait, and a full pipe would block it
    with log.open("w") as stderr_file:
        trainer = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "trainer", "train"],
            env=_clean_env(run_env) | {"PUSHTRAIN_LOG_LEVEL": "INFO"}, cwd=tmp_path, stderr=stderr_file, text=True,
        )  # fmt: skip
    try:
        # WHEN Fargate Spot's SIGTERM arrives the moment the process can catch it (its handler is the first
        # thing `train` installs, before the configuration and torch load)
        deadline = time.monotonic() + 120
        while trainer.poll() is None and not _catches(trainer.pid, signal.SIGTERM):
            assert time.monotonic() < deadline, "the trainer never installed a SIGTERM handler"
            time.sleep(0.005)
        trainer.send_signal(signal.SIGTERM)
        trainer.wait(timeout=120)
    finally:
        if trainer.poll() is None:
            trainer.kill()
    stderr = log.read_text()
    # THEN the signal was caught before any part of torch had loaded (stderr holds both, in order) ...
    caught = stderr.index("received SIGTERM")
    torch_loaded = TORCH_IMPORTED.search(stderr)
    assert torch_loaded is None or caught < torch_loaded.start()
    # ... and it ends as an interruption: exit 75, the run `interrupted` with the reason, nothing trained or published
    assert trainer.returncode == EXIT_INTERRUPTED, stderr
    record = read_status(store, RUN_ID)
    assert record is not None
    assert record["state"] == "interrupted", record
    assert "signal" in record["reason"]
    assert not (store.root / "models").exists()
    assert not (store.root / "runs" / RUN_ID / "checkpoint.pt").exists()


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


RUN_ID = "retrain-12345-abcdef12"
TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/pushtrain/0123"


def _queued_by_trigger(store: LocalStore) -> None:
    record = new_record(RUN_ID, now="2026-11-25T19:00:00Z", source="retrain", task_arn=TASK_ARN, params={"epochs": 0})
    store.put(status_key(RUN_ID), json.dumps(record).encode(), if_none_match=True)


@pytest.mark.parametrize(
    ("env", "named"), [({"TRAINER_EPOCHS": "0"}, "epochs"), ({"TRAINER_MODEL": "x"}, "model")], ids=["epochs", "model"]
)
def test_invalid_retrain_request_marks_its_queued_run_failed_and_exits_2(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    # GIVEN a run the trigger queued, started with an invalid parameter
    store = LocalStore(tmp_path / "store")
    _queued_by_trigger(store)
    run_env = {"TRAINER_RUN_ID": RUN_ID, "TRAINER_STORE_URI": str(store.root), "TRAINER_ATTEMPT": "2", **env}
    # WHEN the trainer starts
    result = _trainer(["train"], run_env, tmp_path)
    # THEN it exits 2 and the record says failed, why, and which attempt, keeping the trigger's fields
    assert result.returncode == EXIT_INVALID_CONFIG, result.stderr
    record = read_status(store, RUN_ID)
    assert record is not None
    assert (record["state"], record["attempt"]) == ("failed", 2)
    assert named in record["reason"]
    assert (record["source"], record["task_arn"], record["params"]) == ("retrain", TASK_ARN, {"epochs": 0})
    assert [entry["state"] for entry in record["history"]] == ["failed"]
    assert not TORCH_IMPORTED.search(result.stderr)  # the record too is written before torch loads


def test_unwritable_store_still_exits_2_with_the_configuration_error(tmp_path: Path) -> None:
    # GIVEN an invalid setting and a store that cannot hold a record (its root is a file)
    (tmp_path / "not-a-folder").write_text("")
    run_env = {"TRAINER_RUN_ID": RUN_ID, "TRAINER_STORE_URI": str(tmp_path / "not-a-folder"), "TRAINER_EPOCHS": "0"}
    # WHEN the trainer starts
    result = _trainer(["train"], run_env, tmp_path)
    # THEN the failed record update is logged, and the configuration error still decides the exit code
    assert result.returncode == EXIT_INVALID_CONFIG, result.stderr
    assert "'epochs'" in result.stderr
    assert "cannot record its failure" in result.stderr


def test_invalid_configuration_never_marks_a_succeeded_run_failed(tmp_path: Path) -> None:
    # GIVEN a run that already succeeded
    store = LocalStore(tmp_path / "store")
    record = new_record(RUN_ID, now="2026-11-25T19:00:00Z", source="push", state="succeeded", version="v1")
    store.put(status_key(RUN_ID), json.dumps(record).encode())
    before = store.get(status_key(RUN_ID))
    # WHEN a duplicate start of it has an invalid configuration
    environ = {"TRAINER_RUN_ID": RUN_ID, "TRAINER_STORE_URI": str(store.root)}
    record_invalid_config(environ, ConfigError("epochs", "must be at least 1, got 0"))
    # THEN the record is left as it was
    assert store.get(status_key(RUN_ID)) == before


@pytest.mark.parametrize("raw_attempt", ["three", "²", "0", ""])
def test_unparsable_attempt_keeps_the_records_attempt(tmp_path: Path, raw_attempt: str) -> None:
    # GIVEN a queued record at attempt 3 and TRAINER_ATTEMPT that is not a number
    store = LocalStore(tmp_path / "store")
    record = new_record(RUN_ID, now="2026-11-25T19:00:00Z", source="spot-resume", attempt=3)
    store.put(status_key(RUN_ID), json.dumps(record).encode())
    environ = {"TRAINER_RUN_ID": RUN_ID, "TRAINER_STORE_URI": str(store.root), "TRAINER_ATTEMPT": raw_attempt}
    # WHEN the invalid configuration is recorded
    record_invalid_config(environ, ConfigError("model", "unknown model 'x'"))
    # THEN the run is failed at its own attempt, naming the setting
    after = read_status(store, RUN_ID)
    assert after is not None
    assert (after["state"], after["attempt"]) == ("failed", 3)
    assert "'model'" in after["reason"]
