"""Fixtures for the trigger's tests; the helpers they use are in trigger_testkit.py."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

sys.path.insert(0, str(Path(__file__).parent))  # pytest's importlib mode does not; the tests import the kit

from trigger.config import Config, load_config
from trigger_testkit import ENVIRONMENT, REGION, Emulated, Stubbed, load_event


@pytest.fixture(autouse=True)
def _aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never reach a real account: fake credentials and a fixed region for every test."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def config() -> Config:
    return load_config(ENVIRONMENT)


@pytest.fixture
def push_event() -> dict[str, Any]:
    return load_event("ecr_image_push.json")


@pytest.fixture
def spot_stop_event() -> dict[str, Any]:
    event = load_event("ecs_task_stopped_spot.json")
    # The fixture comes from us-west-2 (as in the AWS docs sample); our emulated account is us-east-1.
    return json.loads(json.dumps(event).replace("us-west-2", REGION))


@pytest.fixture
def stubbed() -> Iterator[Stubbed]:
    stubs = Stubbed()
    with stubs.ecs, stubs.s3, stubs.ecr:
        yield stubs


@pytest.fixture
def aws() -> Iterator[Emulated]:
    with mock_aws():
        emulated = Emulated()
        yield emulated
        emulated.close()
