"""One delivery of an event to the trigger's handler, in a process of its own (test_concurrent_deliveries).

Imported once by the multiprocessing fork server, which then forks one process per delivery: boto3,
the trigger and the API models of the three services are loaded before the fork, so a delivery
costs a fork and a handful of HTTP calls to the emulator, not an interpreter start.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import boto3
import botocore
from botocore.config import Config as BotoConfig
from trigger.aws import Clients, build_clients
from trigger.config import load_config
from trigger.errors import StartInFlightError
from trigger.handler import handle
from trigger.runs import RunSpec
from trigger.starts import start_run

SERVICES = ("ecs", "s3", "ecr", "batch")
SESSION = boto3.session.Session(
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",  # noqa: S106 (the emulator's fake credentials)
)
for _service in SERVICES:
    SESSION.client(_service, endpoint_url="http://127.0.0.1:1")  # loads and caches the API model


def clients_at(endpoint: str) -> Clients:
    config = BotoConfig(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 8})
    made = {service: SESSION.client(service, endpoint_url=endpoint, config=config) for service in SERVICES}
    return Clients(**made)


class _AtEndpoint:
    """A session whose clients reach the emulator (path-style S3), with the caller's botocore Config."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def client(self, service: str, config: BotoConfig) -> Any:
        path_style = BotoConfig(s3={"addressing_style": "path"})
        return SESSION.client(service, endpoint_url=self.endpoint, config=config.merge(path_style))


def trigger_clients_at(endpoint: str) -> Clients:
    """The clients as the trigger makes them (trigger.aws.build_clients: its retry and timeout settings,
    and launch calls that are never resent), pointed at the emulator."""
    return build_clients(_AtEndpoint(endpoint), botocore.__version__)


def start(endpoint: str, environment: dict[str, str], spec: RunSpec, barrier: Any, results: Any) -> None:
    """Wait for every other start at the barrier, then run the start protocol once; report how it went."""
    config = load_config(environment)
    clients = trigger_clients_at(endpoint)
    barrier.wait()
    try:
        outcome = start_run(clients, config, spec, "retrain")
    except StartInFlightError:
        results.put({"outcome": "in-flight"})  # Lambda would retry it
    except Exception as error:  # noqa: BLE001 (reported to the test, which fails on it)
        results.put({"outcome": "error", "error": f"{type(error).__name__}: {error}"})
    else:
        results.put({"outcome": outcome.outcome, "task_arn": outcome.task_arn})


def deliver(endpoint: str, environment: dict[str, str], event: dict[str, Any], barrier: Any, results: Any) -> None:
    """Wait for every other delivery at the barrier, then hand the event to the handler; report how it went."""
    config = load_config(environment)
    clients = clients_at(endpoint)
    barrier.wait()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the decision lines; the parent checks the outcome
            answer = handle(event, config, clients)
    except StartInFlightError:
        results.put({"outcome": "in-flight"})  # Lambda would retry it: see the follow-up delivery
    except Exception as error:  # noqa: BLE001 (reported to the test, which fails on it)
        results.put({"outcome": "error", "error": f"{type(error).__name__}: {error}"})
    else:
        results.put({"outcome": answer.get("outcome"), "task_arn": answer.get("task_arn")})
