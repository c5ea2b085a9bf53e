"""Every setting is finite and bounded, every pattern matches the whole string, every URI is checked when
the configuration is loaded: a bad value is a ConfigError naming the setting (exit 2), before any download."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainer.__main__ import record_invalid_config
from trainer.config import MAX_SEED, ConfigError, is_valid_run_id, load_config
from trainer.data import epoch_generator
from trainer.runstate import read_status
from trainer.store import LocalStore
from trigger.events import MAX_INT_PARAM, InvalidEventError, validate_params


@pytest.mark.parametrize(
    ("argv", "setting"),
    [
        (["--lr", "inf"], "lr"),
        (["--lr", "nan"], "lr"),
        (["--lr", "1e6"], "lr"),
        (["--weight-decay", "inf"], "weight_decay"),
        (["--weight-decay", "nan"], "weight_decay"),
        (["--label-smoothing", "nan"], "label_smoothing"),
        (["--momentum", "nan"], "momentum"),
        (["--warmup", "nan"], "warmup"),
        (["--cost-per-hour", "inf"], "cost_per_hour"),
        (["--cost-per-hour", "nan"], "cost_per_hour"),
        (["--accuracy-floor", "nan"], "accuracy_floor"),
        (["--champion-margin", "nan"], "champion_margin"),
        (["--epochs", str(10**30)], "epochs"),
        (["--batch-size", str(10**9)], "batch_size"),
        (["--seed", str(MAX_SEED + 1)], "seed"),
        (["--seed", str(-MAX_SEED - 1)], "seed"),
        (["--threads", "100000"], "threads"),
        (["--limit-train", str(10**12)], "limit_train"),
        (["--attempt", str(10**9)], "attempt"),
        (["--run-id", "run-1\n"], "run_id"),
        (["--run-id", "a/b"], "run_id"),
        (["--model-name", "cifar10\n"], "model_name"),
        (["--image-digest", "sha256:" + "0" * 64 + "\n"], "image_digest"),
        (["--git-sha", "abc1234\n"], "git_sha"),
        (["--store-uri", "s3://bucket-name\n"], "store_uri"),
        (["--store-uri", "s3:/bucket-name"], "store_uri"),
        (["--store-uri", "s3:bucket-name"], "store_uri"),
        (["--data-uri", "s3:/bucket-name/cifar-10-python.tar.gz"], "data_uri"),
        (["--data-uri", "file:relative/path"], "data_uri"),
    ],
)
def test_non_finite_unbounded_or_malformed_values_are_refused_naming_the_setting(argv: list[str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(argv, {})
    assert caught.value.setting == setting


def test_seed_range_is_exactly_what_the_trigger_accepts() -> None:
    # GIVEN the extreme seeds a retrain request may carry (the trigger accepts ints up to ±MAX_INT_PARAM)
    assert MAX_SEED == MAX_INT_PARAM
    for seed in (-MAX_SEED, MAX_SEED):
        assert validate_params({"seed": seed}) == {"seed": seed}
        # WHEN the trainer loads them, THEN they are valid, and an epoch can be planned with each
        config = load_config(["--seed", str(seed)], {})
        assert config.seed == seed
        epoch_generator(config.seed, 0)
    with pytest.raises(InvalidEventError):
        validate_params({"seed": MAX_SEED + 1})


def test_negative_and_positive_seeds_shuffle_differently() -> None:
    orders = {seed: torch.randperm(50, generator=epoch_generator(seed, 0)).tolist() for seed in (-1, 1, 2**32 - 1)}
    assert orders[-1] != orders[1]


def test_run_id_check_is_the_one_the_config_uses() -> None:
    assert is_valid_run_id("push-0123abcd")
    for bad in ("", "a/b", "run\n", "../x", ".hidden", "x" * 200):
        assert not is_valid_run_id(bad)


def test_invalid_config_with_a_run_id_that_cannot_be_a_key_writes_no_record(tmp_path: Path) -> None:
    # GIVEN a run id with a slash (it would become runs/a/b/status.json) and an invalid setting
    root = tmp_path / "store"
    env = {"TRAINER_RUN_ID": "a/b", "TRAINER_STORE_URI": str(root)}
    # WHEN the configuration error is recorded, THEN nothing is written under that id
    record_invalid_config(env, ConfigError("epochs", "bad"))
    assert LocalStore(root).list() == []


@pytest.mark.parametrize(
    ("variable", "value", "setting"),
    [("TRAINER_DATA_URI", "s3:/bucket-name/cifar-10-python.tar.gz", "data_uri"), ("TRAINER_LR", "inf", "lr")],
    ids=["s3-uri-missing-a-slash", "infinite-lr"],
)
def test_cli_exits_2_without_a_traceback_and_records_the_failure(
    tmp_path: Path, variable: str, value: str, setting: str
) -> None:
    # GIVEN a started task (run id and store known) with one bad setting
    store = tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINER_")}
    env.update({"TRAINER_RUN_ID": "push-badsetting", "TRAINER_STORE_URI": str(store), variable: value})
    # WHEN the trainer starts
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "train"], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    # THEN it exits 2 naming the setting, with no traceback, and the run record says failed
    assert result.returncode == 2, result.stderr
    assert setting in result.stderr
    assert "Traceback" not in result.stderr
    record = read_status(LocalStore(store), "push-badsetting")
    assert record is not None
    assert record["state"] == "failed"
    assert setting in record["reason"]
