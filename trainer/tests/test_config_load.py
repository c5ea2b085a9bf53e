"""The configuration: defaults, TRAINER_* variables, --flags, and errors that name the setting."""

from __future__ import annotations

import pytest
from trainer.config import RECIPES, ConfigError, TrainConfig, check_against_dataset, load_config


def test_defaults_take_the_chosen_models_recipe() -> None:
    # GIVEN no settings, WHEN loaded for each model, THEN the recipe fields are that model's recipe
    for model, recipe in RECIPES.items():
        config = load_config(["--model", model], {})
        assert {name: getattr(config, name) for name in recipe} == recipe


def test_flags_override_environment_which_overrides_defaults() -> None:
    # GIVEN the same setting in the environment and on the command line
    environ = {"TRAINER_EPOCHS": "3", "TRAINER_SEED": "7", "PATH": "/usr/bin"}
    # WHEN loaded, with dashed and underscored flags and --flag=value
    config = load_config(["--epochs", "5", "--batch_size", "32", "--label-smoothing=0.05"], environ)
    # THEN the flag wins, the environment fills the rest, and unrelated variables are ignored
    assert (config.epochs, config.seed, config.batch_size, config.label_smoothing) == (5, 7, 32, 0.05)


def test_booleans_and_auto_parse() -> None:
    config = load_config(["--tta", "off", "--lr", "auto"], {"TRAINER_MODEL": "cnn"})
    assert config.tta is False
    assert config.lr == RECIPES["cnn"]["lr"]


def test_unknown_trainer_variable_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="TRAINER_FOO"):
        load_config([], {"TRAINER_FOO": "1"})


def test_unknown_flag_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="--epoch"):
        load_config(["--epoch", "3"], {})


@pytest.mark.parametrize(
    ("argv", "setting"),
    [
        (["--epochs", "three"], "epochs"),
        (["--lr", "fast"], "lr"),
        (["--tta", "maybe"], "tta"),
        (["--epochs", "0"], "epochs"),
        (["--batch-size", "-1"], "batch_size"),
        (["--model", "resnet"], "model"),
        (["--momentum", "1.0"], "momentum"),
        (["--precision", "fp8"], "precision"),
        (["--device", "tpu"], "device"),
        (["--data-uri", "http://example.com/cifar.tar.gz"], "data_uri"),
        (["--data-uri", "s3://Not_A_Bucket/cifar-10-python.tar.gz"], "data_uri"),
        (["--data-uri", "s3://bucket-only"], "data_uri"),
        (["--store-uri", "gs://bucket"], "store_uri"),
        (["--store-uri", "file://host/path"], "store_uri"),
        (["--work-dir", "s3://bucket/scratch"], "work_dir"),
        (["--image-digest", "latest"], "image_digest"),
        (["--model-name", "Has Spaces"], "model_name"),
        (["--accuracy-floor", "94"], "accuracy_floor"),
        (["--attempt", "0"], "attempt"),
        (["--epochs"], "epochs"),
    ],
)
def test_invalid_value_raises_naming_the_setting(argv: list[str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(argv, {})
    assert caught.value.setting == setting
    assert setting in str(caught.value)


def test_valid_locations_are_accepted() -> None:
    config = load_config(
        ["--data-uri", "s3://pushtrain-artifacts-123-eu-west-1/datasets/cifar-10-python.tar.gz"],
        {"TRAINER_STORE_URI": "s3://pushtrain-artifacts-123-eu-west-1", "TRAINER_WORK_DIR": "/scratch"},
    )
    assert config.store_uri == "s3://pushtrain-artifacts-123-eu-west-1"
    assert load_config(["--data-uri", "download"], {}).data_uri == "download"
    assert load_config(["--store-uri", "file:///tmp/store"], {}).store_uri == "file:///tmp/store"


def test_batch_larger_than_the_dataset_is_an_error_naming_batch_size() -> None:
    config = load_config(["--batch-size", "512"], {})
    check_against_dataset(config, 512)  # exactly the dataset: fine
    with pytest.raises(ConfigError, match=r"batch_size.*512.*100 images") as caught:
        check_against_dataset(config, 100)
    assert caught.value.setting == "batch_size"


def test_to_dict_from_dict_round_trip_and_rejects_unknown_keys() -> None:
    config = load_config(["--model", "cnn", "--seed", "3", "--git-sha", "abc1234"], {})
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="colour"):
        TrainConfig.from_dict({**config.to_dict(), "colour": "blue"})
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig.from_dict({**config.to_dict(), "epochs": "10"})


def test_config_is_frozen() -> None:
    config = load_config([], {})
    with pytest.raises(AttributeError):
        config.epochs = 3  # type: ignore[misc]


def test_gate_thresholds_are_kept_as_the_decimal_text_given() -> None:
    # GIVEN thresholds from the environment (how ECS passes them); WHEN loaded; THEN kept exactly as written
    config = load_config([], {"TRAINER_ACCURACY_FLOOR": "0.9", "TRAINER_CHAMPION_MARGIN": "0.005"})
    assert (config.accuracy_floor, config.champion_margin) == ("0.9", "0.005")
    # a Python caller's float becomes its shortest decimal text, never its binary expansion
    assert TrainConfig(model="cnn", accuracy_floor=0.9).accuracy_floor == "0.9"  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["1e-3", "-0.1", "0.9 x", "1.5", "nan", ""])
def test_a_threshold_that_is_not_a_plain_decimal_in_0_1_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ConfigError, match="accuracy_floor"):
        load_config([], {"TRAINER_ACCURACY_FLOOR": value})
