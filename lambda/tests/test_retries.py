"""The retry settings the trigger's clients are built with (trigger.aws.build_clients), counted on the wire:
a 5xx is answered every time and the requests botocore sends are counted (its backoff sleeps skipped)."""

from __future__ import annotations

from typing import Any

import boto3
import botocore
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from trigger.aws import build_clients


class _ServerError:
    def stream(self, **_: Any) -> Any:
        yield b'{"__type": "ServerException", "message": "injected"}'


def attempts(client: Any, call: str, **request: Any) -> int:
    """How many requests `client` sends for one call that is answered 500 every time."""
    sent = {"n": 0}

    def answer_500(request: Any, **_: Any) -> AWSResponse:
        sent["n"] += 1
        return AWSResponse(request.url, 500, {}, _ServerError())

    client.meta.events.register("before-send", answer_500)
    client.meta.events.register("before-sleep", lambda **_: None)  # no waiting between retries
    with pytest.raises(ClientError):
        getattr(client, call)(**request)
    return sent["n"]


def clients() -> Any:
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")  # noqa: S106
    return build_clients(session, botocore.__version__)


def test_idempotent_calls_make_four_attempts_and_launch_calls_one() -> None:
    made = clients()
    # GIVEN a service that answers every request 500
    # THEN a read is sent 4 times in all (trigger.aws: total_max_attempts 4, the first included)
    assert attempts(made.ecs, "list_tasks", cluster="pushtrain") == 4
    # AND the launch calls once: RunTask and SubmitJob are never resent by botocore (trigger.starts adopts by name)
    assert attempts(made.launch_client("ecs"), "run_task", taskDefinition="pushtrain-trainer:1") == 1
    request = {"jobName": "run-a1", "jobQueue": "pushtrain-mnp", "jobDefinition": "pushtrain-trainer-mnp:2"}
    assert attempts(made.launch_client("batch"), "submit_job", **request) == 1
