"""Fixtures for the trigger's tests; the helpers they use are in trigger_testkit.py."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws
from moto.batch import models as batch_models
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer

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


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One emulated AWS on 127.0.0.1 for the session (separate processes reach it over HTTP), made to
    behave as AWS does where the trigger depends on it:

    - S3's conditional writes decided atomically. moto 5.2 checks If-None-Match / If-Match and then
      writes, without a lock: two requests in two server threads can both pass the check. S3 itself
      decides a conditional write atomically, which is what the trigger relies on.
    - Batch: a job stays SUBMITTED (moto would run it in Docker), and DescribeJobDefinitions returns the
      nodeProperties of a multi-node definition, which moto stores but leaves out.
    """
    lock = threading.Lock()
    put_object = S3Response.put_object
    start_job = batch_models.Job.start
    describe_definition = batch_models.JobDefinition.describe

    def atomic_put_object(self: S3Response) -> Any:
        with lock:
            return put_object(self)

    def describe_with_nodes(self: batch_models.JobDefinition) -> dict[str, Any]:
        described = describe_definition(self)
        if self.node_properties:
            described["nodeProperties"] = self.node_properties
        return described

    S3Response.put_object = atomic_put_object  # type: ignore[method-assign]
    batch_models.Job.start = lambda self: None  # type: ignore[method-assign]
    batch_models.JobDefinition.describe = describe_with_nodes  # type: ignore[method-assign]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        S3Response.put_object = put_object  # type: ignore[method-assign]
        batch_models.Job.start = start_job  # type: ignore[method-assign]
        batch_models.JobDefinition.describe = describe_definition  # type: ignore[method-assign]
