"""Test helpers for the trigger: the real event JSON, constants, botocore clients under Stubber, and
an AWS emulated by moto (bucket, repository, cluster, network and the base task definition).
Fixtures over these live in conftest.py."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from trigger.aws import Clients
from trigger.config import load_config

EVENTS = Path(__file__).parent / "events"
REGION = "us-east-1"
ACCOUNT = "123456789012"
NOW = datetime(2026, 11, 25, 19, 0, 0, tzinfo=UTC)
DIGEST = "sha256:811d8fd91f7b386ec753710d7872e87ef83143027533a8b5288c72e57c71b9d5"
GIT_SHA = "3f4e2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f"
PUSH_RUN_ID = "push-9a749648e91499fcfb67"  # push_run_id(DIGEST, {}), also in ecs_task_stopped_spot.json
BUCKET = "pushtrain-artifacts-123456789012-us-east-1"

ENVIRONMENT = {
    "PUSHTRAIN_CLUSTER": "pushtrain",
    "PUSHTRAIN_TASK_FAMILY": "pushtrain-trainer",
    "PUSHTRAIN_CONTAINER_NAME": "trainer",
    "PUSHTRAIN_REPOSITORY_NAME": "pushtrain-trainer",
    "PUSHTRAIN_REPOSITORY_URI": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/pushtrain-trainer",
    "PUSHTRAIN_SUBNETS": "subnet-0abc1234def567890,subnet-0fed9876cba543210",
    "PUSHTRAIN_SECURITY_GROUPS": "sg-0123456789abcdef0",
    "PUSHTRAIN_ASSIGN_PUBLIC_IP": "DISABLED",
    "PUSHTRAIN_BUCKET": BUCKET,
    "PUSHTRAIN_MAX_ATTEMPTS": "3",
}


@functools.cache
def client(service: str) -> Any:
    """One botocore client per service for the whole session: building one costs ~0.1 s (its API model),
    and a client holds no state of its own. moto intercepts every client while a mock is active;
    a Stubber attaches to a client for one test and detaches after it."""
    return boto3.client(service, region_name=REGION)


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def clock() -> datetime:
    return NOW


def no_sleep(seconds: float) -> None:
    """Backoff without waiting (tests assert on what was asked, not on time)."""


class Stubbed:
    """Real botocore clients (request validation against the ECS/S3/ECR API models) under Stubber."""

    def __init__(self) -> None:
        self.clients = Clients(
            ecs=client("ecs"),
            s3=client("s3"),
            ecr=client("ecr"),
        )
        self.ecs = Stubber(self.clients.ecs)
        self.s3 = Stubber(self.clients.s3)
        self.ecr = Stubber(self.clients.ecr)

    def assert_done(self) -> None:
        for stub in (self.ecs, self.s3, self.ecr):
            stub.assert_no_pending_responses()


BASE_CONTAINER = {
    "name": "trainer",
    "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/pushtrain-trainer:bootstrap",
    "memory": 8192,  # moto's RunTask needs a per-container figure
    "essential": True,
    "stopTimeout": 120,
    "environment": [{"name": "TRAINER_STORE_URI", "value": f"s3://{BUCKET}"}],
}


class Emulated:
    """An account emulated by moto with what Terraform would have created."""

    def __init__(self) -> None:
        self.ecs = client("ecs")
        self.s3 = client("s3")
        self.ecr = client("ecr")
        ec2 = client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName="trainer", Description="trainer", VpcId=vpc)["GroupId"]
        self.config = load_config({**ENVIRONMENT, "PUSHTRAIN_SUBNETS": subnet, "PUSHTRAIN_SECURITY_GROUPS": group})
        self.s3.create_bucket(Bucket=BUCKET)
        self.ecr.create_repository(repositoryName="pushtrain-trainer")
        self.ecs.create_cluster(clusterName="pushtrain", capacityProviders=["FARGATE", "FARGATE_SPOT"])
        self.base_arn = self.ecs.register_task_definition(
            family="pushtrain-trainer",
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="2048",
            memory="8192",
            containerDefinitions=[copy.deepcopy(BASE_CONTAINER)],
        )["taskDefinition"]["taskDefinitionArn"]
        self.clients = Clients(ecs=self.ecs, s3=self.s3, ecr=self.ecr)

    def push_image(self, digest: str, tag: str) -> None:
        # moto keys images by manifest content, so each digest gets a manifest of its own
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": digest},
            "layers": [],
        }
        self.ecr.put_image(
            repositoryName="pushtrain-trainer", imageManifest=json.dumps(manifest), imageTag=tag, imageDigest=digest
        )

    def tasks(self) -> list[dict[str, Any]]:
        arns = self.ecs.list_tasks(cluster="pushtrain")["taskArns"]
        return self.ecs.describe_tasks(cluster="pushtrain", tasks=arns)["tasks"] if arns else []

    def revisions(self) -> list[str]:
        return self.ecs.list_task_definitions(familyPrefix="pushtrain-trainer")["taskDefinitionArns"]

    def record(self, run_id: str) -> dict[str, Any]:
        body = self.s3.get_object(Bucket=BUCKET, Key=f"runs/{run_id}/status.json")["Body"].read()
        return json.loads(body)


def env_of(task: dict[str, Any]) -> dict[str, str]:
    """The trainer container's environment overrides of a described task."""
    (override,) = [o for o in task["overrides"]["containerOverrides"] if o["name"] == "trainer"]
    return {pair["name"]: pair["value"] for pair in override["environment"]}


@contextmanager
def run_task_failing_once(aws: Emulated) -> Iterator[None]:
    """Make the next RunTask fail the way a 5xx or a timeout would, before any task exists."""
    calls = {"n": 0}

    def refuse(**_: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ClientError({"Error": {"Code": "ServerException", "Message": "injected"}}, "RunTask")

    aws.ecs.meta.events.register("before-call.ecs.RunTask", refuse)
    try:
        yield
    finally:
        aws.ecs.meta.events.unregister("before-call.ecs.RunTask", refuse)
