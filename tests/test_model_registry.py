"""The model registry (`trainer.nets.MODELS`) is the one list of models: the retrain workflow offers exactly
its names, the trigger accepts each of them, and adding a model is one class and one registry entry."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn
from trainer.config import MODELS, RECIPES, TrainConfig, load_config, settings_help
from trainer.data import load_dataset
from trainer.nets import ModelEntry, Normalize, Recipe, build_model
from trainer.train import TrainingSession
from trigger.errors import InvalidEventError
from trigger.events import validate_params

from trainer import nets, synth

ROOT = Path(__file__).resolve().parents[1]
RETRAIN_WORKFLOW = ROOT / ".github" / "workflows" / "retrain.yml"


def _retrain_model_input() -> dict[str, Any]:
    workflow = yaml.safe_load(RETRAIN_WORKFLOW.read_text())
    # PyYAML reads the bare key `on:` as the boolean True (YAML 1.1)
    trigger = workflow.get("on", workflow.get(True))
    return dict(trigger["workflow_dispatch"]["inputs"]["model"])


def test_retrain_workflow_offers_exactly_the_registered_models() -> None:
    # GIVEN the retrain workflow's model input, WHEN compared with the registry, THEN the choices are its names
    model_input = _retrain_model_input()
    assert model_input["type"] == "choice"
    assert model_input["options"] == list(nets.MODELS)
    # ... and the workflow's default is the trainer's default model
    assert model_input["default"] == TrainConfig().model


@pytest.mark.parametrize("name", list(nets.MODELS))
def test_trigger_accepts_every_registered_model(name: str) -> None:
    # GIVEN a retrain request naming a registered model, WHEN the trigger checks it, THEN it passes unchanged
    assert validate_params({"model": name}) == {"model": name}


def test_trigger_refuses_a_model_parameter_of_the_wrong_type() -> None:
    # the counterpart of the test above: the trigger's check is not a pass-through
    with pytest.raises(InvalidEventError, match=r"params\.model"):
        validate_params({"model": 3})


def test_configuration_lists_derive_from_the_registry() -> None:
    assert tuple(nets.MODELS) == MODELS
    assert {name: dataclasses.asdict(entry.recipe) for name, entry in nets.MODELS.items()} == RECIPES
    for name, entry in nets.MODELS.items():
        assert isinstance(build_model(name), entry.cls)


# --- a third model: one class and one registry entry ------------------------------------------------


class TinyNet(nn.Module):
    """The smallest model the trainer accepts: normalize, average-pool to 4x4, one linear layer."""

    augment_pad = 1

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.head = nn.Linear(3 * 4 * 4, num_classes)
        self.prepared_on = 0  # how many images the prepare hook saw

    def prepare(self, images: torch.Tensor) -> None:
        self.prepared_on = len(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.adaptive_avg_pool2d(self.normalize(x), 4).flatten(1))


TINY_RECIPE = Recipe(epochs=1, batch_size=32, lr=0.1, momentum=0.9, weight_decay=0.0, label_smoothing=0.0, warmup=0.0)


@pytest.fixture
def tiny_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(nets.MODELS, "tiny", ModelEntry(TinyNet, TINY_RECIPE))


def test_a_registered_third_model_takes_its_recipe_and_trains_one_step(tiny_registered: None, tmp_path: Path) -> None:
    # GIVEN a tiny model added to the registry (and nowhere else) and a small generated dataset
    synth.write_folder(tmp_path / "data", n_train=64, n_test=32, seed=0)
    config = load_config(
        ["--model", "tiny", "--data-uri", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work")],
        {"TRAINER_THREADS": "1", "TRAINER_DEVICE": "cpu", "TRAINER_PRECISION": "fp32"},
    )
    # THEN the configuration resolves its recipe from the registry
    assert (config.epochs, config.batch_size, config.lr) == (1, 32, 0.1)
    session = TrainingSession(config, load_dataset(config))
    assert isinstance(session.model, TinyNet)
    assert session.model.prepared_on == 64  # the optional hook ran on the training images
    before = {k: v.clone() for k, v in session.model.state_dict().items()}

    # WHEN it trains one step
    stop_after_one = iter([False, True])
    assert session.run_epoch(should_stop=lambda: next(stop_after_one)) is None

    # THEN the step moved the weights, and the position says one step was taken
    assert session.step == 1
    assert not torch.equal(before["head.weight"], session.model.state_dict()["head.weight"])


def test_an_unregistered_model_is_refused_naming_the_registered_ones() -> None:
    registered = ", ".join(nets.MODELS)
    with pytest.raises(ValueError, match=rf"unknown model 'tiny' \(choose one of {registered}\)"):
        load_config(["--model", "tiny"], {})


def test_settings_help_shows_recipe_defaults_by_name() -> None:
    assert "default recipe" in settings_help()
