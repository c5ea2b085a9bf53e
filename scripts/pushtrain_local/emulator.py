"""AWS emulated in-process: moto's server on loopback, provisioned from the names Terraform uses.

Everything that talks to it (boto3 in this process, the trigger's handler, the trainer's subprocess)
finds it through `AWS_ENDPOINT_URL`, which boto3 honours for every service, and fake credentials.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer
from tfread.terraform import Stack

FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
MOTO_ACCOUNT_ID = "123456789012"  # moto's default account


@dataclass(frozen=True)
class Emulator:
    """A running moto server and how to reach it."""

    endpoint: str
    region: str
    account_id: str = MOTO_ACCOUNT_ID

    def environment(self) -> dict[str, str]:
        """The variables a process needs to use this emulation (and no real AWS account)."""
        return {
            **FAKE_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint)

    def reset(self) -> None:
        """Forget every emulated resource (between scenarios sharing one server)."""
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")  # noqa: S310 - loopback URL we built
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback URL we built
            response.read()


def report_stop(emulator: Emulator, cluster: str, task_arn: str, stop_code: str, exit_code: int | None) -> None:
    """Make DescribeTasks report a stopped task's stop code and exit code, as ECS does (moto's StopTask
    sets neither); the trigger acts on a stop event only when DescribeTasks backs it."""
    from moto.ecs.models import ecs_backends

    task = ecs_backends[emulator.account_id][emulator.region].tasks[cluster][task_arn]
    task.stop_code = stop_code
    for container in task.containers:
        container.exitCode = exit_code


@contextmanager
def running(region: str) -> Iterator[Emulator]:
    """Start moto on 127.0.0.1 (a free port), point this process's AWS environment at it, undo both after."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    emulator = Emulator(endpoint=f"http://{host}:{port}", region=region)
    # moto keeps its backends per process, not per server: a new server in a process that ran
    # one before (the tests) would otherwise start with the last one's resources.
    emulator.reset()
    try:
        with environ(emulator.environment()):
            yield emulator
    finally:
        server.stop()


@contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in os.environ for the duration of the block; each name's previous value (or absence) after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class Resources:
    """What provisioning created: the values only an apply knows (ids and ARNs)."""

    bucket: str
    repository_uri: str
    repository_arn: str
    cluster_arn: str
    vpc_id: str
    subnets: tuple[str, ...]
    security_group: str
    base_task_definition_arn: str
    notifications_queue_url: str = ""  # a queue on the notifications topic, so the demo can show its messages

    def known(self, stack: Stack) -> dict[tuple[str, str], Any]:
        """These values keyed the way the Terraform reader resolves resource attributes."""
        return {
            ("aws_ecr_repository", "repository_url"): self.repository_uri,
            ("aws_ecr_repository", "arn"): self.repository_arn,
            ("aws_ecs_cluster", "arn"): self.cluster_arn,
            ("aws_ecs_cluster", "id"): self.cluster_arn,
            ("aws_s3_bucket", "id"): self.bucket,
            ("aws_s3_bucket", "arn"): f"arn:aws:s3:::{self.bucket}",
            ("aws_vpc", "id"): self.vpc_id,
            ("aws_subnet", "id"): list(self.subnets),
            ("aws_subnet", "*"): [{"id": subnet} for subnet in self.subnets],
            ("aws_security_group", "id"): self.security_group,
            ("aws_ecs_task_definition", "arn"): self.base_task_definition_arn,
            ("aws_ecs_task_definition", "arn_without_revision"): self.base_task_definition_arn.rsplit(":", 1)[0],
            ("aws_ecs_task_definition", "family"): stack.names.task_family,
        }


def provision(
    emulator: Emulator, stack: Stack, task_environment: Mapping[str, str], vpc_cidr: str = "10.42.0.0/16"
) -> Resources:
    """Create the bucket, repository, network, cluster and base task definition Terraform would create.

    `task_environment` is the base task definition's container environment: Terraform's, with the
    demo's own settings layered on top by the caller (it says which).
    """
    names = stack.names
    s3 = emulator.client("s3")
    if emulator.region == "us-east-1":
        s3.create_bucket(Bucket=names.bucket)
    else:
        s3.create_bucket(Bucket=names.bucket, CreateBucketConfiguration={"LocationConstraint": emulator.region})
    s3.put_bucket_versioning(Bucket=names.bucket, VersioningConfiguration={"Status": "Enabled"})

    ecr = emulator.client("ecr")
    repository = ecr.create_repository(
        repositoryName=names.repository,
        imageTagMutability="IMMUTABLE",
        imageScanningConfiguration={"scanOnPush": True},
    )["repository"]

    ec2 = emulator.client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock=vpc_cidr)["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsSupport={"Value": True})
    blocks = list(ipaddress.ip_network(vpc_cidr).subnets(new_prefix=20))[:2]
    subnets = tuple(
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=str(block), AvailabilityZone=f"{emulator.region}{zone}")["Subnet"][
            "SubnetId"
        ]
        for block, zone in zip(blocks, "ab", strict=True)
    )
    security_group = ec2.create_security_group(
        GroupName=f"{names.cluster}-tasks", Description="training tasks: no inbound", VpcId=vpc_id
    )["GroupId"]

    ecs = emulator.client("ecs")
    cluster_arn = ecs.create_cluster(clusterName=names.cluster, capacityProviders=["FARGATE", "FARGATE_SPOT"])[
        "cluster"
    ]["clusterArn"]
    task_definition_arn = register_base_task_definition(emulator, stack, repository["repositoryUri"], task_environment)
    queue_url = _notifications(emulator, task_environment.get("TRAINER_NOTIFY_TOPIC_ARN", ""))
    return Resources(
        bucket=names.bucket,
        repository_uri=repository["repositoryUri"],
        repository_arn=repository["repositoryArn"],
        cluster_arn=cluster_arn,
        vpc_id=vpc_id,
        subnets=subnets,
        security_group=security_group,
        base_task_definition_arn=task_definition_arn,
        notifications_queue_url=queue_url,
    )


def _notifications(emulator: Emulator, topic_arn: str) -> str:
    """The notifications topic the trainer is told about (monitoring.tf), with a queue subscribed; its URL."""
    if not topic_arn:
        return ""
    topic = emulator.client("sns").create_topic(Name=topic_arn.rsplit(":", 1)[-1])["TopicArn"]
    sqs = emulator.client("sqs")
    queue_url = sqs.create_queue(QueueName="pushtrain-demo-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    emulator.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return str(queue_url)


def register_base_task_definition(
    emulator: Emulator, stack: Stack, repository_uri: str, environment: Mapping[str, str]
) -> str:
    """Register a revision of the task family shaped like Terraform's, with `environment`; its ARN."""
    container = dict(stack.task.container)
    container["image"] = f"{repository_uri}:base-revision-not-run"
    container["environment"] = [{"name": k, "value": v} for k, v in sorted(environment.items())]
    container.setdefault("memory", int(stack.task.memory))  # moto's RunTask needs a per-container memory
    container.pop("logConfiguration", None)  # no CloudWatch Logs here: the local runner streams the output
    registered = emulator.client("ecs").register_task_definition(
        family=stack.names.task_family,
        requiresCompatibilities=stack.task.compatibilities,
        networkMode=stack.task.network_mode,
        cpu=stack.task.cpu,
        memory=stack.task.memory,
        volumes=[{"name": name} for name in stack.task.volumes],
        containerDefinitions=[container],
    )
    return registered["taskDefinition"]["taskDefinitionArn"]
