"""Test helpers for the trigger: the real event JSON, constants, botocore clients under Stubber, and
an AWS emulated by moto (bucket, repository, cluster, network and the base task definition).
Fixtures over these live in conftest.py."""

from __future__ import annotations

import copy
import functools
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto.moto_api import state_manager
from trigger.aws import Clients
from trigger.config import load_config
from trigger.records import parse_timestamp

EVENTS = Path(__file__).parent / "events"
REGION = "us-east-1"
ACCOUNT = "123456789012"
NOW = datetime(2026, 11, 25, 19, 0, 0, tzinfo=UTC)
DIGEST = "sha256:811d8fd91f7b386ec753710d7872e87ef83143027533a8b5288c72e57c71b9d5"
GIT_SHA = "3f4e2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f"
PUSH_RUN_ID = "push-9a749648e91499fcfb67"  # push_run_id(DIGEST, {}), also in ecs_task_stopped_spot.json
BUCKET = "pushtrain-artifacts-123456789012-us-east-1"

# A cosign signature as `cosign sign` pushes it (tag sha256-<digest>.sig): an OCI manifest with an image
# config, whose one layer is the signed payload, not a filesystem.
SIGNATURE_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 233, "digest": "sha256:" + "c" * 64},
    "layers": [
        {
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "size": 250,
            "digest": "sha256:" + "d" * 64,
            "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ…"},
        }
    ],
}

# the trigger's environment as Terraform sets it (terraform/lambda.tf); one file for every test and the bench
ENVIRONMENT: dict[str, str] = json.loads((EVENTS / "trigger_environment.json").read_text())


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

    def __init__(self, make: Callable[[str], Any] = client) -> None:
        """`make` gives the client of a service: moto's in-process mock by default, or a server's."""
        self.ecs = make("ecs")
        self.s3 = make("s3")
        self.ecr = make("ecr")
        ec2 = make("ec2")
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
        # ECS keeps a task RUNNING until it stops; moto (by default) moves it one state on per
        # DescribeTasks, so a running task would read STOPPED after four looks.
        state_manager.set_transition(model_name="ecs::task", transition={"progression": "manual", "times": 10**9})
        # What ECS says about stopped tasks beyond moto's StopTask (stop code, exit code), by task ARN.
        self.stopped: dict[str, dict[str, Any]] = {}
        self.ecs.meta.events.register("after-call.ecs.DescribeTasks", self._describe_as_ecs)
        self.s3.meta.events.register("after-call.s3.GetObject", s3_clock_is_the_test_clock)
        self.push_image(DIGEST, GIT_SHA)  # the image of the push sample event

    def environment(self) -> dict[str, str]:
        """The PUSHTRAIN_* variables of this account (what Terraform would set on the function)."""
        return {
            **ENVIRONMENT,
            "PUSHTRAIN_SUBNETS": ",".join(self.config.subnets),
            "PUSHTRAIN_SECURITY_GROUPS": ",".join(self.config.security_groups),
        }

    def close(self) -> None:
        self.ecs.meta.events.unregister("after-call.ecs.DescribeTasks", self._describe_as_ecs)
        self.s3.meta.events.unregister("after-call.s3.GetObject", s3_clock_is_the_test_clock)
        state_manager.unset_transition(model_name="ecs::task")

    def push_image(self, digest: str, tag: str, manifest: dict[str, Any] | None = None) -> None:
        """Put a runnable image (or the given manifest) under `tag` with `digest`."""
        # moto keys images by manifest content, so each digest gets a manifest of its own
        manifest = manifest or {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": digest},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1, "digest": digest}],
        }
        self.ecr.put_image(
            repositoryName="pushtrain-trainer", imageManifest=json.dumps(manifest), imageTag=tag, imageDigest=digest
        )

    def stop_task(self, task_arn: str, stop_code: str | None, exit_code: int | None, reason: str = "stopped") -> None:
        """Stop a task as ECS would: moto's StopTask, plus the stop code and exit code ECS then reports."""
        self.ecs.stop_task(cluster="pushtrain", task=task_arn, reason=reason)
        self.stopped[task_arn] = {"stopCode": stop_code, "exitCode": exit_code}

    def start_attempt(self, run_id: str, attempt: int, digest: str = DIGEST) -> str:
        """Run a task of `run_id` / `attempt` directly (as an earlier invocation would have): its ARN."""
        env = {"TRAINER_RUN_ID": run_id, "TRAINER_ATTEMPT": str(attempt), "TRAINER_IMAGE_DIGEST": digest}
        response = self.ecs.run_task(
            cluster="pushtrain",
            taskDefinition=self.base_arn,
            launchType="FARGATE",
            startedBy=run_id,
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": list(self.config.subnets),
                    "securityGroups": list(self.config.security_groups),
                }
            },
            overrides={
                "containerOverrides": [
                    {"name": "trainer", "environment": [{"name": k, "value": v} for k, v in sorted(env.items())]}
                ]
            },
        )
        return str(response["tasks"][0]["taskArn"])

    def put_record(self, run_id: str, **fields: Any) -> None:
        """Change fields of a run record behind the trigger's back (as the trainer or a crash would)."""
        record = self.record(run_id)
        record.update(fields)
        self.s3.put_object(Bucket=BUCKET, Key=f"runs/{run_id}/status.json", Body=json.dumps(record).encode())

    def _describe_as_ecs(self, parsed: dict[str, Any], **_: Any) -> None:
        for task in parsed.get("tasks") or []:
            facts = self.stopped.get(task.get("taskArn"))
            if facts is None:
                continue
            if facts["stopCode"] is not None:
                task["stopCode"] = facts["stopCode"]
            for container in task.setdefault("containers", [{"name": "trainer"}]):
                container.pop("exitCode", None)  # a container that never ran has none
                if facts["exitCode"] is not None:
                    container["exitCode"] = facts["exitCode"]

    def tasks(self) -> list[dict[str, Any]]:
        arns = self.ecs.list_tasks(cluster="pushtrain")["taskArns"]
        return self.ecs.describe_tasks(cluster="pushtrain", tasks=arns)["tasks"] if arns else []

    def revisions(self) -> list[str]:
        return self.ecs.list_task_definitions(familyPrefix="pushtrain-trainer")["taskDefinitionArns"]

    def record(self, run_id: str) -> dict[str, Any]:
        body = self.s3.get_object(Bucket=BUCKET, Key=f"runs/{run_id}/status.json")["Body"].read()
        return json.loads(body)


