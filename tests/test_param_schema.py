"""The parameter schema (lambda/src/trigger/params.schema.json) is the trainer's own, and the trigger
refuses exactly what the trainer would refuse, before anything is written or started.

The file is generated from the TrainConfig field metadata (scripts/gen_param_schema.py); the trigger
reads it (it never imports the trainer: its zip stays torch-free), so a change of a bound in the trainer
fails here until the file is regenerated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import gen_param_schema
import pytest
from botocore.stub import Stubber
from ci.github import CIError
from ci.retrain import build_request
from trainer.config import ConfigError, TrainConfig, request_schema, validate
from trigger.aws import Clients
from trigger.config import load_config
from trigger.errors import InvalidEventError
from trigger.events import PARAM_SCHEMA, validate_params
from trigger.handler import handle

GIT_SHA = "3f4e2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f"
TRIGGER_EVENTS = Path(__file__).resolve().parent.parent / "lambda" / "tests" / "events"
ENVIRONMENT: dict[str, str] = json.loads((TRIGGER_EVENTS / "trigger_environment.json").read_text())


def test_the_committed_schema_is_the_one_the_trainer_generates() -> None:
    assert gen_param_schema.SCHEMA_PATH.read_text() == gen_param_schema.render(), (
        "lambda/src/trigger/params.schema.json is stale: run python scripts/gen_param_schema.py"
    )
    assert json.loads(gen_param_schema.render())["params"] == PARAM_SCHEMA
    assert gen_param_schema.main(["--check"]) == 0


def trainer_accepts(name: str, value: Any) -> bool:
    try:
        validate(TrainConfig(**{name: value}))
    except (ConfigError, TypeError):
        return False
    return True


def trigger_accepts(name: str, value: Any) -> bool:
    try:
        validate_params({name: value})
    except InvalidEventError:
        return False
    return True


def edges(entry: dict[str, Any]) -> list[Any]:
    """Values at and just past every end of a schema entry, and a few far outside."""
    if "enum" in entry:
        return [*entry["enum"], "resnet", "AIRBENCH"]
    values: list[Any] = [-(2**31 - 1), -5, -1, 0, 1, 2**31 - 1]
    for key in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        if key in entry:
            end = entry[key]
            values += [end, end + 1, end - 1] if entry["type"] == "integer" else [end, end + 1e-9, end - 1e-9]
    return values


@pytest.mark.parametrize("name", sorted(request_schema()["params"]))
def test_the_trigger_accepts_a_parameter_value_exactly_when_the_trainer_does(name: str) -> None:
    entry = request_schema()["params"][name]
    for value in edges(entry):
        assert trigger_accepts(name, value) == trainer_accepts(name, value), (name, value)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"epochs": -1}, "params.epochs=-1"),
        ({"lr": -5}, "params.lr=-5"),
        ({"batch_size": 0}, "params.batch_size=0"),
        ({"epochs": 2**31 - 1}, "params.epochs=2147483647"),
        ({"model": "resnet"}, "params.model='resnet'"),
    ],
)
def test_a_request_the_trainer_would_refuse_is_refused_before_any_call(params: dict[str, Any], named: str) -> None:
    # GIVEN clients that answer nothing (any AWS call would fail the test)
    made = {service: boto3.client(service, region_name="us-east-1") for service in ("ecs", "s3", "ecr")}
    stubs = [Stubber(client) for client in made.values()]
    request = {"action": "retrain", "request_id": "7001", "image": GIT_SHA, "params": params}
    for stub in stubs:
        stub.activate()
    try:
        # WHEN the retrain request arrives THEN it is refused by name, and nothing was read, written or started
        with pytest.raises(InvalidEventError, match=f"{named}.* is outside what the trainer accepts"):
            handle(request, load_config(ENVIRONMENT), Clients(**made))
        for stub in stubs:
            stub.assert_no_pending_responses()
    finally:
        for stub in stubs:
            stub.deactivate()


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"epochs": 2**31 - 1}, "epochs 2147483647 is outside"), ({"model": "resnet"}, "model 'resnet' is not one")],
)
def test_the_retrain_client_refuses_what_the_trainer_would_before_invoking(changes: dict[str, Any], named: str) -> None:
    arguments = {"request_id": "7001", "image": GIT_SHA, "git_sha": None, "epochs": 3, "lr": None, "model": None}
    with pytest.raises(CIError, match=named):
        build_request(**(arguments | changes))
