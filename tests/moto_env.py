"""One moto server on 127.0.0.1 and the environment a separate process needs to reach it.

Shared by the tests that start real trainer processes against S3 (trainer/tests/test_run_s3_process.py,
trainer/tests/test_run_fencing.py): boto3 finds the server through its own `AWS_ENDPOINT_URL`, as a task
finds AWS, and no TRAINER_* or AWS_* variable of the caller leaks in.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto.server import ThreadedMotoServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server_env() -> Iterator[dict[str, str]]:
    """Start a moto server, yield the child-process environment that points at it, stop it after."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "AWS_"))} | {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "PYTHONUNBUFFERED": "1",
    }
    try:
        yield env
    finally:
        server.stop()


def s3_client(env: dict[str, str]) -> Any:
    """An S3 client of this test process for the server `env` points at (moto_server_env)."""
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