def s3_clock_is_the_test_clock(parsed: dict[str, Any], **_: Any) -> None:
    """S3's clock, as the trigger reads a claim's age (trigger.s3json.Found.age), made the tests' clock.

    moto stamps LastModified and Date with the real time; the tests plant records "claimed 10 s ago" or
    "an hour ago" at NOW. So a run record's LastModified is taken to be when its claim says it was written
    (`claimed_at`, else `updated_at`), and S3's Date is NOW. The conformance suite
    (test_launcher_conformance.py) uses S3's real clock instead.
    """
    body = parsed.get("Body")
    if body is None:
        return
    data = body.read()
    parsed["Body"] = StreamingBody(io.BytesIO(data), len(data))
    try:
        record = json.loads(data)
    except ValueError:
        return
    written = (
        parse_timestamp(record.get("claimed_at") or record.get("updated_at")) if isinstance(record, dict) else None
    )
    if written is not None and "run_id" in record:
        parsed["LastModified"] = written
        headers = parsed.setdefault("ResponseMetadata", {}).setdefault("HTTPHeaders", {})
        headers["date"] = format_datetime(NOW, usegmt=True)


def stop_event_for(  # noqa: PLR0917 (the stop event's own fields, in its order)
    aws: Emulated,
    sample: dict[str, Any],
    task_arn: str,
    stop_code: str | None,
    exit_code: int | None,
    reason: str = "stopped",
) -> dict[str, Any]:
    """The sample stop event for a task `aws` started, after stopping it that way in the emulated ECS."""
    aws.stop_task(task_arn, stop_code, exit_code, reason)
    (task,) = aws.ecs.describe_tasks(cluster="pushtrain", tasks=[task_arn])["tasks"]
    event = copy.deepcopy(sample)
    event["detail"].update(taskArn=task_arn, taskDefinitionArn=task["taskDefinitionArn"], stoppedReason=reason)
    event["detail"]["overrides"] = task["overrides"]
    if stop_code is None:
        event["detail"].pop("stopCode", None)
    else:
        event["detail"]["stopCode"] = stop_code
    if exit_code is None:
        event["detail"]["containers"][0].pop("exitCode", None)
    else:
        event["detail"]["containers"][0]["exitCode"] = exit_code
    return event


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
